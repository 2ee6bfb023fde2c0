-- depends: 0003.server
-- Logical backups and restores (`csdeploy backup`, `csdeploy restore`): what was dumped or
-- restored, of which environment's accessory, where it is kept, and how it ended. A table of
-- its own: runs and deployments keep their fixed kinds (older csdeploy versions read them).
CREATE TABLE backups (
    id TEXT PRIMARY KEY,
    action TEXT NOT NULL CHECK (action IN ('backup', 'restore')),
    env TEXT NOT NULL,
    accessory TEXT NOT NULL,
    kind TEXT NOT NULL,
    backup TEXT NOT NULL,
    location TEXT NOT NULL,
    size BIGINT,
    sha256 TEXT,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    error TEXT,
    done_by TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX backups_env ON backups (env, at);
