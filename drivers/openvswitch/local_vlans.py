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
DEAD_VLAN = 4095  # ports not (or no longer) wired: OVS drops their traffic


class LocalVlanExhausted(RuntimeError):
    """More than 4094 networks on one host."""


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

    def release(self, network_id: str) -> int | None:
        with self._lock:
            self._segments.pop(network_id, None)
            return self._by_network.pop(network_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_network)
