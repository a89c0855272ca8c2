"""``linuxbridge`` interface driver: a veth from ``brq<net>`` into the namespace.

``tap<port>`` stays in the root namespace, enslaved to the network's bridge
(created if the L2 agent has not made it yet); ``ns-<port>`` is born directly
inside the namespace (one netlink call, no slow device move).
"""

import contextlib

from agentkit.api import interface
from agentkit.lib import ip_lib
from agentkit.lib import naming
from drivers.interface import common


class BridgeInterfaceDriver(interface.InterfaceDriver):

    def get_device_name(self, port_id: str) -> str:
        return naming.ns_device_name(port_id)

    def get_configurations(self) -> dict:
        return {'interface_driver': 'linuxbridge'}

    @staticmethod
    def _tap_name(device_name: str) -> str:
        return naming.TAP_PREFIX + device_name[len(naming.NS_DEVICE_PREFIX):]

    def read_state(self, network_id: str, device_name: str, namespace: str,
                   bridge: str | None = None) -> ip_lib.DeviceState | None:
        return ip_lib.read_device_state(device_name, namespace, [
            bridge or naming.bridge_name(network_id), self._tap_name(device_name)])

    def plug(self, network_id: str, port_id: str, device_name: str,
             mac_address: str, namespace: str, mtu: int | None = None,
             bridge: str | None = None,
             current: ip_lib.DeviceState | None = None) -> None:
        # Each device is read once and only what differs is written (see
        # common.configure_link): a re-plug of a plugged port costs no read
        # beyond read_state's (``current``), or one of the bridge and the
        # tap together plus one of the namespace side.
        bridge = bridge or naming.bridge_name(network_id)
        tap = ip_lib.IPDevice(self._tap_name(device_name))
        ns_device = ip_lib.IPDevice(device_name, namespace)
        root = ip_lib.IPWrapper()
        if current is not None and current.root_links is not None:
            root_links = current.root_links
        else:
            root_links = ip_lib.get_links([bridge, tap.name])
        br_link = root_links.get(bridge)
        if br_link is None or br_link['kind'] != 'bridge':
            br_link = root.add_bridge(bridge, exist_ok=True).link.attributes
        if br_link['state'] != 'up':
            ip_lib.IPDevice(bridge).link.set_up()
        ns_link = (current.link if current is not None
                   else common.link_or_none(ns_device))
        tap_link = root_links.get(tap.name)
        if ns_link is None:
            if tap_link is not None:  # half-made pair from an interrupted plug
                tap.delete()
            root.add_veth(tap.name, device_name, peer_namespace=namespace,
                          mtu=mtu, peer_mac=mac_address)
            tap_link = None
        if tap_link is None:
            tap_link = tap.link.attributes
        if mtu and tap_link['mtu'] != mtu:
            tap.link.set_mtu(mtu)
        if tap_link['master'] != bridge:
            tap.link.set_master(bridge)
        if tap_link['state'] != 'up':
            tap.link.set_up()
        common.configure_link(ns_device, mac_address, mtu, ns_link)

    def unplug(self, device_name: str, namespace: str,
               bridge: str | None = None) -> None:
        tap = ip_lib.IPDevice(self._tap_name(device_name))
        tap_link = common.link_or_none(tap)
        if tap_link is not None:
            tap.delete()  # takes the namespace end with it
            self._delete_if_orphan(tap_link.get('master') or bridge)
        device = ip_lib.IPDevice(device_name, namespace)
        if ip_lib.namespace_exists(namespace) and device.exists():
            device.delete()

    @staticmethod
    def _delete_if_orphan(bridge: str | None) -> None:
        """Delete a network bridge left with no port at all.

        plug() creates the bridge when the L2 agent has not (yet): a port
        plugged while its network is being deleted would otherwise leave
        ``brq<net>`` behind for good, as the L2 agent had already cleaned the
        network up (seen in the fullstack suite). A bridge the L2 agent still
        uses holds its uplink or VXLAN device, so it is never empty.
        """
        if not bridge or not bridge.startswith(naming.BRIDGE_PREFIX):
            return
        if any(link.get('master') == bridge for link in ip_lib.list_links()):
            return
        with contextlib.suppress(ip_lib.NetworkInterfaceNotFound):
            ip_lib.IPDevice(bridge).delete()

    def set_addresses(self, device_name: str, namespace: str, cidrs: list[str],
                      current: ip_lib.DeviceState | None = None) -> None:
        common.set_addresses(ip_lib.IPDevice(device_name, namespace), cidrs, current)
