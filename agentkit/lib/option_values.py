"""Parsing of free-form option values (ranges, ``key:value`` mappings).

Shared by the agents' start-up checks (``agentkit.conf.checks``, which stop
an agent with exit code 2 naming the option) and the drivers that use the
values, so both read an option the same way.
"""

import ipaddress

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
    """``physnet:<what>`` pairs -> dict; blanks and a physnet or a ``what``
    named twice are refused (two physnets on one bridge or interface would
    share its VLAN space)."""
    mappings: dict[str, str] = {}
    owners: dict[str, str] = {}
    for entry in entries:
        physnet, sep, value = entry.strip().partition(':')
        physnet, value = physnet.strip(), value.strip()
        if not sep or not physnet or not value:
            raise exceptions.InvalidConfiguration(
                f'{option}: {entry!r} is not <physical_network>:<{what}>')
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


def parse_dns_forwarder(value: str) -> str:
    """A ``dnsmasq_dns_servers`` entry: an IP address, optionally ``#port``;
    returned normalised as dnsmasq's ``--server=`` takes it."""
    address, sep, port = value.partition('#') if isinstance(value, str) else (value, '', '')
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f'dnsmasq_dns_servers entry {str(value)[:60]!r}: '
                         f'{str(address)[:60]!r} is not an IP address') from None
    if sep and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f'dnsmasq_dns_servers entry {value[:60]!r}: bad port')
    return str(parsed) + (sep + str(int(port)) if sep else '')
