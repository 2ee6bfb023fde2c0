"""Helpers shared by several test packages (one place, imported as ``tests.support.X``).

- ``cli``: csdeploy's CLI in process (click's runner) and as a subprocess (``run_cli``).
- ``sim``: in-process simulators: a loopback range of their own, a config, a `cs` client.
- ``cloud``: ``CloudView``, what a user with the `cs` client sees in a cloud (never our code).
- ``netlab``: a simulator's public network without HTTP, with SSH probes.
- ``docker``: the docker CLI for checks, why Docker tests cannot run here, free ports.
- ``lab``: a whole lab (``csdeploy lab up``) in a CSDEPLOY_HOME of the test's own.

Tests that need the Docker engine carry the ``lab`` marker: every test under tests/lab and
tests/e2e, and any test that uses the ``docker_engine`` fixture (see tests/conftest.py).
"""
