DROP TABLE runs;
DROP TABLE events;
DROP TABLE deployments;
DROP TABLE environments;
