"""DHCP drivers: one DHCP server per network hosted by this agent."""

import abc
import uuid
from typing import Any

from oslo_config import cfg

from agentkit.api import driver
from agentkit.api import interface
from agentkit.lib import naming

#: ``device_owner`` of the ports DHCP servers hold on their networks.
DEVICE_OWNER_DHCP = 'network:dhcp'


def dhcp_port_device_id(host: str, network_id: str) -> str:
    """``device_id`` of this host's DHCP port on a network (Neutron's convention).

    ``dhcp<uuid5(DNS namespace, host)>-<network-id>``, so the server, the
    agent and a restarted agent agree on which DHCP port is this host's.
    """
    return 'dhcp%s-%s' % (uuid.uuid5(uuid.NAMESPACE_DNS, host),
                          naming.validate_id(network_id, 'network'))


def dhcp_subnets(network: dict[str, Any]) -> list[dict[str, Any]]:
    """The subnets of ``network`` with DHCP on: what a DHCP port covers."""
    return [s for s in network.get('subnets', []) if s.get('enable_dhcp')]


class DhcpDriver(driver.Driver):
    """Makes the host serve DHCP on networks: namespace, DHCP port, server.

    ``network`` is the dict neutron-server returns from ``get_network_info``
    (``id``, ``mtu``, ``subnets``, ``ports``, ...), already validated by the
    agent; ``port`` is this host's DHCP port on it (see
    :func:`dhcp_port_device_id`), which the agent has created or updated
    with neutron-server so that it has an address on every DHCP subnet.
    The agent talks to the server; the driver alone changes the host.

    :param interface_driver: plugs the DHCP port's device; the DHCP agent
        loads it from ``[DEFAULT] interface_driver`` and initialises it first.
    """

    def __init__(self, conf: cfg.ConfigOpts, host: str,
                 interface_driver: interface.InterfaceDriver) -> None:
        super().__init__(conf, host)
        self.interface_driver = interface_driver

    @abc.abstractmethod
    def enable(self, network: dict[str, Any], port: dict[str, Any]) -> None:
        """Serve ``network`` through ``port``; idempotent, called on every change.

        Writes only what differs from the host: a network already served as
        asked costs one read. A server left running by a previous agent with
        the same configuration must be adopted, not restarted, so leases are
        not disrupted.
        """

    @abc.abstractmethod
    def disable(self, network_id: str) -> None:
        """Stop serving the network and remove all of it from the host (idempotent)."""

    @abc.abstractmethod
    def present(self, network_id: str) -> bool:
        """True if anything of the network is on this host (server, namespace)."""

    @abc.abstractmethod
    def active_networks(self) -> set[str]:
        """Network ids with a running server on this host (for cleanup)."""
