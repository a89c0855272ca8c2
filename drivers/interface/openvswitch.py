"""``openvswitch`` interface driver: OVS internal ports on the integration bridge.

The port carries ``external_ids:iface-id/attached-mac/iface-status`` like a
nova-plugged VM port, so the L2 agent wires it the same way; the device is
then moved into the DHCP/router namespace. Internal ports need no checksum
workaround on the userspace datapath (unlike veths).
"""

from agentkit.api import interface
from agentkit.lib import ip_lib
from agentkit.lib import naming
from agentkit.lib.ovs import bridge as ovs_bridge
from agentkit.lib.ovs import connection as ovs_connection
from drivers.interface import common


class OVSInterfaceDriver(interface.InterfaceDriver):

    def initialize(self) -> None:
        self.ovs = ovs_connection.get_connection(self.conf.ovs.ovsdb_connection,
                                                 timeout=self.conf.ovs.ovsdb_timeout)
        integration = self._bridge(None)
        # The L2 agent owns the bridge and its settings (datapath, fail
        # mode); this one only needs a bridge to put ports on. Neutron keeps
        # datapath_type in openvswitch_agent.ini alone, so a DHCP or L3
        # agent run from Neutron's files must not "correct" an existing
        # netdev bridge to its own default.
        if not integration.exists():
            integration.create()

    def _bridge(self, bridge: str | None) -> ovs_bridge.OVSBridge:
        return self.ovs.bridge(bridge or self.conf.ovs.integration_bridge,
                               self.conf.ovs.datapath_type)

    def get_device_name(self, port_id: str) -> str:
        return naming.tap_device_name(port_id)

    def get_configurations(self) -> dict:
        return {'interface_driver': 'openvswitch'}

    def plug(self, network_id: str, port_id: str, device_name: str,
             mac_address: str, namespace: str, mtu: int | None = None,
             bridge: str | None = None,
             current: ip_lib.DeviceState | None = None) -> None:
        naming.validate_id(port_id, 'port')
        ns_device = ip_lib.IPDevice(device_name, namespace)
        br = self._bridge(bridge)
        br.add_port(device_name, type='internal', mtu_request=mtu,
                    external_ids={'iface-id': port_id,
                                  'attached-mac': mac_address,
                                  'iface-status': 'active'})
        ns_link = (current.link if current is not None
                   else common.link_or_none(ns_device))
        if ns_link is None:
            root_device = ip_lib.IPDevice(device_name)
            common.wait_for_device(root_device)
            root_device.link.set_netns(namespace)
        common.configure_link(ns_device, mac_address, mtu, ns_link)

    def unplug(self, device_name: str, namespace: str,
               bridge: str | None = None) -> None:
        self._bridge(bridge).delete_port(device_name, if_exists=True)
        device = ip_lib.IPDevice(device_name, namespace)
        if ip_lib.namespace_exists(namespace) and device.exists():
            device.delete()

    def set_addresses(self, device_name: str, namespace: str, cidrs: list[str],
                      current: ip_lib.DeviceState | None = None) -> None:
        common.set_addresses(ip_lib.IPDevice(device_name, namespace), cidrs, current)
