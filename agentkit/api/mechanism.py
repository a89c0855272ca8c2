"""Mechanism drivers: how this host's switch wires ports into segments.

The L2 agent owns the RPC conversation with neutron-server (fetching port
details, reporting devices up/down, resyncing); the mechanism driver owns the
switch (Open vSwitch, Linux bridges). The agent hands it validated segment
realisations from the type drivers and asks it to wire or unwire ports.
"""

import abc
import dataclasses
from collections.abc import Callable
from typing import Any

from agentkit import exceptions
from agentkit.api import driver
from agentkit.api import type_driver


class DeviceGone(exceptions.AgentkitError):
    """The device to wire disappeared meanwhile (the VM was unplugged).

    Not a failure: the agent drops the work, and the unplug event that
    follows unwires the port.
    """


@dataclasses.dataclass(frozen=True)
class PortBinding:
    """A port to wire, with the segment it lives on.

    :ivar port_id: neutron port id (validated UUID).
    :ivar network_id: neutron network id (validated UUID).
    :ivar mac_address: the port's MAC (anti-spoofing, flows).
    :ivar device: host device name of the port (``tapXXXXXXXXXXX``).
    :ivar segment: the type driver's realisation of the port's segment.
    :ivar admin_state_up: False means wire it but pass no traffic.
    :ivar details: the raw details dict from neutron-server, for drivers
        that need more (fixed_ips, security groups, MTU...).
    """

    port_id: str
    network_id: str
    mac_address: str
    device: str
    segment: type_driver.SegmentRealisation
    admin_state_up: bool = True
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


DeviceCallback = Callable[[str], None]


class MechanismDriver(driver.Driver):
    """A switch technology (openvswitch, linuxbridge)."""

    @property
    @abc.abstractmethod
    def agent_type(self) -> str:
        """Neutron's ``agent_type`` for this switch, e.g. ``Open vSwitch agent``.

        neutron-server's ML2 mechanism drivers bind ports only to hosts whose
        agent reports the type they expect, so this must match Neutron's.
        """

    @property
    @abc.abstractmethod
    def supported_network_types(self) -> frozenset[str]:
        """Network types this switch can realise; the agent refuses others at start."""

    @abc.abstractmethod
    def start_device_monitor(self, on_plugged: DeviceCallback,
                             on_unplugged: DeviceCallback,
                             on_resync: DeviceCallback | None = None) -> None:
        """Call back whenever a VM/service port appears or goes.

        The argument is the device reference the agent passes to the server
        (the port id for OVS, ``tap<id[:11]>`` for Linux bridges, as Neutron's
        agents do). Event-driven (OVSDB Interface events, netlink link
        events), not polled. Callbacks must be cheap: the agent only queues
        the work. ``on_resync(reason)`` asks for a full resync, e.g. after the
        switch restarted and lost its state.
        """

    @abc.abstractmethod
    def list_plugged_ports(self) -> set[str]:
        """Device references of the ports plugged on this host (full resync)."""

    @abc.abstractmethod
    def wire_port(self, binding: PortBinding) -> None:
        """Connect a plugged port to its segment (tag, flows, bridge membership).

        Idempotent: called again on every resync with the same binding.

        :raises DeviceGone: the device vanished while being wired.
        :raises agentkit.api.type_driver.InvalidSegment: the host cannot
            realise the segment; the port is reported failed.
        """

    @abc.abstractmethod
    def unwire_port(self, port_id: str) -> None:
        """Isolate a port that the server no longer binds here (idempotent)."""

    @property
    def resource_versions(self) -> dict[str, str] | None:
        """Versioned-object versions to report (OVS agents report them so the
        server pushes ``neutron-vo-*`` updates in a version they can read)."""
        return None

    def filter_bridge(self, port_id: str, network_id: str | None) -> str | None:
        """The Linux bridge the port's tap crosses, if the switch has one.

        An iptables firewall sees a VM's frames only where they cross a
        Linux bridge, and keys conntrack zones to it: ``qbr<port>`` of an
        OVS hybrid plug, ``brq<network>`` of linuxbridge. None (the
        default) means there is none, and such a firewall cannot filter
        the port.
        """
        return None

    def cleanup_network(self, network_id: str) -> None:
        """Release per-network host resources once no port uses the network."""

    def tunnel_update(self, tunnel_ip: str, tunnel_type: str) -> None:
        """A tunnel endpoint appeared (``tunnel_sync``/``tunnel_update``)."""

    def tunnel_delete(self, tunnel_ip: str, tunnel_type: str) -> None:
        """A tunnel endpoint went away."""
