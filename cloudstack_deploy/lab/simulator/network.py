"""Public IPs of the simulated cloud, reachable on this machine as CloudStack would allow.

A public IP is a loopback address (``127.200.x.y``). Like an isolated network's virtual
router, ingress is closed until a firewall rule opens it, and then only reaches a VM through
static NAT, a port-forwarding rule or an applied load-balancer rule (``routes.py``, spread
over a rule's members as ``balancer.py`` says): so a deploy tool that forgets its firewall
rule really cannot SSH in. Only the ``(address, port)`` pairs the rules open *and* a VM
serves get a real listening socket; a removed rule closes it (new connections are refused). Every connection is
re-checked against the current state when accepted (source CIDRs, VM Running), and then
copied to the VM's guest (see ``guest.py``). When the VM stops, its live connections are closed.

One simulator per range: the public network claims its range when it starts (a UDP socket on
the range's first address, which no VM gets, at :data:`CLAIM_PORT`) and binds every listener
the saved state asks for; if another process holds either, typically the simulator of another
lab on the same range, it refuses to start (:class:`PublicRangeInUse`) rather than leave
traffic for its VMs to reach the other lab's.

Connections are tracked here and closed explicitly, and every wait in ``stop()`` is bounded
(``closing.py``), so the network behaves the same on Python 3.11, 3.12 and 3.13, whose
``asyncio.Server`` close semantics differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable

from ...errors import OperationFailed
from .balancer import MAX_ATTEMPTS, Balancer, rule_at
from .closing import bounded
from .engine import Simulator
from .guest import Guest, GuestBackend, MemoryBackend
from .routes import Route, exposed, route

log = logging.getLogger("csdeploy.lab.simulator.network")

#: How long a connection to a guest may take (the virtual router's HAProxy: timeout connect 5000).
CONNECT_TIMEOUT = 5.0
_COPY_CHUNK = 65536
#: The UDP port of a range's claim (on the range's first address): above Linux's ephemeral
#: ports (32768-60999), so no client socket ever takes it by chance.
CLAIM_PORT = 61999
#: How long ``stop()`` waits for a reconcile in progress (a guest starting or stopping).
SETTLE_TIMEOUT = 30.0


class PublicRangeInUse(OperationFailed):
    """The public range, or an address of it, is held by another process: the simulator
    does not start (traffic for its VMs could reach someone else's)."""


def claim_range(public_range: str) -> socket.socket:
    """Hold ``public_range`` for this process: a UDP socket bound to its first address at
    :data:`CLAIM_PORT` (no SO_REUSEADDR, so a second bind fails; the kernel frees it when the
    process ends, however it ends). Raises :class:`PublicRangeInUse` if another holds it."""
    net = ipaddress.ip_network(public_range, strict=False)
    first = str(next(iter(net.hosts()), net.network_address))
    family = socket.AF_INET6 if net.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((first, CLAIM_PORT))
    except OSError as exc:
        sock.close()
        raise PublicRangeInUse(
            f"the public range {public_range} is in use ({first} udp/{CLAIM_PORT}: "
            f"{exc.strerror or exc}); another lab's simulator probably holds it: refusing to start",
            hint=f"see who holds it: ss -lunp 'src {first}'; stop that lab "
                 "(`csdeploy lab down` in its CSDEPLOY_HOME) or give this simulator another "
                 "--public-range") from None
    return sock


# ---- the forwarder --------------------------------------------------------------------------
class PublicNetwork:
    """Keeps listeners and guests in step with the simulator state (see the module doc).

    Reconciliation runs as one background task, triggered by ``sim.listeners`` and
    coalescing bursts; ``await settled()`` waits until it has caught up with the state.
    """

    def __init__(self, sim: Simulator, backend: GuestBackend | None = None) -> None:
        self.sim = sim
        self.backend = backend or MemoryBackend(sim)
        self.guests: dict[str, Guest] = {}
        self.balancer = Balancer()
        self.servers: dict[tuple[str, int], asyncio.Server] = {}
        self._bind_failed: set[tuple[str, int]] = set()
        #: Every live connection (its handler task) and the VM it reaches ("" until routed).
        self._conns: dict[asyncio.Task[None], str] = {}
        self._claim: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._dirty = False
        self._running = False

    # -- lifecycle --
    async def start(self, claim: socket.socket | None = None) -> None:
        """Claim the range (or take ``claim``, from :func:`claim_range`), start the Running
        VMs' guests and open every listener the state asks for; raises
        :class:`PublicRangeInUse`, with nothing left open, if the range or one of those
        addresses is held by another process."""
        self._claim = claim or claim_range(self.sim.settings.public_range)
        self._running = True
        try:
            await self._sync_guests()
            await self._sync_listeners(strict=True)
        except BaseException:
            await self.stop()
            raise
        self.sim.listeners.append(self.changed)
        self.changed()  # whatever changed while starting
        await self.settled()

    async def stop(self) -> None:
        """Close listeners and every live connection, stop the guests, release the range.
        Each step is bounded (see ``closing.py``): a stop always ends."""
        self._running = False
        with contextlib.suppress(ValueError):
            self.sim.listeners.remove(self.changed)
        task = self._task
        if task is not None and not task.done():
            if not await bounded(asyncio.shield(task), "the public network's last reconcile",
                                 SETTLE_TIMEOUT):
                task.cancel()
                await bounded(asyncio.gather(task, return_exceptions=True), "cancelling the reconcile")
        for server in self.servers.values():
            server.close()  # no new connections (live ones stay open: dropped next)
        await self._drop(lambda vm_id: True, "closing the public network's connections")
        for (address, port), server in self.servers.items():
            await bounded(server.wait_closed(), f"closing the listener on {address}:{port}")
        self.servers.clear()
        guests = list(self.guests.values())
        self.guests.clear()
        for guest in guests:
            await self._stop_guest(guest)
        await self.backend.close()
        if self._claim is not None:
            self._claim.close()
            self._claim = None

    async def _drop(self, which: Callable[[str], bool], what: str) -> None:
        """Close the live connections whose VM ``which`` accepts, and wait (bounded) until
        their handlers have closed both sides."""
        tasks = [task for task, vm_id in self._conns.items() if which(vm_id)]
        for task in tasks:
            task.cancel()
        if tasks:
            await bounded(asyncio.gather(*tasks, return_exceptions=True), f"{what} ({len(tasks)})")

    def changed(self) -> None:
        """A ``sim.listeners`` callback: schedule a reconcile (never blocks)."""
        if not self._running:
            return
        self._dirty = True
        if self._task is None or self._task.done():
            try:
                self._task = asyncio.get_running_loop().create_task(self._reconcile_loop())
            except RuntimeError:
                log.debug("state changed outside the event loop; reconcile deferred")

    async def settled(self) -> None:
        """Wait until listeners and guests match the state as of this call."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _reconcile_loop(self) -> None:
        while self._dirty and self._running:
            self._dirty = False
            try:
                await self._sync_guests()
                await self._sync_listeners()
            except Exception:  # keep serving whatever else still works
                log.exception("public network reconcile failed")

    # -- guests --
    async def _sync_guests(self) -> None:
        running = {vm_id for vm_id, vm in self.sim.col("vms").items()
                   if vm.get("state") == "Running" and not vm.get("_removed")}
        for vm_id in [v for v in self.guests if v not in running]:
            # Powered off: its connections end now, whatever the guest does (a stopped
            # container's network namespace just vanishes, sending no reset).
            await self._drop(lambda conn_vm, gone=vm_id: conn_vm == gone, f"VM {vm_id}: closing its connections")
            await self._stop_guest(self.guests.pop(vm_id))
        for vm_id in running - set(self.guests):
            guest = self.backend.create(self.sim.col("vms")[vm_id])
            try:
                await guest.start()
            except Exception as exc:
                log.warning("VM %s: guest failed to start: %s", vm_id, exc)
                await self._stop_guest(guest)
                continue
            self.guests[vm_id] = guest

    @staticmethod
    async def _stop_guest(guest: Guest) -> None:
        try:
            await bounded(guest.stop(), f"VM {guest.vm_id}: stopping its guest", SETTLE_TIMEOUT)
        except Exception as exc:
            log.warning("VM %s: guest failed to stop cleanly: %s", guest.vm_id, exc)

    # -- listeners --
    async def _sync_listeners(self, *, strict: bool = False) -> None:
        """Open and close listeners to match the state. A listener that cannot be opened is a
        warning while running (retried at the next change); at start (``strict``), where it
        means another process holds the address, it is :class:`PublicRangeInUse`."""
        wanted = exposed(self.sim, self.backend)
        for key in [k for k in self.servers if k not in wanted]:
            self.servers.pop(key).close()  # new connections are refused; live ones finish
            log.info("public %s:%s closed", *key)
        self._bind_failed &= wanted
        for address, port in sorted(wanted - set(self.servers)):
            try:
                server = await asyncio.start_server(
                    lambda r, w, a=address, p=port: self._accept(r, w, a, p), address, port,
                    reuse_address=True)
            except OSError as exc:
                if strict:
                    raise PublicRangeInUse(
                        f"public address {address}:{port} cannot be opened ({exc.strerror or exc}); "
                        f"another process, probably another lab's simulator on the range "
                        f"{self.sim.settings.public_range}, holds it: refusing to start",
                        hint=f"see who holds it: ss -ltnp 'src {address}'; stop that lab or give "
                             "this simulator another --public-range") from None
                if (address, port) not in self._bind_failed:
                    self._bind_failed.add((address, port))
                    log.warning("public %s:%s cannot be opened (%s); traffic to it will not "
                                "reach the VM", address, port, exc.strerror or exc)
                continue
            self._bind_failed.discard((address, port))
            self.servers[(address, port)] = server
            log.info("public %s:%s open", address, port)

    # -- connections --
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      address: str, port: int) -> None:
        task = asyncio.current_task()
        if task is None or not self._running:  # accepted while stopping
            writer.transport.abort()
            return
        self._conns[task] = ""
        upstream: asyncio.StreamWriter | None = None
        dropped = False
        try:
            peer = writer.get_extra_info("peername") or ("?", 0)
            routes, why = route(self.sim, address, port, str(peer[0]), self.balancer)
            connected = await self._connect(routes, address, port, str(peer[0]), why)
            if connected is None:
                return
            (up_reader, upstream), vm_id = connected
            self._conns[task] = vm_id
            lb_key = (rule_at(self.sim, address, port), vm_id)
            self.balancer.open[lb_key] += 1
            try:
                await asyncio.gather(_copy(reader, upstream, writer), _copy(up_reader, writer, upstream))
            finally:
                self.balancer.open[lb_key] -= 1
        except asyncio.CancelledError:
            # stop() or a stopped VM cancels us (_drop): both sides are dropped at once. End
            # quietly, since asyncio's stream server logs a handler task that ends cancelled
            # as an error. We own this task: nobody else awaits its cancellation.
            dropped = True
        finally:
            ends = [w for w in (writer, upstream) if w is not None]
            for w in ends:
                if dropped:
                    w.transport.abort()
                else:
                    w.close()
            for w in ends if not dropped else ():
                with contextlib.suppress(asyncio.CancelledError):
                    if not await bounded(w.wait_closed(), f"closing a connection to {address}:{port}"):
                        w.transport.abort()  # unsent data the peer does not read: drop it
            self._conns.pop(task, None)

    async def _connect(self, routes: list[Route], address: str, port: int, source: str, why: str
                       ) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter], str] | None:
        """A connection to the first route that takes it (a load balancer's members in turn,
        a refusing one marked down: HAProxy's retries and redispatch); None if none does."""
        if not routes:
            log.debug("%s -> %s:%s dropped: %s", source, address, port, why)
            return None
        for vm_id, private in routes[:MAX_ATTEMPTS]:
            guest = self.guests.get(vm_id)
            target = guest.target(private) if guest else None
            if target is None:
                log.debug("%s -> %s:%s: nothing listens in VM %s", source, address, port, vm_id)
                self.balancer.failed(vm_id)
                continue
            try:
                streams = await asyncio.wait_for(asyncio.open_connection(*target), CONNECT_TIMEOUT)
            except OSError as exc:
                log.debug("%s:%s -> guest %s unreachable: %s", address, port, target, exc)
                self.balancer.failed(vm_id)
                continue
            self.balancer.served(vm_id)
            return streams, vm_id
        return None


async def _copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                other: asyncio.StreamWriter) -> None:
    """Copy one direction; pass EOF on as a half-close; on an error, drop both sides."""
    try:
        while data := await src.read(_COPY_CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof() and not dst.is_closing():
            dst.write_eof()
    except OSError:
        dst.close()
        other.close()
