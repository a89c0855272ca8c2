"""DHCP drivers that serve each network from its ``qdhcp-<network>`` namespace.

:class:`NamespacedDhcpDriver` builds what any such server needs -- the
namespace with ``lo`` up, the DHCP port's device with its addresses, the
default route -- and tears it all down again; a subclass runs the server
itself (:meth:`~NamespacedDhcpDriver.serve`,
:meth:`~NamespacedDhcpDriver.stop_serving`). Checking a network that is
already in place costs one privileged read (the interface driver's
``read_state``): a restarted agent re-applies every network it serves, and
one privileged call per check made that six calls per network.
"""

import abc
import errno
import logging
import os

from agentkit.api import dhcp
from agentkit.api import metadata
from agentkit.lib import ip_lib
from agentkit.lib import naming

LOG = logging.getLogger(__name__)


class NamespacedDhcpDriver(dhcp.DhcpDriver):
    """The namespace and DHCP port of a network; the server is the subclass's."""

    @abc.abstractmethod
    def serve(self, network: dhcp.Network, namespace: str, interface_name: str) -> None:
        """Start, adopt or reconfigure the server of ``network``, listening
        on ``interface_name`` (already up, with its addresses) in ``namespace``."""

    @abc.abstractmethod
    def stop_serving(self, network_id: str) -> None:
        """Stop the network's server and remove its files (idempotent)."""

    def enable(self, network: dhcp.Network, port: dhcp.Port) -> None:
        net_id = network.id
        namespace = naming.dhcp_namespace(net_id)
        ns = ip_lib.IPWrapper(namespace)
        device = self.interface_driver.get_device_name(port.id)
        # One read serves every check below.
        state = self.interface_driver.read_state(net_id, device, namespace)
        if state is None or not state.loopback_up:
            ns.ensure_namespace()  # with its loopback up
        self.interface_driver.plug(net_id, port.id, device, port.mac_address,
                                   namespace, mtu=network.mtu,
                                   current=state)
        # Addresses and routes read from a device that was already up are
        # still true after plug (it only sets MAC, MTU and up on it).
        settled = (state if state is not None and state.link is not None
                   and state.link['state'] == 'up' else None)
        self.interface_driver.set_addresses(device, namespace,
                                            self._port_cidrs(network, port),
                                            current=settled)
        self._set_default_route(network, ns.device(device), settled)
        self.serve(network, namespace, device)

    def disable(self, network_id: str) -> None:
        self.stop_serving(network_id)
        namespace = naming.dhcp_namespace(network_id)
        ns = ip_lib.IPWrapper(namespace)
        if not ns.namespace_exists():
            return
        for dev in ns.get_devices():
            try:
                self.interface_driver.unplug(dev.name, namespace)
            except Exception:
                LOG.exception('unplugging %s from %s failed', dev.name, namespace)
        ns.delete_namespace()

    def present(self, network_id: str) -> bool:
        return (ip_lib.IPWrapper(naming.dhcp_namespace(network_id)).namespace_exists()
                or network_id in self.active_networks())

    def _port_cidrs(self, network: dhcp.Network, port: dhcp.Port) -> list[str]:
        """The DHCP port's addresses with their subnets' prefixes, and the
        metadata addresses when the namespace may have to serve metadata."""
        prefixes = {s.id: s.cidr.prefixlen for s in network.subnets}
        cidrs = [f'{ip.address}/{prefixes[ip.subnet_id]}' for ip in port.fixed_ips]
        if self.conf.enable_isolated_metadata:
            cidrs.append(metadata.METADATA_V4_DHCP_PORT_CIDR)
            if os.path.isdir('/proc/sys/net/ipv6'):
                # The proxy answers fe80::a9fe:a9fe too (Neutron's address).
                cidrs.append(metadata.METADATA_V6_CIDR)
        return cidrs

    def _set_default_route(self, network: dhcp.Network, device: ip_lib.IPDevice,
                           state: ip_lib.DeviceState | None = None) -> None:
        """Via the first DHCP-enabled IPv4 subnet's gateway, so the server's
        own traffic (DNS forwarding) leaves the namespace."""
        for subnet in network.dhcp_subnets:
            gateway = None if subnet.gateway_ip is None else str(subnet.gateway_ip)
            if subnet.ip_version == 4 and gateway:
                current = (state.gateway() if state is not None
                           else device.route.get_gateway())
                if not current or current.get('gateway') != gateway:
                    try:
                        device.route.add_gateway(gateway)
                    except ip_lib.NetlinkOperationError as exc:
                        if exc.errno != errno.ENETUNREACH:
                            raise
                        # The port has no address on the gateway's subnet:
                        # the subnet is going away, or its gateway lies
                        # outside it. The server serves leases either way.
                        LOG.info('Network %s: no default route via %s in the DHCP '
                                 'namespace: %s', network.id, gateway, exc)
                return
