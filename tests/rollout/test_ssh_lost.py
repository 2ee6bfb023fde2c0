"""A host that stops answering is named as such, however asyncssh words it: lost mid-command
(ConnectionLost), or closed by the keepalive before a command's session was opened (asyncssh's
ChannelOpenError "SSH connection closed": the lab saw it when a worker VM was paused just as
its start was sent, and the deploy said "SSH failed" instead of naming the host as gone).
The lab story tests/e2e/test_real_apps.py (step h) pauses a real VM; here the two errors are
asyncssh's own classes, raised where its connection would raise them."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncssh
import pytest

from cloudstack_deploy.rollout.hosts import Connection, HostError, lost

from .test_commands import WEB


class Gone:
    """What asyncssh's connection does once it is closed (or closes under a command)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def run(self, *args: object, **kwargs: object) -> None:
        raise self.exc

    def create_process(self, *args: object, **kwargs: object) -> None:
        raise self.exc


CLOSED = asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "SSH connection closed")
LOST = asyncssh.ConnectionLost("Keepalive timer expired")


@pytest.mark.parametrize("exc", [CLOSED, LOST])
def test_a_host_gone_before_or_during_a_command_stopped_answering(exc: Exception) -> None:
    conn = Connection(WEB, Gone(exc), Counter())  # type: ignore[arg-type]
    with pytest.raises(HostError) as err:
        asyncio.run(conn.run(["true"], what="start worker v2"))
    assert str(err.value).startswith("demo-web-1: stopped answering: the SSH connection was lost (start worker v2)")
    with pytest.raises(HostError) as err:
        asyncio.run(conn.pipe(["cat"], what="dump of db"))
    assert "demo-web-1: stopped answering" in str(err.value)


def test_a_refused_session_is_not_taken_for_a_lost_host() -> None:
    refused = asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "session refused")
    assert not lost(refused) and lost(CLOSED) and lost(LOST)
    conn = Connection(WEB, Gone(refused), Counter())  # type: ignore[arg-type]
    with pytest.raises(HostError) as err:
        asyncio.run(conn.run(["true"], what="start worker v2"))
    assert "SSH failed" in str(err.value) and "stopped answering" not in str(err.value)
