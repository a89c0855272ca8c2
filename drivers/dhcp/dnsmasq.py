"""``dnsmasq`` DHCP driver: one dnsmasq per network, inside its namespace.

Why it is built this way:

* The command line and the files in ``<state_path>/dhcp/<network-id>``
  (``host``, ``addn_hosts``, ``opts``, ``leases``, ``pid``, ``interface``)
  have the shapes Neutron's DHCP agent produces (checked against a live
  Neutron 29 dnsmasq), so operators' tools and habits keep working.
* dnsmasq re-reads ``host``, ``addn_hosts`` and ``opts`` on SIGHUP with the
  same pid, so port changes never restart it. Only a change of the command
  line (the set of DHCP subnets, the MTU, the lease time) restarts it.
* dnsmasq outlives the agent: a restarted agent adopts a dnsmasq whose
  command line is unchanged, and signals it only if a file really changed.
* Every value from the server ends up in files dnsmasq parses line by line,
  so everything is validated and written back from parsed objects; a
  hostile value can neither inject a dnsmasq directive nor escape the state
  directory. A bad port is skipped (with the reason logged) so the other
  VMs of the network keep their DHCP; a bad network or subnet is refused.
* dnsmasq reads its files only after dropping to ``nobody``; if ``nobody``
  cannot traverse the state directory, dnsmasq runs and silently answers
  nothing. :meth:`DnsmasqDriver.initialize` refuses such a ``state_path``.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import os
import pwd
import re
import shutil
import stat
import threading
import time
import uuid
from typing import Any, Callable, Union

from oslo_config import cfg
from oslo_log import log as logging

from agentkit import exceptions
from agentkit.api import dhcp
from agentkit.lib import external_process
from agentkit.lib import fileutils
from agentkit.lib import ip_lib
from agentkit.lib import naming
from agentkit.privileged import dhcp_release
from agentkit.privileged import tool_exec

LOG = logging.getLogger(__name__)

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

SERVICE = 'dnsmasq'
DHCP_DIR = 'dhcp'

# The files of one network, named as Neutron names them.
HOST_FILE = 'host'
ADDN_HOSTS_FILE = 'addn_hosts'
OPTS_FILE = 'opts'
LEASES_FILE = 'leases'
PID_FILE = 'pid'
INTERFACE_FILE = 'interface'
# Files dnsmasq re-reads on SIGHUP.
RELOADABLE_FILES = (HOST_FILE, ADDN_HOSTS_FILE, OPTS_FILE)

DEVICE_OWNER_DHCP = 'network:dhcp'
DEVICE_OWNER_ROUTER_INTF = 'network:router_interface'
DEVICE_OWNER_DVR_INTERFACE = 'network:router_interface_distributed'
DEVICE_OWNER_HA_REPLICATED_INT = 'network:ha_router_replicated_interface'
DEVICE_OWNER_ROUTER_HA_INTF = 'network:router_ha_interface'
DEVICE_OWNER_FLOATINGIP = 'network:floatingip'
DEVICE_OWNER_DISTRIBUTED = 'network:distributed'
#: Ports that make a subnet "routed" when they hold its gateway address.
ROUTER_INTERFACE_OWNERS = frozenset({DEVICE_OWNER_ROUTER_INTF, DEVICE_OWNER_DVR_INTERFACE,
                                     DEVICE_OWNER_HA_REPLICATED_INT})
#: Ports that never get a host entry (no VM behind them asks for DHCP):
#: the DHCP ports themselves, HA heartbeat ports, floating IPs, OVN
#: metadata ports -- the same list Neutron uses.
NO_HOST_ENTRY_OWNERS = frozenset({DEVICE_OWNER_DHCP, DEVICE_OWNER_ROUTER_HA_INTF,
                                  DEVICE_OWNER_FLOATINGIP, DEVICE_OWNER_DISTRIBUTED})

IPV6_SLAAC = 'slaac'
DHCPV6_STATEFUL = 'dhcpv6-stateful'
DHCPV6_STATELESS = 'dhcpv6-stateless'
IPV6_MODES = frozenset({IPV6_SLAAC, DHCPV6_STATEFUL, DHCPV6_STATELESS})

METADATA_CIDR = '169.254.169.254/32'
IPV4_ANY = ipaddress.ip_network('0.0.0.0/0')
# Option 249: Microsoft's pre-RFC 3442 classless static routes.
WIN2K3_STATIC_ROUTES = '249'
CLIENT_ID_OPTS = frozenset({'client-id', '61'})
SUBNET_TAG = 'subnet-%s'
PORT_TAG = 'port-%s'
# Neutron gives IPv6 subnets with a prefix shorter than /64 no DHCP range.
MIN_IPV6_RANGE_PREFIXLEN = 64
UNPRIVILEGED_USER = 'nobody'
#: How long dnsmasq gets to drop released leases from its lease file, per try.
RELEASE_WAIT = 1.0
RELEASE_TRIES = 2

_OPT_NAME_RE = re.compile(r'(?:[0-9]{1,5}|[A-Za-z][A-Za-z0-9-]{0,63})')
_TAG_NAME_RE = re.compile(r'[A-Za-z0-9_.-]{1,64}')
# Printable ASCII only: a newline would start a new dnsmasq directive.
_OPT_VALUE_RE = re.compile(r'[ -~]{0,1024}')
_CLIENT_ID_RE = re.compile(r'[A-Za-z0-9:._*-]{1,255}')
_DNS_LABEL_RE = re.compile(r'[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?')
_DEVICE_OWNER_RE = re.compile(r'[ -~]{0,255}')


def _short(value: Any) -> str:
    """repr() bounded for log and error messages (payloads can be huge)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + '...'


def dhcp_port_device_id(host: str, network_id: str) -> str:
    """``device_id`` of this host's DHCP port on a network (Neutron's convention).

    ``dhcp<uuid5(DNS namespace, host)>-<network-id>``, so the server and a
    restarted agent agree on which DHCP port belongs to which agent.
    """
    return 'dhcp%s-%s' % (uuid.uuid5(uuid.NAMESPACE_DNS, host),
                          naming.validate_id(network_id, 'network'))


# ---------------------------------------------------------------------------
# The validated model of a network
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Subnet:
    """A subnet as dnsmasq needs it; addresses are parsed, never raw strings."""

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
        """True if dnsmasq gets a ``--dhcp-range`` for this subnet.

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
        """True if the ``opts`` file carries options for this subnet."""
        if not self.enable_dhcp:
            return False
        return self.ip_version == 4 or self.ipv6_address_mode in (DHCPV6_STATEFUL,
                                                                  DHCPV6_STATELESS)

    @property
    def assigns_addresses(self) -> bool:
        """True if dnsmasq hands out addresses (host entries with an IP)."""
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
    """A validated port; only what the host, addn_hosts and opts files use."""

    id: str
    mac_address: str
    device_owner: str
    device_id: str
    fixed_ips: tuple[FixedIp, ...]
    extra_opts: tuple[ExtraOpt, ...] = ()
    client_id: str | None = None
    # ip -> (hostname, fqdn) from the port's dns_assignment
    dns_names: tuple[tuple[IPAddress, str, str], ...] = ()

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
    """A validated network; subnets sorted so argv does not depend on server order."""

    id: str
    mtu: int | None
    subnets: tuple[Subnet, ...]
    ports: tuple[Port, ...]
    #: (port id or index, reason) of every port left out
    skipped_ports: tuple[tuple[str, str], ...] = ()

    @property
    def dhcp_enabled(self) -> bool:
        """Neutron's rule: a dnsmasq runs while any subnet has DHCP on."""
        return any(s.enable_dhcp for s in self.subnets)

    def subnet(self, subnet_id: str) -> Subnet | None:
        for s in self.subnets:
            if s.id == subnet_id:
                return s
        return None


class _BadPort(Exception):
    """Internal: why one port is left out."""


def _invalid(network_id: Any, reason: str) -> exceptions.InvalidPayload:
    return exceptions.InvalidPayload('invalid network %s from the server: %s'
                                     % (_short(network_id), reason))


def _ip(value: Any, what: str) -> IPAddress:
    """An IP address; scope ids ('fe80::1%eth0') and non-strings are refused."""
    if not isinstance(value, str) or '%' in value:
        raise ValueError('%s %s is not an IP address' % (what, _short(value)))
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError('%s %s is not an IP address'
                         % (what, _short(value))) from None


def _cidr(value: Any, what: str) -> IPNetwork:
    """A network in CIDR form without host bits."""
    if not isinstance(value, str) or '%' in value or '/' not in value:
        raise ValueError('%s %s is not a CIDR' % (what, _short(value)))
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError('%s %s: %s' % (what, _short(value), exc)) from None


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ValueError('%s must be a list, got %s' % (what, type(value).__name__))
    return list(value)


def _parse_subnet(raw: Any, network_id: str) -> Subnet:
    if not isinstance(raw, dict):
        raise ValueError('subnet must be a dict, got %s' % type(raw).__name__)
    subnet_id = naming.validate_id(raw.get('id'), 'subnet')
    if raw.get('network_id', network_id) != network_id:
        raise ValueError('subnet %s belongs to network %s'
                         % (subnet_id, _short(raw.get('network_id'))))
    cidr = _cidr(raw.get('cidr'), 'subnet %s cidr' % subnet_id)
    if raw.get('ip_version', cidr.version) != cidr.version:
        raise ValueError('subnet %s: ip_version %s does not match cidr %s'
                         % (subnet_id, _short(raw.get('ip_version')), cidr))
    enable_dhcp = raw.get('enable_dhcp')
    if not isinstance(enable_dhcp, bool):
        raise ValueError('subnet %s: enable_dhcp must be a boolean' % subnet_id)
    gateway = raw.get('gateway_ip')
    gateway_ip = None if gateway is None else _ip(gateway, 'subnet %s gateway_ip' % subnet_id)
    if gateway_ip is not None and gateway_ip.version != cidr.version:
        raise ValueError('subnet %s: gateway %s is not IPv%d' % (subnet_id, gateway_ip,
                                                                 cidr.version))
    routes = []
    for route in _list(raw.get('host_routes'), 'host_routes'):
        if not isinstance(route, dict):
            raise ValueError('subnet %s: host route must be a dict' % subnet_id)
        dest = _cidr(route.get('destination'), 'subnet %s route destination' % subnet_id)
        nexthop = _ip(route.get('nexthop'), 'subnet %s route nexthop' % subnet_id)
        if dest.version != cidr.version or nexthop.version != cidr.version:
            raise ValueError('subnet %s: route %s via %s is not IPv%d'
                             % (subnet_id, dest, nexthop, cidr.version))
        routes.append((dest, nexthop))
    servers = []
    for server in _list(raw.get('dns_nameservers'), 'dns_nameservers'):
        address = _ip(server, 'subnet %s dns_nameserver' % subnet_id)
        if address.version != cidr.version:
            # DHCPv4 cannot carry an IPv6 server and vice versa.
            LOG.warning('Ignoring DNS server %s of IPv%d subnet %s', address, cidr.version,
                        subnet_id)
            continue
        servers.append(address)
    modes = {}
    for key in ('ipv6_ra_mode', 'ipv6_address_mode'):
        mode = raw.get(key)
        if mode is not None and (cidr.version != 6 or mode not in IPV6_MODES):
            raise ValueError('subnet %s: invalid %s %s' % (subnet_id, key,
                                                           _short(mode)))
        modes[key] = mode
    return Subnet(subnet_id, cidr, enable_dhcp, gateway_ip, tuple(routes), tuple(servers),
                  modes['ipv6_ra_mode'], modes['ipv6_address_mode'])


def _parse_extra_opt(raw: Any) -> ExtraOpt | None:
    if not isinstance(raw, dict):
        raise _BadPort('extra_dhcp_opt must be a dict')
    name = raw.get('opt_name')
    value = raw.get('opt_value')
    if value is None:
        return None  # Neutron's way of deleting an option
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    version = raw.get('ip_version', 4)
    if version is None:
        version = 4
    if version not in (4, 6) or isinstance(version, bool):
        raise _BadPort('extra_dhcp_opt ip_version %s' % _short(version))
    if not isinstance(name, str):
        raise _BadPort('extra_dhcp_opt name %s' % _short(name))
    tag, _, option = name.rpartition(',')
    if tag and not (tag.startswith('tag:') and _TAG_NAME_RE.fullmatch(tag[4:])):
        raise _BadPort('extra_dhcp_opt name %s' % _short(name))
    if not _OPT_NAME_RE.fullmatch(option):
        raise _BadPort('extra_dhcp_opt name %s' % _short(name))
    if not isinstance(value, str) or not _OPT_VALUE_RE.fullmatch(value):
        raise _BadPort('extra_dhcp_opt %s has an invalid value %s'
                       % (name, _short(value)))
    return ExtraOpt(name, value, version)


def _parse_dns_assignment(raw: Any, addresses: set[IPAddress]
                          ) -> tuple[tuple[IPAddress, str, str], ...]:
    names = []
    for entry in _list(raw, 'dns_assignment'):
        if not isinstance(entry, dict):
            raise _BadPort('dns_assignment entry must be a dict')
        address = _ip(entry.get('ip_address'), 'dns_assignment ip_address')
        hostname = entry.get('hostname')
        fqdn = entry.get('fqdn')
        fqdn = fqdn.rstrip('.') if isinstance(fqdn, str) else fqdn
        if not (isinstance(hostname, str) and _DNS_LABEL_RE.fullmatch(hostname)):
            raise _BadPort('invalid hostname %s' % _short(hostname))
        if not (isinstance(fqdn, str) and len(fqdn) <= 253
                and all(_DNS_LABEL_RE.fullmatch(label) for label in fqdn.split('.'))):
            raise _BadPort('invalid fqdn %s' % _short(fqdn))
        if address in addresses:
            names.append((address, hostname, fqdn))
    return tuple(names)


def _parse_port(raw: Any, network_id: str, subnets: dict[str, Subnet]) -> Port:
    if not isinstance(raw, dict):
        raise _BadPort('port must be a dict, got %s' % type(raw).__name__)
    try:
        port_id = naming.validate_id(raw.get('id'), 'port')
        if raw.get('network_id', network_id) != network_id:
            raise _BadPort('port belongs to network %s'
                           % _short(raw.get('network_id')))
        mac = ip_lib.validate_mac(raw.get('mac_address'))
        owner = raw.get('device_owner') or ''
        device_id = raw.get('device_id') or ''
        for what, value in (('device_owner', owner), ('device_id', device_id)):
            if not isinstance(value, str) or not _DEVICE_OWNER_RE.fullmatch(value):
                raise _BadPort('invalid %s %s' % (what, _short(value)))
        fixed_ips = []
        for entry in _list(raw.get('fixed_ips'), 'fixed_ips'):
            if not isinstance(entry, dict):
                raise _BadPort('fixed_ips entry must be a dict')
            subnet_id = naming.validate_id(entry.get('subnet_id'), 'subnet')
            address = _ip(entry.get('ip_address'), 'fixed ip')
            subnet = subnets.get(subnet_id)
            if subnet is None:
                # A subnet of another segment, not served here.
                LOG.debug('Port %s: ignoring %s on unknown subnet %s', port_id, address,
                          subnet_id)
                continue
            if address not in subnet.cidr:
                raise _BadPort('fixed ip %s is outside subnet %s (%s)'
                               % (address, subnet_id, subnet.cidr))
            fixed_ips.append(FixedIp(subnet_id, address))
        opts = []
        client_id = None
        for raw_opt in _list(raw.get('extra_dhcp_opts'), 'extra_dhcp_opts'):
            opt = _parse_extra_opt(raw_opt)
            if opt is None:
                continue
            if opt.name in CLIENT_ID_OPTS:
                if not _CLIENT_ID_RE.fullmatch(opt.value):
                    raise _BadPort('invalid client-id %s' % _short(opt.value))
                client_id = opt.value
                continue
            opts.append(opt)
        dns_names = _parse_dns_assignment(raw.get('dns_assignment'),
                                          {f.address for f in fixed_ips})
    except (ValueError, exceptions.InvalidIdentifier) as exc:
        raise _BadPort(str(exc)) from None
    return Port(port_id, mac, owner, device_id, tuple(fixed_ips), tuple(opts), client_id,
                dns_names)


def parse_network(raw: Any) -> Network:
    """Validate a ``get_network_info`` network dict into a :class:`Network`.

    Ports that fail validation (or collide with an earlier port's MAC or
    address) are left out and logged, so one corrupt port cannot take the
    DHCP service of a whole network down.

    :raises InvalidPayload: the network itself or one of its subnets is bad.
    """
    if not isinstance(raw, dict):
        raise _invalid(None, 'expected a dict, got %s' % type(raw).__name__)
    network_id = raw.get('id')
    try:
        naming.validate_id(network_id, 'network')
        mtu = raw.get('mtu')
        if mtu in (None, 0):
            mtu = None
        else:
            ip_lib.validate_mtu(mtu)
        subnets: dict[str, Subnet] = {}
        for raw_subnet in _list(raw.get('subnets'), 'subnets'):
            subnet = _parse_subnet(raw_subnet, network_id)
            if subnet.id in subnets:
                raise ValueError('subnet %s listed twice' % subnet.id)
            subnets[subnet.id] = subnet
        raw_ports = _list(raw.get('ports'), 'ports')
    except (ValueError, exceptions.InvalidIdentifier) as exc:
        raise _invalid(network_id, str(exc)) from None

    ports: list[Port] = []
    skipped: list[tuple[str, str]] = []
    seen_ids: set[str] = set()
    seen_macs: dict[str, str] = {}
    seen_ips: dict[IPAddress, str] = {}
    for index, raw_port in enumerate(raw_ports):
        label = (raw_port.get('id') if isinstance(raw_port, dict)
                 and isinstance(raw_port.get('id'), str) else '#%d' % index)
        try:
            port = _parse_port(raw_port, network_id, subnets)
            if port.id in seen_ids:
                raise _BadPort('port listed twice')
            if port.has_host_entry:
                if port.mac_address in seen_macs:
                    raise _BadPort('MAC %s is also used by port %s'
                                   % (port.mac_address, seen_macs[port.mac_address]))
                for fixed_ip in port.fixed_ips:
                    if fixed_ip.address in seen_ips:
                        raise _BadPort('address %s is also used by port %s'
                                       % (fixed_ip.address, seen_ips[fixed_ip.address]))
        except _BadPort as exc:
            LOG.warning('Network %s: skipping port %s: %s', network_id,
                        _short(label), exc)
            skipped.append((label[:60], str(exc)))
            continue
        seen_ids.add(port.id)
        if port.has_host_entry:
            seen_macs[port.mac_address] = port.id
            for fixed_ip in port.fixed_ips:
                seen_ips[fixed_ip.address] = port.id
        ports.append(port)
    ordered_subnets = sorted(subnets.values(), key=lambda s: (
        s.ip_version, int(s.cidr.network_address), s.cidr.prefixlen, s.id))
    return Network(network_id, mtu, tuple(ordered_subnets), tuple(ports), tuple(skipped))


# ---------------------------------------------------------------------------
# Rendering: pure functions of (network, settings)
# ---------------------------------------------------------------------------

def _forwarder(value: Any) -> str:
    """A ``dnsmasq_dns_servers`` entry: an IP address, optionally ``#port``."""
    address, sep, port = value.partition('#') if isinstance(value, str) else (value, '', '')
    parsed = _ip(address, 'dnsmasq_dns_servers entry')
    if sep and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError('dnsmasq_dns_servers entry %s: bad port' % _short(value))
    return str(parsed) + (sep + str(int(port)) if sep else '')


@dataclasses.dataclass(frozen=True)
class Settings:
    """The options that shape dnsmasq's command line and files."""

    state_path: str
    lease_duration: int = 86400
    dns_domain: str = 'openstacklocal'
    #: upstream servers dnsmasq forwards the VMs' queries to (``--server=``),
    #: as ``ip`` or ``ip#port``; never handed to the VMs themselves
    dns_forwarders: tuple[str, ...] = ()
    #: forward to the host's resolv.conf servers when there are no forwarders
    local_resolv: bool = False
    lease_max: int = 2 ** 24
    config_file: str = ''
    enable_isolated_metadata: bool = False

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> Settings:
        servers = []
        for server in conf.dnsmasq_dns_servers or ():
            try:
                servers.append(_forwarder(server))
            except ValueError as exc:
                raise exceptions.InvalidConfiguration(str(exc)) from None
        domain = (conf.dns_domain or '').strip().rstrip('.')
        if domain and not all(_DNS_LABEL_RE.fullmatch(label) for label in domain.split('.')):
            raise exceptions.InvalidConfiguration('dns_domain %r is not a DNS domain name'
                                                  % conf.dns_domain)
        config_file = (conf.dnsmasq_config_file or '').strip()
        if config_file and (not os.path.isabs(config_file) or ',' in config_file):
            raise exceptions.InvalidConfiguration(
                'dnsmasq_config_file must be an absolute path, got %r' % config_file)
        return cls(state_path=conf.state_path, lease_duration=conf.dhcp_lease_duration,
                   dns_domain=domain, dns_forwarders=tuple(servers),
                   local_resolv=conf.dnsmasq_local_resolv,
                   lease_max=conf.dnsmasq_lease_max, config_file=config_file,
                   enable_isolated_metadata=conf.enable_isolated_metadata)

    @property
    def lease(self) -> str:
        return 'infinite' if self.lease_duration == -1 else '%ds' % self.lease_duration

    def state_dir(self, network_id: str) -> str:
        return naming.dhcp_state_dir(self.state_path, network_id)


def build_argv(network: Network, settings: Settings) -> list[str]:
    """dnsmasq's command line, in the order Neutron's DHCP agent builds it.

    No ``--interface``: ``--bind-dynamic`` plus the namespace isolate it, and
    the DHCP port may be renamed or re-plugged without a restart.
    """
    state_dir = settings.state_dir(network.id)

    def path(name: str) -> str:
        return os.path.join(state_dir, name)

    argv = ['dnsmasq', '--no-hosts']
    if settings.dns_forwarders or not settings.local_resolv:
        # The host's resolv.conf only with dnsmasq_local_resolv and no forwarders.
        argv.append('--no-resolv')
    argv += ['--pid-file=' + path(PID_FILE),
             '--dhcp-hostsfile=' + path(HOST_FILE),
             '--addn-hosts=' + path(ADDN_HOSTS_FILE),
             '--dhcp-optsfile=' + path(OPTS_FILE),
             '--dhcp-leasefile=' + path(LEASES_FILE),
             '--dhcp-match=set:ipxe,175',
             '--dhcp-userclass=set:ipxe6,iPXE',
             '--local-service',
             '--bind-dynamic']
    possible_leases = 0
    for subnet in network.subnets:
        if not subnet.has_range:
            continue
        cidr = subnet.cidr
        size = cidr.netmask if cidr.version == 4 else cidr.prefixlen
        argv.append('--dhcp-range=set:%s,%s,static,%s,%s' % (
            SUBNET_TAG % subnet.id, cidr.network_address, size, settings.lease))
        possible_leases += cidr.num_addresses
    if network.mtu:
        argv.append('--dhcp-option-force=option:mtu,%d' % network.mtu)
    argv.append('--dhcp-lease-max=%d' % min(possible_leases, settings.lease_max))
    argv.append('--conf-file=' + (settings.config_file or '/dev/null'))
    argv += ['--server=' + server for server in settings.dns_forwarders]
    if settings.dns_domain:
        argv.append('--domain=' + settings.dns_domain)
    return argv


def _host_entries(network: Network) -> list[tuple[Port, FixedIp, Subnet]]:
    """(port, fixed ip, subnet) of every host entry, ordered by address."""
    subnets = {s.id: s for s in network.subnets}
    entries = [(port, fixed_ip, subnets[fixed_ip.subnet_id])
               for port in network.ports if port.has_host_entry
               for fixed_ip in port.fixed_ips]
    entries.sort(key=lambda e: (e[1].address.version, int(e[1].address), e[0].id))
    return entries


def _literal(address: IPAddress) -> str:
    """How dnsmasq wants an address inside a comma list: IPv6 in brackets."""
    return '[%s]' % address if address.version == 6 else str(address)


def render_hosts(network: Network, settings: Settings) -> str:
    """``host``: ``<mac>[,id:<client-id>],<fqdn>,<ip>[,set:port-<id>]`` lines.

    Only DHCP-enabled subnets; ports of DHCPv6-stateless subnets that carry
    extra options get a bare ``<mac>,set:port-<id>`` so their options apply.
    """
    lines: list[str] = []
    for port, fixed_ip, subnet in _host_entries(network):
        port_tag = ',set:' + PORT_TAG % port.id if port.extra_opts else ''
        if not subnet.assigns_addresses:
            if (subnet.enable_dhcp and subnet.ipv6_address_mode == DHCPV6_STATELESS
                    and port.extra_opts):
                line = '%s%s' % (port.mac_address, port_tag)
                if line not in lines:
                    lines.append(line)
            continue
        _, fqdn = port.names_for(fixed_ip.address, settings.dns_domain)
        client = ',id:' + port.client_id if port.client_id else ''
        address = _literal(fixed_ip.address)
        lines.append('%s%s,%s,%s%s' % (port.mac_address, client, fqdn, address, port_tag))
    return ''.join(line + '\n' for line in lines)


def render_addn_hosts(network: Network, settings: Settings) -> str:
    """``addn_hosts``: ``<ip>\\t<fqdn> <hostname>`` (fqdn first for PTR answers)."""
    lines = []
    for port, fixed_ip, _ in _host_entries(network):
        hostname, fqdn = port.names_for(fixed_ip.address, settings.dns_domain)
        lines.append('%s\t%s %s\n' % (fixed_ip.address, fqdn, hostname))
    return ''.join(lines)


def format_option(ip_version: int, tag: str, option: str, *values: str) -> str:
    """One ``opts`` line: ``tag:<tag>[,tag:<extra>],option[6]:<name>|<code>,values``."""
    extra_tag, _, option = option.rpartition(',')
    if ip_version == 6:
        option = 'option6:' + option
    elif not option.isdigit():
        option = 'option:' + option
    parts = ['tag:' + tag] + ([extra_tag] if extra_tag else []) + [option] + list(values)
    return ','.join(parts)


def isolated_subnets(network: Network) -> set[str]:
    """Ids of subnets that no router port serves (Neutron's definition).

    A subnet counts as routed only if a router interface holds its gateway
    address; there the router's metadata proxy answers 169.254.169.254.
    """
    routed = set()
    subnets = {s.id: s for s in network.subnets}
    for port in network.ports:
        if port.device_owner not in ROUTER_INTERFACE_OWNERS:
            continue
        for fixed_ip in port.fixed_ips:
            subnet = subnets.get(fixed_ip.subnet_id)
            if subnet is not None and subnet.gateway_ip == fixed_ip.address:
                routed.add(subnet.id)
    return {s.id for s in network.subnets} - routed


def needs_metadata_proxy(network: Network, settings: Settings) -> bool:
    """True if this DHCP namespace must serve metadata (isolated IPv4 subnets)."""
    if not settings.enable_isolated_metadata:
        return False
    isolated = isolated_subnets(network)
    return any(s.id in isolated and s.ip_version == 4 and s.enable_dhcp
               for s in network.subnets)


def render_opts(network: Network, settings: Settings,
                dhcp_ips: dict[str, IPAddress] | None = None) -> str:
    """``opts``: per-subnet DNS, routes and router; then per-port extra options.

    :param dhcp_ips: subnet id -> this agent's DHCP port address, the next
        hop of the metadata route on isolated subnets.
    """
    dhcp_ips = dhcp_ips or {}
    isolated = isolated_subnets(network)
    # Every DHCP port's address per subnet: with more than one DHCP agent
    # on a subnet without DNS servers, VMs get all of them as resolvers.
    dhcp_servers: dict[str, list[IPAddress]] = {}
    for port in network.ports:
        if port.device_owner == DEVICE_OWNER_DHCP:
            for fixed_ip in port.fixed_ips:
                dhcp_servers.setdefault(fixed_ip.subnet_id, []).append(fixed_ip.address)
    lines = []
    for subnet in network.subnets:
        if not subnet.has_options:
            continue
        version = subnet.ip_version
        tag = SUBNET_TAG % subnet.id
        # What VMs use as resolvers: the subnet's dns_nameservers, else
        # dnsmasq itself (its default), which forwards to dnsmasq_dns_servers.
        servers = subnet.dns_nameservers
        if not servers and len(dhcp_servers.get(subnet.id, ())) > 1:
            servers = tuple(sorted(dhcp_servers[subnet.id], key=int))
        if servers:
            if len(servers) == 1 and servers[0].is_unspecified:
                # 0.0.0.0 / :: means "announce no DNS server at all".
                lines.append(format_option(version, tag, 'dns-server'))
            else:
                lines.append(format_option(version, tag, 'dns-server',
                                           *(_literal(s) for s in servers)))
        if version == 6:
            if settings.dns_domain:
                lines.append(format_option(6, tag, 'domain-search', settings.dns_domain))
            continue
        gateway = subnet.gateway_ip
        routes = []
        for dest, nexthop in subnet.host_routes:
            if dest == IPV4_ANY:
                gateway = gateway or nexthop
            else:
                routes.append('%s,%s' % (dest, nexthop))
        if subnet.id in isolated:
            if settings.enable_isolated_metadata and subnet.id in dhcp_ips:
                routes.append('%s,%s' % (METADATA_CIDR, dhcp_ips[subnet.id]))
        elif gateway:
            routes.append('%s,%s' % (METADATA_CIDR, gateway))
        # Other IPv4 subnets of the network are on-link.
        on_link = ['%s,0.0.0.0' % other.cidr for other in network.subnets
                   if other.ip_version == 4 and other.cidr != subnet.cidr]
        routes = on_link + routes
        if routes:
            if gateway:
                routes.append('%s,%s' % (IPV4_ANY, gateway))
            lines.append(format_option(4, tag, 'classless-static-route', *routes))
            lines.append(format_option(4, tag, WIN2K3_STATIC_ROUTES, *routes))
        if gateway:
            lines.append(format_option(4, tag, 'router', str(gateway)))
        else:
            lines.append(format_option(4, tag, 'router'))

    for port in sorted(network.ports, key=lambda p: p.id):
        if not port.has_host_entry or not port.extra_opts:
            continue
        versions = {f.address.version for f in port.fixed_ips}
        for opt in port.extra_opts:
            if opt.ip_version not in versions:
                LOG.info('Port %s: not applying DHCP option %s: the port has no IPv%d '
                         'address', port.id, opt.name, opt.ip_version)
                continue
            lines.append(format_option(opt.ip_version, PORT_TAG % port.id, opt.name,
                                       *([opt.value] if opt.value else [])))
    return ''.join(line + '\n' for line in lines)


def render_init_leases(network: Network, settings: Settings, now: float) -> str:
    """``leases`` seeded before a (re)start: ``<expiry> <mac> <ip> * *``.

    Without it a fresh dnsmasq would know no lease, and clients renewing
    after an agent failover or restart could be refused. Expiry 0 is
    dnsmasq's "infinite". Only IPv4: DHCPv6 leases need the client's DUID.
    """
    expiry = 0 if settings.lease_duration == -1 else int(now) + settings.lease_duration
    return ''.join('%d %s %s * *\n' % (expiry, port.mac_address, fixed_ip.address)
                   for port, fixed_ip, subnet in _host_entries(network)
                   if subnet.ip_version == 4 and subnet.enable_dhcp)


def render_files(network: Network, settings: Settings,
                 dhcp_ips: dict[str, IPAddress] | None = None) -> dict[str, str]:
    """The files dnsmasq re-reads on SIGHUP, by name."""
    contents = (render_hosts(network, settings), render_addn_hosts(network, settings),
                render_opts(network, settings, dhcp_ips))
    return dict(zip(RELOADABLE_FILES, contents))


class Action(enum.Enum):
    """What to do with dnsmasq after the files were written."""

    START = 'start'        # not running
    RESTART = 'restart'    # running with another command line
    RELOAD = 'reload'      # same command line, a file changed: SIGHUP
    NONE = 'none'          # same command line, same files: adopt as is


def decide(running_argv: list[str] | None, desired_argv: list[str],
           files_changed: bool) -> Action:
    """The least disruptive action that makes dnsmasq serve the new config."""
    if running_argv is None:
        return Action.START
    if list(running_argv) != list(desired_argv):
        return Action.RESTART
    return Action.RELOAD if files_changed else Action.NONE


# ---------------------------------------------------------------------------
# Leases of deleted ports
# ---------------------------------------------------------------------------

_HEX_BYTES_RE = re.compile(r'[0-9a-f]{2}(?::[0-9a-f]{2})*')


@dataclasses.dataclass(frozen=True)
class Lease:
    """One line of dnsmasq's lease file (the expiry is left out on purpose:
    a renewed lease is still the same lease)."""

    address: IPAddress
    #: IPv4: the client's MAC (Ethernet only; other hardware types are skipped)
    mac: str | None = None
    #: IPv4: client id; IPv6: the client's DUID (hex bytes), None if unknown
    client_id: str | None = None
    #: IPv6: the IAID (temporary addresses, ``T<n>``, are skipped)
    iaid: int | None = None


def parse_leases(text: str) -> tuple[list[Lease], str | None]:
    """(leases, server DUID) from a lease file dnsmasq wrote.

    Lines are ``<expiry> <mac|iaid> <ip> <hostname> <client-id|duid>`` and
    one ``duid <server-duid>``. Lines agentkit cannot release (unknown
    shapes, non-Ethernet hardware, temporary IPv6 addresses) are skipped.
    """
    leases = []
    server_duid = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == 'duid':
            if _HEX_BYTES_RE.fullmatch(parts[1].lower()):
                server_duid = parts[1].lower()
            continue
        if len(parts) != 5:
            continue
        try:
            address = ipaddress.ip_address(parts[2].strip('[]'))
        except ValueError:
            continue
        client = parts[4].lower()
        client_id = client if _HEX_BYTES_RE.fullmatch(client) else None
        if address.version == 4:
            try:
                mac = ip_lib.validate_mac(parts[1], unicast=False)
            except ValueError:
                continue
            leases.append(Lease(address, mac=mac, client_id=client_id))
        elif parts[1].isdigit() and int(parts[1]) < 2 ** 32:
            leases.append(Lease(address, client_id=client_id, iaid=int(parts[1])))
    return leases, server_duid


def read_leases(path: str) -> tuple[list[Lease], str | None]:
    try:
        with open(path, encoding='ascii', errors='replace') as f:
            return parse_leases(f.read())
    except FileNotFoundError:
        return [], None


def read_host_macs(path: str) -> dict[IPAddress, str]:
    """address -> MAC of the ``host`` file agentkit wrote last time."""
    macs: dict[IPAddress, str] = {}
    try:
        with open(path, encoding='ascii', errors='replace') as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return macs
    for line in lines:
        mac, *fields = line.split(',')
        for field in fields:
            try:
                macs[ipaddress.ip_address(field.strip('[]'))] = mac.lower()
            except ValueError:
                continue
    return macs


def client_id_hex(value: str | None) -> str | None:
    """A port's client-id the way dnsmasq records it: hex bytes.

    dnsmasq reads ``id:`` as hex when it looks like colon-separated hex and
    as a string otherwise; ``*`` means "ignore the client id".
    """
    if not value or value == '*':
        return None
    if _HEX_BYTES_RE.fullmatch(value.lower()):
        return value.lower()
    return ':'.join('%02x' % b for b in value.encode())


def _mac_in_duid(duid: str | None) -> str | None:
    """The Ethernet MAC a DUID-LLT or DUID-LL carries, else None."""
    if not duid:
        return None
    octets = duid.split(':')
    if octets[:4] == ['00', '01', '00', '01'] and len(octets) == 14:
        return ':'.join(octets[8:])
    if octets[:4] == ['00', '03', '00', '01'] and len(octets) == 10:
        return ':'.join(octets[4:])
    return None


def stale_leases(network: Network, leases: list[Lease],
                 old_hosts: dict[IPAddress, str] | None = None) -> list[Lease]:
    """Leases no port of ``network`` holds any more: to be released.

    IPv4: no port has that address with that MAC, or the port's client-id
    differs (a port without one accepts any). IPv6 leases carry no MAC: a
    lease is stale when no port holds the address, when its DUID names
    another MAC than the port's, or when the address belonged to another
    MAC in the previous ``host`` file (``old_hosts``).
    """
    old_hosts = old_hosts or {}
    holders: dict[IPAddress, Port] = {}
    for port, fixed_ip, subnet in _host_entries(network):
        if subnet.assigns_addresses:
            holders[fixed_ip.address] = port
    stale = []
    for lease in leases:
        port = holders.get(lease.address)
        if port is None:
            stale.append(lease)
        elif lease.address.version == 4:
            wanted_id = client_id_hex(port.client_id)
            if lease.mac != port.mac_address or (
                    wanted_id is not None and lease.client_id != wanted_id):
                stale.append(lease)
        else:
            duid_mac = _mac_in_duid(lease.client_id)
            previous = old_hosts.get(lease.address)
            if ((duid_mac is not None and duid_mac != port.mac_address)
                    or (previous is not None and previous != port.mac_address)):
                stale.append(lease)
    return stale


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

def write_file_if_changed(path: str, content: str) -> bool:
    """Atomically replace ``path`` (tmp + rename) unless it already holds ``content``.

    dnsmasq may re-read a file at any moment (SIGHUP from a concurrent
    reload), so it must never see a half-written one. Files are 0644: dnsmasq
    reads them as ``nobody``. Returns True if the file was written.
    """
    try:
        with open(path, encoding='utf-8') as f:
            if f.read() == content:
                if stat.S_IMODE(os.fstat(f.fileno()).st_mode) & 0o044 != 0o044:
                    os.chmod(path, 0o644)
                return False
    except FileNotFoundError:
        pass
    fileutils.write_atomic(path, content)
    return True


def _ensure_dir(path: str) -> None:
    """Create ``path`` (and missing parents) as 0755 whatever the umask is.

    dnsmasq must traverse every directory we create; a 0700 ``state_path``
    made under a strict umask would silently break DHCP.
    """
    missing = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    os.makedirs(path, mode=0o755, exist_ok=True)
    for directory in missing + [path]:
        if stat.S_IMODE(os.stat(directory).st_mode) & 0o055 != 0o055:
            os.chmod(directory, 0o755)


def _nobody_uid() -> int:
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER).pw_uid
    except KeyError:
        return 65534


def check_traversable(path: str, uid: int | None = None) -> None:
    """Refuse a ``path`` that dnsmasq, once it is ``nobody``, cannot reach.

    Every directory on the way -- of the path as configured and of its
    resolved target, so a symlink into root's mode-0700 home is caught -- must
    be searchable by others (or owned by ``nobody``). Group bits are not
    trusted: which group dnsmasq ends up in depends on how it was built.

    :raises InvalidConfiguration: naming the first directory that blocks.
    """
    if uid is None:
        uid = _nobody_uid()
    blocked = fileutils.blocking_directory(path, uid)
    if blocked is not None:
        current, st = blocked
        raise exceptions.InvalidConfiguration(
            'state_path %s is not usable for dnsmasq: %s (mode %04o, uid %d) '
            'cannot be traversed by %r, the user dnsmasq drops to before '
            'reading its files; it would run and answer no DHCP request. Use '
            'a directory like /var/lib/agentkit or make %s world-searchable '
            '(chmod o+x).' % (path, current, stat.S_IMODE(st.st_mode),
                              st.st_uid, UNPRIVILEGED_USER, current))


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------

#: ``hook(network, namespace, enabled)``; see :meth:`DnsmasqDriver.metadata_hook`.
MetadataHook = Callable[[dict[str, Any], str, bool], None]


@dataclasses.dataclass
class _NetworkState:
    namespace: str
    interface_name: str
    manager: external_process.ProcessManager
    argv: list[str]
    skipped_ports: int = 0
    metadata: bool = False
    reload_pending: bool = False


class DnsmasqDriver(external_process.DaemonOwner, dhcp.DhcpDriver):
    """One dnsmasq per network, started in the network's namespace.

    Thread-safe: calls for different networks run in parallel; calls for
    one network are serialised.
    """

    #: Root of the process table; unit tests point it at a fake tree.
    proc_path: str = external_process.PROC_PATH

    def __init__(self, conf: cfg.ConfigOpts, host: str) -> None:
        super().__init__(conf, host)
        self._networks: dict[str, _NetworkState] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.monitor: external_process.ProcessMonitor | None = None
        self.counters = {'starts': 0, 'restarts': 0, 'reloads': 0, 'adopted': 0,
                         'released': 0}
        self._release_tools: dict[int, bool] | None = None
        #: seconds the last enable()/reload() took (files + signal/spawn)
        self.last_apply_seconds: float | None = None
        self.last_action: Action | None = None

    # -- lifecycle -----------------------------------------------------------

    def initialize(self) -> None:
        """Check options and the state directory, start the respawn watch."""
        settings = Settings.from_conf(self.conf)
        dhcp_root = naming.safe_join(settings.state_path, DHCP_DIR)
        _ensure_dir(dhcp_root)
        check_traversable(dhcp_root)
        self.release_tools()
        self._ensure_monitor()

    def stop(self) -> None:
        """Stop watching; dnsmasq keeps running so VMs keep their DHCP."""
        if self.monitor is not None:
            self.monitor.stop(timeout=5)

    def get_configurations(self) -> dict[str, Any]:
        """dnsmasq figures only (``dnsmasq_*``): the agent reports the
        network/subnet/port counts itself and merges these over them."""
        with self._lock:
            states = list(self._networks.values())
            counters = dict(self.counters)
        return {
            'dnsmasq_networks': len(states),
            'dnsmasq_skipped_ports': sum(s.skipped_ports for s in states),
            'dnsmasq_respawns': self.monitor.respawn_count if self.monitor else 0,
            'dnsmasq_starts': counters['starts'],
            'dnsmasq_restarts': counters['restarts'],
            'dnsmasq_reloads': counters['reloads'],
            'dnsmasq_adopted': counters['adopted'],
            'dnsmasq_leases_released': counters['released'],
        }

    # -- the DhcpDriver API --------------------------------------------------

    def enable(self, network: dict[str, Any], namespace: str,
               interface_name: str) -> None:
        """Write the files and start, adopt, reload or restart dnsmasq.

        :raises InvalidPayload: bad network, namespace or interface name.
        :raises ProcessError: dnsmasq could not be started.
        """
        net = parse_network(network)
        try:
            ip_lib.validate_namespace(namespace)
            ip_lib.validate_device_name(interface_name)
        except exceptions.InvalidIdentifier as exc:
            raise _invalid(net.id, str(exc)) from None
        if namespace is None:
            raise _invalid(net.id, 'a namespace is required')
        with self._resource_lock(net.id):
            self._apply(net, network, namespace, interface_name)

    def reload(self, network: dict[str, Any]) -> None:
        """Rewrite the files; SIGHUP only if one changed, restart if argv changed.

        A network this driver instance has not enabled yet (e.g. right after
        an agent restart) is served in ``qdhcp-<id>`` with the interface
        recorded in its state directory.

        :raises ProcessError: the network was never enabled on this host.
        """
        net = parse_network(network)
        with self._resource_lock(net.id):
            with self._lock:
                state = self._networks.get(net.id)
            if state is not None:
                namespace, interface_name = state.namespace, state.interface_name
            else:
                namespace = naming.dhcp_namespace(net.id)
                interface_name = self._recorded_interface(net.id)
                if interface_name is None:
                    raise exceptions.ProcessError(
                        'cannot reload DHCP for network %s: it was never enabled on this '
                        'host (no %s file)' % (net.id, INTERFACE_FILE))
            self._apply(net, network, namespace, interface_name)

    def disable(self, network_id: str) -> None:
        """Stop dnsmasq, forget the network and remove its state directory."""
        try:
            naming.validate_id(network_id, 'network')
        except exceptions.InvalidIdentifier as exc:
            raise exceptions.InvalidPayload(str(exc)) from None
        with self._resource_lock(network_id):
            namespace = self._disable_locked(network_id)
        self.metadata_hook({'id': network_id}, namespace, False)

    def active_networks(self) -> set[str]:
        """Networks with a live dnsmasq, found from the state directories.

        Covers daemons left by a previous agent run, which this instance has
        not enabled (yet): the agent disables those it no longer hosts.
        """
        dhcp_root = os.path.join(self.conf.state_path, DHCP_DIR)
        try:
            names = os.listdir(dhcp_root)
        except (FileNotFoundError, NotADirectoryError):
            names = []
        with self._lock:
            candidates = {n for n in names if naming.is_valid_id(n)} | set(self._networks)
        active = set()
        for network_id in candidates:
            try:
                if self._manager(network_id, None).active:
                    active.add(network_id)
            except exceptions.InvalidIdentifier as exc:  # e.g. a symlink out of state_path
                LOG.warning('Ignoring DHCP state entry %s: %s', network_id, exc)
        return active

    # -- hooks and helpers for the agent -------------------------------------

    def metadata_hook(self, network: dict[str, Any], namespace: str, enabled: bool) -> None:
        """Called after every enable/reload/disable of a network; no-op here.

        ``enabled`` is True when the DHCP namespace must serve metadata
        (``enable_isolated_metadata`` and an isolated IPv4 DHCP subnet; the
        ``opts`` file then routes 169.254.169.254 via the DHCP port). The
        DHCP agent starts/stops its per-network metadata proxy here, either by
        overriding this method or by assigning a callable to
        ``driver.metadata_hook``. Exceptions propagate to the caller, after
        dnsmasq has been handled, so the agent can retry. ``network`` is the
        dict passed in (only ``{'id': ...}`` on disable).
        """

    def needs_metadata_proxy(self, network: dict[str, Any]) -> bool:
        """Whether ``network`` needs a metadata proxy in its DHCP namespace."""
        return needs_metadata_proxy(parse_network(network), Settings.from_conf(self.conf))

    def pid(self, network_id: str) -> int | None:
        """pid of the network's live dnsmasq, None if there is none."""
        manager = self._manager(naming.validate_id(network_id, 'network'), None)
        return manager.pid if manager.active else None

    def release_tools(self) -> dict[int, bool]:
        """Which IP versions' leases can be released; warns once if a tool is missing.

        Looked up in the path the privileged helper searches. Without the
        tool a deleted port's lease simply runs out (``dhcp_lease_duration``).
        """
        if self._release_tools is None:
            found = {4: shutil.which(dhcp_release.DHCP_RELEASE,
                                     path=tool_exec.SEARCH_PATH) is not None,
                     6: shutil.which(dhcp_release.DHCP_RELEASE6,
                                     path=tool_exec.SEARCH_PATH) is not None}
            missing = [name for version, name in ((4, dhcp_release.DHCP_RELEASE),
                                                  (6, dhcp_release.DHCP_RELEASE6))
                       if not found[version]]
            if missing:
                LOG.warning('%s not found in %s (Debian package dnsmasq-utils): the '
                            'DHCP leases of deleted ports are kept until they expire, '
                            'and their addresses are refused to new ports until then',
                            ' and '.join(missing), tool_exec.SEARCH_PATH)
            self._release_tools = found
        return self._release_tools

    # -- internals -----------------------------------------------------------

    def _manager(self, network_id: str, namespace: str | None,
                 argv_source: Callable[[], list[str]] | None = None
                 ) -> external_process.ProcessManager:
        state_dir = naming.dhcp_state_dir(self.conf.state_path, network_id)

        def cmd(pid_file: str) -> list[str]:
            if argv_source is None:
                raise exceptions.ProcessError('no command line known for dnsmasq of '
                                              'network %s' % network_id)
            return argv_source()
        return external_process.ProcessManager(
            network_id, SERVICE, namespace, state_dir, cmd,
            pid_file=os.path.join(state_dir, PID_FILE), proc_path=self.proc_path)

    def _new_state(self, network_id: str, namespace: str, interface_name: str,
                   argv: list[str]) -> _NetworkState:
        """State whose manager always spawns with the state's current argv."""
        state = _NetworkState(namespace, interface_name, None, argv)  # type: ignore[arg-type]
        state.manager = self._manager(network_id, namespace, lambda: list(state.argv))
        return state

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def _recorded_interface(self, network_id: str) -> str | None:
        path = os.path.join(naming.dhcp_state_dir(self.conf.state_path, network_id),
                            INTERFACE_FILE)
        try:
            with open(path, encoding='ascii', errors='replace') as f:
                name = f.read(64).strip()
            return ip_lib.validate_device_name(name)
        except (OSError, exceptions.InvalidIdentifier):
            return None

    def _own_dhcp_ips(self, net: Network, interface_name: str) -> dict[str, IPAddress]:
        """This agent's DHCP port addresses by subnet.

        The port is recognised by Neutron's device_id convention for this
        host, or by the interface drivers' naming (``tap``/``ns-`` + 11
        characters of the port id).
        """
        device_id = dhcp_port_device_id(self.host, net.id)
        name_suffix = interface_name[3:] if len(interface_name) == 14 else None
        for port in net.ports:
            if port.device_owner != DEVICE_OWNER_DHCP:
                continue
            if port.device_id == device_id or port.id[:11] == name_suffix:
                return {f.subnet_id: f.address for f in port.fixed_ips}
        return {}

    def _apply(self, net: Network, raw: dict[str, Any], namespace: str,
               interface_name: str) -> None:
        started = time.monotonic()
        settings = Settings.from_conf(self.conf)
        if not net.dhcp_enabled:
            LOG.info('Network %s has no DHCP-enabled subnet; stopping its dnsmasq', net.id)
            self._disable_locked(net.id)
            self.metadata_hook(raw, namespace, False)
            return
        state_dir = settings.state_dir(net.id)
        _ensure_dir(state_dir)
        old_hosts = read_host_macs(os.path.join(state_dir, HOST_FILE))
        files = render_files(net, settings, self._own_dhcp_ips(net, interface_name))
        changed = [name for name, content in files.items()
                   if write_file_if_changed(os.path.join(state_dir, name), content)]
        write_file_if_changed(os.path.join(state_dir, INTERFACE_FILE), interface_name + '\n')
        argv = build_argv(net, settings)
        metadata = needs_metadata_proxy(net, settings)

        with self._lock:
            state = self._networks.get(net.id)
        adopting = state is None
        if state is None or state.namespace != namespace:
            state = self._new_state(net.id, namespace, interface_name, argv)
        state.argv = argv
        state.interface_name = interface_name
        # Remembered until dnsmasq has been signalled, so a failed signal is
        # retried by the next call even though the files are then unchanged.
        state.reload_pending = state.reload_pending or bool(changed)
        with self._lock:
            self._networks[net.id] = state

        action = decide(state.manager.cmdline(), argv, state.reload_pending)
        if action in (Action.START, Action.RESTART):
            write_file_if_changed(os.path.join(state_dir, LEASES_FILE),
                                  render_init_leases(net, settings, time.time()))
        if action is Action.START:
            state.manager.enable()
            self._count('starts')
        elif action is Action.RESTART:
            LOG.info('dnsmasq for network %s needs a new command line; restarting', net.id)
            state.manager.restart()
            self._count('restarts')
        else:
            if adopting:
                LOG.info('Adopted the running dnsmasq of network %s (pid %s)', net.id,
                         state.manager.pid)
                self._count('adopted')
            if action is Action.RELOAD:
                if state.manager.reload():
                    self._count('reloads')
                else:  # died since the check: the monitor respawns it with these files
                    LOG.warning('dnsmasq for network %s vanished during reload', net.id)
        state.reload_pending = False
        if action in (Action.RELOAD, Action.NONE):
            # dnsmasq forgets the old owners' leases, so a reused address is
            # not refused to its new port. After the SIGHUP (Neutron releases
            # before it): the deleted port's VM can then not win its address
            # back in between. A (re)started dnsmasq reads a lease file
            # without them.
            self._release_stale_leases(net, state_dir, namespace, interface_name,
                                       old_hosts)

        state.skipped_ports = len(net.skipped_ports)
        state.metadata = metadata
        self._ensure_monitor().register(state.manager)
        self.last_action = action
        self.last_apply_seconds = time.monotonic() - started
        LOG.debug('DHCP for network %s: %s (changed: %s) in %.1f ms', net.id, action.value,
                  ', '.join(changed) or 'nothing', self.last_apply_seconds * 1000)
        self.metadata_hook(raw, namespace, metadata)

    def _release_stale_leases(self, net: Network, state_dir: str, namespace: str,
                              interface_name: str,
                              old_hosts: dict[IPAddress, str]) -> None:
        """Release the leases no port holds; never raises (they expire anyway)."""
        path = os.path.join(state_dir, LEASES_FILE)
        leases, server_duid = read_leases(path)
        tools = self.release_tools()
        pending = [lease for lease in stale_leases(net, leases, old_hosts)
                   if tools[lease.address.version]
                   and (lease.address.version == 4
                        or (lease.client_id and server_duid))]
        released = 0
        for _ in range(RELEASE_TRIES):
            if not pending:
                break
            sent = [lease for lease in pending
                    if self._release(net.id, namespace, interface_name, lease,
                                     server_duid)]
            if not sent:
                break
            deadline = time.monotonic() + RELEASE_WAIT
            while True:
                current = set(read_leases(path)[0])
                still = [lease for lease in sent if lease in current]
                if not still or time.monotonic() >= deadline:
                    break
                time.sleep(0.02)
            released += len(sent) - len(still)
            pending = still
        if released:
            with self._lock:
                self.counters['released'] += released
            LOG.info('Network %s: released %d DHCP lease(s) no port holds', net.id,
                     released)
        if pending:
            LOG.warning('Network %s: dnsmasq kept the leases of %s after release; they '
                        'expire on their own', net.id,
                        ', '.join(str(lease.address) for lease in pending))

    def _release(self, network_id: str, namespace: str, interface_name: str,
                 lease: Lease, server_duid: str | None) -> bool:
        """One dhcp_release(6) call; False (logged) if it could not be sent."""
        try:
            if lease.address.version == 4:
                returncode, output = dhcp_release.release_lease(
                    namespace, interface_name, str(lease.address), lease.mac,
                    lease.client_id)
            else:
                returncode, output = dhcp_release.release_lease6(
                    namespace, interface_name, str(lease.address), lease.iaid,
                    lease.client_id, server_duid)
        except Exception as exc:  # privsep re-raises the daemon's exceptions
            LOG.warning('Network %s: cannot release the DHCP lease of %s: %s',
                        network_id, lease.address, exc)
            return False
        if returncode != 0:
            LOG.warning('Network %s: releasing the DHCP lease of %s failed (exit %d): %s',
                        network_id, lease.address, returncode, output)
            return False
        LOG.debug('Network %s: released the DHCP lease of %s', network_id, lease.address)
        return True

    def _disable_locked(self, network_id: str) -> str:
        """Stop and forget one network; returns the namespace it ran in."""
        with self._lock:
            state = self._networks.pop(network_id, None)
        manager = state.manager if state is not None else self._manager(network_id, None)
        manager.disable()
        state_dir = naming.dhcp_state_dir(self.conf.state_path, network_id)
        if os.path.lexists(state_dir):
            shutil.rmtree(state_dir)
        LOG.info('DHCP disabled for network %s', network_id)
        return state.namespace if state is not None else naming.dhcp_namespace(network_id)
