"""The rollout stage: Docker, registry, kamal-proxy, app, workers and accessories over SSH.

`commands/` only *builds* commands (argv lists and small shell scripts, pure functions);
`hosts.py` carries them over one SSH connection per host; `deploy.py` decides what runs
where and in which order.
"""
