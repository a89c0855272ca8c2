"""``iptables_hybrid``: security groups where the VM's tap crosses a Linux bridge, like Neutron's.

Neutron's ``OVSHybridIptablesFirewallDriver`` (and the linuxbridge agent's
``IptablesFirewallDriver``) filter a VM where its tap device crosses a Linux
bridge (``qbr`` of the OVS hybrid plug, ``brq`` of linuxbridge):
br_netfilter hands bridged frames to the root namespace's iptables, and
``-m physdev`` tells which tap they came from or go to. This driver builds
the same layout with the same chain names (``neutron-openvswi`` with
openvswitch, ``neutron-linuxbri`` with linuxbridge), so operators' habits
and tools keep working::

    FORWARD -> neutron-openvswi-FORWARD
        -m physdev --physdev-out tapX --physdev-is-bridged -> neutron-openvswi-sg-chain
        -m physdev --physdev-in  tapX --physdev-is-bridged -> neutron-openvswi-sg-chain
    neutron-openvswi-sg-chain
        --physdev-out tapX -> neutron-openvswi-i<port[:10]>   (to the VM)
        --physdev-in  tapX -> neutron-openvswi-o<port[:10]>   (from the VM)
        -j ACCEPT                                              (both sides RETURNed)
    INPUT -> neutron-openvswi-INPUT
        --physdev-in tapX -> neutron-openvswi-o<port[:10]>    (VM to this host)
    neutron-openvswi-o<port> -> neutron-openvswi-s<port[:10]> (IP/MAC anti-spoofing)
    unmatched -> neutron-openvswi-sg-fallback (-j DROP)

and, around it:

* **ipsets** for remote groups and remote address groups (``NIPv4<id>``,
  ``NIPv6<id>``): one ``-m set --match-set`` rule per rule, whatever the
  number of members; a member change is one atomic set swap and no
  iptables change at all.
* **conntrack zones** per network in the raw table (``-i <bridge> -j CT
  --zone N``), so projects with the same addresses never share state, and
  ``-j CT --notrack`` for ports of stateless groups, whose chains then have
  no ESTABLISHED shortcut. When a rule or a remote member goes away, the
  conntrack entries of the connections it allowed are deleted, so an
  established session the new rules forbid stops at once.
* **ARP and MAC anti-spoofing** in an nftables bridge table of its own
  (:mod:`agentkit.lib.bridge_filter`): a VM sends frames only from its
  MACs, ARP only for its addresses, and no ethertype but IPv4, IPv6, ARP.

Ports that are not filtered but share the bridge, the DHCP and router ports
(``device_owner`` ``network:*``) and ports with port security off, get an
ACCEPT for their tap at the *end* of ``neutron-openvswi-FORWARD``, as in
Neutron: the host's own FORWARD policy (DROP on Docker hosts) does not cut
them off, and a filtered VM talking to them still meets its own chains
first, since those jumps come earlier.

Every change rebuilds the whole model and the managers diff it, so the
kernel is touched (one ``iptables-restore`` per IP version and table, one
``nft -f``, one set swap per changed group) only where something changed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from oslo_config import cfg

from agentkit.api import firewall
from agentkit.api import security_group as sg
from agentkit.lib import bridge_filter
from agentkit.lib import conntrack
from agentkit.lib import ip_lib
from agentkit.lib import ipset_manager
from agentkit.lib import iptables_manager
from drivers.firewall import conntrack_zones
from drivers.firewall import iptables_rules

LOG = logging.getLogger(__name__)

# Neutron's chain prefixes: the agent binaries' names cut to 16 characters.
OVS_BINARY_NAME = 'neutron-openvswi'
LINUXBRIDGE_BINARY_NAME = 'neutron-linuxbri'
BINARY_NAME = OVS_BINARY_NAME
# Neutron's ipset names: NIPv4<group id>, NIPv6<group id>.
SET_PREFIX = 'NIPv'
SG_CHAIN = 'sg-chain'
FALLBACK_CHAIN = 'sg-fallback'
INGRESS_PREFIX, EGRESS_PREFIX, SPOOF_PREFIX = 'i', 'o', 's'
# Bound on connection deletions kept for a retry after conntrack failed.
MAX_PENDING_FLOWS = 100000
# Seconds after a deletion of what removed rules allowed before it is done
# once more: a packet in flight at the first one lets conntrack pick the
# session up again (reversed, if the VM sent it), and the peer's next
# packets would pass as replies.
CONNTRACK_RECHECK_DELAY = 1.0
BRIDGE_NF_SYSCTLS = ('net.bridge.bridge-nf-call-iptables',
                     'net.bridge.bridge-nf-call-ip6tables')

ESTABLISHED = '-m state --state RELATED,ESTABLISHED -j RETURN'
INVALID = '-m state --state INVALID -j DROP'
DHCP_CLIENT = '-p udp -m udp --sport 68 --dport 67'
DHCP_SERVER = '-p udp -m udp --sport 67 --dport 68'
DHCP6_CLIENT = '-p udp -m udp --sport 546 --dport 547'
DHCP6_SERVER = '-p udp -m udp --sport 547 --dport 546'
# ICMPv6 a guest needs before any rule allows it (RFC 4890): MLD query,
# neighbour solicitation/advertisement in; router advertisements only
# from link-local (routers' source, RFC 4861).
ICMP6_INGRESS = ('-p ipv6-icmp -m icmp6 --icmpv6-type 130 -j RETURN',
                 '-p ipv6-icmp -m icmp6 --icmpv6-type 135 -j RETURN',
                 '-p ipv6-icmp -m icmp6 --icmpv6-type 136 -j RETURN',
                 '-s fe80::/10 -p ipv6-icmp -m icmp6 --icmpv6-type 134 -j RETURN')
# Duplicate address detection and MLD reports are sent from "::", before
# the guest owns any address the spoofing chain would accept.
ICMP6_UNSPECIFIED = tuple('-s ::/128 -d ff02::/16 -p ipv6-icmp -m icmp6 --icmpv6-type %d '
                          '-j RETURN' % t for t in (131, 135, 143))


def default_binary_name(conf: cfg.ConfigOpts) -> str:
    """The chain prefix Neutron's agent for the configured mechanism used."""
    try:
        mechanism = conf.l2.mechanism_driver
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        mechanism = None
    return LINUXBRIDGE_BINARY_NAME if mechanism == 'linuxbridge' else OVS_BINARY_NAME


# A device named in one of the driver's rules, as iptables-save shows it.
_LIVE_DEVICE_RE = re.compile(r'^-A \S+ .*--physdev-(?:in|out) (\S+)', re.M)


def _physdev(direction: str, device: str, bridged: bool = True) -> str:
    return '-m physdev --physdev-%s %s%s' % (
        direction, device, ' --physdev-is-bridged' if bridged else '')


@dataclasses.dataclass(frozen=True)
class _Allowed:
    """One kind of connection a stateful port's rules allow, for conntrack cleanup.

    The other end is a prefix (or anyone), or the members of ``remote_id``
    as they were when it was recorded: members are compared per group,
    not per port, so the cost stays with ports x rules.
    """

    direction: str
    ip_version: int
    protocol: int | None
    port_min: int | None
    port_max: int | None
    remote: sg.Network | None
    remote_id: str | None = None


class IptablesHybridFirewallDriver(firewall.FirewallDriver):
    """Per-port ingress, egress and anti-spoofing chains in the root namespace.

    :param binary_name: chain prefix (default: Neutron's for the mechanism);
        tests pass their own so parallel runs never share chains (the
        manager deletes chains of its prefix it does not know).
    :param use_ipv6: also manage ip6tables (default: when the kernel has
        IPv6). Without it, IPv6 from and to VMs would pass unfiltered.
    :param set_prefix: prefix of the remote-group ipsets (default Neutron's).
    :param antispoof_table: the nftables bridge table of the ARP/MAC guards.
    """

    def __init__(self, conf: cfg.ConfigOpts, host: str, binary_name: str | None = None,
                 use_ipv6: bool | None = None, set_prefix: str = SET_PREFIX,
                 antispoof_table: str = bridge_filter.DEFAULT_TABLE) -> None:
        super().__init__(conf, host)
        if use_ipv6 is None:
            use_ipv6 = os.path.isdir('/proc/sys/net/ipv6')
        self.binary_name = binary_name or default_binary_name(conf)
        self.iptables = iptables_manager.IptablesManager(
            None, binary_name=self.binary_name, use_ipv6=use_ipv6, nat=False,
            tables=('raw', 'filter'), filter_top=False)
        self.ipsets = ipset_manager.IpsetManager(set_prefix)
        self.antispoof = bridge_filter.BridgeAntiSpoof(antispoof_table)
        self.zones = conntrack_zones.ZoneMap()
        self._lock = threading.RLock()
        self._ports: dict[str, sg.PortFilter] = {}
        self._groups: dict[str, sg.SecurityGroup] = {}
        self._members: dict[str, frozenset[sg.Network]] = {}
        # What the connections of each stateful port may be, as last
        # applied, and the members of the remote groups they name then.
        self._allowed: dict[str, frozenset[_Allowed]] = {}
        self._allowed_members: dict[str, frozenset[sg.Network]] = {}
        # The addresses each filtered port had at the last refresh; and the
        # ports that were not filtered (their connections were not checked).
        self._last_sources: dict[str, frozenset[sg.Network]] = {}
        self._last_unfiltered: set[str] = set()
        # Devices of ports the server gave no usable details for: shut, if
        # they had a filter here (this run, or in the kernel at start).
        self._shut: set[str] = set()
        self._known_devices: set[str] = set()
        # Connection deletions not done yet (a failed call is retried with
        # the next refresh), and zones given up but not yet flushed.
        self._pending_flows: list[conntrack.FlowFilter] = []
        self._zones_to_flush: set[int] = set()
        self.recheck_delay = CONNTRACK_RECHECK_DELAY
        self._unknown_groups_logged: set[str] = set()

    # -- driver lifecycle ----------------------------------------------------
    def initialize(self) -> None:
        """Make sure bridged frames reach iptables, and adopt the zones in use.

        Without br_netfilter (or with its sysctls at 0) every rule below is
        silently bypassed; refusing to start says so instead of pretending
        to filter.
        """
        keys = BRIDGE_NF_SYSCTLS if self.iptables.use_ipv6 else BRIDGE_NF_SYSCTLS[:1]
        for key in keys:
            try:
                value = ip_lib.get_sysctl(key)
            except FileNotFoundError:
                raise RuntimeError('%s is missing: load br_netfilter (modprobe '
                                   'br_netfilter) so bridged traffic reaches iptables'
                                   % key) from None
            if value != '1':
                LOG.warning('%s was %s; setting it to 1 so bridged traffic is filtered',
                            key, value)
                ip_lib.set_sysctl(key, 1)
        zones = self.zones.recover(self.iptables.get_live_rules(4, 'raw'))
        if zones:
            LOG.info('Conntrack zones in use on this host: %d networks', len(zones))
        # Devices an earlier run filtered: the first full sync must not
        # leave them unfiltered if their details do not come.
        live = self.iptables.get_live_rules(4, 'filter')
        self._known_devices |= {m.group(1) for m in _LIVE_DEVICE_RE.finditer(live)
                                if m.group(0).startswith('-A ' + self.binary_name + '-')}

    # -- FirewallDriver --------------------------------------------------------
    def apply_port_filters(self, ports: Sequence[sg.PortFilter],
                           info: sg.SecurityGroupInfo) -> None:
        with self._lock:
            self._learn(info)
            for port in ports:
                self._ports[port.port_id] = port
                self._shut.discard(port.device)
                self._known_devices.add(port.device)
            self._refresh()

    def sync_port_filters(self, ports: Sequence[sg.PortFilter], info: sg.SecurityGroupInfo,
                          unknown_devices: Sequence[str]) -> None:
        """Apply ``ports`` and shut ``unknown_devices`` in the same host change.

        After a restart the model starts empty and this first apply
        replaces every chain of the prefix: it must hold every plugged
        port, known or not, or the others would pass unfiltered.
        """
        with self._lock:
            self._learn(info)
            for port in ports:
                self._ports[port.port_id] = port
            current = {p.device for p in self._ports.values()}
            self._known_devices |= current
            # Devices never filtered here are left alone, as before (a tap
            # not yet bound, or not agentkit's at all).
            self._shut = {d for d in unknown_devices
                          if d not in current and d in self._known_devices}
            if self._shut:
                LOG.warning('No usable details for %d plugged device(s); they pass '
                            'nothing until wired: %s', len(self._shut),
                            ', '.join(sorted(self._shut)))
            self._refresh()

    def remove_port_filters(self, port_ids: Sequence[str],
                            devices: Sequence[str] = ()) -> None:
        """Drop the ports' chains, rules, guards and connections."""
        with self._lock:
            gone = [self._ports.pop(p) for p in port_ids if p in self._ports]
            shut = self._shut & set(devices)
            self._known_devices -= set(devices) | {p.device for p in gone}
            if not gone and not shut:
                return
            self._shut -= shut
            # A network left without filtered ports gives up its zone, which
            # is flushed whole; otherwise only the port's connections go.
            in_use = {p.network_id for p in self._ports.values() if p.filtered}
            for port in gone:
                self._last_sources.pop(port.port_id, None)
                if port.filtered and port.network_id in in_use:
                    zone = self.zones.zone(port.network_id)  # type: ignore[arg-type]
                    self._pending_flows += self._port_connections(port, zone,
                                                                  port.sources)
            self._refresh()

    def remove_all(self) -> None:
        """Take every chain, set and guard of this driver off the host; forget all ports.

        For a host leaving this firewall (or a test's cleanup); a normal
        agent stop keeps the rules, so VMs stay protected across restarts.
        """
        with self._lock:
            self._ports.clear()
            self._shut.clear()
            self._allowed.clear()
            self._allowed_members.clear()
            self._last_sources.clear()
            self._pending_flows.clear()
            self.iptables.remove_all()
            self.iptables.reset()
            self.antispoof.remove_all()
            self.ipsets.destroy_unused(set())

    # -- beyond the ABC --------------------------------------------------------
    @property
    def filtered_ports(self) -> list[str]:
        """Ids of the ports that have security-group chains (not the accepted ones)."""
        with self._lock:
            return sorted(p.port_id for p in self._ports.values() if p.filtered)

    # -- the model ---------------------------------------------------------------
    def _learn(self, info: sg.SecurityGroupInfo) -> None:
        """Take in the groups and members of a server answer.

        The server sends a remote group's members only for the families
        the asked ports' rules use: the other family's members stay.
        """
        self._groups.update(info.groups)
        for sg_id in info.groups:
            self._unknown_groups_logged.discard(sg_id)
        for remote_id, members in info.members.items():
            families = info.member_families.get(remote_id, frozenset((4, 6)))
            kept = frozenset(n for n in self._members.get(remote_id, ())
                             if n.version not in families)
            self._members[remote_id] = kept | members

    def _prune(self) -> None:
        """Forget groups no port is in, and members no rule names."""
        used = {g for p in self._ports.values() for g in p.security_groups}
        self._groups = {g: group for g, group in self._groups.items() if g in used}
        remotes = {r.remote_id for group in self._groups.values() for r in group.rules
                   if r.remote_id}
        self._members = {r: m for r, m in self._members.items() if r in remotes}

    def _filtered(self) -> list[sg.PortFilter]:
        return sorted((p for p in self._ports.values() if p.filtered),
                      key=lambda p: p.port_id)

    def _port_groups(self, port: sg.PortFilter) -> list[sg.SecurityGroup]:
        groups = []
        for sg_id in port.security_groups:
            group = self._groups.get(sg_id)
            if group is None:
                if sg_id not in self._unknown_groups_logged:
                    self._unknown_groups_logged.add(sg_id)
                    LOG.warning('No rules known for security group %s (port %s): its '
                                'ports get DHCP only until its rules arrive',
                                sg_id, port.port_id)
                continue
            groups.append(group)
        return groups

    def _stateful(self, port: sg.PortFilter) -> bool:
        """Stateless only if a group says so (the API does not let a port mix both)."""
        return all(group.stateful for group in self._port_groups(port))

    def _members_of(self, remote_id: str, version: int) -> list[str]:
        return sorted(str(net) for net in self._members.get(remote_id, ())
                      if net.version == version)

    def _refresh(self) -> None:
        """Make the host match the cache; each manager touches only what changed."""
        ports = self._filtered()
        # Member sets first: the iptables rules below refer to them.
        sets = {}
        for port in ports:
            for group in self._port_groups(port):
                for rule in group.rules:
                    if rule.remote_id:
                        key = (rule.ip_version, rule.remote_id)
                        sets[key] = self.ipsets.set_name(*key)
        for (version, remote_id) in sets:
            self.ipsets.set_members(version, remote_id, self._members_of(remote_id, version))
        networks = {p.network_id for p in ports if p.network_id and p.bridge}
        # A given-up zone is not handed out again before it was flushed.
        self._zones_to_flush |= set(self.zones.release_unused(networks).values())
        try:
            with self.iptables.defer_apply():
                self.iptables.reset()
                for version in self.iptables.versions:
                    tables = self.iptables.tables(version)
                    self._build_raw(tables['raw'], version, ports)
                    self._build_filter(tables['filter'], version, ports, sets)
        except Exception:
            self.iptables.invalidate()
            raise
        guards = [self._guard(p) for p in ports]
        guards += [bridge_filter.PortGuard(device=d) for d in sorted(self._shut)]
        self.antispoof.set_ports(guards)
        self.antispoof.apply()
        self.ipsets.destroy_unused(set(sets.values()))
        self._pending_flows += self._stale_connections(ports)
        self._prune()
        self._flush_connections()

    def _stale_connections(self, ports: list[sg.PortFilter]) -> list[conntrack.FlowFilter]:
        """Connections the new filters no longer allow (and remember the new state)."""
        filters = []
        allowed = {p.port_id: self._allowed_connections(p) for p in ports
                   if self._stateful(p) and p.network_id and p.bridge}
        members = {kind.remote_id: self._members.get(kind.remote_id, frozenset())
                   for kinds in allowed.values() for kind in kinds if kind.remote_id}
        old_members = self._allowed_members
        for port_id, before in self._allowed.items():
            port = self._ports.get(port_id)
            after = allowed.get(port_id)
            if port is None or after is None:
                continue
            zone = self.zones.zone(port.network_id)  # type: ignore[arg-type]
            for kind in before:
                gone = old_members.get(kind.remote_id or '', frozenset())
                if kind in after:
                    if not kind.remote_id:
                        continue
                    gone = gone - members[kind.remote_id]  # members that left
                remotes = [kind.remote] if not kind.remote_id else sorted(
                    (n for n in gone if n.version == kind.ip_version),
                    key=lambda n: (int(n.network_address), n.prefixlen))
                for remote in remotes:
                    filters += self._connection_filters(port, zone, kind, remote)
        # Addresses a port no longer has, and everything of a port that was
        # not filtered before (its connections were never checked).
        sources = {p.port_id: frozenset(n for n, _ in p.sources) for p in ports}
        for port in ports:
            if not port.network_id or not port.bridge:
                continue
            if port.port_id in self._last_unfiltered:
                lost = sources[port.port_id]
            else:
                lost = self._last_sources.get(port.port_id, frozenset()) - sources[port.port_id]
            if lost:
                filters += self._port_connections(
                    port, self.zones.zone(port.network_id), lost)
        self._allowed, self._allowed_members = allowed, members
        self._last_sources = sources
        self._last_unfiltered = {p.port_id for p in self._ports.values() if not p.filtered}
        return filters

    def _flush_connections(self) -> None:
        """Delete what is pending; on failure keep it for the next refresh."""
        filters = [conntrack.FlowFilter(ip_version=v, zone=zone)
                   for zone in sorted(self._zones_to_flush) for v in self.iptables.versions]
        filters += self._pending_flows
        if not filters:
            return
        try:
            deleted = 0
            # A group losing hundreds of members can need more filters than
            # one privileged call takes.
            for start in range(0, len(filters), conntrack.MAX_FILTERS):
                deleted += conntrack.delete_flows(filters[start:start + conntrack.MAX_FILTERS])
        except Exception:  # noqa: BLE001 - the rules are in force; retried next time
            LOG.exception('Could not delete connections the new security group rules no '
                          'longer allow; retrying with the next change')
            if len(self._pending_flows) > MAX_PENDING_FLOWS:
                LOG.error('Dropping %d pending connection deletions',
                          len(self._pending_flows) - MAX_PENDING_FLOWS)
                self._pending_flows = self._pending_flows[-MAX_PENDING_FLOWS:]
            return
        self.zones.drained(self._zones_to_flush)
        self._zones_to_flush.clear()
        recheck = [f for f in self._pending_flows if f.either_direction]
        self._pending_flows = []
        if deleted:
            LOG.info('Deleted %d connections the security group rules no longer allow',
                     deleted)
        if recheck and self.recheck_delay > 0:
            timer = threading.Timer(self.recheck_delay, self._recheck_connections,
                                    args=(recheck,))
            timer.daemon = True
            timer.start()

    @staticmethod
    def _recheck_connections(filters: list[conntrack.FlowFilter]) -> None:
        """The second deletion (see :data:`CONNTRACK_RECHECK_DELAY`); best effort."""
        try:
            deleted = sum(conntrack.delete_flows(filters[start:start + conntrack.MAX_FILTERS])
                          for start in range(0, len(filters), conntrack.MAX_FILTERS))
        except Exception as exc:  # noqa: BLE001 - the first deletion did the bulk
            LOG.warning('Second deletion of connections the security group rules no '
                        'longer allow failed: %s', exc)
            return
        if deleted:
            LOG.info('Deleted %d connections picked up again after their first deletion',
                     deleted)

    def _allowed_connections(self, port: sg.PortFilter) -> frozenset[_Allowed]:
        return frozenset(
            _Allowed(rule.direction, rule.ip_version, rule.protocol, rule.port_min,
                     rule.port_max, rule.remote_prefix, rule.remote_id)
            for group in self._port_groups(port) for rule in group.rules)

    @staticmethod
    def _connection_filters(port: sg.PortFilter, zone: int, kind: _Allowed,
                            remote: sg.Network | None) -> list[conntrack.FlowFilter]:
        """Filters for the connections ``kind`` allowed between ``port`` and ``remote``."""
        ports: dict[str, Any] = ({} if kind.protocol not in sg.PORT_PROTOCOLS
                                 else {'dport_min': kind.port_min, 'dport_max': kind.port_max})
        # A reversed entry of such a session has the rule's port as the VM's
        # *source* port, which the VM's own connections practically never
        # use; without a port, a reversed match would also hit the VM's own
        # outgoing sessions to that peer and drop their next reply.
        either_direction = bool(ports) and kind.port_min is not None
        filters = []
        for own, _mac in port.sources:
            if own.version != kind.ip_version or own.is_link_local:
                continue
            src, dst = (remote, own) if kind.direction == sg.INGRESS else (own, remote)
            filters.append(conntrack.FlowFilter(
                ip_version=kind.ip_version, zone=zone, protocol=kind.protocol,
                orig_src=src, orig_dst=dst, either_direction=either_direction, **ports))
        return filters

    @staticmethod
    def _port_connections(port: sg.PortFilter, zone: int,
                          addresses: Iterable[sg.Network | tuple[sg.Network, str]]
                          ) -> list[conntrack.FlowFilter]:
        """Every connection to or from ``addresses`` of a port, in its network's zone."""
        filters = []
        for entry in addresses:
            own = entry[0] if isinstance(entry, tuple) else entry
            if own.is_link_local:
                continue
            filters += [conntrack.FlowFilter(ip_version=own.version, zone=zone, orig_src=own),
                        conntrack.FlowFilter(ip_version=own.version, zone=zone, orig_dst=own)]
        return filters

    @staticmethod
    def _guard(port: sg.PortFilter) -> bridge_filter.PortGuard:
        """What the port may send at layer 2: its MACs, ARP for its IPv4 sources.

        A port without a usable MAC may send nothing at all.
        """
        by_mac: dict[str, list[str]] = {port.mac: []} if port.mac else {}
        for prefix, mac in port.sources:
            addresses = by_mac.setdefault(mac, [])
            if prefix.version == 4:
                addresses.append(str(prefix))
        return bridge_filter.PortGuard(
            device=port.device,
            allowed=tuple((mac, tuple(addresses)) for mac, addresses in by_mac.items()))

    # -- rendering ---------------------------------------------------------------
    def _build_raw(self, table: iptables_manager.IptablesTable, version: int,
                   ports: list[sg.PortFilter]) -> None:
        """Stateless ports untracked first (the first CT target wins), then zones.

        What a stateless VM sends is untracked at its tap; what it receives
        only where the bridge is its own (a hybrid plug's qbr): on a shared
        brq, matching by destination could untrack a neighbour's traffic
        (an address pair may be any prefix). Its chains ignore state anyway.
        """
        users: dict[str, int] = {}
        for port in self._ports.values():
            if port.bridge:
                users[port.bridge] = users.get(port.bridge, 0) + 1
        zones: dict[str, tuple[str, int]] = {}  # bridge -> (network, zone)
        for port in ports:
            if port.bridge is None:
                continue
            if not self._stateful(port):
                table.add_rule('PREROUTING', '%s -j CT --notrack' % _physdev(
                    'in', port.device, bridged=False),
                    comment='Untracked: stateless security group.')
                if users[port.bridge] == 1:
                    table.add_rule('PREROUTING', '-i %s -j CT --notrack' % port.bridge)
            elif port.network_id:
                zones.setdefault(port.bridge, (port.network_id, self.zones.zone(port.network_id)))
        for bridge, (network_id, zone) in sorted(zones.items()):
            table.add_rule('PREROUTING', '-i %s -j CT --zone %d' % (bridge, zone),
                           comment=self.zones.comment(network_id))

    def _build_filter(self, table: iptables_manager.IptablesTable, version: int,
                      ports: list[sg.PortFilter], sets: dict[tuple[int, str], str]) -> None:
        table.add_chain(SG_CHAIN)
        table.add_chain(FALLBACK_CHAIN)
        table.add_rule(FALLBACK_CHAIN, '-j DROP',
                       comment='Default drop rule for unmatched traffic.')
        for port in ports:
            self._build_port(table, version, port, sets)
        table.add_rule(SG_CHAIN, '-j ACCEPT')
        for tap in sorted(self._shut):
            for direction in ('out', 'in'):
                table.add_rule('FORWARD', '%s -j DROP' % _physdev(direction, tap),
                               comment='Drop all packets of a port the server has not '
                                       'described.')
            table.add_rule('INPUT', '%s -j DROP' % _physdev('in', tap, bridged=False))
        accepted = sorted((p.device, 'Accept all packets when port is trusted.' if p.trusted
                           else 'Accept all packets when port security is disabled.')
                          for p in self._ports.values() if not p.filtered)
        for tap, why in accepted:
            for direction in ('out', 'in'):
                table.add_rule('FORWARD', '%s -j ACCEPT' % _physdev(direction, tap),
                               comment=why)

    def _build_port(self, table: iptables_manager.IptablesTable, version: int,
                    port: sg.PortFilter, sets: dict[tuple[int, str], str]) -> None:
        tap = port.device
        suffix = port.port_id[:10]
        ingress = table.add_chain(INGRESS_PREFIX + suffix)
        egress = table.add_chain(EGRESS_PREFIX + suffix)
        spoof = table.add_chain(SPOOF_PREFIX + suffix)
        for direction in ('out', 'in'):
            table.add_rule('FORWARD', '%s -j $%s' % (_physdev(direction, tap), SG_CHAIN),
                           comment='Direct traffic from the VM interface to the '
                                   'security group chain.')
        table.add_rule(SG_CHAIN, '%s -j %s' % (_physdev('out', tap), ingress))
        table.add_rule(SG_CHAIN, '%s -j %s' % (_physdev('in', tap), egress))
        # Frames from the VM to this host are routed up, not bridged.
        table.add_rule('INPUT', '%s -j %s' % (_physdev('in', tap, bridged=False), egress),
                       comment='Direct incoming traffic from VM to the security '
                               'group chain.')
        stateful = self._stateful(port)
        rules = self._rule_specs(port, version, sets)
        for spec in self._ingress(version, stateful, rules[sg.INGRESS]):
            table.add_rule(ingress, spec, wrap=False)
        for spec in self._egress(version, stateful, spoof, rules[sg.EGRESS]):
            table.add_rule(egress, spec, wrap=False)
        for prefix, mac in port.sources:
            if prefix.version == version:
                source = '-s %s ' % prefix if prefix.prefixlen else ''
                table.add_rule(spoof, '%s-m mac --mac-source %s -j RETURN' % (source, mac),
                               wrap=False)
        table.add_rule(spoof, '-j DROP', wrap=False,
                       comment='Drop traffic without an IP/MAC allow rule.')

    def _rule_specs(self, port: sg.PortFilter, version: int,
                    sets: dict[tuple[int, str], str]) -> dict[str, list[str]]:
        """The port's groups' rules of one IP version, as specs by direction."""
        specs: dict[str, list[str]] = {sg.INGRESS: [], sg.EGRESS: []}
        for group in self._port_groups(port):
            for rule in group.rules:
                if rule.ip_version == version:
                    member_set = sets.get((version, rule.remote_id)) if rule.remote_id else None
                    specs[rule.direction].append(iptables_rules.rule_spec(rule, member_set))
        return {d: list(dict.fromkeys(s)) for d, s in specs.items()}

    @staticmethod
    def _ingress(version: int, stateful: bool, rules: Iterable[str]) -> list[str]:
        specs = [ESTABLISHED] if stateful else []
        if version == 4:
            specs.append(DHCP_SERVER + ' -j RETURN')
        else:
            specs += ICMP6_INGRESS
            specs.append('-s fe80::/10 %s -j RETURN' % DHCP6_SERVER)
        if stateful:
            specs.append(INVALID)
        return specs + list(rules) + ['-j $' + FALLBACK_CHAIN]

    @staticmethod
    def _egress(version: int, stateful: bool, spoof_chain: str,
                rules: Iterable[str]) -> list[str]:
        if version == 4:
            specs = ['-s 0.0.0.0/32 -d 255.255.255.255/32 %s -j RETURN' % DHCP_CLIENT,
                     '-j ' + spoof_chain,
                     DHCP_CLIENT + ' -j RETURN',
                     DHCP_SERVER + ' -j DROP']
        else:
            specs = list(ICMP6_UNSPECIFIED) + [
                '-j ' + spoof_chain,
                '-p ipv6-icmp -m icmp6 --icmpv6-type 134 -j DROP',
                '-p ipv6-icmp -j RETURN',
                DHCP6_CLIENT + ' -j RETURN',
                DHCP6_SERVER + ' -j DROP']
        if stateful:
            specs += [ESTABLISHED, INVALID]
        return specs + list(rules) + ['-j $' + FALLBACK_CHAIN]
