--
-- PostgreSQL database dump
--


-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: device_facts; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.device_facts (
    key character varying(64) NOT NULL,
    value text NOT NULL
);


--
-- Name: jobs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.jobs (
    id integer NOT NULL,
    session_id character varying(36),
    user_id character varying(64) NOT NULL,
    slurm_job_id character varying(64),
    status character varying(16) NOT NULL,
    job_class character varying(32) NOT NULL,
    name character varying(256),
    format character varying(32) NOT NULL,
    body text NOT NULL,
    variables text,
    shots integer NOT NULL,
    shots_done integer NOT NULL,
    num_qubits integer,
    max_calibration_age_s double precision,
    counts text,
    results text,
    error text,
    qpu_seconds double precision NOT NULL,
    calibration_age_s double precision,
    created_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision
);


--
-- Name: jobs_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.jobs_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: jobs_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.jobs_id_seq OWNED BY public.jobs.id;


--
-- Name: sessions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.sessions (
    id character varying(36) NOT NULL,
    user_id character varying(64) NOT NULL,
    slurm_job_id character varying(64),
    qpu_slots integer NOT NULL,
    created_at double precision NOT NULL,
    revoked_at double precision,
    revoke_reason text
);


--
-- Name: jobs id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.jobs ALTER COLUMN id SET DEFAULT nextval('public.jobs_id_seq'::regclass);


--
-- Data for Name: device_facts; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.device_facts VALUES ('calibrated_at', '1700000000.0');


--
-- Data for Name: jobs; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.jobs VALUES (1, 'd7913943-bdf7-4a24-9699-1c067212a5f6', '1000', '42', 'DONE', 'production', 'bell', 'pulser', '{}', '{"t": 1}', 100, 100, 2, NULL, '{"00": 60, "11": 40}', '{"counter": {"00": 60, "11": 40}}', NULL, 0.5, 3, 1796653861.6490679, 1, 1796653861.711458);
INSERT INTO public.jobs VALUES (2, 'd7913943-bdf7-4a24-9699-1c067212a5f6', '1000', '42', 'RUNNING', 'production', NULL, 'pulser', '{}', '{}', 200, 50, 2, NULL, '{"01": 50}', NULL, NULL, 0.25, 1, 1796653861.7294, 2, NULL);
INSERT INTO public.jobs VALUES (3, '559db0db-5a5f-43fc-9f2c-c4284b382a20', '1001', NULL, 'CANCELED', 'production', NULL, 'pulser', '{}', '{}', 10, 0, 1, NULL, NULL, NULL, 'canceled: epilog', 0, NULL, 1796653861.7814088, NULL, 1796653861.7955716);


--
-- Data for Name: sessions; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.sessions VALUES ('d7913943-bdf7-4a24-9699-1c067212a5f6', '1000', '42', 1, 1796653861.6261966, NULL, NULL);
INSERT INTO public.sessions VALUES ('559db0db-5a5f-43fc-9f2c-c4284b382a20', '1001', NULL, 1, 1796653861.6457484, 1796653861.7955716, 'epilog');


--
-- Name: jobs_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.jobs_id_seq', 3, true);


--
-- Name: device_facts device_facts_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.device_facts
    ADD CONSTRAINT device_facts_pkey PRIMARY KEY (key);


--
-- Name: jobs jobs_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);


--
-- Name: sessions sessions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.sessions
    ADD CONSTRAINT sessions_pkey PRIMARY KEY (id);


--
-- Name: ix_jobs_session_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_jobs_session_id ON public.jobs USING btree (session_id);


--
-- Name: ix_jobs_status; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_jobs_status ON public.jobs USING btree (status);


--
-- Name: ix_jobs_user_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_jobs_user_id ON public.jobs USING btree (user_id);


--
-- Name: ix_sessions_user_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_sessions_user_id ON public.sessions USING btree (user_id);


--
-- PostgreSQL database dump complete
--


