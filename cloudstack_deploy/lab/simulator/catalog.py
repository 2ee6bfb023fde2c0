"""The seeded catalog of a fresh simulator: what a new lab cloud offers.

Names follow a stock CloudStack install where one exists (the default isolated network
offering keeps CloudStack's own name), so a blueprint written for the lab reads like one
for a real cloud. The README documents this table; keep the two in step.
"""

from __future__ import annotations

from typing import Any

ZONE_NAME = "lab-zone-1"
DOMAIN = "ROOT"
ACCOUNT = "admin"

#: Service offerings: name -> (cpunumber, cpuspeed MHz, memory MB).
SERVICE_OFFERINGS: dict[str, tuple[int, int, int]] = {
    "micro": (1, 1000, 512),
    "small": (1, 2000, 1024),
    "medium": (2, 2000, 2048),
    "large": (4, 2000, 8192),
}

#: Templates: (name, ostypename, created, image). ``image`` is the Docker image the docker
#: backend boots (see lab/templates.py; stored as the template's internal ``_image``); None:
#: records only, the docker backend refuses to deploy it. Two bare Debian builds with
#: different dates keep "the newest matching a pattern" meaningful.
TEMPLATES: list[tuple[str, str, str, str | None]] = [
    ("Debian 12 bookworm docker 2026-11-01", "Debian GNU/Linux 12 (64-bit)", "2026-11-01T00:00:00+0000",
     "csdeploy-lab/template:debian-12-docker"),
    ("Debian 12 bookworm 2026-11-01", "Debian GNU/Linux 12 (64-bit)", "2026-11-01T00:00:00+0000",
     "csdeploy-lab/template:debian-12"),
    ("Debian 12 bookworm 2026-09-01", "Debian GNU/Linux 12 (64-bit)", "2026-09-01T00:00:00+0000",
     "csdeploy-lab/template:debian-12"),
    ("Ubuntu 24.04 noble 2026-10-15", "Ubuntu 24.04 LTS (64-bit)", "2026-10-15T00:00:00+0000", None),
]

ISOLATED_OFFERING = "DefaultIsolatedNetworkOfferingWithSourceNatService"
SHARED_OFFERING = "DefaultSharedNetworkOffering"

#: Disk offerings: name -> disksize GB (0 = custom size).
DISK_OFFERINGS: dict[str, int] = {"Custom": 0, "Small": 5, "Medium": 20}

#: Per-account resource limits (CloudStack resource type number, name, default max; -1 = unlimited).
RESOURCE_LIMITS: list[tuple[int, str, int]] = [
    (0, "user_vm", 40),
    (1, "public_ip", 40),
    (2, "volume", 80),
    (3, "snapshot", 100),
    (4, "template", 20),
    (6, "network", 20),
    (7, "vpc", 20),
    (8, "cpu", 160),
    (9, "memory", 327680),
    (10, "primary_storage", 4000),
    (11, "secondary_storage", 4000),
]

#: Guest network addressing of every isolated network (each network is its own /24).
GUEST_CIDR = "10.1.1.0/24"
#: Public addresses are loopback addresses, reachable on the machine running the lab.
PUBLIC_RANGE = "127.200.0.0/16"

NETWORK_OFFERING_SERVICES: list[dict[str, Any]] = [
    {"name": name, "provider": [{"name": "VirtualRouter"}]}
    for name in (
        "Vpn",
        "Dhcp",
        "Dns",
        "Firewall",
        "Lb",
        "UserData",
        "SourceNat",
        "StaticNat",
        "PortForwarding",
    )
]
