"""DHCP drivers: one DHCP server per network hosted by this agent."""

import abc
import uuid
from typing import Any

from agentkit.api import driver
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


class DhcpDriver(driver.Driver):
    """Runs and reconfigures the DHCP service of networks.

    ``network`` is the dict neutron-server returns from ``get_network_info``
    (``id``, ``mtu``, ``subnets``, ``ports``, ...), already validated by the
    agent. The namespace and DHCP port are set up by the agent before
    :meth:`enable` is called.
    """

    @abc.abstractmethod
    def enable(self, network: dict[str, Any], namespace: str,
               interface_name: str) -> None:
        """Start serving ``network``, or adopt a server already running.

        A server left running by a previous agent with the same configuration
        must be adopted, not restarted, so leases are not disrupted.
        """

    @abc.abstractmethod
    def reload(self, network: dict[str, Any]) -> None:
        """Apply port/subnet changes without restarting if possible."""

    @abc.abstractmethod
    def disable(self, network_id: str) -> None:
        """Stop serving the network and remove its files (idempotent)."""

    @abc.abstractmethod
    def active_networks(self) -> set[str]:
        """Network ids with a running server on this host (for cleanup)."""
