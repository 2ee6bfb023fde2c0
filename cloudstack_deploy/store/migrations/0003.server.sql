-- depends: 0002.processes
-- The team server (`csdeploy serve`): API tokens, the shared job queue with each job's
-- progress events, browser sessions and the audit log. Portable types only, like 0001.

-- A token is stored as the sha256 of its text (the text is shown once, when made).
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'deployer', 'admin')),
    env_prefix TEXT,
    token_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at TEXT,
    last_used_at TEXT
);
CREATE UNIQUE INDEX api_tokens_hash ON api_tokens (token_hash);
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

-- The queue. A worker claims a queued job (PostgreSQL: FOR UPDATE SKIP LOCKED) and keeps
-- heartbeat_at fresh while it runs; a running job whose heartbeat is older than the bound
-- (or whose process is gone, on its own machine) is marked interrupted by any worker.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    env TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled',
                                           'interrupted')),
    requested_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    worker_pid INTEGER,
    worker_host TEXT,
    heartbeat_at TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT
);
-- One environment never has two jobs running at once: the database refuses the second claim.
CREATE UNIQUE INDEX jobs_one_running_per_env ON jobs (env) WHERE status = 'running';
CREATE INDEX jobs_queue ON jobs (status, created_at);
CREATE INDEX jobs_env ON jobs (env, created_at);

-- Progress events of a job, numbered by the one worker that runs it.
CREATE TABLE job_events (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    at TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- Dashboard sessions: the cookie's value is stored as its sha256, with the session's CSRF token.
CREATE TABLE web_sessions (
    id_hash TEXT PRIMARY KEY,
    token_id TEXT NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

-- Who did (or was refused) what through the server.
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT,
    action TEXT NOT NULL,
    target TEXT,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
