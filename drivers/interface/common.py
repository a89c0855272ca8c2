"""What both interface drivers do once the device is in its namespace."""

import ipaddress

from agentkit.lib import ip_lib
from agentkit.lib import polling


def wait_for_device(device: ip_lib.IPDevice, timeout: float = 5.0) -> None:
    """Wait until ``device`` exists (ovs-vswitchd creates internal ports)."""
    if not polling.wait_until(device.exists, timeout):
        raise RuntimeError(f'device {device.name} did not appear in '
                           f'{timeout}s')


def link_or_none(device: ip_lib.IPDevice) -> ip_lib.LinkInfo | None:
    """The device's link attributes in one privileged call; None if it is missing."""
    try:
        return device.link.attributes
    except ip_lib.NetworkInterfaceNotFound:
        return None


def configure_link(device: ip_lib.IPDevice, mac_address: str,
                   mtu: int | None, link: ip_lib.LinkInfo | None = None) -> None:
    """MAC, MTU and up: the state a plugged service port must be in.

    The device is read once (or ``link``, its attributes just read) and only
    what differs is written: an agent restarted with 1,000 networks in place
    made 13 privileged calls per network, most of them reading one attribute
    or writing a value that was already there.
    """
    link = link if link is not None else device.link.attributes
    if (link['address'] or '').lower() != mac_address.lower():
        device.link.set_address(mac_address)
    if mtu and link['mtu'] != mtu:
        device.link.set_mtu(mtu)
    if link['state'] != 'up':
        device.link.set_up()


def set_addresses(device: ip_lib.IPDevice, cidrs: list[str],
                  current: ip_lib.DeviceState | None = None) -> None:
    """Make ``device`` hold exactly ``cidrs`` among its global scope addresses.

    A wanted link-local address (the metadata proxy's ``fe80::a9fe:a9fe``)
    is added too; the kernel's own link-local addresses are never removed.
    ``current``: the device's addresses as just read, instead of a new read.
    """
    wanted = {str(ipaddress.ip_interface(c)) for c in cidrs}
    addresses = (list(current.addresses) if current is not None
                 else device.addr.list())
    present = {a['cidr'] for a in addresses}
    removable = {a['cidr'] for a in addresses
                 if ip_lib.SCOPES.get(a['scope']) == ip_lib.SCOPES['global']}
    for cidr in sorted(removable - wanted):
        device.addr.delete(cidr)
    for cidr in sorted(wanted - present):
        ip = ipaddress.ip_interface(cidr).ip
        # The kernel gives fe80::/10 addresses link scope, whatever is asked.
        device.addr.add(cidr, scope='link' if ip.version == 6 and ip.is_link_local
                        else 'global')
