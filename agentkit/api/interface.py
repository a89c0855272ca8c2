"""Interface drivers: plug service ports (DHCP, router) into the switch."""

import abc
from collections.abc import Callable, Sequence

from agentkit.api import driver
from agentkit.lib import ip_lib


class InterfaceDriver(driver.Driver):
    """Creates a device for a neutron port, inside a namespace, on the switch.

    Used by the DHCP and L3 agents. The device must end up in ``namespace``,
    up, with ``mac_address`` and ``mtu``; the switch-side attachment must carry
    what the L2 agent needs to wire it (e.g. OVS ``external_ids:iface-id``).

    ``current``, where a method takes it, is what :meth:`read_state` has
    just returned: the driver uses it instead of reading again, so that
    checking a port that is already in place (an agent restarted with 1,000
    networks) costs one privileged round trip, not one per attribute.
    ``None``: the driver reads for itself.
    """

    def read_state(self, network_id: str, device_name: str, namespace: str,
                   bridge: str | None = None) -> ip_lib.DeviceState | None:
        """The port's device and namespace, and whatever this driver checks
        on the switch side, in one read; None if the namespace is missing.

        The default reads the namespace side only; a driver with devices of
        its own in the root namespace reads them along (``root_devices``).
        """
        return ip_lib.read_device_state(device_name, namespace)

    @abc.abstractmethod
    def get_device_name(self, port_id: str) -> str:
        """Name of the port's device inside the namespace (from a validated id)."""

    @abc.abstractmethod
    def plug(self, network_id: str, port_id: str, device_name: str,
             mac_address: str, namespace: str, mtu: int | None = None,
             bridge: str | None = None,
             current: ip_lib.DeviceState | None = None) -> None:
        """Create and attach the device (idempotent; writes only what differs)."""

    @abc.abstractmethod
    def unplug(self, device_name: str, namespace: str,
               bridge: str | None = None) -> None:
        """Detach and delete the device (idempotent)."""

    @abc.abstractmethod
    def set_addresses(self, device_name: str, namespace: str, cidrs: list[str],
                      current: ip_lib.DeviceState | None = None) -> None:
        """Make the device hold exactly ``cidrs`` (adds missing, removes extra)."""

    def remove_stale_devices(self, namespace: str,
                             device_names: Sequence[str]) -> set[str]:
        """Delete those of ``device_names`` in ``namespace`` that the switch
        no longer carries, and return their names: the caller plugs them
        again. One read for many ports (a router's), where :meth:`read_state`
        reads one.

        Default: none (a device, once plugged, stays attached).
        """
        return set()

    def watch_restarts(self, on_restart: Callable[[str], None]) -> None:
        """Call ``on_restart(reason)`` when the switch restarted in a way that
        leaves plugged ports dead, so the agent plugs every port again.

        Default: nothing to watch (a Linux bridge or a kernel-datapath OVS
        keeps its ports across a restart).
        """
