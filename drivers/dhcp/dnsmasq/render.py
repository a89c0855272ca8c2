"""dnsmasq's command line and files: pure functions of (network, settings).

The shapes are those Neutron's DHCP agent produces (checked against a live
Neutron 29 dnsmasq), so operators' tools and habits keep working.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from agentkit import exceptions
from agentkit.api import device_owner
from agentkit.api import dhcp
from agentkit.api import dhcp_payload
from agentkit.api import metadata
from agentkit.api.dhcp import FixedIp, IPAddress, Network, Port, Subnet
from agentkit.lib import naming
from agentkit.lib import option_values

LOG = logging.getLogger(__name__)

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

IPV4_ANY = ipaddress.ip_network('0.0.0.0/0')
# Option 249: Microsoft's pre-RFC 3442 classless static routes.
WIN2K3_STATIC_ROUTES = '249'
SUBNET_TAG = 'subnet-%s'
PORT_TAG = 'port-%s'


def _forwarder(value: Any) -> str:
    """A ``dnsmasq_dns_servers`` entry: an IP address, optionally ``#port``."""
    return option_values.parse_dns_forwarder(value)


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
        if domain and not all(dhcp_payload.DNS_LABEL_RE.fullmatch(label)
                              for label in domain.split('.')):
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


def host_entries(network: Network) -> list[tuple[Port, FixedIp, Subnet]]:
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
    for port, fixed_ip, subnet in host_entries(network):
        port_tag = ',set:' + PORT_TAG % port.id if port.extra_opts else ''
        if not subnet.assigns_addresses:
            if (subnet.enable_dhcp and subnet.ipv6_address_mode == dhcp.DHCPV6_STATELESS
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
    for port, fixed_ip, _ in host_entries(network):
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
        if port.device_owner not in device_owner.ROUTER_INTERFACE_OWNERS:
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
        if port.device_owner == device_owner.DHCP:
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
                routes.append('%s,%s' % (metadata.METADATA_V4_CIDR, dhcp_ips[subnet.id]))
        elif gateway:
            routes.append('%s,%s' % (metadata.METADATA_V4_CIDR, gateway))
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
                   for port, fixed_ip, subnet in host_entries(network)
                   if subnet.ip_version == 4 and subnet.enable_dhcp)


def render_files(network: Network, settings: Settings,
                 dhcp_ips: dict[str, IPAddress] | None = None) -> dict[str, str]:
    """The files dnsmasq re-reads on SIGHUP, by name."""
    contents = (render_hosts(network, settings), render_addn_hosts(network, settings),
                render_opts(network, settings, dhcp_ips))
    return dict(zip(RELOADABLE_FILES, contents))
