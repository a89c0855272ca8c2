"""Security-group rules and ports as Neutron sends them, checked and turned into iptables text.

Why a module of its own: everything here is pure (no kernel, no state), so
unit tests can pin the exact iptables text of every kind of rule, and the
validation that keeps RPC payloads out of iptables-restore's grammar lives
in one place. Every value that reaches a rule is re-rendered from a parsed
int, ``ipaddress`` object or validated MAC, never copied from the payload.

Fail-closed: a rule that cannot be understood is *skipped* (rules only ever
allow), and a port address that cannot be parsed is left out of the
anti-spoofing allow list, so bad input never opens a port wider.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from typing import Any, Iterable, Mapping, Sequence

from agentkit.lib import ip_lib
from agentkit.lib import naming

LOG = logging.getLogger(__name__)

ETHERTYPES = {'IPv4': 4, 'IPv6': 6}
INGRESS = 'ingress'
EGRESS = 'egress'
ICMP, ICMPV6, TCP, UDP, SCTP, DCCP, UDPLITE = 1, 58, 6, 17, 132, 33, 136

# Protocol names neutron-server accepts (its API list), by IANA number.
PROTOCOL_NUMBERS = {
    'ah': 51, 'dccp': DCCP, 'egp': 8, 'esp': 50, 'gre': 47, 'icmp': ICMP,
    'igmp': 2, 'ipip': 4, 'ipv6-encap': 41, 'ipv6-frag': 44,
    'ipv6-icmp': ICMPV6, 'icmpv6': ICMPV6, 'ipv6-nonxt': 59, 'ipv6-opts': 60,
    'ipv6-route': 43, 'ospf': 89, 'pgm': 113, 'rsvp': 46, 'sctp': SCTP,
    'tcp': TCP, 'udp': UDP, 'udplite': UDPLITE, 'vrrp': 112,
}
# Names iptables resolves by itself (no /etc/protocols needed); others go as numbers.
_IPTABLES_NAMES = {TCP: 'tcp', UDP: 'udp', ICMP: 'icmp', ICMPV6: 'ipv6-icmp',
                   SCTP: 'sctp', UDPLITE: 'udplite'}
# Protocols with ports, and the match module that reads them.
_PORT_MATCHES = {TCP: '-m tcp --dport', UDP: '-m udp --dport',
                 SCTP: '-m sctp --dport', DCCP: '-m dccp --dport',
                 UDPLITE: '-m multiport --dports'}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class InvalidRule(ValueError):
    """A security-group rule this driver cannot express; it is skipped."""


def _int(value: Any, low: int, high: int, what: str) -> int | None:
    """None stays None; ints (or digit strings, as some clients send) in range."""
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidRule('%s %r is not an integer in %d..%d' % (what, value, low, high))
    return value


def parse_network(value: Any, what: str) -> Network:
    """A prefix or a single address (as a /32 or /128), host bits ignored like Neutron."""
    if not isinstance(value, str):
        raise InvalidRule('%s %r is not a string' % (what, value))
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise InvalidRule('%s %r is not an IP address or prefix' % (what, value)) from None


def _protocol(value: Any, ip_version: int) -> int | None:
    if value is None or value in ('', 'any'):
        return None
    if isinstance(value, str) and not value.isdigit():
        number = PROTOCOL_NUMBERS.get(value.lower())
        if number is None:
            raise InvalidRule('unknown protocol %r' % (value,))
    else:
        number = _int(value, 0, 255, 'protocol')
    # In iptables "-p 0" means every protocol: refuse rather than widen a rule.
    if number == 0:
        raise InvalidRule('protocol 0 (hopopt) cannot be matched by iptables')
    if ip_version == 6 and number == ICMP:
        return ICMPV6  # Neutron's API lets IPv6 rules say "icmp"
    if ip_version == 4 and number == ICMPV6:
        raise InvalidRule('protocol ipv6-icmp in an IPv4 rule')
    return number


@dataclasses.dataclass(frozen=True)
class SecurityGroupRule:
    """One rule, validated; ``remote_prefix`` None means any address."""

    direction: str
    ip_version: int
    protocol: int | None = None
    port_min: int | None = None
    port_max: int | None = None
    remote_prefix: Network | None = None
    remote_group_id: str | None = None

    @classmethod
    def from_dict(cls, rule: Mapping[str, Any]) -> SecurityGroupRule:
        """Parse a rule dict of ``security_group_info_for_devices``.

        :raises InvalidRule: anything this driver cannot enforce exactly.
        """
        if not isinstance(rule, Mapping):
            raise InvalidRule('rule %r is not a dict' % (rule,))
        direction = rule.get('direction')
        if direction not in (INGRESS, EGRESS):
            raise InvalidRule('direction %r is neither ingress nor egress' % (direction,))
        ethertype = rule.get('ethertype', 'IPv4')
        ip_version = ETHERTYPES.get(ethertype) if isinstance(ethertype, str) else None
        if ip_version is None:
            raise InvalidRule('ethertype %r is neither IPv4 nor IPv6' % (rule.get('ethertype'),))
        if rule.get('remote_address_group_id'):
            raise InvalidRule('remote_address_group_id is not supported')
        protocol = _protocol(rule.get('protocol'), ip_version)
        port_min = rule.get('port_range_min')
        port_max = rule.get('port_range_max')
        if protocol in (ICMP, ICMPV6):
            # Neutron stores the ICMP type in port_range_min, the code in _max.
            port_min = _int(port_min, 0, 255, 'ICMP type')
            port_max = _int(port_max, 0, 255, 'ICMP code')
            if port_min is None and port_max is not None:
                raise InvalidRule('ICMP code without ICMP type')
        elif protocol in _PORT_MATCHES:
            port_min = _int(port_min, 1, 65535, 'port_range_min')
            port_max = _int(port_max, 1, 65535, 'port_range_max')
            if port_min is None and port_max is not None:
                raise InvalidRule('port_range_max without port_range_min')
            if port_max is None:
                port_max = port_min
            if port_min is not None and port_max is not None and port_max < port_min:
                raise InvalidRule('port range %d:%d is empty' % (port_min, port_max))
        elif port_min is not None or port_max is not None:
            raise InvalidRule('ports given for protocol %r, which has none'
                              % (rule.get('protocol'),))
        remote_prefix = None
        if rule.get('remote_ip_prefix'):
            remote_prefix = parse_network(rule['remote_ip_prefix'], 'remote_ip_prefix')
            if remote_prefix.version != ip_version:
                raise InvalidRule('remote_ip_prefix %s is not %s'
                                  % (remote_prefix, rule.get('ethertype')))
            if remote_prefix.prefixlen == 0:
                remote_prefix = None
        remote_group_id = rule.get('remote_group_id')
        if remote_group_id is not None:
            if not naming.is_valid_id(remote_group_id):
                raise InvalidRule('remote_group_id %r is not a UUID' % (remote_group_id,))
            if rule.get('remote_ip_prefix'):
                raise InvalidRule('both remote_group_id and remote_ip_prefix')
        return cls(direction, ip_version, protocol, port_min, port_max,
                   remote_prefix, remote_group_id)

    def protocol_args(self) -> str:
        """The protocol and port/type part of the rule ('' for any protocol)."""
        if self.protocol is None:
            return ''
        args = '-p %s' % _IPTABLES_NAMES.get(self.protocol, self.protocol)
        if self.protocol in (ICMP, ICMPV6) and self.port_min is not None:
            kind = '-m icmp --icmp-type' if self.protocol == ICMP \
                else '-m icmp6 --icmpv6-type'
            value = str(self.port_min) if self.port_max is None \
                else '%d/%d' % (self.port_min, self.port_max)
            args += ' %s %s' % (kind, value)
        elif self.protocol in _PORT_MATCHES and self.port_min is not None:
            value = str(self.port_min) if self.port_min == self.port_max \
                else '%d:%d' % (self.port_min, self.port_max)
            args += ' %s %s' % (_PORT_MATCHES[self.protocol], value)
        return args

    def to_iptables(self, members: Iterable[Network] = ()) -> list[str]:
        """Rule specs (all ``-j RETURN``) for the port's ingress or egress chain.

        ``members`` are the addresses of ``remote_group_id``; a remote-group
        rule with no members yields nothing (it allows no one yet).
        """
        flag = '-s' if self.direction == INGRESS else '-d'
        proto = self.protocol_args()
        if self.remote_group_id is not None:
            remotes: list[Network | None] = sorted(
                {m for m in members if m.version == self.ip_version},
                key=lambda n: (int(n.network_address), n.prefixlen))
        else:
            remotes = [self.remote_prefix]
        specs = []
        for remote in remotes:
            parts = ['%s %s' % (flag, remote) if remote is not None else '', proto, '-j RETURN']
            specs.append(' '.join(p for p in parts if p))
        return specs


def parse_rules(sg_id: str, rules: Any) -> list[SecurityGroupRule]:
    """Every usable rule of one group; the unusable ones are logged and skipped."""
    if not isinstance(rules, (list, tuple)):
        LOG.warning('Security group %s: rules must be a list, got %s; treating as empty',
                    sg_id, type(rules).__name__)
        return []
    parsed = []
    for rule in rules:
        try:
            parsed.append(SecurityGroupRule.from_dict(rule))
        except InvalidRule as exc:
            LOG.warning('Security group %s: skipping rule %s: %s', sg_id,
                        rule.get('id', '?') if isinstance(rule, Mapping) else '?', exc)
    return parsed


def _member_address(entry: Any) -> Network | None:
    # Neutron >= Rocky sends [ip, mac] pairs, older servers plain strings.
    if isinstance(entry, (list, tuple)) and entry:
        entry = entry[0]
    try:
        net = parse_network(entry, 'member address')
    except InvalidRule as exc:
        LOG.warning('Skipping security group member: %s', exc)
        return None
    return net


def parse_members(sg_id: str, member_ips: Any) -> frozenset[Network]:
    """Member addresses of one group, from a flat list or ``{'IPv4': [...], 'IPv6': [...]}``."""
    if isinstance(member_ips, Mapping):
        entries: list[Any] = []
        for ethertype, values in member_ips.items():
            if ethertype not in ETHERTYPES or not isinstance(values, (list, tuple, set)):
                LOG.warning('Security group %s: ignoring members under %r', sg_id, ethertype)
                continue
            entries += list(values)
    elif isinstance(member_ips, (list, tuple, set, frozenset)):
        entries = list(member_ips)
    else:
        LOG.warning('Security group %s: members must be a list or dict, got %s',
                    sg_id, type(member_ips).__name__)
        entries = []
    return frozenset(n for n in map(_member_address, entries) if n is not None)


def eui64_link_local(mac: str) -> ipaddress.IPv6Address:
    """fe80:: address a guest derives from its MAC (RFC 4291 modified EUI-64)."""
    octets = [int(x, 16) for x in mac.split(':')]
    octets[0] ^= 0x02
    iid = octets[:3] + [0xff, 0xfe] + octets[3:]
    return ipaddress.IPv6Address(bytes([0xfe, 0x80] + [0] * 6 + iid))


@dataclasses.dataclass(frozen=True)
class PortFilter:
    """What the firewall needs of a port, validated.

    ``sources`` are the (prefix, mac) pairs the port may send from: its
    fixed IPs with its MAC, its allowed address pairs, and the IPv6
    link-local address of its MAC. ``mac`` None (unusable MAC) leaves
    ``sources`` empty: the port may send nothing but DHCP discovery.
    """

    port_id: str
    device: str
    mac: str | None
    sources: tuple[tuple[Network, str], ...]
    security_groups: tuple[str, ...]

    @property
    def chain_suffix(self) -> str:
        """Neutron's chain suffix: ten characters of the port id."""
        return self.port_id[:10]

    @classmethod
    def from_dict(cls, port: Mapping[str, Any]) -> PortFilter:
        """Parse the port dict the L2 agent gets from neutron-server.

        :raises agentkit.exceptions.InvalidIdentifier: no usable port id
            (there would be no name for the port's chains).
        """
        port_id = naming.validate_id(port.get('id') or port.get('port_id'), 'port')
        try:
            mac: str | None = ip_lib.validate_mac(port.get('mac_address'))
        except ip_lib.InvalidNetworkValue as exc:
            LOG.error('Port %s: %s; it may send nothing but DHCP discovery', port_id, exc)
            mac = None
        sources: list[tuple[Network, str]] = []
        if mac is not None:
            for fixed_ip in _list(port.get('fixed_ips'), port_id, 'fixed_ips'):
                # Details carry {ip_address, subnet_id}; security_group_info
                # devices carry plain strings.
                address = fixed_ip.get('ip_address') if isinstance(fixed_ip, Mapping) \
                    else fixed_ip
                try:
                    host = ip_lib.parse_ip(address)
                except ip_lib.InvalidNetworkValue as exc:
                    LOG.warning('Port %s: skipping fixed IP: %s', port_id, exc)
                    continue
                sources.append((ipaddress.ip_network(host), mac))
            for pair in _list(port.get('allowed_address_pairs'), port_id,
                              'allowed_address_pairs'):
                try:
                    if not isinstance(pair, Mapping):
                        raise InvalidRule('allowed address pair %r is not a dict' % (pair,))
                    net = parse_network(pair.get('ip_address'), 'allowed address pair')
                    pair_mac = ip_lib.validate_mac(pair.get('mac_address') or mac)
                except (InvalidRule, ip_lib.InvalidNetworkValue) as exc:
                    LOG.warning('Port %s: skipping %s', port_id, exc)
                    continue
                sources.append((net, pair_mac))
            sources.append((ipaddress.ip_network(eui64_link_local(mac)), mac))
        groups = []
        for sg_id in _list(port.get('security_groups'), port_id, 'security_groups'):
            if naming.is_valid_id(sg_id):
                groups.append(sg_id)
            else:
                LOG.warning('Port %s: skipping security group id %r', port_id, sg_id)
        return cls(port_id, naming.tap_device_name(port_id), mac,
                   tuple(dict.fromkeys(sources)), tuple(dict.fromkeys(groups)))


def _list(value: Any, port_id: str, what: str) -> Sequence[Any]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        LOG.warning('Port %s: %s must be a list, got %s', port_id, what, type(value).__name__)
        return []
    return value
