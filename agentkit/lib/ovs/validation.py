"""Checks on what agentkit writes to OVSDB, before any transaction.

Why here and not in ovsdb-server: a bad name, tag or tunnel option is
accepted by OVSDB and fails only later in ovs-vswitchd (ofport -1, an
Interface.error), far from the caller. Pure functions, no OVSDB access.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from agentkit import exceptions

# Kernel and OVS interface names: IFNAMSIZ is 16 including the NUL.
MAX_NAME_LEN = 15

PORT_TYPES = frozenset({'internal', 'patch', 'vxlan', 'gre', 'geneve'})
TUNNEL_TYPES = frozenset({'vxlan', 'gre', 'geneve'})
FAIL_MODES = frozenset({'secure', 'standalone'})
DATAPATH_TYPES = frozenset({'system', 'netdev'})
MIN_TAG, MAX_TAG = 0, 4095          # Port.tag range in the OVS schema
MIN_MTU, MAX_MTU = 68, 65535
MAX_VNI = {'vxlan': 2 ** 24 - 1, 'geneve': 2 ** 24 - 1, 'gre': 2 ** 32 - 1}


def validate_name(name: Any, what: str = 'port') -> str:
    """Check a bridge/port name: OVS interface names are kernel names too."""
    if not isinstance(name, str) or not name:
        raise exceptions.InvalidIdentifier(f'{what} name must be a non-empty string, '
                                           f'got {name!r}')
    if len(name) > MAX_NAME_LEN:
        raise exceptions.InvalidIdentifier(
            f'{what} name {name!r} is longer than {MAX_NAME_LEN} characters')
    if name in ('.', '..') or '/' in name or any(c.isspace() for c in name) \
            or not name.isprintable():
        raise exceptions.InvalidIdentifier(f'{what} name {name!r} is not a valid '
                                           f'interface name')
    return name


PATCH_PORT_OPTIONS = ('int_peer_patch_port', 'tun_peer_patch_port')


def validate_patch_ports(int_peer: Any, tun_peer: Any, only: str | None = None) -> None:
    """The patch pair between the integration and tunnel bridges: both valid
    port names, and distinct (one name cannot be both ends).

    ``only`` (one of PATCH_PORT_OPTIONS) limits the check to what is wrong
    with that option, so a start-up check reports each mistake once: a bad
    name under its own option, "must differ" under tun_peer_patch_port.
    The OVS mechanism driver checks the pair as a whole (``only`` None).
    """
    for option, value in zip(PATCH_PORT_OPTIONS, (int_peer, tun_peer)):
        if only in (None, option):
            validate_name(value, option)
    if only in (None, PATCH_PORT_OPTIONS[1]) and int_peer == tun_peer:
        raise exceptions.InvalidIdentifier(
            f'int_peer_patch_port and tun_peer_patch_port must differ '
            f'(both {tun_peer!r})')


def _to_ovs_string(value: Any, what: str) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (str, int)):
        return str(value)
    raise TypeError(f'{what}: OVSDB string maps take str/int/bool values, '
                    f'got {type(value).__name__}')


def normalize_map(values: Mapping[str, Any] | None, what: str) -> dict[str, str]:
    """Turn a user mapping into the ``{str: str}`` an OVSDB map column needs."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise TypeError(f'{what} must be a mapping, got {type(values).__name__}')
    result = {}
    for key, value in values.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f'{what}: keys must be non-empty strings, got {key!r}')
        result[key] = _to_ovs_string(value, f'{what}[{key!r}]')
    return result


def _optional_int(value: Any, low: int, high: int, what: str) -> int | None:
    """None, or an int (not a bool) within [low, high]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f'{what} must be an int {low}-{high} or None, got {value!r}')
    return value


def validate_tag(tag: Any) -> int | None:
    """Port.tag: None (trunk/untagged) or a VLAN id 0-4095."""
    return _optional_int(tag, MIN_TAG, MAX_TAG, 'VLAN tag')


def validate_mtu(mtu: Any) -> int | None:
    """Interface.mtu_request: None (OVS's choice) or an MTU."""
    return _optional_int(mtu, MIN_MTU, MAX_MTU, 'mtu_request')


def validate_port_args(name: str, port_type: str | None,
                       options: Mapping[str, str]) -> None:
    """Reject port definitions ovs-vswitchd would only fail on later (ofport -1)."""
    validate_name(name, 'port')
    if port_type is not None and port_type not in PORT_TYPES:
        raise ValueError(f'port type must be None or one of {sorted(PORT_TYPES)}, '
                         f'got {port_type!r}')
    if port_type == 'patch':
        validate_name(options.get('peer', ''), 'patch peer')
    if port_type in TUNNEL_TYPES and not options.get('remote_ip'):
        raise ValueError(f'{port_type} port {name!r} needs options remote_ip')


def _ip_or_flow(value: Any, what: str) -> str:
    if value == 'flow':
        return 'flow'
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f'{what} must be an IP address or "flow", got {value!r}') from None


def build_tunnel_options(tunnel_type: str, remote_ip: str,
                         local_ip: str | None = None,
                         key: str | int | None = 'flow',
                         dst_port: int | None = None,
                         df_default: bool | None = None,
                         extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Interface.options of a vxlan/gre/geneve port, validated.

    ``key='flow'`` lets OpenFlow set the VNI/GRE key per packet (what
    Neutron's tunnel bridge does); an int pins one VNI; None leaves it unset.
    """
    if tunnel_type not in TUNNEL_TYPES:
        raise ValueError(f'tunnel type must be one of {sorted(TUNNEL_TYPES)}, '
                         f'got {tunnel_type!r}')
    options = {'remote_ip': _ip_or_flow(remote_ip, 'remote_ip')}
    if local_ip is not None:
        options['local_ip'] = _ip_or_flow(local_ip, 'local_ip')
        if 'flow' not in (options['remote_ip'], options['local_ip']):
            remote = ipaddress.ip_address(options['remote_ip'])
            local = ipaddress.ip_address(options['local_ip'])
            if remote.version != local.version:
                raise ValueError('remote_ip and local_ip must be the same IP version')
    if key is not None:
        if key == 'flow':
            options['key'] = 'flow'
        elif isinstance(key, bool) or not isinstance(key, int) \
                or not 0 <= key <= MAX_VNI[tunnel_type]:
            raise ValueError(f'{tunnel_type} key must be "flow" or an int '
                             f'0-{MAX_VNI[tunnel_type]}, got {key!r}')
        else:
            options['key'] = str(key)
    if dst_port is not None:
        if tunnel_type == 'gre':
            raise ValueError('gre tunnels have no UDP dst_port')
        if isinstance(dst_port, bool) or not isinstance(dst_port, int) \
                or not 1 <= dst_port <= 65535:
            raise ValueError(f'dst_port must be an int 1-65535, got {dst_port!r}')
        options['dst_port'] = str(dst_port)
    if df_default is not None:
        options['df_default'] = _to_ovs_string(bool(df_default), 'df_default')
    for k, v in normalize_map(extra, 'tunnel options').items():
        if k in options:
            raise ValueError(f'tunnel option {k!r} given twice')
        options[k] = v
    return options
