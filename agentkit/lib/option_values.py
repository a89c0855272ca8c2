"""Parsing of free-form option values (ranges, ``key:value`` mappings).

Shared by the agents' start-up checks (``agentkit.conf.checks``, which stop
an agent with exit code 2 naming the option) and the drivers that use the
values, so both read an option the same way.
"""

import ipaddress
import re

from agentkit import exceptions

MIN_VLAN, MAX_VLAN = 1, 4094
#: Tunnel network type -> its ``[l2]`` key range option and highest key.
TUNNEL_KEY_RANGES = {'gre': ('tunnel_id_ranges', 2 ** 32 - 1),
                     'vxlan': ('vni_ranges', 2 ** 24 - 1)}


def parse_tunnel_ranges(network_type: str, entries: list[str]) -> list[tuple[int, int]]:
    """The key ranges of a tunnel type (``gre``, ``vxlan``): the one rule
    the start-up check and the type driver both apply."""
    option, high = TUNNEL_KEY_RANGES[network_type]
    return parse_ranges(entries, 1, high, option)


def parse_ranges(entries: list[str], low: int, high: int,
                 option: str) -> list[tuple[int, int]]:
    """Parse ``['1:100', '200:300']`` within [low, high].

    :raises InvalidConfiguration: naming ``option`` and the bad entry.
    """
    ranges = []
    for entry in entries:
        parts = entry.strip().split(':')
        try:
            if len(parts) != 2:
                raise ValueError('expected <min>:<max>')
            first, last = int(parts[0]), int(parts[1])
            if not low <= first <= last <= high:
                raise ValueError(f'must satisfy {low} <= min <= max <= {high}')
        except ValueError as exc:
            raise exceptions.InvalidConfiguration(
                f'{option}: invalid range {entry!r}: {exc}') from None
        ranges.append((first, last))
    return ranges


def in_ranges(value: int, ranges: list[tuple[int, int]]) -> bool:
    return any(first <= value <= last for first, last in ranges)


def parse_network_vlan_ranges(entries: list[str]
                              ) -> dict[str, list[tuple[int, int]]]:
    """``physnet[:min:max]`` entries -> {physnet: [(min, max), ...]}."""
    result: dict[str, list[tuple[int, int]]] = {}
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        physnet, sep, rng = entry.partition(':')
        if not physnet:
            raise exceptions.InvalidConfiguration(
                f'network_vlan_ranges: entry {entry!r} has no physical network')
        spans = result.setdefault(physnet, [])
        spans.extend(parse_ranges([rng], MIN_VLAN, MAX_VLAN, 'network_vlan_ranges')
                     if sep else [(MIN_VLAN, MAX_VLAN)])
    return result


def parse_mappings(entries: list[str], option: str, what: str) -> dict[str, str]:
    """``physnet:<what>`` pairs -> dict, read as neutron_lib's
    ``parse_mappings`` reads them: blank entries are skipped; an entry
    without exactly one ``:``, or with an empty side, is refused, and so is
    a physnet or a ``what`` named twice (two physnets on one bridge or
    interface would share its VLAN space)."""
    mappings: dict[str, str] = {}
    owners: dict[str, str] = {}
    for entry in entries:
        if not entry.strip():
            continue
        parts = [part.strip() for part in entry.split(':')]
        if len(parts) != 2 or not all(parts):
            raise exceptions.InvalidConfiguration(
                f'{option}: {entry!r} is not <physical_network>:<{what}>')
        physnet, value = parts
        if physnet in mappings:
            raise exceptions.InvalidConfiguration(
                f'{option}: physical network {physnet!r} mapped twice')
        if value in owners:
            raise exceptions.InvalidConfiguration(
                f'{option}: {what} {value!r} mapped to both '
                f'{owners[value]!r} and {physnet!r}')
        mappings[physnet] = value
        owners[value] = physnet
    return mappings


#: A label of a domain in dnsmasq's ``--server=/domain/...`` (``*``
#: wildcards included); a whole domain may also be ``#`` (every domain).
_DNS_LABEL = re.compile(r'^[A-Za-z0-9*_-]{1,63}$')
#: An interface name after ``@`` (no ``/``, ``:`` or whitespace, as the kernel).
_INTERFACE = re.compile(r'^[A-Za-z][A-Za-z0-9_.-]{0,14}$')


def _valid_domains(domains: list[str]) -> bool:
    """``['']`` is dnsmasq's ``//`` (unqualified names)."""
    if domains == ['']:
        return True
    return bool(domains) and all(
        d == '#' or (len(d) <= 253 and all(_DNS_LABEL.match(label)
                                           for label in d.removesuffix('.').split('.')))
        for d in domains)


def _address_and_port(value: str, entry: str) -> tuple[str, int]:
    """``address[#port]`` normalised, and its IP version."""
    address, sep, port = value.partition('#')
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f'dnsmasq_dns_servers entry {entry[:60]!r}: '
                         f'{address[:60]!r} is not an IP address') from None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.scope_id is not None:
        # dnsmasq runs in the network's namespace: a host interface name
        # means nothing there (and dnsmasq refuses most of them).
        raise ValueError(f'dnsmasq_dns_servers entry {entry[:60]!r}: no %scope '
                         'on an address (use address@interface)')
    if sep and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f'dnsmasq_dns_servers entry {entry[:60]!r}: bad port')
    return str(parsed) + (sep + str(int(port)) if sep else ''), parsed.version


def parse_dns_forwarder(value: str) -> str:
    """A ``dnsmasq_dns_servers`` entry, as dnsmasq's ``--server=`` takes it
    and Neutron passes it on: ``address[#port][@source]``, optionally
    scoped to domains (``/example.org/address``, ``/example.org/`` for
    local only, ``/example.org/#`` for the usual servers, ``//address`` for
    unqualified names); ``source`` is an address[#port] of the same IP
    version, or an interface name. Returned normalised; anything else
    is refused (it ends up in dnsmasq's argv).
    """
    if not isinstance(value, str):
        raise ValueError(f'dnsmasq_dns_servers entry {str(value)[:60]!r}: not a string')
    prefix, server = '', value
    if value.startswith('/'):
        end = value.rfind('/')
        if end == 0 or not _valid_domains(value[1:end].split('/')):
            raise ValueError(f'dnsmasq_dns_servers entry {value[:60]!r}: bad domain '
                             'list (expected /domain[/domain...]/server)')
        prefix, server = value[:end + 1], value[end + 1:]
        if server in ('', '#'):
            return prefix + server
    address, at, source = server.partition('@')
    normalised, version = _address_and_port(address, value)
    if at:
        if _INTERFACE.match(source):
            normalised += '@' + source
        else:
            source_address, source_version = _address_and_port(source, value)
            if source_version != version:
                raise ValueError(f'dnsmasq_dns_servers entry {value[:60]!r}: the source '
                                 'address is not of the server\'s IP version')
            normalised += '@' + source_address
    return prefix + normalised
