"""Interface drivers: plug service ports (DHCP, router) into the switch."""

import abc

from agentkit.api import driver


class InterfaceDriver(driver.Driver):
    """Creates a device for a neutron port, inside a namespace, on the switch.

    Used by the DHCP and L3 agents. The device must end up in ``namespace``,
    up, with ``mac_address`` and ``mtu``; the switch-side attachment must carry
    what the L2 agent needs to wire it (e.g. OVS ``external_ids:iface-id``).
    """

    @abc.abstractmethod
    def get_device_name(self, port_id: str) -> str:
        """Name of the port's device inside the namespace (from a validated id)."""

    @abc.abstractmethod
    def plug(self, network_id: str, port_id: str, device_name: str,
             mac_address: str, namespace: str, mtu: int | None = None,
             bridge: str | None = None) -> None:
        """Create and attach the device (idempotent)."""

    @abc.abstractmethod
    def unplug(self, device_name: str, namespace: str,
               bridge: str | None = None) -> None:
        """Detach and delete the device (idempotent)."""

    @abc.abstractmethod
    def set_addresses(self, device_name: str, namespace: str,
                      cidrs: list[str]) -> None:
        """Make the device hold exactly ``cidrs`` (adds missing, removes extra)."""
