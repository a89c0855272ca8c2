"""What a free-form or ranged option's value must mean, checked at start.

oslo.config checks types and bounds; these options are strings or lists
whose format only a parser knows (ranges, ``physnet:bridge`` mappings,
interface names). ``service.validate_options`` runs each check on the
loaded value, so a bad one stops the agent at start with exit code 2 and a
message naming the option and the value, before any driver starts.

Each entry has a value that must be refused: the parametrised test
(tests/unit/test_config_values.py) feeds it to every agent that has the
option.
"""

from collections.abc import Callable
from typing import Any

from agentkit import exceptions
from agentkit.lib import option_values
from agentkit.lib.ovs import validation as ovs_validation

Check = Callable[[Any], object]


def _ovs_name(value: Any) -> object:
    return ovs_validation.validate_name(value, 'bridge or port')


def _tunnel_ranges(option: str, high: int) -> Check:
    return lambda value: option_values.parse_ranges(value, 1, high, option)


def _bridge_mappings(value: Any) -> object:
    mappings = option_values.parse_mappings(value, 'bridge_mappings', 'bridge')
    return [ovs_validation.validate_name(bridge, 'bridge') for bridge in mappings.values()]


def _dns_forwarders(value: Any) -> object:
    return [option_values.parse_dns_forwarder(entry) for entry in value]


#: (group, option name) -> (check, a value it refuses, one it accepts),
#: the values as written in a configuration file
CHECKS: dict[tuple[str, str], tuple[Check, str, str]] = {
    ('l2', 'bridge_mappings'): (_bridge_mappings, 'physnet1:br-ex,physnet2:br-ex',
                                'physnet1:br-ex,physnet2:br-eth2'),
    ('l2', 'network_vlan_ranges'): (option_values.parse_network_vlan_ranges,
                                    'physnet1:4000:5000', 'physnet1:100:200,physnet2'),
    ('l2', 'tunnel_id_ranges'): (_tunnel_ranges('tunnel_id_ranges', 2 ** 32 - 1),
                                 '10:1', '1:1000,2000:3000'),
    ('l2', 'vni_ranges'): (_tunnel_ranges('vni_ranges', 2 ** 24 - 1), '1:16777216',
                           '1:16777215'),
    ('ovs', 'integration_bridge'): (_ovs_name, 'br-integration-0', 'br-int2'),
    ('ovs', 'tunnel_bridge'): (_ovs_name, 'br/../tun', 'br-tun2'),
    ('ovs', 'int_peer_patch_port'): (_ovs_name, 'patch tun', 'patch-tun2'),
    ('ovs', 'tun_peer_patch_port'): (_ovs_name, 'x' * 16, 'x' * 15),
    ('DEFAULT', 'dnsmasq_dns_servers'): (_dns_forwarders, '8.8.8.8,dns.example',
                                         '8.8.8.8,2001:db8::53#5353'),
}


def check(group: str | None, name: str, value: Any) -> str | None:
    """What is wrong with ``value`` of ``[group] name``, or None."""
    entry = CHECKS.get((group or 'DEFAULT', name))
    if entry is None or value is None:
        return None
    try:
        entry[0](value)
    except (ValueError, exceptions.AgentkitError) as exc:
        return f'invalid value {value!r}: {exc}'
    return None
