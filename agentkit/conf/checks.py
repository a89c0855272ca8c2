"""What a free-form or ranged option's value must mean, checked at start.

oslo.config checks types and bounds; these options are strings or lists
whose format only a parser knows (ranges, ``physnet:bridge`` mappings,
interface names). ``service.validate_options`` runs each check on the
loaded value, so a bad one stops the agent at start with exit code 2 and a
message naming the option and the value, before any driver starts;
agentkit-doctor checks the options it reads the same way
(:func:`option_problem`).

Each entry has a value that must be refused: the parametrised test
(tests/unit/test_config_values.py) feeds it to every agent that has the
option.

A check runs under the same condition as the driver that reads the
option (``WHEN``), through the same function: the tunnel bridge, its patch
ports and a tunnel type's key ranges mean nothing on a host that does not
use them, so a stale value there is not refused at load, just as the
driver ignores it; once tunnels are enabled the load check and the driver
refuse the same values with the same rule.
"""

from collections.abc import Callable
from typing import Any

from oslo_config import cfg

from agentkit import exceptions
from agentkit.lib import option_values
from agentkit.lib.ovs import validation as ovs_validation

#: (value, the loaded configuration) -> raises if the value is wrong
Check = Callable[[Any, cfg.ConfigOpts], object]


def _ovs_name(value: Any, conf: cfg.ConfigOpts) -> object:
    return ovs_validation.validate_name(value, 'bridge or port')


def _tunnel_ranges(network_type: str) -> Check:
    return lambda value, conf: option_values.parse_tunnel_ranges(network_type, value)


def _patch_port(option: str) -> Check:
    def check(value: Any, conf: cfg.ConfigOpts) -> object:
        int_peer, tun_peer = conf.ovs.int_peer_patch_port, conf.ovs.tun_peer_patch_port
        if option == 'int_peer_patch_port':
            int_peer = value
        else:
            tun_peer = value
        ovs_validation.validate_patch_ports(int_peer, tun_peer, only=option)
        return value
    return check


def _tunnels_enabled(conf: cfg.ConfigOpts) -> bool:
    """The OVS driver builds br-tun and its patch pair only then; an agent
    without [l2] options (DHCP, L3: their OVS interface driver) never."""
    return 'l2' in conf and bool(conf.l2.tunnel_types)


def _type_enabled(network_type: str) -> Callable[[cfg.ConfigOpts], bool]:
    """The L2 agent loads a type driver (which parses its ranges) when
    ``[l2] type_drivers`` names it, or, unset, when the mechanism driver
    supports it; that is not known before the driver loads, so unset
    counts as enabled (linuxbridge with a stale tunnel_id_ranges and
    type_drivers unset is the one case refused although unused)."""
    def enabled(conf: cfg.ConfigOpts) -> bool:
        if 'l2' not in conf:
            return False  # no type drivers in this agent
        names = conf.l2.type_drivers
        return names is None or network_type in names
    return enabled


def _bridge_mappings(value: Any, conf: cfg.ConfigOpts) -> object:
    mappings = option_values.parse_mappings(value, 'bridge_mappings', 'bridge')
    return [ovs_validation.validate_name(bridge, 'bridge') for bridge in mappings.values()]


def _dns_forwarders(value: Any, conf: cfg.ConfigOpts) -> object:
    return [option_values.parse_dns_forwarder(entry) for entry in value]


#: (group, option name) -> (check, a value it refuses, one it accepts),
#: the values as written in a configuration file
CHECKS: dict[tuple[str, str], tuple[Check, str, str]] = {
    ('l2', 'bridge_mappings'): (_bridge_mappings, 'physnet1:br-ex,physnet2:br-ex',
                                'physnet1:br-ex,physnet2:br-eth2'),
    ('l2', 'network_vlan_ranges'): (lambda value, conf: option_values.parse_network_vlan_ranges(
        value), 'physnet1:4000:5000', 'physnet1:100:200,physnet2'),
    ('l2', 'tunnel_id_ranges'): (_tunnel_ranges('gre'), '10:1', '1:1000,2000:3000'),
    ('l2', 'vni_ranges'): (_tunnel_ranges('vxlan'), '1:16777216', '1:16777215'),
    ('ovs', 'integration_bridge'): (_ovs_name, 'br-integration-0', 'br-int2'),
    ('ovs', 'tunnel_bridge'): (_ovs_name, 'br/../tun', 'br-tun2'),
    ('ovs', 'int_peer_patch_port'): (_patch_port('int_peer_patch_port'), 'patch tun',
                                     'patch-tun2'),
    ('ovs', 'tun_peer_patch_port'): (_patch_port('tun_peer_patch_port'), 'x' * 16, 'x' * 15),
    ('DEFAULT', 'dnsmasq_dns_servers'): (_dns_forwarders, '8.8.8.8,dns.example',
                                         '8.8.8.8,2001:db8::53#5353'),
}


#: (group, option name) -> (when its check applies, the settings that make
#: it apply as written in a configuration file); absent: always
WHEN: dict[tuple[str, str], tuple[Callable[[cfg.ConfigOpts], bool], dict[str, dict[str, str]]]] = {
    ('l2', 'tunnel_id_ranges'): (_type_enabled('gre'), {'l2': {'type_drivers': 'gre'}}),
    ('l2', 'vni_ranges'): (_type_enabled('vxlan'), {'l2': {'type_drivers': 'vxlan'}}),
    **{('ovs', name): (_tunnels_enabled, {'l2': {'tunnel_types': 'vxlan'}})
       for name in ('tunnel_bridge', 'int_peer_patch_port', 'tun_peer_patch_port')},
}


def check(group: str | None, name: str, value: Any, conf: cfg.ConfigOpts) -> str | None:
    """What is wrong with ``value`` of ``[group] name`` in ``conf``, or None
    (also when the option is not used with this configuration)."""
    key = (group or 'DEFAULT', name)
    entry = CHECKS.get(key)
    if entry is None or value is None:
        return None
    when = WHEN.get(key)
    try:
        if when is not None and not when[0](conf):
            return None
    except (ValueError, cfg.Error):
        return None  # the condition's own option is wrong: reported on its own line
    try:
        entry[0](value, conf)
    except (ValueError, exceptions.AgentkitError) as exc:
        return f'invalid value {value!r}: {exc}'
    return None


def option_problem(conf: cfg.ConfigOpts, group: str | None, name: str) -> str | None:
    """What is wrong with the loaded ``[group] name``: a value oslo.config
    cannot convert, or one :func:`check` refuses; None if nothing.

    :returns: ``'[group] name: why'``.
    :raises cfg.NoSuchOptError, cfg.NoSuchGroupError: not registered on ``conf``.
    """
    label = f'[{group or "DEFAULT"}] {name}'
    try:
        value = getattr(conf if group is None else conf[group], name)
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        raise
    except (ValueError, cfg.Error) as exc:
        return f'{label}: {exc}'
    problem = check(group, name, value, conf)
    return None if problem is None else f'{label}: {problem}'
