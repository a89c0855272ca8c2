"""What a starting agent adopts from OVSDB, and what it may remove.

Why: the agent must survive its own restart without touching live traffic,
so it rebuilds its view (local VLANs) from what the previous run left in
OVSDB instead of re-creating it. Only wiring that no port uses is removed:
per-network patch and tunnel ports of networks that have no VM or service
port wired on br-int any more (their last port went, or was unbound, while
the agent was down); a port wired again later gets its wiring back.
Pure functions over :class:`agentkit.lib.ovs.ports.PortState` snapshots.
"""

from __future__ import annotations

from collections.abc import Iterable

from agentkit.lib.ovs import ports as ovs_ports
from drivers.openvswitch import local_vlans
from drivers.openvswitch import provider
from drivers.openvswitch import tunnels

NET_UUID = 'net_uuid'
TAG = 'tag'
# Wiring that belongs to one network (the br-int <-> br-tun trunk does not).
PER_NETWORK_ROLES = frozenset({provider.ROLE_INT, provider.ROLE_PHY,
                               tunnels.ROLE_TUNNEL})


def is_vm_port(port: ovs_ports.PortState) -> bool:
    """A port nova/os-vif or an agent plugged (it has an iface-id), not ours."""
    return port.iface_id is not None and port.role is None


def recorded_vlans(br_int_ports: Iterable[ovs_ports.PortState]) -> dict[str, int]:
    """{network id: local VLAN} of the networks VM ports are wired into now.

    Only ports actually tagged with the VLAN their other_config records
    count: an unwired port (dead VLAN) keeps the other_config of its old
    network, whose VLAN may since have gone to another, live network.
    """
    found: dict[str, int] = {}
    for port in br_int_ports:
        if not is_vm_port(port):
            continue
        net_id = port.other_config.get(NET_UUID)
        tag = port.other_config.get(TAG, '')
        if net_id and tag.isdigit() and port.tag == int(tag) and \
                local_vlans.MIN_VLAN <= int(tag) <= local_vlans.MAX_VLAN:
            found.setdefault(net_id, int(tag))
    return found


def stale_wiring(ports: Iterable[ovs_ports.PortState],
                 networks_in_use: set[str]) -> list[ovs_ports.PortState]:
    """Per-network wiring ports of networks no VM port uses any more."""
    return [p for p in ports
            if p.role in PER_NETWORK_ROLES
            and p.other_config.get(NET_UUID) not in networks_in_use]


def network_wiring(ports: Iterable[ovs_ports.PortState],
                   network_id: str) -> list[ovs_ports.PortState]:
    """The per-network wiring ports of one network."""
    return [p for p in ports if p.role in PER_NETWORK_ROLES
            and p.other_config.get(NET_UUID) == network_id]


def network_has_live_port(br_int_ports: Iterable[ovs_ports.PortState],
                          network_id: str, vlan: int | None) -> bool:
    """True if a VM port is wired (tagged) into the network right now.

    The agent decides a network is unused from its own bookkeeping, which a
    concurrent wire of a new port may not have reached yet; OVSDB is the
    truth that protects that port from a cleanup.
    """
    if vlan is None:
        return False
    return any(is_vm_port(p) and p.other_config.get(NET_UUID) == network_id
               and p.tag == vlan for p in br_int_ports)
