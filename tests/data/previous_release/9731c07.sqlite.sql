BEGIN TRANSACTION;
CREATE TABLE device_facts (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO "device_facts" VALUES('calibrated_at','1700000000.0');
CREATE TABLE jobs (
	id INTEGER NOT NULL, 
	session_id VARCHAR(36), 
	user_id VARCHAR(64) NOT NULL, 
	slurm_job_id VARCHAR(64), 
	status VARCHAR(16) NOT NULL, 
	job_class VARCHAR(32) NOT NULL, 
	name VARCHAR(256), 
	format VARCHAR(32) NOT NULL, 
	body TEXT NOT NULL, 
	variables TEXT, 
	shots INTEGER NOT NULL, 
	shots_done INTEGER NOT NULL, 
	num_qubits INTEGER, 
	max_calibration_age_s FLOAT, 
	counts TEXT, 
	results TEXT, 
	error TEXT, 
	qpu_seconds FLOAT NOT NULL, 
	calibration_age_s FLOAT, 
	created_at FLOAT NOT NULL, 
	started_at FLOAT, 
	finished_at FLOAT, 
	PRIMARY KEY (id)
);
INSERT INTO "jobs" VALUES(1,'536ea5ea-5041-4375-aa78-9e4a698ca748','1000','42','DONE','production','bell','pulser','{}','{"t": 1}',100,100,2,NULL,'{"00": 60, "11": 40}','{"counter": {"00": 60, "11": 40}}',NULL,0.5,3.0,1796653858.5576,1.0,1.79665385857156896585e+09);
INSERT INTO "jobs" VALUES(2,'536ea5ea-5041-4375-aa78-9e4a698ca748','1000','42','RUNNING','production',NULL,'pulser','{}','{}',200,50,2,NULL,'{"01": 50}',NULL,NULL,0.25,1.0,1.7966538585725963116e+09,2.0,NULL);
INSERT INTO "jobs" VALUES(3,'af6a0c29-2aba-4b4d-84c8-c5be65244ce4','1001',NULL,'CANCELED','production',NULL,'pulser','{}','{}',10,0,1,NULL,NULL,NULL,'canceled: epilog',0.0,NULL,1.79665385859009552006e+09,NULL,1.79665385859095740319e+09);
CREATE TABLE sessions (
	id VARCHAR(36) NOT NULL, 
	user_id VARCHAR(64) NOT NULL, 
	slurm_job_id VARCHAR(64), 
	qpu_slots INTEGER NOT NULL, 
	created_at FLOAT NOT NULL, 
	revoked_at FLOAT, 
	revoke_reason TEXT, 
	PRIMARY KEY (id)
);
INSERT INTO "sessions" VALUES('536ea5ea-5041-4375-aa78-9e4a698ca748','1000','42',1,1.79665385854764771459e+09,NULL,NULL);
INSERT INTO "sessions" VALUES('af6a0c29-2aba-4b4d-84c8-c5be65244ce4','1001',NULL,1,1.79665385855702304843e+09,1.79665385859095740319e+09,'epilog');
CREATE INDEX ix_sessions_user_id ON sessions (user_id);
CREATE INDEX ix_jobs_user_id ON jobs (user_id);
CREATE INDEX ix_jobs_session_id ON jobs (session_id);
CREATE INDEX ix_jobs_status ON jobs (status);
COMMIT;
