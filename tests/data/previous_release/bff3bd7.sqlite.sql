BEGIN TRANSACTION;
CREATE TABLE device_facts (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO "device_facts" VALUES('calibrated_at','900.0');
INSERT INTO "device_facts" VALUES('calibration_id','3');
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
	max_calibration_age_s FLOAT, 
	counts TEXT, 
	error TEXT, 
	qpu_seconds FLOAT NOT NULL, 
	emulator_seconds FLOAT NOT NULL, 
	idempotency_key VARCHAR(128), 
	calibration_age_s FLOAT, 
	calibrations TEXT, 
	single_calibration BOOLEAN, 
	loop VARCHAR(64), 
	think_time_s FLOAT, 
	created_at FLOAT NOT NULL, 
	started_at FLOAT, 
	finished_at FLOAT, 
	PRIMARY KEY (id)
);
INSERT INTO "jobs" VALUES(1,'006cd38e-174d-497c-9783-ce484e6679b7','1000','42','DONE','production','bell','pulser','{}','{"t": 1}',100,100,NULL,'{"00": 60, "11": 40}',NULL,0.5,0.125,'key-a',3.0,'[{"id": 3, "calibrated_at": 900.0, "shots_from": 1, "shots_to": 100, "age_s_first": 3.0, "age_s_last": 3.5, "drift": {"readout_error_fresh": 0.01, "readout_error_per_hour": 0.001, "readout_error_max": 0.05}}]',1,'loop-1',2.0,1000.0,1001.0,1000.0);
INSERT INTO "jobs" VALUES(2,'006cd38e-174d-497c-9783-ce484e6679b7','1000','42','RUNNING','production',NULL,'pulser','{}','{}',200,50,NULL,'{"01": 50}',NULL,0.25,0.0,NULL,1.0,'[{"id": 3, "calibrated_at": 900.0, "shots_from": 1, "shots_to": 50, "age_s_first": 1.0, "age_s_last": 1.25, "drift": {"readout_error_fresh": 0.01, "readout_error_per_hour": 0.001, "readout_error_max": 0.05}}]',0,NULL,NULL,1000.0,1002.0,NULL);
INSERT INTO "jobs" VALUES(3,'613e586e-44c7-4735-afa5-28e026bd603e','1001','43','CANCELED','production',NULL,'pulser','{}','{}',10,0,NULL,NULL,'canceled: epilog',0.0,0.0,NULL,NULL,NULL,0,NULL,NULL,1000.0,NULL,1000.0);
CREATE TABLE quotas (
	kind VARCHAR(16) NOT NULL, 
	subject VARCHAR(64) NOT NULL, 
	unit VARCHAR(16) NOT NULL, 
	budget FLOAT NOT NULL, 
	period VARCHAR(16) NOT NULL, 
	PRIMARY KEY (kind, subject, unit)
);
INSERT INTO "quotas" VALUES('user','1000','shots',1000000.0,'month');
CREATE TABLE reservations (
	id INTEGER NOT NULL, 
	owner_kind VARCHAR(16) NOT NULL, 
	owner VARCHAR(64) NOT NULL, 
	starts_at FLOAT NOT NULL, 
	ends_at FLOAT NOT NULL, 
	created_at FLOAT NOT NULL, 
	created_by VARCHAR(64), 
	PRIMARY KEY (id)
);
INSERT INTO "reservations" VALUES(1,'account','chem',2000.0,3000.0,1000.0,'0');
CREATE TABLE seen_credentials (
	digest VARCHAR(64) NOT NULL, 
	expires_at FLOAT NOT NULL, 
	PRIMARY KEY (digest)
);
INSERT INTO "seen_credentials" VALUES('dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd',9000000000.0);
CREATE TABLE sessions (
	id VARCHAR(36) NOT NULL, 
	user_id VARCHAR(64) NOT NULL, 
	slurm_job_id VARCHAR(64), 
	qpu_slots INTEGER NOT NULL, 
	created_at FLOAT NOT NULL, 
	revoked_at FLOAT, 
	revoke_reason TEXT, 
	idle_expires_at FLOAT, 
	expires_at FLOAT, 
	slurm_account VARCHAR(64), 
	PRIMARY KEY (id)
);
INSERT INTO "sessions" VALUES('006cd38e-174d-497c-9783-ce484e6679b7','1000','42',2,1000.0,NULL,NULL,5000.0,NULL,'chem');
INSERT INTO "sessions" VALUES('613e586e-44c7-4735-afa5-28e026bd603e','1001','43',1,1000.0,1000.0,'epilog',NULL,NULL,NULL);
CREATE INDEX ix_sessions_user_id ON sessions (user_id);
CREATE INDEX ix_jobs_session_id ON jobs (session_id);
CREATE INDEX ix_jobs_status ON jobs (status);
CREATE INDEX ix_jobs_user_id ON jobs (user_id);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (user_id, idempotency_key);
CREATE INDEX ix_reservations_ends_at ON reservations (ends_at);
CREATE INDEX ix_seen_credentials_expires_at ON seen_credentials (expires_at);
COMMIT;
