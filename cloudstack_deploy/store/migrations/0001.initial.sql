-- csdeploy's history: environments, deployments, events per deployment, nightly/reap runs.
-- One migration set for SQLite and PostgreSQL: portable types only. Times are UTC text,
-- 'YYYY-MM-DDTHH:MM:SS.ffffffZ', so they sort and compare as text in both; ids are UUIDs
-- made by the client, so writers on different machines never collide.

CREATE TABLE environments (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    cloud TEXT NOT NULL,
    service TEXT,
    network_id TEXT,
    created_at TEXT,
    created_by TEXT,
    expires_at TEXT,
    torn_down_at TEXT,
    torn_down_by TEXT,
    torn_down_how TEXT
);
-- At most one live (not torn down) row per environment name and cloud.
CREATE UNIQUE INDEX environments_live ON environments (cloud, name) WHERE torn_down_at IS NULL;
CREATE INDEX environments_name ON environments (name, created_at);

CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    environment_id TEXT REFERENCES environments (id),
    env TEXT NOT NULL,
    cloud TEXT NOT NULL,
    service TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('deploy', 'rollback')),
    status TEXT NOT NULL CHECK (status IN ('pending', 'deploying', 'deployed', 'failed', 'rolled_back')),
    deployed_by TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    duration_seconds DOUBLE PRECISION,
    error TEXT
);
CREATE INDEX deployments_env ON deployments (env, started_at);
CREATE INDEX deployments_started ON deployments (started_at);

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    type TEXT NOT NULL CHECK (type IN ('deploy_started', 'deploy_completed', 'deploy_failed', 'rollback')),
    at TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_deployment ON events (deployment_id, at);

CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('nightly', 'reap')),
    cloud TEXT NOT NULL,
    prefix TEXT,
    env TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'passed', 'failed')),
    started_by TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    summary TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX runs_started ON runs (started_at);
