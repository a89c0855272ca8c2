"""``linuxbridge`` mechanism driver: one Linux bridge per network.

``brq<net-id[:11]>`` holds the network's uplink - the physical interface of
``physical_interface_mappings`` for flat networks, ``<nic>.<vid>`` for vlan,
``vxlan-<vni>`` for vxlan - and the VMs' ``tap<port-id[:11]>`` devices, which
are enslaved as netlink announces them. GRE is not something a Linux bridge
can carry, so the agent refuses it at start.
"""

import logging
import re
from typing import Any

from agentkit import exceptions
from agentkit.api import mechanism
from agentkit.lib import ip_lib
from agentkit.lib import link_monitor
from agentkit.lib import naming
from agentkit.rpc import topics

LOG = logging.getLogger(__name__)

_TAP_RE = re.compile(r'tap[0-9a-f]{8}-[0-9a-f]{2}')


def parse_interface_mappings(entries: list[str]) -> dict[str, str]:
    mappings: dict[str, str] = {}
    for entry in entries:
        physnet, sep, iface = entry.strip().partition(':')
        if not sep or not physnet or not iface:
            raise exceptions.InvalidConfiguration(
                f'physical_interface_mappings: {entry!r} is not '
                f'<physical_network>:<interface>')
        if physnet in mappings:
            raise exceptions.InvalidConfiguration(
                f'physical_interface_mappings: {physnet!r} mapped twice')
        mappings[physnet] = ip_lib.validate_device_name(iface)
    return mappings


class LinuxbridgeMechanismDriver(mechanism.MechanismDriver):
    agent_type = topics.AGENT_TYPE_LINUXBRIDGE
    supported_network_types = frozenset({'flat', 'vlan', 'vxlan'})

    def __init__(self, conf, host):  # type: ignore[no-untyped-def]
        super().__init__(conf, host)
        self.mappings = parse_interface_mappings(
            conf.linux_bridge.physical_interface_mappings)
        self._monitor: link_monitor.LinkMonitor | None = None
        self.root = ip_lib.IPWrapper()

    def initialize(self) -> None:
        for physnet, iface in self.mappings.items():
            if not ip_lib.device_exists(iface):
                LOG.warning('Interface %s of physical network %s does not exist',
                            iface, physnet)

    def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None

    def get_configurations(self) -> dict[str, Any]:
        return {'interface_mappings': dict(self.mappings),
                'bridge_mappings': {},
                'l2_population': False}

    # -- devices ------------------------------------------------------------
    def start_device_monitor(self, on_plugged, on_unplugged,  # type: ignore[no-untyped-def]
                             on_resync=None) -> None:
        def on_event(kind: str, name: str) -> None:
            if kind == link_monitor.ADDED:
                on_plugged(name)
            elif kind == link_monitor.REMOVED:
                on_unplugged(name)
            elif on_resync is not None:
                on_resync('netlink events were lost')

        self._monitor = link_monitor.LinkMonitor(
            on_event, name_filter=lambda n: not n or bool(_TAP_RE.fullmatch(n)))
        self._monitor.start()

    def list_plugged_ports(self) -> set[str]:
        return {link['name'] for link in ip_lib.list_links()
                if _TAP_RE.fullmatch(link['name'])}

    def _uplink(self, segment: Any) -> str | None:
        """Create the segment's uplink device; returns its name."""
        if segment.network_type == 'flat':
            iface = self.mappings.get(segment.physical_network or '')
            if iface is None:
                raise exceptions.InvalidConfiguration(
                    f'physical network {segment.physical_network!r} is not in '
                    f'physical_interface_mappings')
            return iface
        if segment.network_type == 'vlan':
            raise RuntimeError(
                'vlan segments need an 802.1Q sub-interface '
                f'({self.mappings.get(segment.physical_network or "", "?")}.'
                f'{segment.vlan_id}); creating it is not implemented yet')
        if segment.network_type == 'vxlan':
            name = naming.vxlan_device_name(segment.tunnel_key)
            if not ip_lib.device_exists(name):
                self.root.add_vxlan(name, segment.tunnel_key,
                                    local_ip=self.conf.l2.local_ip,
                                    dstport=self.conf.l2.vxlan_udp_port,
                                    exist_ok=True)
            return name
        raise RuntimeError(f'unsupported network type {segment.network_type}')

    def wire_port(self, binding: mechanism.PortBinding) -> None:
        bridge_name = naming.bridge_name(binding.network_id)
        bridge = self.root.add_bridge(bridge_name, exist_ok=True)
        uplink = self._uplink(binding.segment)
        for name in (uplink, binding.device):
            dev = ip_lib.IPDevice(name)
            if dev.link.attributes.get('master') != bridge_name:
                dev.link.set_master(bridge_name)
            dev.link.set_up()
        bridge.link.set_up()

    def unwire_port(self, port_id: str) -> None:
        dev = ip_lib.IPDevice(port_id)
        if dev.exists() and dev.link.attributes.get('master'):
            dev.link.set_nomaster()

    def cleanup_network(self, network_id: str) -> None:
        bridge_name = naming.bridge_name(network_id)
        members = [link for link in ip_lib.list_links()
                   if link.get('master') == bridge_name]
        if any(_TAP_RE.fullmatch(m['name']) for m in members):
            return
        for member in members:
            if member['name'].startswith(naming.VXLAN_PREFIX):
                ip_lib.IPDevice(member['name']).delete()
            else:
                ip_lib.IPDevice(member['name']).link.set_nomaster()
        bridge = ip_lib.IPDevice(bridge_name)
        if bridge.exists():
            bridge.delete()
