"""``iptables_hybrid``: security groups as iptables rules on the VM's tap, like Neutron's.

Neutron's ``OVSHybridIptablesFirewallDriver`` (and the linuxbridge agent's
``IptablesFirewallDriver``) filter a VM where its tap device crosses a Linux
bridge (``qbr`` of the OVS hybrid plug, ``brq`` of linuxbridge):
br_netfilter hands bridged frames to the root namespace's ``filter`` table,
and ``-m physdev`` tells which tap they came from or go to. This driver
builds the same layout, with the same chain names, so operators' habits
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
    neutron-openvswi-o<port> -> neutron-openvswi-s<port[:10]> (anti-spoofing)
    unmatched -> neutron-openvswi-sg-fallback (-j DROP)

Ports that are not filtered but share the bridge, the DHCP and router ports
(``device_owner`` ``network:*``) and ports with port security off, get an
ACCEPT for their tap at the *end* of ``neutron-openvswi-FORWARD``, as in
Neutron: the host's own FORWARD policy (DROP on Docker hosts) does not cut
them off, and a filtered VM talking to them still meets its own chains
first, since those jumps come earlier.

Where the rules come from: the port dict of
``get_devices_details_list_and_failed_devices`` names the port's groups
but carries neither their rules nor their members. The driver therefore
keeps a cache, filled through :meth:`update_security_group_rules`,
:meth:`update_security_group_members`, or in one go from the reply of
Neutron's ``security_group_info_for_devices`` (q-plugin, RPC namespace
``secgroup``, version 1.2) with :meth:`update_security_group_info`. A port
whose groups are not in the cache yet gets the closed default: DHCP and
nothing else.

Every change rebuilds the whole model and lets
:class:`~agentkit.lib.iptables_manager.IptablesManager` diff the text, so
the kernel is only touched (one ``iptables-restore`` per IP version) when
the rules really change.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any, Iterator, Mapping

from oslo_config import cfg

from agentkit import exceptions
from agentkit.api import firewall
from agentkit.lib import iptables_manager
from agentkit.lib import ip_lib
from agentkit.lib import naming
from drivers.firewall import sg_rules

LOG = logging.getLogger(__name__)

# Neutron's chain prefix: binary "neutron-openvswitch-agent" cut to 16 characters.
BINARY_NAME = 'neutron-openvswi'
SG_CHAIN = 'sg-chain'
FALLBACK_CHAIN = 'sg-fallback'
INGRESS_PREFIX, EGRESS_PREFIX, SPOOF_PREFIX = 'i', 'o', 's'
TRUSTED_OWNER_PREFIX = 'network:'
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


def _physdev(direction: str, device: str, bridged: bool = True) -> str:
    return '-m physdev --physdev-%s %s%s' % (
        direction, device, ' --physdev-is-bridged' if bridged else '')


class IptablesHybridFirewallDriver(firewall.FirewallDriver):
    """Per-port ingress, egress and anti-spoofing chains in the root namespace.

    :param binary_name: chain prefix; tests pass their own so parallel runs
        never share chains (the manager deletes chains of its prefix it
        does not know).
    :param use_ipv6: also manage ip6tables (default: when the kernel has
        IPv6). Without it, IPv6 from and to VMs would pass unfiltered.
    """

    def __init__(self, conf: cfg.ConfigOpts, host: str, binary_name: str = BINARY_NAME,
                 use_ipv6: bool | None = None) -> None:
        super().__init__(conf, host)
        if use_ipv6 is None:
            use_ipv6 = os.path.isdir('/proc/sys/net/ipv6')
        self.iptables = iptables_manager.IptablesManager(
            None, binary_name=binary_name, use_ipv6=use_ipv6, nat=False,
            tables=('filter',), filter_top=False)
        self._lock = threading.RLock()
        self._ports: dict[str, sg_rules.PortFilter] = {}
        # Unfiltered ports on the bridge: port id -> (tap, why).
        self._accepted: dict[str, tuple[str, str]] = {}
        self._sg_rules: dict[str, list[sg_rules.SecurityGroupRule]] = {}
        self._sg_members: dict[str, frozenset[sg_rules.Network]] = {}
        self._unknown_groups_logged: set[str] = set()
        self._defer_depth = 0
        # The kernel may differ from the cache (a change not applied yet, or
        # an apply that failed): the next update must render, even if equal.
        self._dirty = False

    # -- driver lifecycle ----------------------------------------------------
    def initialize(self) -> None:
        """Make sure bridged frames reach iptables at all.

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

    # -- FirewallDriver --------------------------------------------------------
    def prepare_port_filter(self, port: dict[str, Any]) -> None:
        """Filter a newly wired port; see :meth:`update_port_filter`."""
        self.update_port_filter(port)

    def update_port_filter(self, port: dict[str, Any]) -> None:
        """Re-render the port from its dict; one apply if anything changed.

        Network-owned ports (DHCP, routers) and ports with port security
        off are not filtered; their tap only gets an ACCEPT.
        """
        if not port.get('port_security_enabled', True):
            self._accept(port, 'Accept all packets when port security is disabled.')
        elif str(port.get('device_owner') or '').startswith(TRUSTED_OWNER_PREFIX):
            self._accept(port, 'Accept all packets when port is trusted.')
        else:
            parsed = sg_rules.PortFilter.from_dict(port)
            with self._lock:
                # The agent re-wires every port on each security-group
                # notification: an unchanged port must cost nothing.
                if self._ports.get(parsed.port_id) == parsed and not self._dirty:
                    return
                self._accepted.pop(parsed.port_id, None)
                self._ports[parsed.port_id] = parsed
                self._changed()

    def _accept(self, port: Mapping[str, Any], why: str) -> None:
        port_id = naming.validate_id(port.get('id') or port.get('port_id'), 'port')
        entry = (naming.tap_device_name(port_id), why)
        with self._lock:
            if self._accepted.get(port_id) == entry and not self._dirty:
                return
            self._ports.pop(port_id, None)
            self._accepted[port_id] = entry
            self._changed()

    def remove_port_filter(self, port_id: str) -> None:
        """Drop the port's chains and rules; ``port_id`` may also be its tap name."""
        with self._lock:
            gone = [key for key, tap in self._taps().items() if port_id in (key, tap)]
            for key in gone:
                self._ports.pop(key, None)
                self._accepted.pop(key, None)
            if gone:
                self._changed()

    def _taps(self) -> dict[str, str]:
        taps = {key: tap for key, (tap, _) in self._accepted.items()}
        taps.update((key, p.device) for key, p in self._ports.items())
        return taps

    def update_security_group_rules(self, sg_id: str,
                                    rules: list[dict[str, Any]]) -> None:
        """Replace one group's rules (dicts as Neutron's API shows them)."""
        naming.validate_id(sg_id, 'security group')
        parsed = sg_rules.parse_rules(sg_id, rules)
        with self._lock:
            if self._sg_rules.get(sg_id) == parsed and not self._dirty:
                return
            self._sg_rules[sg_id] = parsed
            self._unknown_groups_logged.discard(sg_id)
            if any(sg_id in p.security_groups for p in self._ports.values()):
                self._changed()

    def update_security_group_members(self, sg_id: str,
                                      member_ips: Any) -> None:
        """Replace the addresses of one group's ports (for ``remote_group_id``).

        ``member_ips``: a list of addresses, or of ``[ip, mac]`` pairs as
        Neutron >= Rocky sends them, or ``{'IPv4': [...], 'IPv6': [...]}``.
        """
        naming.validate_id(sg_id, 'security group')
        members = sg_rules.parse_members(sg_id, member_ips)
        with self._lock:
            if self._sg_members.get(sg_id) == members and not self._dirty:
                return
            self._sg_members[sg_id] = members
            if sg_id in self._remote_groups_in_use():
                self._changed()

    # -- beyond the ABC --------------------------------------------------------
    def update_security_group_info(self, info: Mapping[str, Any]) -> None:
        """Fill the cache from a ``security_group_info_for_devices`` reply, one apply.

        ``info['security_groups']`` maps group ids to rule lists,
        ``info['sg_member_ips']`` group ids to ``{'IPv4': [...], 'IPv6':
        [...]}``; ``info['devices']`` is not used (ports come through
        :meth:`prepare_port_filter`).
        """
        groups = info.get('security_groups') if isinstance(info, Mapping) else None
        members = info.get('sg_member_ips') if isinstance(info, Mapping) else None
        if not isinstance(groups, Mapping) or not isinstance(members, Mapping):
            raise exceptions.InvalidPayload(
                'security_group_info_for_devices reply needs the dicts security_groups '
                'and sg_member_ips, got %s' % type(info).__name__)
        with self.defer_apply():
            for updates, update in ((groups, self.update_security_group_rules),
                                    (members, self.update_security_group_members)):
                for sg_id, value in updates.items():
                    if naming.is_valid_id(sg_id):
                        update(sg_id, value)
                    else:
                        LOG.warning('Ignoring security group with invalid id %.60r', sg_id)

    @contextlib.contextmanager
    def defer_apply(self) -> Iterator[None]:
        """Batch many updates (a resync, a whole RPC reply) into one apply."""
        with self._lock:
            self._defer_depth += 1
            try:
                yield
            finally:
                self._defer_depth -= 1
            if self._defer_depth == 0 and self._dirty:
                self._refresh()

    @property
    def filtered_ports(self) -> list[str]:
        """Ids of the ports that have security-group chains (not the accepted ones)."""
        with self._lock:
            return sorted(self._ports)

    def remove_all(self) -> None:
        """Take every chain of this driver out of the kernel and forget all ports.

        For a host leaving this firewall (or a test's cleanup); a normal
        agent stop keeps the rules, so VMs stay protected across restarts.
        """
        with self._lock:
            self._ports.clear()
            self._accepted.clear()
            self.iptables.remove_all()
            self.iptables.reset()

    # -- rendering ---------------------------------------------------------------
    def _remote_groups_in_use(self) -> set[str | None]:
        return {rule.remote_group_id for port in self._ports.values()
                for sg_id in port.security_groups for rule in self._sg_rules.get(sg_id, ())}

    def _changed(self) -> None:
        """The cache changed: apply now, or when the outermost defer_apply ends."""
        self._dirty = True
        if not self._defer_depth:
            self._refresh()

    def _refresh(self) -> None:
        """Rebuild the model from the cache; the manager applies only a changed text."""
        with self.iptables.defer_apply():
            self.iptables.reset()
            for version in self.iptables.versions:
                self._build(self.iptables.tables(version)['filter'], version)
        self._dirty = False

    def _build(self, table: iptables_manager.IptablesTable, version: int) -> None:
        table.add_chain(SG_CHAIN)
        table.add_chain(FALLBACK_CHAIN)
        table.add_rule(FALLBACK_CHAIN, '-j DROP',
                       comment='Default drop rule for unmatched traffic.')
        for port in sorted(self._ports.values(), key=lambda p: p.port_id):
            self._build_port(table, version, port)
        table.add_rule(SG_CHAIN, '-j ACCEPT')
        for tap, why in sorted(self._accepted.values()):
            for direction in ('out', 'in'):
                table.add_rule('FORWARD', '%s -j ACCEPT' % _physdev(direction, tap),
                               comment=why)

    def _build_port(self, table: iptables_manager.IptablesTable, version: int,
                    port: sg_rules.PortFilter) -> None:
        tap = port.device
        ingress = table.add_chain(INGRESS_PREFIX + port.chain_suffix)
        egress = table.add_chain(EGRESS_PREFIX + port.chain_suffix)
        spoof = table.add_chain(SPOOF_PREFIX + port.chain_suffix)
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
        rules = self._port_rules(port, version)
        for spec in self._ingress(version, rules[sg_rules.INGRESS]):
            table.add_rule(ingress, spec, wrap=False)
        for spec in self._egress(version, spoof, rules[sg_rules.EGRESS]):
            table.add_rule(egress, spec, wrap=False)
        for prefix, mac in port.sources:
            if prefix.version == version:
                source = '-s %s ' % prefix if prefix.prefixlen else ''
                table.add_rule(spoof, '%s-m mac --mac-source %s -j RETURN' % (source, mac),
                               wrap=False)
        table.add_rule(spoof, '-j DROP', wrap=False,
                       comment='Drop traffic without an IP/MAC allow rule.')

    def _port_rules(self, port: sg_rules.PortFilter, version: int) -> dict[str, list[str]]:
        """The port's groups' rules of one IP version, as specs by direction."""
        specs: dict[str, list[str]] = {sg_rules.INGRESS: [], sg_rules.EGRESS: []}
        for sg_id in port.security_groups:
            rules = self._sg_rules.get(sg_id)
            if rules is None:
                if sg_id not in self._unknown_groups_logged:
                    self._unknown_groups_logged.add(sg_id)
                    LOG.warning('No rules known for security group %s (port %s): its '
                                'ports get DHCP only until update_security_group_rules',
                                sg_id, port.port_id)
                continue
            for rule in rules:
                if rule.ip_version != version:
                    continue
                members = self._sg_members.get(rule.remote_group_id or '', frozenset())
                specs[rule.direction] += rule.to_iptables(members)
        return {d: list(dict.fromkeys(s)) for d, s in specs.items()}

    @staticmethod
    def _ingress(version: int, rules: list[str]) -> list[str]:
        specs = [ESTABLISHED]
        if version == 4:
            specs.append(DHCP_SERVER + ' -j RETURN')
        else:
            specs += ICMP6_INGRESS
            specs.append('-s fe80::/10 %s -j RETURN' % DHCP6_SERVER)
        specs.append(INVALID)
        return specs + rules + ['-j $' + FALLBACK_CHAIN]

    @staticmethod
    def _egress(version: int, spoof_chain: str, rules: list[str]) -> list[str]:
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
        return specs + [ESTABLISHED, INVALID] + rules + ['-j $' + FALLBACK_CHAIN]
