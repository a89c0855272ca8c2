"""Turn ids received from neutron-server into device names and paths, safely.

Port, network and router ids arrive over RPC and end up in interface names
(``tap<id[:11]>``), namespace names (``qdhcp-<id>``) and filesystem paths
(``<state_path>/dhcp/<id>``). A malformed or hostile id could otherwise
escape the state directory (``../../etc``), collide with another device, or
exceed the kernel's 15-character interface-name limit. Every name is
therefore built here from an id that has first been validated.

Ids must be UUIDs in the canonical *lowercase* 8-4-4-4-12 form, which is the
only form neutron-server emits (``oslo_utils.uuidutils.generate_uuid``).
Uppercase is rejected on purpose: accepting two spellings of one id would
map a single network to two namespaces (``qdhcp-ABC...`` and
``qdhcp-abc...``) and two state directories.
"""

from __future__ import annotations

import os
import re
from typing import Any, TypeGuard

from agentkit.exceptions import InvalidIdentifier

# IFNAMSIZ is 16 including the trailing NUL.
MAX_DEVICE_NAME_LEN = 15
# Characters of the id kept in a device name (Neutron's convention).
ID_PREFIX_LEN = 11
UUID_LEN = 36

TAP_PREFIX = 'tap'
NS_DEVICE_PREFIX = 'ns-'
ROUTER_INTERFACE_PREFIX = 'qr-'
ROUTER_GATEWAY_PREFIX = 'qg-'
BRIDGE_PREFIX = 'brq'
# os-vif's per-port bridge of an OVS hybrid plug (the firewall's bridge).
HYBRID_BRIDGE_PREFIX = 'qbr'
VXLAN_PREFIX = 'vxlan-'
DHCP_NS_PREFIX = 'qdhcp-'
ROUTER_NS_PREFIX = 'qrouter-'

# Segmentation id ranges per network type (inclusive).
MIN_VLAN_TAG, MAX_VLAN_TAG = 1, 4094
MIN_VXLAN_VNI, MAX_VXLAN_VNI = 1, 2 ** 24 - 1
MIN_GRE_ID, MAX_GRE_ID = 1, 2 ** 32 - 1
SEGMENTATION_RANGES = {
    'vlan': (MIN_VLAN_TAG, MAX_VLAN_TAG),
    'vxlan': (MIN_VXLAN_VNI, MAX_VXLAN_VNI),
    'gre': (MIN_GRE_ID, MAX_GRE_ID),
}
UNSEGMENTED_TYPES = frozenset({'flat', 'local'})

# Explicit ASCII classes: \d would also match non-ASCII digits.
_UUID_RE = re.compile(
    r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}')

_REPR_LIMIT = 60


def _short_repr(value: Any) -> str:
    """repr() for error messages, bounded so a huge payload cannot flood logs."""
    text = repr(value)
    if len(text) > _REPR_LIMIT:
        text = text[:_REPR_LIMIT] + '...(%d chars)' % len(text)
    return text


def is_valid_id(value: Any) -> TypeGuard[str]:
    """True if ``value`` is a canonical lowercase UUID string."""
    return (isinstance(value, str) and len(value) == UUID_LEN
            and _UUID_RE.fullmatch(value) is not None)


def validate_id(value: Any, kind: str = 'port') -> str:
    """Return ``value`` if it is a canonical lowercase UUID, else raise.

    ``kind`` names what the id identifies (port, network, router...) so the
    operator can tell which server object carried the bad value.

    :raises InvalidIdentifier: for anything else, including uppercase UUIDs,
        UUIDs without dashes, ids with surrounding whitespace, non-strings.
    """
    if is_valid_id(value):
        return value
    if not isinstance(value, str):
        reason = 'expected a string, got %s' % type(value).__name__
    elif len(value) != UUID_LEN:
        reason = 'expected %d characters, got %d' % (UUID_LEN, len(value))
    else:
        reason = 'expected a lowercase UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)'
    raise InvalidIdentifier('invalid %s id %s: %s' % (kind, _short_repr(value), reason))


def _device_name(prefix: str, object_id: str, kind: str) -> str:
    name = prefix + validate_id(object_id, kind)[:ID_PREFIX_LEN]
    # Holds by construction for every prefix here; guards future prefixes.
    assert len(name) <= MAX_DEVICE_NAME_LEN, name
    return name


def tap_device_name(port_id: str) -> str:
    """``tap<port[:11]>``: the host side of a port (what nova/os-vif plug)."""
    return _device_name(TAP_PREFIX, port_id, 'port')


def ns_device_name(port_id: str) -> str:
    """``ns-<port[:11]>``: the namespace end of a veth-plugged DHCP port."""
    return _device_name(NS_DEVICE_PREFIX, port_id, 'port')


def router_interface_name(port_id: str) -> str:
    """``qr-<port[:11]>``: a router's internal (subnet) interface."""
    return _device_name(ROUTER_INTERFACE_PREFIX, port_id, 'port')


def router_gateway_name(port_id: str) -> str:
    """``qg-<port[:11]>``: a router's external gateway interface."""
    return _device_name(ROUTER_GATEWAY_PREFIX, port_id, 'port')


def bridge_name(network_id: str) -> str:
    """``brq<net[:11]>``: the Linux bridge of a network (linuxbridge driver)."""
    return _device_name(BRIDGE_PREFIX, network_id, 'network')


def hybrid_bridge_name(port_id: str) -> str:
    """``qbr<port-id[:11]>``: where os-vif hybrid-plugs the port's tap."""
    return _device_name(HYBRID_BRIDGE_PREFIX, port_id, 'port')


def vxlan_device_name(vni: int) -> str:
    """``vxlan-<vni>``: at most 14 characters since a VNI has 8 digits at most."""
    name = VXLAN_PREFIX + str(validate_vni(vni))
    assert len(name) <= MAX_DEVICE_NAME_LEN, name
    return name


def dhcp_namespace(network_id: str) -> str:
    """``qdhcp-<network-id>``: the namespace that holds a network's dnsmasq."""
    return DHCP_NS_PREFIX + validate_id(network_id, 'network')


def router_namespace(router_id: str) -> str:
    """``qrouter-<router-id>``: the namespace of a legacy router."""
    return ROUTER_NS_PREFIX + validate_id(router_id, 'router')


def dhcp_state_dir(state_path: str, network_id: str) -> str:
    """``<state_path>/dhcp/<network-id>``: dnsmasq's files for one network."""
    return safe_join(state_path, 'dhcp', validate_id(network_id, 'network'))


def _validate_int(value: Any, low: int, high: int, what: str) -> int:
    # bool is an int subclass; True must not pass as segmentation id 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidIdentifier('invalid %s %s: expected an integer, got %s'
                                % (what, _short_repr(value), type(value).__name__))
    if not low <= value <= high:
        raise InvalidIdentifier('invalid %s %d: must be between %d and %d'
                                % (what, value, low, high))
    return value


def validate_vni(vni: Any) -> int:
    """Return ``vni`` if it is a usable VXLAN network identifier (1..2**24-1)."""
    return _validate_int(vni, MIN_VXLAN_VNI, MAX_VXLAN_VNI, 'VXLAN VNI')


def validate_vlan_tag(tag: Any) -> int:
    """Return ``tag`` if it is a usable 802.1Q VLAN id (1..4094)."""
    return _validate_int(tag, MIN_VLAN_TAG, MAX_VLAN_TAG, 'VLAN id')


def validate_segmentation_id(network_type: str, segmentation_id: Any) -> int | None:
    """Check a segment's id against its network type.

    flat and local networks carry no segmentation id (``None`` is returned);
    vlan, vxlan and gre need one in their type's range.

    :raises InvalidIdentifier: wrong range, wrong type, unknown network type,
        or an id given for an unsegmented type.
    """
    if isinstance(network_type, str) and network_type in UNSEGMENTED_TYPES:
        if segmentation_id is not None:
            raise InvalidIdentifier(
                'invalid segmentation id %s: %s networks have none'
                % (_short_repr(segmentation_id), network_type))
        return None
    if not isinstance(network_type, str) or network_type not in SEGMENTATION_RANGES:
        raise InvalidIdentifier('unknown network type %s; known: %s' % (
            _short_repr(network_type),
            ', '.join(sorted(set(SEGMENTATION_RANGES) | UNSEGMENTED_TYPES))))
    low, high = SEGMENTATION_RANGES[network_type]
    return _validate_int(segmentation_id, low, high, '%s segmentation id' % network_type)


def safe_join(base: str, *parts: str) -> str:
    """Join ``parts`` below ``base`` and refuse any result outside it.

    Each part must be a non-empty relative string without NUL. The joined
    path is resolved (``..`` and symlinks) and must stay strictly below the
    resolved ``base``; the base itself is refused too, because a caller
    about to create or delete "the directory of X" must never get the root
    of the state tree. The returned path is normalised but not resolved, so
    it reads like the configured ``base``.

    :raises InvalidIdentifier: if the result would escape ``base``.
    """
    if not isinstance(base, str) or not base or '\0' in base:
        raise InvalidIdentifier('invalid base directory %s' % _short_repr(base))
    if not parts:
        raise InvalidIdentifier('safe_join needs at least one path component')
    for part in parts:
        if not isinstance(part, str) or not part or '\0' in part:
            raise InvalidIdentifier('invalid path component %s' % _short_repr(part))
        if os.path.isabs(part):
            raise InvalidIdentifier('absolute path component %s not allowed below %s'
                                    % (_short_repr(part), _short_repr(base)))
    joined = os.path.normpath(os.path.join(base, *parts))
    real_base = os.path.realpath(base)
    real_joined = os.path.realpath(joined)
    if (real_joined == real_base
            or os.path.commonpath([real_base, real_joined]) != real_base):
        raise InvalidIdentifier('path %s escapes %s'
                                % (_short_repr(os.path.join(*parts)), _short_repr(base)))
    return joined
