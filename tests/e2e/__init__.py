"""End-to-end tests of the rollout on the local lab: real VMs, real Docker, real kamal-proxy."""
