-- depends: 0004.backups
-- Scheduled backups (`accessories.NAME.backups.schedule`, run by `csdeploy serve`): one row
-- per (environment, accessory, due minute) that a scheduler queued a backup job for. The
-- primary key makes the database refuse a second job for one slot, however many servers
-- share the store; the newest row of a pair is where a restarted server resumes (the latest
-- missed slot is run once, older ones never).
CREATE TABLE backup_slots (
    env TEXT NOT NULL,
    accessory TEXT NOT NULL,
    due_at TEXT NOT NULL,
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    schedule TEXT NOT NULL,
    queued_at TEXT NOT NULL,
    queued_by TEXT NOT NULL,
    PRIMARY KEY (env, accessory, due_at)
);
CREATE INDEX backup_slots_job ON backup_slots (job_id);
