-- depends: 0001.initial
-- The process writing a run or deployment while it is in progress (pid on host), so a reader
-- can tell one whose process is gone (killed mid-way: it never wrote its outcome) from one
-- still going. A table of its own rather than new columns, because older csdeploy versions
-- read runs and deployments with SELECT * into fixed fields. A row goes when its run or
-- deployment finishes.
CREATE TABLE processes (
    record_id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    started_at TEXT NOT NULL
);
