"""Host-local VLAN ids for networks on the integration bridge.

Every network wired on br-int gets a local VLAN (the access tag of its
ports), like Neutron's OVS agent. The allocation is stored in each port's
``other_config`` (``net_uuid``, ``tag``, segment fields), so a restarted agent
rebuilds it from OVSDB instead of re-tagging ports - VMs keep their traffic
across an agent restart.
"""

import threading

from agentkit.api import type_driver

MIN_VLAN, MAX_VLAN = 1, 4094
# Ports not (or no longer) wired. NORMAL switching does NOT drop VLAN 4095
# (Neutron needs a flow for that): dead ports are also made ``protected`` so
# they cannot reach each other either, and no live port is on VLAN 4095.
DEAD_VLAN = 4095


class LocalVlanExhausted(RuntimeError):
    """More than 4094 networks on one host."""


def port_other_config(network_id: str, vlan: int,
                      segment: type_driver.SegmentRealisation) -> dict[str, str]:
    """Port.other_config recording a network's local VLAN and segment.

    Neutron's OVS agent keys (net_uuid, tag, network_type, physical_network,
    segmentation_id), so tools that read them keep working.
    """
    seg_id = segment.vlan_id if segment.vlan_id is not None else segment.tunnel_key
    return {'net_uuid': network_id, 'tag': str(vlan),
            'network_type': segment.network_type,
            'physical_network': segment.physical_network or '',
            'segmentation_id': '' if seg_id is None else str(seg_id)}


class LocalVlanManager:

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_network: dict[str, int] = {}
        self._segments: dict[str, type_driver.SegmentRealisation] = {}

    def restore(self, network_id: str, vlan: int) -> None:
        """Adopt an allocation found in OVSDB at start."""
        with self._lock:
            if MIN_VLAN <= vlan <= MAX_VLAN and vlan not in self._by_network.values():
                self._by_network.setdefault(network_id, vlan)

    def get_or_allocate(self, network_id: str,
                        segment: type_driver.SegmentRealisation) -> int:
        with self._lock:
            self._segments[network_id] = segment
            vlan = self._by_network.get(network_id)
            if vlan is not None:
                return vlan
            used = set(self._by_network.values())
            for vlan in range(MIN_VLAN, MAX_VLAN + 1):
                if vlan not in used:
                    self._by_network[network_id] = vlan
                    return vlan
        raise LocalVlanExhausted('no free local VLAN on this host')

    def get(self, network_id: str) -> int | None:
        with self._lock:
            return self._by_network.get(network_id)

    def segment(self, network_id: str) -> type_driver.SegmentRealisation | None:
        """The segment a network was last wired with (None if only restored)."""
        with self._lock:
            return self._segments.get(network_id)

    def wired_networks(self) -> list[tuple[str, int, type_driver.SegmentRealisation]]:
        """(network, local VLAN, segment) of every network wired by this run."""
        with self._lock:
            return [(net, self._by_network[net], seg)
                    for net, seg in self._segments.items() if net in self._by_network]

    def release(self, network_id: str) -> int | None:
        with self._lock:
            self._segments.pop(network_id, None)
            return self._by_network.pop(network_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_network)
