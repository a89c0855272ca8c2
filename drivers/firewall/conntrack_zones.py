"""Conntrack zones per network, stable across agent restarts.

Why zones: every VM of the host is filtered in the root namespace, so
without zones two projects that use the same addresses would share
connection-tracking entries — a packet of one project could pass as
"ESTABLISHED" thanks to a connection of the other. Each network gets a
zone of its own (``-j CT --zone N`` in the raw table), as in Neutron's
iptables firewall.

Why recovered from the kernel: a restarted agent must give every network
the zone it had, or established connections would be re-evaluated as new
(and cut where the rules only allow replies). The zone rules carry the
network id in their comment, so reading the raw table once at start is
enough; nothing is kept on disk.
"""

from __future__ import annotations

import re
import threading

from agentkit.lib import naming

# Above the zones Neutron's OVS firewall derives from local VLANs (1-4094),
# so a host migrating between the two never mixes them.
FIRST_ZONE = 4097
LAST_ZONE = 65535
COMMENT_PREFIX = 'zone of network '
_ZONE_RULE_RE = re.compile(
    r'--comment "?%s(?P<net>[0-9a-f-]{36})"?.* --zone (?P<zone>\d+)' % COMMENT_PREFIX)


class ZonesExhausted(RuntimeError):
    """More networks with filtered ports on this host than conntrack zones."""


class ZoneMap:
    """Network id -> conntrack zone; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._zones: dict[str, int] = {}
        # Given up, but their connections not flushed yet: not handed out.
        self._draining: set[int] = set()

    def recover(self, raw_rules: str) -> dict[str, int]:
        """Adopt the zones found in ``iptables-save -t raw`` text; returns them."""
        found: dict[str, int] = {}
        for line in raw_rules.splitlines():
            match = _ZONE_RULE_RE.search(line)
            if match and naming.is_valid_id(match['net']):
                zone = int(match['zone'])
                if FIRST_ZONE <= zone <= LAST_ZONE:
                    found.setdefault(match['net'], zone)
        with self._lock:
            taken = set(self._zones.values())
            for net, zone in found.items():
                if net not in self._zones and zone not in taken:
                    self._zones[net] = zone
                    taken.add(zone)
            return dict(self._zones)

    def zone(self, network_id: str) -> int:
        """The network's zone, allocating the lowest free one if it has none."""
        with self._lock:
            zone = self._zones.get(network_id)
            if zone is None:
                taken = set(self._zones.values()) | self._draining
                zone = next((z for z in range(FIRST_ZONE, LAST_ZONE + 1) if z not in taken),
                            None)
                if zone is None:
                    raise ZonesExhausted('no free conntrack zone for network %s' % network_id)
                self._zones[network_id] = zone
            return zone

    def release_unused(self, in_use: set[str]) -> dict[str, int]:
        """Forget networks not in ``in_use``; returns the released {network: zone}.

        Their zones stay out of use until :meth:`drained` says their
        connections were flushed: another network must never inherit them.
        """
        with self._lock:
            gone = {n: z for n, z in self._zones.items() if n not in in_use}
            for net in gone:
                del self._zones[net]
            self._draining |= set(gone.values())
            return gone

    def drained(self, zones: set[int]) -> None:
        """The connections of these given-up zones are gone: reusable."""
        with self._lock:
            self._draining -= zones

    @staticmethod
    def comment(network_id: str) -> str:
        """The rule comment that lets :meth:`recover` find the network again."""
        return COMMENT_PREFIX + network_id
