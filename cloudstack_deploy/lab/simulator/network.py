"""Public IPs of the simulated cloud, reachable on this machine as CloudStack would allow.

A public IP is a loopback address (``127.200.x.y``). Like an isolated network's virtual
router, ingress is closed until a firewall rule opens it, and then only reaches a VM through
static NAT, a port-forwarding rule or an applied load-balancer rule (spread over its members
as ``balancer.py`` says): so a deploy tool that forgets its firewall rule really cannot SSH in. Only the ``(address, port)`` pairs the rules open *and* a VM serves get a real
listening socket; a removed rule closes it (new connections are refused). Every connection is
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
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ...errors import OperationFailed
from .balancer import MAX_ATTEMPTS, Balancer, applied_rules, live_members, rule_at
from .closing import bounded
from .engine import Simulator
from .guest import Guest, GuestBackend, MemoryBackend, ports_in

log = logging.getLogger("csdeploy.lab.simulator.network")

#: A forwarded range up to this many ports is exposed whole when the guest serves any port;
#: wider ranges expose only the ports the guest declares.
MAX_RANGE_EXPOSED = 64
#: Rules not (or no longer) applied on the virtual router.
INACTIVE_RULE_STATES = frozenset({"Add", "Staged", "Revoke", "Error"})
ALL_PORTS = (1, 65535)
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

Route = tuple[str, int]  # (vm id, private port)


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


# ---- the rules (pure functions of the state) ------------------------------------------------
def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _live(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (i for i in items if not i.get("_removed"))


def _cidrs(value: Any) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    parts = value if isinstance(value, list) else str(value or "").split(",")
    nets = []
    for part in parts:
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.ip_network(str(part).strip(), strict=False))
    return nets


def _source_in(source: str, cidrlist: Any) -> bool:
    """Whether ``source`` is in a cidrlist; an empty list means any (CloudStack's default)."""
    if not cidrlist or (isinstance(cidrlist, str) and not cidrlist.strip()):
        return True
    nets = _cidrs(cidrlist)
    try:
        addr = ipaddress.ip_address(source)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr.version == n.version and addr in n for n in nets)


def _rule_active(rule: dict[str, Any]) -> bool:
    return not rule.get("_removed") and rule.get("state") not in INACTIVE_RULE_STATES


def _tcp_range(rule: dict[str, Any], start: str, end: str) -> tuple[int, int] | None:
    """The TCP port range a rule covers (``all`` without ports: every port), or None."""
    proto = str(rule.get("protocol") or "").lower()
    if proto not in ("tcp", "all"):
        return None
    lo, hi = _int(rule.get(start)), _int(rule.get(end))
    if lo is None:
        return ALL_PORTS
    return (max(lo, 1), min(hi if hi is not None else lo, 65535))


def _firewalls(sim: Simulator) -> dict[str, list[tuple[tuple[int, int], dict[str, Any]]]]:
    """Active firewall rules with a TCP range, by public IP id (one pass over the rules)."""
    out: dict[str, list[tuple[tuple[int, int], dict[str, Any]]]] = {}
    for rule in _live(sim.col("firewall_rules").values()):
        if _rule_active(rule) and (r := _tcp_range(rule, "startport", "endport")) is not None:
            out.setdefault(rule.get("ipaddressid") or "", []).append((r, rule))
    return out


def _firewall(sim: Simulator, ip_id: str) -> list[tuple[tuple[int, int], dict[str, Any]]]:
    return _firewalls(sim).get(ip_id, [])


def _all_forwards(sim: Simulator) -> dict[str, list[tuple[tuple[int, int], int, dict[str, Any]]]]:
    """Active TCP port-forwarding rules by public IP id: (public range, first private port, rule)."""
    out: dict[str, list[tuple[tuple[int, int], int, dict[str, Any]]]] = {}
    for rule in _live(sim.col("pf_rules").values()):
        if not _rule_active(rule) or str(rule.get("protocol") or "").lower() != "tcp":
            continue
        pub = _tcp_range(rule, "publicport", "publicendport")
        private = _int(rule.get("privateport"))
        if pub is not None and private is not None:
            out.setdefault(rule.get("ipaddressid") or "", []).append((pub, private, rule))
    return out


def _forwards(sim: Simulator, ip_id: str) -> list[tuple[tuple[int, int], int, dict[str, Any]]]:
    return _all_forwards(sim).get(ip_id, [])


def _candidates(backend: GuestBackend, vm: dict[str, Any], lo: int, hi: int) -> list[int]:
    """Private ports in ``lo..hi`` worth a listener: what the guest serves, capped."""
    if lo > hi:
        return []
    if backend.serves_all_ports and hi - lo + 1 <= MAX_RANGE_EXPOSED:
        return list(range(lo, hi + 1))
    return ports_in(backend.declared_ports(vm), lo, hi)


def exposed(sim: Simulator, backend: GuestBackend) -> set[tuple[str, int]]:
    """Every ``(public address, port)`` the rules open towards a port some VM serves."""
    vms = sim.col("vms")
    out: set[tuple[str, int]] = set()
    firewalls, forwards, balancers = _firewalls(sim), _all_forwards(sim), applied_rules(sim)
    for ip in _live(sim.col("public_ips").values()):
        address = ip.get("ipaddress")
        if not address:
            continue
        fw = firewalls.get(ip["id"], [])
        for rule in balancers.get(ip["id"], []):
            public, private = int(rule["publicport"]), int(rule["privateport"])
            if any(flo <= public <= fhi for (flo, fhi), _ in fw) and any(
                    _candidates(backend, vm, private, private) for vm in live_members(sim, rule)):
                out.add((address, public))
        for (plo, phi), private, rule in forwards.get(ip["id"], []):
            vm = vms.get(rule.get("virtualmachineid") or "")
            if vm is None or vm.get("_removed"):
                continue
            for (flo, fhi), _ in fw:
                lo, hi = max(plo, flo), min(phi, fhi)
                shift = private - plo
                out.update((address, p - shift) for p in _candidates(backend, vm, lo + shift, hi + shift))
        if ip.get("isstaticnat") and ip.get("virtualmachineid"):
            vm = vms.get(ip["virtualmachineid"])
            if vm is not None and not vm.get("_removed"):
                for (flo, fhi), _ in fw:
                    out.update((address, p) for p in _candidates(backend, vm, flo, fhi))
    return out


def route(sim: Simulator, address: str, port: int, source: str,
          balancer: Balancer | None = None) -> tuple[list[Route], str]:
    """Where a TCP connection from ``source`` to ``address:port`` may go, in the order to try:
    one (VM, port) for static NAT and port forwarding, a load-balancer rule's Running members
    in its algorithm's order; empty, with the reason, when nothing may take it."""
    ip = next((i for i in _live(sim.col("public_ips").values()) if i.get("ipaddress") == address), None)
    if ip is None:
        return [], "no such public IP"
    covering = [rule for (lo, hi), rule in _firewall(sim, ip["id"]) if lo <= port <= hi]
    if not covering:
        return [], "no firewall rule opens the port"
    if not any(_source_in(source, rule.get("cidrlist")) for rule in covering):
        return [], f"source {source} not in the firewall rule's cidrlist"
    dest: Route | None = None
    for (lo, hi), private, rule in _forwards(sim, ip["id"]):
        if lo <= port <= hi:
            if not _source_in(source, rule.get("cidrlist")):
                return [], f"source {source} not in the port-forwarding rule's cidrlist"
            dest = (str(rule.get("virtualmachineid")), private + port - lo)
            break
    if dest is None:
        lb = next((r for r in applied_rules(sim).get(ip["id"], []) if int(r["publicport"]) == port), None)
        if lb is not None:
            return _balance(sim, lb, source, balancer or Balancer())
    if dest is None and ip.get("isstaticnat") and ip.get("virtualmachineid"):
        dest = (str(ip["virtualmachineid"]), port)
    if dest is None:
        return [], "no static NAT, port-forwarding or load-balancer rule"
    vm = sim.get("vms", dest[0])
    if vm is None or vm.get("_removed") or vm.get("state") != "Running":
        return [], f"VM is {vm.get('state') if vm else 'gone'}"
    return [dest], "ok"


def _balance(sim: Simulator, rule: dict[str, Any], source: str, balancer: Balancer) -> tuple[list[Route], str]:
    """A load-balancer rule's Running members, in the order its algorithm tries them."""
    cidrs = str(rule.get("cidrlist") or "").replace(" ", ",")  # the rule's own allowed sources (4.18+)
    if cidrs and not _source_in(source, cidrs):
        return [], f"source {source} not in the load-balancer rule's cidrlist"
    running = [vm["id"] for vm in live_members(sim, rule) if vm.get("state") == "Running"]
    if not running:
        return [], "no member of the load-balancer rule is Running"
    private = int(rule["privateport"])
    return [(vm_id, private) for vm_id in balancer.order(rule, running, source)], "ok"


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
