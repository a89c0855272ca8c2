"""DHCP drivers: one DHCP server per network hosted by this agent.

The agent validates neutron-server's network dicts once, at its edge
(:mod:`agentkit.api.dhcp_payload`), into the frozen types below; drivers
receive those and need not check them again.
"""

from __future__ import annotations

import abc
import dataclasses
import ipaddress
import uuid
from collections.abc import Mapping
from typing import Union

from oslo_config import cfg

from agentkit.api import device_owner
from agentkit.api import driver
from agentkit.api import interface
from agentkit.lib import external_process
from agentkit.lib import naming

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: Ports that never get a host entry (no VM behind them asks for DHCP):
#: the DHCP ports themselves, HA heartbeat ports, floating IPs, OVN
#: metadata ports -- the same list Neutron uses.
NO_HOST_ENTRY_OWNERS = frozenset({device_owner.DHCP, device_owner.ROUTER_HA_INTERFACE,
                                  device_owner.FLOATINGIP, device_owner.DISTRIBUTED})

IPV6_SLAAC = 'slaac'
DHCPV6_STATEFUL = 'dhcpv6-stateful'
DHCPV6_STATELESS = 'dhcpv6-stateless'
IPV6_MODES = frozenset({IPV6_SLAAC, DHCPV6_STATEFUL, DHCPV6_STATELESS})
# Neutron gives IPv6 subnets with a prefix shorter than /64 no DHCP range.
MIN_IPV6_RANGE_PREFIXLEN = 64


def dhcp_port_device_id(host: str, network_id: str) -> str:
    """``device_id`` of this host's DHCP port on a network (Neutron's convention).

    ``dhcp<uuid5(DNS namespace, host)>-<network-id>``, so the server, the
    agent and a restarted agent agree on which DHCP port is this host's.
    """
    return 'dhcp%s-%s' % (uuid.uuid5(uuid.NAMESPACE_DNS, host),
                          naming.validate_id(network_id, 'network'))


@dataclasses.dataclass(frozen=True)
class Subnet:
    """A subnet as DHCP servers need it; addresses are parsed, never raw strings."""

    id: str
    cidr: IPNetwork
    enable_dhcp: bool
    gateway_ip: IPAddress | None = None
    host_routes: tuple[tuple[IPNetwork, IPAddress], ...] = ()
    dns_nameservers: tuple[IPAddress, ...] = ()
    ipv6_ra_mode: str | None = None
    ipv6_address_mode: str | None = None

    @property
    def ip_version(self) -> int:
        return self.cidr.version

    @property
    def has_range(self) -> bool:
        """True if the server hands out a range on this subnet (dnsmasq: ``--dhcp-range``).

        IPv4: always when DHCP is on. IPv6: DHCPv6 stateful *and* stateless
        (both ``static``, as Neutron does: stateless clients still send
        information requests), or no mode at all; SLAAC or an RA mode without
        an address mode means the router's RAs do the work.
        """
        if not self.enable_dhcp:
            return False
        if self.ip_version == 4:
            return True
        if self.cidr.prefixlen < MIN_IPV6_RANGE_PREFIXLEN:
            return False
        mode = self.ipv6_address_mode
        return mode in (DHCPV6_STATEFUL, DHCPV6_STATELESS) or (
            mode is None and self.ipv6_ra_mode is None)

    @property
    def has_options(self) -> bool:
        """True if the server sends options (DNS, routes, router) on this subnet."""
        if not self.enable_dhcp:
            return False
        return self.ip_version == 4 or self.ipv6_address_mode in (DHCPV6_STATEFUL,
                                                                  DHCPV6_STATELESS)

    @property
    def assigns_addresses(self) -> bool:
        """True if the server hands out addresses (host entries with an IP)."""
        return self.enable_dhcp and not (
            self.ip_version == 6
            and self.ipv6_address_mode in (IPV6_SLAAC, DHCPV6_STATELESS))


@dataclasses.dataclass(frozen=True)
class FixedIp:
    """One address of a port, on a subnet of this network."""

    subnet_id: str
    address: IPAddress


@dataclasses.dataclass(frozen=True)
class ExtraOpt:
    """A port's extra DHCP option (``[tag:<t>,]<name or code>``, value)."""

    name: str
    value: str
    ip_version: int


@dataclasses.dataclass(frozen=True)
class Port:
    """A validated port: what a DHCP server serves it, and what the agent
    tells neutron-server about it."""

    id: str
    mac_address: str
    device_owner: str
    device_id: str
    #: addresses on subnets of this network
    fixed_ips: tuple[FixedIp, ...]
    extra_opts: tuple[ExtraOpt, ...] = ()
    client_id: str | None = None
    # ip -> (hostname, fqdn) from the port's dns_assignment
    dns_names: tuple[tuple[IPAddress, str, str], ...] = ()
    #: addresses on subnets the network does not list here (another
    #: segment's): not served, but kept when the agent updates the port
    unserved_fixed_ips: tuple[FixedIp, ...] = ()

    @property
    def has_host_entry(self) -> bool:
        return self.device_owner not in NO_HOST_ENTRY_OWNERS

    def names_for(self, address: IPAddress, dns_domain: str) -> tuple[str, str]:
        """(hostname, fqdn): the port's DNS assignment, else ``host-<ip>``."""
        for ip, hostname, fqdn in self.dns_names:
            if ip == address:
                return hostname, fqdn
        hostname = 'host-' + str(address).replace('.', '-').replace(':', '-')
        return hostname, ('%s.%s' % (hostname, dns_domain) if dns_domain else hostname)


@dataclasses.dataclass(frozen=True)
class Network:
    """A validated network; subnets sorted so what a server is given does
    not depend on the server's order."""

    id: str
    mtu: int | None
    subnets: tuple[Subnet, ...]
    ports: tuple[Port, ...]
    #: (port id or index, reason) of every port left out
    skipped_ports: tuple[tuple[str, str], ...] = ()
    admin_state_up: bool = True
    project_id: str | None = None
    #: device_id of every port left out (this host's own DHCP port among
    #: them must not be created again)
    skipped_device_ids: frozenset[str] = frozenset()

    @property
    def dhcp_enabled(self) -> bool:
        """Neutron's rule: a DHCP server runs while any subnet has DHCP on."""
        return any(s.enable_dhcp for s in self.subnets)

    @property
    def dhcp_subnets(self) -> tuple[Subnet, ...]:
        """The subnets with DHCP on: what a DHCP port covers."""
        return tuple(s for s in self.subnets if s.enable_dhcp)

    def subnet(self, subnet_id: str) -> Subnet | None:
        for s in self.subnets:
            if s.id == subnet_id:
                return s
        return None


@dataclasses.dataclass(frozen=True)
class ServiceState:
    """A network's DHCP server on this host, as :meth:`DhcpDriver.service_state`
    reads it: whether it runs, and the per-port entries it serves.

    :ivar process: the server process (pid file, pid, argv).
    :ivar running: a live server of this network runs.
    :ivar host_file: where the per-port entries are (shown to operators).
    :ivar hosts: address -> MAC of those entries.
    """

    process: external_process.ProcessState
    running: bool
    host_file: str
    hosts: Mapping[str, str]


class DhcpDriver(driver.Driver):
    """Makes the host serve DHCP on networks: namespace, DHCP port, server.

    ``network`` is what neutron-server's ``get_network_info`` returned,
    validated by the agent; ``port`` is this host's DHCP port on it (see
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
    def enable(self, network: Network, port: Port) -> None:
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

    def service_state(self, network_id: str) -> ServiceState | None:
        """The network's DHCP server as the host shows it, read only, for
        ``agentkit-doctor``; None when this driver cannot tell (the default)."""
        return None
