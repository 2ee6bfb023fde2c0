DROP TABLE audit_log;
DROP TABLE web_sessions;
DROP TABLE job_events;
DROP TABLE jobs;
DROP TABLE api_tokens;
