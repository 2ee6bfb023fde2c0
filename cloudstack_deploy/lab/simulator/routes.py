"""Where the simulated cloud's rules let a TCP connection to a public IP go: pure functions
of the simulator state, used by the public network (``network.py``).

Like an isolated network's virtual router: ingress needs an active firewall rule covering the
port (and the source in its CIDRs), then reaches one VM through a port-forwarding rule or
static NAT, or a load-balancer rule's Running members in its algorithm's order
(``balancer.py``). :func:`exposed` is every ``(address, port)`` worth a listening socket;
:func:`route` decides each connection when it is accepted.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Iterator
from typing import Any

from .balancer import Balancer, applied_rules, live_members
from .engine import Simulator
from .guest import GuestBackend, ports_in

#: A forwarded range up to this many ports is exposed whole when the guest serves any port;
#: wider ranges expose only the ports the guest declares.
MAX_RANGE_EXPOSED = 64
#: Rules not (or no longer) applied on the virtual router.
INACTIVE_RULE_STATES = frozenset({"Add", "Staged", "Revoke", "Error"})
ALL_PORTS = (1, 65535)

Route = tuple[str, int]  # (vm id, private port)


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
