"""Root operation: make the dnsmasq of one network drop one lease at once.

A lease dnsmasq still holds for a deleted port makes it refuse the address
to the port that gets it next (another MAC) until the lease expires, a day
by default. ``dhcp_release`` / ``dhcp_release6`` (Debian ``dnsmasq-utils``)
send dnsmasq the client's RELEASE from inside the network's namespace, which
only root can do (a raw-ish socket bound to the DHCP port's device).

Runs in the ``daemons`` privsep daemon, which already spawns dnsmasq in the
same namespaces. Nothing here runs a caller-chosen command: each entrypoint
builds the argv of its one tool from validated values (a ``qdhcp-``
namespace, a device name, an address, a MAC, hex client/server ids), and
the binary is looked up in a fixed search path.

Only primitives cross the privsep channel: ``(returncode, output)``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from agentkit import privileged as _privileged
from agentkit.lib import naming
from agentkit.privileged import tool_exec

DHCP_RELEASE = 'dhcp_release'
DHCP_RELEASE6 = 'dhcp_release6'
# dhcp_release sends one datagram and exits; anything longer is a hang.
TIMEOUT = 10.0

_NAMESPACE_RE = re.compile(re.escape(naming.DHCP_NS_PREFIX) + r'[0-9a-f-]{36}')
# Linux device names: at most 15 bytes, no '/', no whitespace, not . or ..
_DEVICE_RE = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.:-]{0,14}')
_MAC_RE = re.compile(r'[0-9a-f]{2}(?::[0-9a-f]{2}){5}')
# Client ids and DUIDs as dnsmasq writes them in its lease file.
_HEX_ID_RE = re.compile(r'[0-9a-f]{2}(?::[0-9a-f]{2}){0,254}')
_MAX_DUID_BYTES = 130  # RFC 8415: type (2) + at most 128 bytes


def _namespace(value: Any) -> str:
    if not (isinstance(value, str) and _NAMESPACE_RE.fullmatch(value)
            and naming.is_valid_id(value[len(naming.DHCP_NS_PREFIX):])):
        raise ValueError('not a DHCP namespace: %r' % (value,))
    return value


def _device(value: Any) -> str:
    if not isinstance(value, str) or not _DEVICE_RE.fullmatch(value):
        raise ValueError('invalid interface name %r' % (value,))
    return value


def _address(value: Any, version: int) -> str:
    if not isinstance(value, str) or '%' in value:
        raise ValueError('invalid IPv%d address %r' % (version, value))
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError('invalid IPv%d address %r' % (version, value)) from None
    if address.version != version or address.is_multicast or address.is_unspecified:
        raise ValueError('invalid IPv%d address %r' % (version, value))
    return str(address)


def _hex_id(value: Any, what: str, max_bytes: int = 255) -> str:
    if (not isinstance(value, str) or not _HEX_ID_RE.fullmatch(value)
            or (len(value) + 1) // 3 > max_bytes):
        raise ValueError('invalid %s %r (colon-separated hex bytes expected)'
                         % (what, value))
    return value


def _run(argv: list[str], namespace: str) -> tuple[int, str]:
    returncode, out, err = tool_exec.execute(argv, namespace, timeout=TIMEOUT)
    return returncode, (err or out).strip()[:500]


@_privileged.daemons.entrypoint
def release_lease(namespace: str, device: str, ip_address: str, mac_address: str,
                  client_id: str | None = None) -> tuple[int, str]:
    """``dhcp_release <device> <ip> <mac> [<client-id>]`` inside ``namespace``.

    :returns: (returncode, stderr or stdout) of the tool.
    :raises ValueError: an argument is not what a DHCPv4 release needs.
    :raises ProcessError: dhcp_release is not installed, or hung.
    :raises NetworkNamespaceNotFound: no such namespace.
    """
    argv = [tool_exec.find_binary(DHCP_RELEASE), _device(device),
            _address(ip_address, 4)]
    if not isinstance(mac_address, str) or not _MAC_RE.fullmatch(mac_address):
        raise ValueError('invalid MAC address %r' % (mac_address,))
    argv.append(mac_address)
    if client_id is not None:
        argv.append(_hex_id(client_id, 'client id'))
    return _run(argv, _namespace(namespace))


@_privileged.daemons.entrypoint
def release_lease6(namespace: str, device: str, ip_address: str, iaid: int,
                   client_duid: str, server_duid: str) -> tuple[int, str]:
    """``dhcp_release6 --iface --ip --iaid --client-id --server-id`` in ``namespace``.

    :returns: (returncode, stderr or stdout) of the tool.
    :raises ValueError: an argument is not what a DHCPv6 release needs.
    :raises ProcessError: dhcp_release6 is not installed, or hung.
    :raises NetworkNamespaceNotFound: no such namespace.
    """
    if (not isinstance(iaid, int) or isinstance(iaid, bool)
            or not 0 <= iaid < 2 ** 32):
        raise ValueError('invalid IAID %r' % (iaid,))
    argv = [tool_exec.find_binary(DHCP_RELEASE6),
            '--iface', _device(device),
            '--ip', _address(ip_address, 6),
            '--iaid', str(iaid),
            '--client-id', _hex_id(client_duid, 'client DUID', _MAX_DUID_BYTES),
            '--server-id', _hex_id(server_duid, 'server DUID', _MAX_DUID_BYTES)]
    return _run(argv, _namespace(namespace))
