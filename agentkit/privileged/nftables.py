"""Root nftables operations: agentkit's bridge-family ARP/MAC anti-spoofing table.

Runs in the ``network`` privsep daemon. The API is deliberately narrow: no
caller can hand ``nft`` a ruleset. :func:`replace_bridge_table` receives
only primitives (a table name and, per guarded port, its device and the
allowed ``(MAC, IPv4 prefixes)`` pairs), validates every one of them here,
and renders the ``nft -f`` input itself with :func:`render_bridge_table`,
a pure function (unit tests pin its output; the unprivileged side uses it
and :func:`normalize_port` to check values early). Table names must start
with ``agentkit``, so the daemon can never rewrite or delete another tool's
table (and a name can never be an nft keyword, which nft refuses to parse:
``table bridge arp`` is a syntax error, and nft has no quoting for names).

Why one table replaced as a whole: it is the nftables equivalent of one
``iptables-restore`` per change. The input first makes sure the table
exists, then deletes and redeclares it; ``nft -f`` sends all of it as one
netlink batch that the kernel commits atomically, so frames see either the
old or the new ruleset, never a port without its guard, and a failing
input (e.g. an overlapping set element) changes nothing.

Layout of the table (see :func:`render_bridge_table`): one base chain on
the bridge ``prerouting`` hook sends frames whose ingress port is in the
set ``ports`` to the chain ``guard``; frames of other bridge ports (``qvb``,
a physical NIC in ``brq``) leave after that one hash lookup. ``guard``
checks the Ethernet source against the set ``macs`` of ``device . MAC``
and ARP senders against the interval set ``arp-senders`` of ``device .
MAC . IPv4 prefix``: a few set lookups per frame, however many ports.
The sets are shared and keyed by device rather than being one set and one
chain per port because creating and deleting named sets dominates the
cost of a replace: measured with nft 1.0.6 on Linux 6.18, 1,000 ports
took ~1 s to replace with two sets and a chain per port, ~45 ms with
three shared sets.

Priority -200 (``filter`` in nft's bridge names, NF_BR_PRI_FILTER_BRIDGED):
bridge ``prerouting`` runs for every frame a bridge port (the ``tap``)
receives, before the bridge learns the source MAC into its FDB and before
br_netfilter (priority 0) hands IP frames to iptables, so a dropped frame
neither poisons the FDB nor costs the security-group chains anything. It
runs after ebtables' ``nat`` PREROUTING (-300), which can only rewrite
destinations, so the source fields checked here are the VM's own.

``nft`` runs in the root namespace (the bridges and taps live there) via
:mod:`agentkit.privileged.tool_exec`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Sequence

from agentkit import exceptions
from agentkit.privileged import network
from agentkit.privileged import tool_exec

NFT_BINARY = 'nft'
NFT_TIMEOUT = 60.0
FAMILY = 'bridge'
# NF_BR_PRI_FILTER_BRIDGED; nft lists it as "priority filter".
PRIORITY = -200
COMMENT = 'agentkit ARP/MAC anti-spoofing of VM ports; replaced as a whole, do not edit'
MAX_TABLE_NAME_LEN = 64
# Bounds that no real host reaches, so a bug cannot build a gigantic input.
MAX_PORTS = 16384
MAX_MACS_PER_PORT = 64
MAX_PREFIXES_PER_PORT = 1024

# "agentkit", "agentkit-antispoof", "agentkit-test-1a2b...": nft identifiers
# that are never keywords, and never another tool's table.
_TABLE_RE = re.compile(r'agentkit(?:-[a-z0-9]+)*')
# A Linux device name (IFNAMSIZ - 1 = 15 characters). It only appears in
# nft's "..." strings; this charset needs no escaping and has no "*"
# (an nft wildcard).
_DEVICE_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,14}')
_MAC_RE = re.compile(r'[0-9a-f]{2}(?::[0-9a-f]{2}){5}')

# One guarded port as it crosses the privsep channel, normalised:
# (device, ((mac, (ipv4 prefix, ...)), ...)).
MacPrefixes = tuple[str, tuple[str, ...]]
PortSpec = tuple[str, tuple[MacPrefixes, ...]]


class InvalidGuardValue(exceptions.AgentkitError, ValueError):
    """A table name, device, MAC or prefix that cannot go into the ruleset."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + '...'


def _sequence(value: Any, what: str) -> Sequence[Any]:
    # msgpack on the privsep channel delivers lists as tuples; a str is a
    # Sequence too but never a valid list of items here.
    if not isinstance(value, (list, tuple)):
        raise InvalidGuardValue('%s must be a list, got %s' % (what, _short(value)))
    return value


def check_table_name(table: Any) -> str:
    """An agentkit-owned table name: ``agentkit`` or ``agentkit-<word>[-<word>...]``."""
    if (not isinstance(table, str) or len(table) > MAX_TABLE_NAME_LEN
            or not _TABLE_RE.fullmatch(table)):
        raise InvalidGuardValue(
            'invalid nftables table name %s: use "agentkit" followed by '
            '"-<lowercase letters/digits>" parts, at most %d characters'
            % (_short(table), MAX_TABLE_NAME_LEN))
    return table


def check_device(device: Any) -> str:
    """A device name at most 15 characters long from [A-Za-z0-9_.-]."""
    if not isinstance(device, str) or not _DEVICE_RE.fullmatch(device):
        raise InvalidGuardValue(
            'invalid device name %s: use 1-15 characters from [A-Za-z0-9_.-], '
            'starting with a letter or digit' % _short(device))
    return device


def check_mac(mac: Any) -> str:
    """A unicast, non-zero MAC ``xx:xx:xx:xx:xx:xx``, returned lowercased."""
    if not isinstance(mac, str) or not _MAC_RE.fullmatch(mac.lower()):
        raise InvalidGuardValue('invalid MAC address %s: expected xx:xx:xx:xx:xx:xx'
                                % _short(mac))
    mac = mac.lower()
    if int(mac[:2], 16) & 1 or mac == '00:00:00:00:00:00':
        raise InvalidGuardValue('MAC address %s cannot be a source address' % mac)
    return mac


def check_prefix(prefix: Any) -> ipaddress.IPv4Network:
    """An IPv4 address or prefix ('10.0.0.5', '10.0.0.0/24'); host bits are masked."""
    if not isinstance(prefix, str):
        raise InvalidGuardValue('IPv4 prefix must be a string, got %s' % _short(prefix))
    try:
        return ipaddress.IPv4Network(prefix, strict=False)
    except ValueError:
        raise InvalidGuardValue('invalid IPv4 address or prefix %s'
                                % _short(prefix)) from None


def normalize_port(port: Any) -> PortSpec:
    """Check one ``(device, [(mac, [prefix, ...]), ...])`` and make it canonical.

    Entries with the same MAC are merged, prefixes are masked, collapsed
    and sorted, MACs sorted: equal guards always render to equal text. The
    collapsing also matters to the kernel: it refuses an element inside
    one listed before it (EEXIST) but not the other way round.
    """
    items = _sequence(port, 'a port')
    if len(items) != 2:
        raise InvalidGuardValue('a port is (device, [(mac, [prefix, ...]), ...]), got %s'
                                % _short(port))
    device = check_device(items[0])
    pairs = _sequence(items[1], 'the allowed pairs of %s' % device)
    by_mac: dict[str, list[ipaddress.IPv4Network]] = {}
    count = 0
    for pair in pairs:
        pair = _sequence(pair, 'an allowed pair of %s' % device)
        if len(pair) != 2:
            raise InvalidGuardValue('an allowed pair is (mac, [prefix, ...]), got %s'
                                    % _short(pair))
        prefixes = [check_prefix(p) for p in _sequence(pair[1], 'prefixes of %s' % device)]
        count += len(prefixes)
        by_mac.setdefault(check_mac(pair[0]), []).extend(prefixes)
    if len(by_mac) > MAX_MACS_PER_PORT or count > MAX_PREFIXES_PER_PORT:
        raise InvalidGuardValue('port %s has %d MACs and %d prefixes; at most %d and %d'
                                % (device, len(by_mac), count, MAX_MACS_PER_PORT,
                                   MAX_PREFIXES_PER_PORT))
    return device, tuple(
        (mac, tuple(str(n) for n in ipaddress.collapse_addresses(by_mac[mac])))
        for mac in sorted(by_mac))


def normalize_ports(ports: Any) -> list[PortSpec]:
    """:func:`normalize_port` for each port, sorted by device; duplicates refused."""
    ports = _sequence(ports, 'ports')
    if len(ports) > MAX_PORTS:
        raise InvalidGuardValue('%d ports exceed the limit of %d' % (len(ports), MAX_PORTS))
    result = sorted(normalize_port(p) for p in ports)
    for previous, current in zip(result, result[1:]):
        if previous[0] == current[0]:
            raise InvalidGuardValue('device %s is listed twice' % current[0])
    return result


def _element(prefix: str) -> str:
    # nft shows a /32 element as the bare address; render it the same way.
    return prefix[:-3] if prefix.endswith('/32') else prefix


def _set(name: str, key: str, elements: list[str], interval: bool = False) -> list[str]:
    lines = ['\tset %s {' % name, '\t\ttype ' + key]
    if interval:
        lines.append('\t\tflags interval')
    if elements:
        lines += ['\t\telements = {'] + ['\t\t\t%s,' % e for e in elements] + ['\t\t}']
    return lines + ['\t}']


def render_bridge_table(table: str, ports: Any) -> str:
    """The ``nft -f`` input that atomically replaces ``table`` (pure, no root).

    ``ports``: ``[(device, [(mac, [ipv4 prefix, ...]), ...]), ...]``, lists
    or tuples. Every frame a guarded device sends must have one of its MACs
    as Ethernet source and be IPv4, IPv6 or ARP; ARP must carry one of its
    MACs as sender MAC and, as sender IP, a prefix paired with that MAC, or
    0.0.0.0 (a probe). Everything else from the device is dropped. A device
    without MACs sends nothing. Without ports the table is empty: no hook,
    no per-frame cost.

    :raises InvalidGuardValue: a name, MAC or prefix fails validation.
    """
    table = check_table_name(table)
    specs = normalize_ports(ports)
    lines = ['table %s %s {}' % (FAMILY, table),
             'delete table %s %s' % (FAMILY, table),
             'table %s %s {' % (FAMILY, table),
             '\tcomment "%s"' % COMMENT]
    if specs:
        # The ARP header checks keep the fixed sender offsets honest: only
        # an Ethernet/IPv4 ARP (hlen 6, plen 4) has its sender IP at byte 14.
        arp_ok = 'arp htype 1 arp ptype ip arp hlen 6 arp plen 4'
        lines += _set('ports', 'ifname', ['"%s"' % device for device, _ in specs])
        lines += _set('macs', 'ifname . ether_addr',
                      ['"%s" . %s' % (device, mac)
                       for device, pairs in specs for mac, _ in pairs])
        lines += _set('arp-senders', 'ifname . ether_addr . ipv4_addr',
                      ['"%s" . %s . %s' % (device, mac, _element(prefix))
                       for device, pairs in specs for mac, prefixes in pairs
                       for prefix in prefixes], interval=True)
        lines += [
            '\tchain prerouting {',
            '\t\ttype filter hook prerouting priority %d; policy accept;' % PRIORITY,
            '\t\tiifname @ports jump guard',
            '\t}',
            '\tchain guard {',
            '\t\tiifname . ether saddr != @macs counter drop',
            # "ether type", not "meta protocol": the kernel keeps a VLAN tag
            # in metadata, where "meta protocol" shows the inner type and a
            # tagged IPv4 frame would pass; "ether type" reads 0x8100.
            '\t\tether type { ip, ip6 } accept',
            '\t\t%s iifname . arp saddr ether . arp saddr ip @arp-senders accept' % arp_ok,
            # RFC 5227 probes: sender IP 0.0.0.0, sender MAC still the port's own.
            '\t\t%s arp saddr ip 0.0.0.0 iifname . arp saddr ether @macs accept' % arp_ok,
            '\t\tcounter drop',
            '\t}',
        ]
    lines.append('}')
    return '\n'.join(lines) + '\n'


def _nft(*args: str, stdin: str = '') -> tuple[int, str, str]:
    argv = [tool_exec.find_binary(NFT_BINARY), *args]
    return tool_exec.execute(argv, None, stdin, NFT_TIMEOUT)


def _failed(what: str, rc: int, err: str) -> exceptions.ProcessError:
    return exceptions.ProcessError('nft %s failed with exit code %d: %s'
                                   % (what, rc, err.strip()[:4000]))


def _table_exists(table: str) -> bool:
    rc, out, err = _nft('list', 'tables', FAMILY)
    if rc != 0:
        raise _failed('list tables %s' % FAMILY, rc, err)
    return 'table %s %s' % (FAMILY, table) in out.splitlines()


@network.entrypoint
def replace_bridge_table(table: str, ports: Sequence[Sequence[Any]]) -> None:
    """Atomically replace bridge table ``table`` by the guards of ``ports``.

    :param ports: ``[(device, [(mac, [ipv4 prefix, ...]), ...]), ...]``;
        see :func:`render_bridge_table`.
    :raises InvalidGuardValue: a value failed validation (nothing ran).
    :raises ProcessError: nft is missing or failed; the previous table,
        if any, is still in force. The message carries nft's stderr.
    """
    text = render_bridge_table(table, ports)
    rc, _, err = _nft('-f', '-', stdin=text)
    if rc != 0:
        raise _failed('-f (replacing table %s %s)' % (FAMILY, table), rc, err)


@network.entrypoint
def delete_bridge_table(table: str) -> bool:
    """Delete bridge table ``table``; False if it did not exist.

    :raises ProcessError: nft is missing or failed for another reason.
    """
    table = check_table_name(table)
    rc, _, err = _nft('delete', 'table', FAMILY, table)
    if rc == 0:
        return True
    if not _table_exists(table):
        return False
    raise _failed('delete table %s %s' % (FAMILY, table), rc, err)


@network.entrypoint
def list_bridge_table(table: str, handles: bool = False) -> str | None:
    """``nft list table bridge <table>`` (with ``-a`` if ``handles``); None if absent.

    Read-only, for diagnostics and tests.
    """
    table = check_table_name(table)
    args = ['-a'] if handles is True else []
    rc, out, err = _nft(*args, 'list', 'table', FAMILY, table)
    if rc == 0:
        return out
    if not _table_exists(table):
        return None
    raise _failed('list table %s %s' % (FAMILY, table), rc, err)
