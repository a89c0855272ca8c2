"""Security groups as the firewall drivers receive them: validated, frozen, typed.

Why here and not in a driver: the L2 agent turns neutron-server's
``security_group_info_for_devices`` reply (security-group RPC 1.3) into these
types *once*, at the edge, so every firewall driver sees the same checked
values and none of them parses RPC dicts. The shape they are parsed from is
the real server's (see ``tests/fixtures/neutron29/``, captured from
neutron 29), not an assumption:

* ``security_groups``: ``{sg_id: [rule, ...]}``; a rule carries
  ``direction``, ``ethertype``, optionally ``protocol`` (a name or a number
  as a string), ``port_range_min``/``_max``, ``source_ip_prefix`` (ingress)
  or ``dest_ip_prefix`` (egress), ``remote_group_id``,
  ``remote_address_group_id``, and ``stateful`` (the group's flag, copied
  into each rule). A group with no rules is present with ``[]``.
* ``sg_member_ips``: ``{group_or_address_group_id: {'IPv4': [[ip, mac], ...],
  'IPv6': [...]}}`` — ``ip`` may be a prefix (allowed address pairs),
  ``mac`` is None for fixed IPs.
* ``devices``: ``{port_id: port}`` for the ports asked about that are not
  network-owned ("trusted": DHCP, router); ``fixed_ips`` are plain address
  strings there.

Fail-closed: a rule that cannot be understood is *skipped* (rules only ever
allow), and a port address that cannot be parsed is left out of what the
port may send from, so bad input never opens a port wider.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agentkit import exceptions
from agentkit.api import device_owner
from agentkit.lib import ip_lib
from agentkit.lib import naming

LOG = logging.getLogger(__name__)

INGRESS = 'ingress'
EGRESS = 'egress'
ETHERTYPES = {'IPv4': 4, 'IPv6': 6}
ICMP, ICMPV6, TCP, UDP, SCTP, DCCP, UDPLITE = 1, 58, 6, 17, 132, 33, 136
# Protocols whose rules carry a destination port range.
PORT_PROTOCOLS = frozenset({TCP, UDP, SCTP, DCCP, UDPLITE})
# Protocol names neutron-server accepts (its API list), by IANA number.
PROTOCOL_NUMBERS = {
    'ah': 51, 'dccp': DCCP, 'egp': 8, 'esp': 50, 'gre': 47, 'icmp': ICMP,
    'igmp': 2, 'ipip': 4, 'ipv6-encap': 41, 'ipv6-frag': 44,
    'ipv6-icmp': ICMPV6, 'icmpv6': ICMPV6, 'ipv6-nonxt': 59, 'ipv6-opts': 60,
    'ipv6-route': 43, 'ospf': 89, 'pgm': 113, 'rsvp': 46, 'sctp': SCTP,
    'tcp': TCP, 'udp': UDP, 'udplite': UDPLITE, 'vrrp': 112,
}
# Owners whose ports neutron-server leaves out of security groups.
TRUSTED_OWNER_PREFIX = device_owner.NETWORK_PREFIX
# Neutron's member lists are bounded by the ports of a cloud; this bounds a
# hostile or broken reply before it becomes kernel state.
MAX_MEMBERS = 65536

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class InvalidRule(ValueError):
    """A security-group rule that cannot be enforced exactly; it is skipped."""


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
    # "Protocol 0" would be "every protocol" to iptables: refuse, never widen.
    if number == 0:
        raise InvalidRule('protocol 0 (hopopt) cannot be matched exactly')
    if ip_version == 6 and number == ICMP:
        return ICMPV6  # Neutron's API lets IPv6 rules say "icmp"
    if ip_version == 4 and number == ICMPV6:
        raise InvalidRule('protocol ipv6-icmp in an IPv4 rule')
    return number


def _reply_dict(reply: Mapping[str, Any], name: str,
                default: Any = None) -> Mapping[str, Any]:
    value = reply.get(name, default)
    if not isinstance(value, Mapping):
        raise exceptions.InvalidPayload(
            'security_group_info_for_devices reply needs the dict %s, got %s'
            % (name, type(value).__name__))
    return value


def _remote_id(rule: Mapping[str, Any], key: str) -> str | None:
    value = rule.get(key)
    if value is None:
        return None
    if not naming.is_valid_id(value):
        raise InvalidRule('%s %r is not a UUID' % (key, value))
    return value


@dataclasses.dataclass(frozen=True)
class SecurityGroupRule:
    """One rule, validated.

    Exactly one of ``remote_prefix``, ``remote_group_id`` and
    ``remote_address_group_id`` says who the other end may be; all None
    means anyone. For ICMP, ``port_min``/``port_max`` are the type and code
    (Neutron's convention).
    """

    direction: str
    ip_version: int
    protocol: int | None = None
    port_min: int | None = None
    port_max: int | None = None
    remote_prefix: Network | None = None
    remote_group_id: str | None = None
    remote_address_group_id: str | None = None

    @property
    def remote_id(self) -> str | None:
        """The group or address group whose members are the other end, if any."""
        return self.remote_group_id or self.remote_address_group_id

    @classmethod
    def from_rpc(cls, rule: Mapping[str, Any]) -> SecurityGroupRule:
        """Parse one rule of a ``security_groups`` list.

        :raises InvalidRule: anything this host cannot enforce exactly.
        """
        if not isinstance(rule, Mapping):
            raise InvalidRule('rule %r is not a dict' % (rule,))
        direction = rule.get('direction')
        if direction not in (INGRESS, EGRESS):
            raise InvalidRule('direction %r is neither ingress nor egress' % (direction,))
        ethertype = rule.get('ethertype', 'IPv4')
        ip_version = ETHERTYPES.get(ethertype) if isinstance(ethertype, str) else None
        if ip_version is None:
            raise InvalidRule('ethertype %r is neither IPv4 nor IPv6' % (ethertype,))
        protocol = _protocol(rule.get('protocol'), ip_version)
        port_min = rule.get('port_range_min')
        port_max = rule.get('port_range_max')
        if protocol in (ICMP, ICMPV6):
            port_min = _int(port_min, 0, 255, 'ICMP type')
            port_max = _int(port_max, 0, 255, 'ICMP code')
            if port_min is None and port_max is not None:
                raise InvalidRule('ICMP code without ICMP type')
        elif protocol in PORT_PROTOCOLS:
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
        # The server names the prefix by the side it restricts; API-shaped
        # rules (remote_ip_prefix) are accepted too.
        prefix_key = 'source_ip_prefix' if direction == INGRESS else 'dest_ip_prefix'
        raw_prefix = rule.get(prefix_key) or rule.get('remote_ip_prefix')
        remote_prefix = None
        if raw_prefix:
            remote_prefix = parse_network(raw_prefix, prefix_key)
            if remote_prefix.version != ip_version:
                raise InvalidRule('%s %s is not %s' % (prefix_key, remote_prefix, ethertype))
            if remote_prefix.prefixlen == 0:
                remote_prefix = None
        remote_group_id = _remote_id(rule, 'remote_group_id')
        remote_address_group_id = _remote_id(rule, 'remote_address_group_id')
        remotes = (raw_prefix or None, remote_group_id, remote_address_group_id)
        if sum(x is not None for x in remotes) > 1:
            raise InvalidRule('more than one of a remote prefix, remote_group_id '
                              'and remote_address_group_id')
        return cls(direction, ip_version, protocol, port_min, port_max,
                   remote_prefix, remote_group_id, remote_address_group_id)


@dataclasses.dataclass(frozen=True)
class SecurityGroup:
    """A group's usable rules and whether connection tracking applies.

    ``stateful`` False (Neutron's "stateless" groups) means no conntrack:
    return traffic needs a rule of its own.
    """

    id: str
    rules: tuple[SecurityGroupRule, ...]
    stateful: bool = True

    @classmethod
    def from_rpc(cls, sg_id: str, rules: Any) -> SecurityGroup:
        """Every usable rule of one group; unusable ones are logged and skipped."""
        naming.validate_id(sg_id, 'security group')
        if not isinstance(rules, (list, tuple)):
            LOG.warning('Security group %s: rules must be a list, got %s; treating as empty',
                        sg_id, type(rules).__name__)
            rules = []
        parsed: list[SecurityGroupRule] = []
        stateful = True
        for rule in rules:
            if isinstance(rule, Mapping) and rule.get('stateful') is False:
                stateful = False
            try:
                parsed.append(SecurityGroupRule.from_rpc(rule))
            except InvalidRule as exc:
                LOG.warning('Security group %s: skipping rule %s: %s', sg_id,
                            rule.get('id', '?') if isinstance(rule, Mapping) else '?', exc)
        return cls(sg_id, tuple(dict.fromkeys(parsed)), stateful)


def _member_address(entry: Any) -> Network | None:
    # [ip, mac] pairs (RPC 1.3); older servers and the 1.2 form send strings.
    if isinstance(entry, (list, tuple)) and entry:
        entry = entry[0]
    try:
        return parse_network(entry, 'member address')
    except InvalidRule as exc:
        LOG.warning('Skipping security group member: %s', exc)
        return None


def parse_members(group_id: str, member_ips: Any) -> frozenset[Network]:
    """Member addresses of one remote group, from ``{'IPv4': [...], 'IPv6': [...]}``.

    A flat list is accepted too (what older servers sent).
    """
    return _parse_members(group_id, member_ips)[0]


def _parse_members(group_id: str, member_ips: Any) -> tuple[frozenset[Network], frozenset[int]]:
    """Members, and the IP versions the answer covered."""
    entries: list[Any] = []
    families: set[int] = set()
    if isinstance(member_ips, Mapping):
        for ethertype, values in member_ips.items():
            if ethertype not in ETHERTYPES or not isinstance(values, (list, tuple)):
                LOG.warning('Security group %s: ignoring members under %.40r',
                            group_id, ethertype)
                continue
            families.add(ETHERTYPES[ethertype])
            entries += list(values)
    elif isinstance(member_ips, (list, tuple)):
        families = set(ETHERTYPES.values())
        entries = list(member_ips)
    else:
        LOG.warning('Security group %s: members must be a dict or list, got %s',
                    group_id, type(member_ips).__name__)
    if len(entries) > MAX_MEMBERS:
        LOG.error('Security group %s: %d members exceed %d; the rest are ignored',
                  group_id, len(entries), MAX_MEMBERS)
        entries = entries[:MAX_MEMBERS]
    members = frozenset(n for n in map(_member_address, entries) if n is not None)
    return members, frozenset(families)


def eui64_link_local(mac: str) -> ipaddress.IPv6Address:
    """fe80:: address a guest derives from its MAC (RFC 4291 modified EUI-64)."""
    octets = [int(x, 16) for x in mac.split(':')]
    octets[0] ^= 0x02
    iid = octets[:3] + [0xff, 0xfe] + octets[3:]
    return ipaddress.IPv6Address(bytes([0xfe, 0x80] + [0] * 6 + iid))


def _list(value: Any, port_id: str, what: str) -> Sequence[Any]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        LOG.warning('Port %s: %s must be a list, got %s', port_id, what, type(value).__name__)
        return []
    return value


@dataclasses.dataclass(frozen=True)
class PortFilter:
    """What a firewall needs to know about one port, validated.

    :ivar port_id: the port (chain names derive from it).
    :ivar device: the host device of the VM (``tap<id[:11]>``).
    :ivar network_id: its network: conntrack state is kept per network, so
        two projects' identical addresses never share it.
    :ivar bridge: the Linux bridge the tap crosses, where an iptables
        firewall sees its frames (``qbr`` of an OVS hybrid plug, ``brq`` of
        linuxbridge); None when the mechanism has none.
    :ivar mac: the port's MAC; None when unusable (the port may then send
        nothing but DHCP discovery).
    :ivar sources: (prefix, mac) pairs the port may send from: its fixed IPs
        with its MAC, its allowed address pairs, and the IPv6 link-local
        address of its MAC.
    :ivar security_groups: its groups, in the server's order.
    :ivar port_security: False: not filtered at all (Neutron's
        ``port_security_enabled``).
    :ivar trusted: network-owned (DHCP, router): never filtered.
    """

    port_id: str
    device: str
    network_id: str | None = None
    bridge: str | None = None
    mac: str | None = None
    sources: tuple[tuple[Network, str], ...] = ()
    security_groups: tuple[str, ...] = ()
    port_security: bool = True
    trusted: bool = False

    @property
    def filtered(self) -> bool:
        """Whether security groups and anti-spoofing apply to this port."""
        return self.port_security and not self.trusted

    @classmethod
    def from_rpc(cls, port: Mapping[str, Any], bridge: str | None = None,
                 network_id: str | None = None) -> PortFilter:
        """Parse a port of the reply's ``devices`` or of the port details.

        Both shapes are accepted: ``fixed_ips`` as address strings (devices)
        or as ``{ip_address, subnet_id}`` (details).

        :raises agentkit.exceptions.InvalidIdentifier: no usable port id
            (there would be no name for the port's chains).
        """
        if not isinstance(port, Mapping):
            raise exceptions.InvalidPayload('port must be a dict, got %s'
                                            % type(port).__name__)
        port_id = naming.validate_id(port.get('id') or port.get('port_id'), 'port')
        net = port.get('network_id', network_id)
        net_id = naming.validate_id(net, 'network') if net is not None else None
        try:
            mac: str | None = ip_lib.validate_mac(port.get('mac_address'))
        except ip_lib.InvalidNetworkValue as exc:
            LOG.error('Port %s: %s; it may send nothing but DHCP discovery', port_id, exc)
            mac = None
        sources: list[tuple[Network, str]] = []
        if mac is not None:
            for fixed_ip in _list(port.get('fixed_ips'), port_id, 'fixed_ips'):
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
                    net_pair = parse_network(pair.get('ip_address'), 'allowed address pair')
                    pair_mac = ip_lib.validate_mac(pair.get('mac_address') or mac)
                except (InvalidRule, ip_lib.InvalidNetworkValue) as exc:
                    LOG.warning('Port %s: skipping %s', port_id, exc)
                    continue
                sources.append((net_pair, pair_mac))
            sources.append((ipaddress.ip_network(eui64_link_local(mac)), mac))
        groups = []
        for sg_id in _list(port.get('security_groups'), port_id, 'security_groups'):
            if naming.is_valid_id(sg_id):
                groups.append(sg_id)
            else:
                LOG.warning('Port %s: skipping security group id %.60r', port_id, sg_id)
        owner = port.get('device_owner')
        trusted = isinstance(owner, str) and owner.startswith(TRUSTED_OWNER_PREFIX)
        return cls(port_id=port_id, device=naming.tap_device_name(port_id),
                   network_id=net_id, bridge=bridge, mac=mac,
                   sources=tuple(dict.fromkeys(sources)),
                   security_groups=tuple(dict.fromkeys(groups)),
                   port_security=port.get('port_security_enabled', True) is not False,
                   trusted=trusted)


@dataclasses.dataclass(frozen=True)
class SecurityGroupInfo:
    """Rules and members the firewall needs for some ports.

    :ivar groups: the ports' groups (and only those), by id. A group listed
        here replaces what a driver knew of it.
    :ivar members: addresses of every remote group and remote address group
        the groups' rules name, by id.
    :ivar member_families: the IP versions each entry of ``members``
        covers: the server sends a remote group's members only for the
        families of the rules that name it, so the others are not "none".
    """

    groups: Mapping[str, SecurityGroup] = dataclasses.field(default_factory=dict)
    members: Mapping[str, frozenset[Network]] = dataclasses.field(default_factory=dict)
    member_families: Mapping[str, frozenset[int]] = dataclasses.field(default_factory=dict)

    def remote_ids(self, group_ids: Iterable[str]) -> set[str]:
        """Remote groups and address groups named by the rules of ``group_ids``."""
        return {rule.remote_id for sg_id in group_ids if sg_id in self.groups
                for rule in self.groups[sg_id].rules if rule.remote_id}

    @classmethod
    def from_rpc(cls, reply: Any) -> tuple[SecurityGroupInfo, dict[str, Mapping[str, Any]]]:
        """Parse a ``security_group_info_for_devices`` reply.

        :returns: the info, and the reply's ``devices`` by port id (the
            caller turns them into :class:`PortFilter` with what it knows of
            the host: device and bridge).
        :raises agentkit.exceptions.InvalidPayload: the reply is not shaped
            like the server's at all.
        """
        if not isinstance(reply, Mapping):
            raise exceptions.InvalidPayload(
                'security_group_info_for_devices reply must be a dict, got %s'
                % type(reply).__name__)
        groups_in = _reply_dict(reply, 'security_groups')
        members_in = _reply_dict(reply, 'sg_member_ips')
        devices_in = _reply_dict(reply, 'devices', {})
        groups = {}
        for sg_id, rules in groups_in.items():
            if naming.is_valid_id(sg_id):
                groups[sg_id] = SecurityGroup.from_rpc(sg_id, rules)
            else:
                LOG.warning('Ignoring security group with invalid id %.60r', sg_id)
        members, families = {}, {}
        for group_id, member_ips in members_in.items():
            if naming.is_valid_id(group_id):
                members[group_id], families[group_id] = _parse_members(group_id, member_ips)
            else:
                LOG.warning('Ignoring members of invalid group id %.60r', group_id)
        devices = {port_id: port for port_id, port in devices_in.items()
                   if naming.is_valid_id(port_id) and isinstance(port, Mapping)}
        return cls(groups, members, families), devices
