"""Provider networks (flat, vlan): one tagged patch pair per network, no flows.

How a network reaches its physical network: a patch pair per (network,
provider bridge). Its br-int end ``int-<net[:11]>`` is an *access* port
tagged with the network's host-local VLAN; its provider-bridge end
``phy-<net[:11]>`` is an access port tagged with the provider VLAN id, or
with VLAN 0 for flat networks (OVS's untagged VLAN: frames leave untagged
and only untagged frames come in). OVS's NORMAL switching does the VLAN
translation: a frame from a VM enters br-int on local VLAN L, leaves the
``int-`` access port untagged, enters br-x on the provider VLAN and leaves
the physical trunk tagged with it (or untagged for flat). Frames of other
provider VLANs never reach the patch; OVS drops tagged frames that arrive
on an access port.

Why not Neutron's flows (one int-br-x/phy-br-x pair + ``mod_vlan_vid``
translation flows): OVSDB cannot program OpenFlow, and the only tools are a
subprocess per change (``ovs-ofctl``, ~10 ms each and a process exec) or an
OpenFlow controller. This design keeps all state in OVSDB, in one
transaction with the VM's tag, so it is

* restart-safe by construction: a restarted agent compares and finds
  nothing to write (see :mod:`agentkit.lib.ovs.ports`), and nothing is wiped at start;
* kept across an ovs-vswitchd restart without the agent (flows would be
  lost and need reprogramming; OVSDB rows are re-read by vswitchd);
* cheap: wiring the first port of a network on a provider bridge is one
  OVSDB transaction of two patch ports, later ports of it cost nothing
  extra.

Cost: one patch pair (two OVSDB Port rows, no kernel devices) per provider
network present on the host, instead of one pair per bridge.

Measured here (OVS 3.1 userspace datapath, 2 shared cores): plug ->
``update_device_list`` through agentkit-l2 is 46 ms median [42-57] for the
first port of a new VLAN network (which creates the pair), 47 ms for more
ports of it, and 64 ms [39-232] for local-only wiring: the pair is lost in
the noise. Creating a pair commits in 4-6 ms; re-checking an intact one
costs 0.4-0.6 ms and writes nothing. An agent restart under ``ping -i
0.05`` over a provider VLAN lost 0 of 106 pings, changed no Port or
Interface row and left every bridge's flows as they were.
"""

from __future__ import annotations

from agentkit import exceptions
from agentkit.api import type_driver
from agentkit.lib import option_values
from agentkit.lib.ovs import ports as ovs_ports
from agentkit.lib.ovs import validation as ovs_validation

INT_PATCH_PREFIX = 'int-'
PHY_PATCH_PREFIX = 'phy-'
ROLE_INT = 'provider-int'
ROLE_PHY = 'provider-phy'
UNTAGGED_VLAN = 0          # OVS's VLAN of untagged frames (flat networks)
MIN_VLAN, MAX_VLAN = 1, 4094


class UnmappedPhysicalNetwork(exceptions.AgentkitError):
    """A segment's physical network has no bridge in ``[l2] bridge_mappings``."""


def parse_bridge_mappings(entries: list[str]) -> dict[str, str]:
    """``physnet:bridge`` pairs -> dict; duplicates, blanks and bad names refused."""
    mappings = option_values.parse_mappings(entries, 'bridge_mappings', 'bridge')
    for bridge in mappings.values():
        try:
            ovs_validation.validate_name(bridge, 'bridge')
        except exceptions.InvalidIdentifier as exc:
            raise exceptions.InvalidConfiguration(f'bridge_mappings: {exc}') from None
    return mappings


def patch_names(network_id: str) -> tuple[str, str]:
    """(br-int end, provider-bridge end) of a network's patch pair.

    Derived from the id, like Neutron's ``tap<port[:11]>``, so a restarted
    agent finds the same ports; 15 characters, the interface-name limit.
    """
    short = network_id[:11]
    return INT_PATCH_PREFIX + short, PHY_PATCH_PREFIX + short


def provider_tag(segment: type_driver.SegmentRealisation) -> int:
    """The access tag of the provider-bridge end: the VLAN id, or 0 (untagged)."""
    if segment.vlan_id is None:
        return UNTAGGED_VLAN
    if isinstance(segment.vlan_id, bool) or not MIN_VLAN <= segment.vlan_id <= MAX_VLAN:
        raise ValueError(f'provider VLAN id {segment.vlan_id!r} is not '
                         f'{MIN_VLAN}-{MAX_VLAN}')
    return segment.vlan_id


def bridge_for(segment: type_driver.SegmentRealisation,
               mappings: dict[str, str]) -> str:
    """The provider bridge of a flat/vlan segment, or UnmappedPhysicalNetwork."""
    physnet = segment.physical_network
    bridge = mappings.get(physnet or '')
    if bridge is None:
        raise UnmappedPhysicalNetwork(
            f'physical network {physnet!r} is not in [l2] bridge_mappings '
            f'({", ".join(sorted(mappings)) or "empty"})')
    return bridge


def patch_specs(network_id: str, segment: type_driver.SegmentRealisation,
                local_vlan: int, int_bridge: str, phys_bridge: str,
                other_config: dict[str, str]) -> list[ovs_ports.PortSpec]:
    """The two ports joining a network's local VLAN to its provider VLAN.

    ``other_config`` (net_uuid, tag, segment fields) goes on both ends so a
    restarted agent and an operator can tell what each pair carries.
    """
    int_name, phy_name = patch_names(network_id)
    return [
        ovs_ports.PortSpec(
            int_bridge, int_name, 'patch', {'peer': phy_name}, tag=local_vlan,
            protected=False, other_config={**other_config, ovs_ports.ROLE_KEY: ROLE_INT}),
        ovs_ports.PortSpec(
            phys_bridge, phy_name, 'patch', {'peer': int_name},
            tag=provider_tag(segment), protected=False,
            other_config={**other_config, ovs_ports.ROLE_KEY: ROLE_PHY}),
    ]
