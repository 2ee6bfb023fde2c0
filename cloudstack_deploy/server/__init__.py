"""The team server (`csdeploy serve`): a JSON API and a dashboard over the same service
functions the CLI runs, with tokens and roles, an audit log, and a job queue in the history
store that several server processes share.

- `access`: tokens (stored as sha256), roles and env prefixes, browser sessions, the audit log;
- `queue`: the jobs table: enqueue, claim (one running job per environment), heartbeats,
  events, cancel, interrupted jobs;
- `worker`: the loop that claims jobs and runs them (service.deploy / rollback / teardown);
- `api` (JSON routes + SSE), `dashboard` (server-rendered HTML), `openapi` (the API's
  description, made from the route table), `app` (the aiohttp application).
"""
