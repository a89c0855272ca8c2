"""``openvswitch`` mechanism driver: ports on the OVS integration bridge.

What it does today: creates the integration bridge with the configured
datapath, learns about VM/service ports from OVSDB Interface events (no
polling), gives each network a host-local VLAN (persisted in the port's
``other_config``) and isolates networks on br-int by access tags; unwired
ports sit on the dead VLAN 4095. It reports the configurations neutron-server's
ML2 ``openvswitch`` driver checks when binding ports to this host.
Provider bridges (bridge_mappings) and tunnels (br-tun) with their flows are
the next step of the L2 work and are not built yet.
"""

import logging
from typing import Any

from agentkit import exceptions
from agentkit.api import mechanism
from agentkit.lib import ovs_lib
from agentkit.rpc import topics
from drivers.openvswitch import local_vlans

LOG = logging.getLogger(__name__)

# Object versions Neutron 29's OVS agent reports (resource_versions).
RESOURCE_VERSIONS = {'Port': '1.11', 'Network': '1.3', 'Subnet': '1.2',
                     'SecurityGroup': '1.6', 'SecurityGroupRule': '1.3',
                     'AddressGroup': '1.2', 'Trunk': '1.1', 'SubPort': '1.0'}


def parse_bridge_mappings(entries: list[str]) -> dict[str, str]:
    """``physnet:bridge`` pairs -> dict; duplicates and blanks refused."""
    mappings: dict[str, str] = {}
    for entry in entries:
        physnet, sep, bridge = entry.strip().partition(':')
        if not sep or not physnet or not bridge:
            raise exceptions.InvalidConfiguration(
                f'bridge_mappings: {entry!r} is not <physical_network>:<bridge>')
        if physnet in mappings:
            raise exceptions.InvalidConfiguration(
                f'bridge_mappings: physical network {physnet!r} mapped twice')
        ovs_lib.validate_name(bridge, 'bridge')
        mappings[physnet] = bridge
    return mappings


class OpenvswitchMechanismDriver(mechanism.MechanismDriver):
    agent_type = topics.AGENT_TYPE_OVS
    supported_network_types = frozenset({'flat', 'vlan', 'gre', 'vxlan'})

    def __init__(self, conf, host):  # type: ignore[no-untyped-def]
        super().__init__(conf, host)
        self.bridge_mappings = parse_bridge_mappings(conf.l2.bridge_mappings)
        self.vlans = local_vlans.LocalVlanManager()
        self._watcher: Any = None

    # -- lifecycle ----------------------------------------------------------
    def initialize(self) -> None:
        ovs_conf = self.conf.ovs
        self.ovs = ovs_lib.get_connection(ovs_conf.ovsdb_connection,
                                          timeout=ovs_conf.ovsdb_timeout)
        self.br_int = self.ovs.bridge(ovs_conf.integration_bridge,
                                      ovs_conf.datapath_type)
        self.br_int.create(fail_mode='standalone')
        self._restore_local_vlans()

    def _restore_local_vlans(self) -> None:
        for name in self.br_int.get_port_names():
            other = self.br_int.get_port_other_config(name)
            net_id, tag = other.get('net_uuid'), other.get('tag')
            if net_id and tag and tag.isdigit():
                self.vlans.restore(net_id, int(tag))
        LOG.info('Restored %d local VLAN(s) from %s', len(self.vlans),
                 self.br_int.name)

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    def get_configurations(self) -> dict[str, Any]:
        return {
            'bridge_mappings': dict(self.bridge_mappings),
            'integration_bridge': self.conf.ovs.integration_bridge,
            'datapath_type': self.conf.ovs.datapath_type,
            'ovs_hybrid_plug': False,
            'l2_population': False,
            'arp_responder_enabled': False,
            'enable_distributed_routing': False,
            'ovs_capabilities': {'datapath_types': ['netdev', 'system'],
                                 'iface_types': ['internal', 'patch', 'vxlan',
                                                 'gre', 'geneve']},
        }

    @property
    def resource_versions(self) -> dict[str, str]:
        return dict(RESOURCE_VERSIONS)

    # -- devices ------------------------------------------------------------
    def start_device_monitor(self, on_plugged, on_unplugged,  # type: ignore[no-untyped-def]
                             on_resync=None) -> None:
        self._watcher = self.ovs.watch_interfaces(
            on_iface_id=lambda ev: on_plugged(ev.interface.iface_id),
            on_deleted=lambda ev: on_unplugged(ev.interface.iface_id),
            bridge=self.br_int.name)
        if on_resync is not None:
            self.ovs.add_resync_callback(on_resync)
            if self.conf.ovs.ovsdb_connection.startswith('unix:'):
                # ovs-vswitchd is local: a restart loses its datapath state
                # without any trace in OVSDB, so watch its pidfile.
                self.ovs.start_vswitchd_monitor()

    def list_plugged_ports(self) -> set[str]:
        return {i.iface_id for i in self.br_int.list_interfaces_with_iface_id()
                if i.iface_id}

    def _port_name(self, port_id: str) -> str | None:
        found = self.br_int.find_interfaces({'iface-id': port_id})
        return found[0].name if found else None

    def wire_port(self, binding: mechanism.PortBinding) -> None:
        name = self._port_name(binding.port_id)
        if name is None:
            raise RuntimeError(f'port {binding.port_id} is not plugged on '
                               f'{self.br_int.name}')
        segment = binding.segment
        vlan = self.vlans.get_or_allocate(binding.network_id, segment)
        other_config = {
            'net_uuid': binding.network_id, 'tag': str(vlan),
            'network_type': segment.network_type,
            'physical_network': segment.physical_network or '',
            'segmentation_id': str(segment.vlan_id or segment.tunnel_key or ''),
        }
        # No need to wait for ovs-vswitchd: nothing here needs an ofport.
        with self.br_int.batch(wait=False):
            self.br_int.set_port_other_config(name, other_config)
            self.br_int.set_port_tag(
                name, vlan if binding.admin_state_up else local_vlans.DEAD_VLAN)

    def unwire_port(self, port_id: str) -> None:
        name = self._port_name(port_id)
        if name is not None:
            self.br_int.set_port_tag(name, local_vlans.DEAD_VLAN)

    def cleanup_network(self, network_id: str) -> None:
        vlan = self.vlans.release(network_id)
        if vlan is not None:
            LOG.info('Released local VLAN %d of network %s', vlan, network_id)
