"""``linuxbridge`` mechanism driver: one Linux bridge per network.

``brq<net-id[:11]>`` holds the network's uplink - the physical interface of
``physical_interface_mappings`` for flat networks, ``<nic>.<vid>`` for vlan,
``vxlan-<vni>`` for vxlan - and the VMs' ``tap<port-id[:11]>`` devices, which
are enslaved as netlink announces them. GRE is not something a Linux bridge
can carry, so the agent refuses it at start.

VXLAN is unicast by default, as Neutron's linuxbridge agent did it without
multicast: every ``vxlan-<vni>`` device gets one all-zeros FDB entry per
tunnel peer (``bridge fdb append 00:00:00:00:00:00 dev vxlan-N dst <peer>``),
so broadcast and unknown unicast frames are replicated to every peer, and the
device learns remote MACs from what it receives. Peers come from
``tunnel_sync``/``tunnel_update`` and go with ``tunnel_delete``; devices
created later get the peers known by then. The driver owns the VXLAN devices
whose local address is ``[l2] local_ip`` and that have no multicast group.

With ``[vxlan] vxlan_group`` (Neutron's linuxbridge option: one group, or a
CIDR from which each VNI gets its own group) flooding goes to the multicast
group instead: ``vxlan-<vni>`` is created with ``group`` and ``dev``, the
interface holding ``[l2] local_ip`` (the kernel joins the group there), and
the unicast peer list is not used, so no frame is flooded twice to a peer
that is also a group member. The underlay must then carry multicast (IGMP
snooping, or PIM across routers; the kernel's default multicast TTL is 1).
A device left with other settings (unicast, another group or interface,
e.g. after a configuration change) is re-created when a port is wired.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import re
import threading
from typing import Any

from oslo_config import cfg

from agentkit import exceptions
from agentkit.api import agent_types
from agentkit.api import driver as driver_api
from agentkit.api import mechanism
from agentkit.api import type_driver
from agentkit.lib import ip_lib
from agentkit.lib import link_monitor
from agentkit.lib import naming
from agentkit.lib import option_values

LOG = logging.getLogger(__name__)

_TAP_RE = re.compile(r'tap[0-9a-f]{8}-[0-9a-f]{2}')
_VLAN_NAME_RE = re.compile(r'.+\.[0-9]{1,4}')
# Characters of a hash that keep a shortened sub-interface name unique.
_HASH_LEN = 6

# Neutron's linuxbridge_agent.ini groups, so operators' files keep working.
LINUX_BRIDGE_GROUP = 'linux_bridge'
VXLAN_GROUP = 'vxlan'

# Options only this driver reads (the agent's [l2] ones it reads by name).
linux_bridge_opts = [
    cfg.ListOpt(
        'physical_interface_mappings', default=[],
        help='linuxbridge: <physical_network>:<interface> pairs for flat and '
             'vlan provider networks.'),
]
vxlan_opts = [
    cfg.StrOpt(
        'vxlan_group',
        help='linuxbridge: multicast group for VXLAN flooding (broadcast, '
             'unknown unicast), e.g. 239.1.1.1, instead of unicast copies '
             'to every tunnel peer. A CIDR (e.g. 239.0.0.0/8) gives each VNI '
             'its own group: the network address plus the VNI masked by the '
             'host bits. Must be the same on all hosts; the underlay must '
             'route multicast. Unset: unicast to the peers neutron-server '
             'reports.'),
]
#: Registered by the driver (:attr:`agentkit.api.driver.Driver.options`).
OPTIONS: driver_api.OptionGroups = ((LINUX_BRIDGE_GROUP, linux_bridge_opts),
                                    (VXLAN_GROUP, vxlan_opts))


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """For oslo-config-generator (``oslo.config.opts`` entry point)."""
    return driver_api.list_options(OPTIONS)


class SegmentNotRealisable(type_driver.InvalidSegment):
    """This host cannot build a segment it was asked for (e.g. no 8021q).

    An :class:`~agentkit.api.type_driver.InvalidSegment`, because retrying
    will not help: the port should be reported failed, not retried.
    """


def parse_interface_mappings(entries: list[str]) -> dict[str, str]:
    """``physnet:iface`` entries -> {physnet: iface}.

    The same rule as the agents' ``bridge_mappings`` (one physnet per
    interface and the reverse); a bad entry is a bad option value, so the
    agent stops with exit code 2 naming it.
    """
    option = '[linux_bridge] physical_interface_mappings'
    try:
        mappings = option_values.parse_mappings(entries, option, 'interface')
        for iface in mappings.values():
            ip_lib.validate_device_name(iface)
    except (exceptions.InvalidConfiguration, exceptions.InvalidIdentifier, ValueError) as exc:
        raise exceptions.InvalidOptionValue(
            exc if option in str(exc) else f'{option}: {exc}') from exc
    return mappings


def vlan_subinterface_name(interface: str, vlan_id: int) -> str:
    """``<nic>.<vid>``, shortened with a hash of ``nic`` if over 15 characters.

    The hash keeps two long NIC names with a common prefix from mapping to
    the same sub-interface.
    """
    suffix = f'.{naming.validate_vlan_tag(vlan_id)}'
    name = interface + suffix
    if len(name) <= naming.MAX_DEVICE_NAME_LEN:
        return name
    digest = hashlib.sha256(interface.encode()).hexdigest()[:_HASH_LEN]
    keep = naming.MAX_DEVICE_NAME_LEN - len(suffix) - _HASH_LEN
    return interface[:keep] + digest + suffix


def parse_vxlan_group(value: str, local_ip: str | None) -> ip_lib.IPNetwork:
    """``[vxlan] vxlan_group`` as a network of multicast groups.

    Refused at start rather than at the first port: a bad group would
    otherwise leave every vxlan network of the host without flooding.
    """
    what = f'[{VXLAN_GROUP}] vxlan_group {value!r}'
    try:
        # Host bits are ignored, as Neutron did with the same option.
        groups = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise exceptions.InvalidConfiguration(f'{what}: {exc}') from None
    if not groups.is_multicast:
        raise exceptions.InvalidConfiguration(
            f'{what} is not a multicast address or range')
    if local_ip is None:
        raise exceptions.InvalidConfiguration(
            f'{what} needs [l2] local_ip: its interface joins the group')
    if ipaddress.ip_address(local_ip).version != groups.version:
        raise exceptions.InvalidConfiguration(
            f'{what} and [l2] local_ip {local_ip} are not of the same IP version')
    return groups


def vxlan_group_for(groups: ip_lib.IPNetwork, vni: int) -> str:
    """The group of one VNI: the network address plus the VNI's host bits.

    One address (a /32 or /128) is every VNI's group; a /8 gives each of
    the 2**24 VNIs a group of its own, so hosts only receive the floods of
    the networks they joined.
    """
    offset = naming.validate_vni(vni) & int(groups.hostmask)
    return str(groups.network_address + offset)


class LocalInterfaceNotFound(exceptions.AgentkitError):
    """No interface holds ``[l2] local_ip`` (yet): retried, not a port failure."""


def _network_mtu(details: dict[str, Any]) -> int | None:
    """The network MTU neutron-server sent with the port details, if usable."""
    mtu = details.get('mtu')
    if isinstance(mtu, int) and not isinstance(mtu, bool) \
            and ip_lib.MIN_MTU <= mtu <= ip_lib.MAX_MTU:
        return mtu
    return None


class LinuxbridgeMechanismDriver(mechanism.MechanismDriver):
    """Linux bridges per network; flat, vlan and (unicast or multicast) vxlan uplinks."""

    agent_type = agent_types.LINUX_BRIDGE
    supported_network_types = frozenset({'flat', 'vlan', 'vxlan'})
    options = OPTIONS

    def __init__(self, conf: cfg.ConfigOpts, host: str) -> None:
        super().__init__(conf, host)
        if conf.l2.bridge_mappings:
            # Neutron's [linux_bridge] bridge_mappings (an alias of it)
            # named existing bridges to adopt; ignoring it would leave those
            # physical networks unwired.
            raise exceptions.InvalidConfiguration(
                'linuxbridge does not use existing Linux bridges: '
                '[l2] bridge_mappings (Neutron\'s [linux_bridge] bridge_mappings) '
                f'= {",".join(conf.l2.bridge_mappings)} is not supported; map the '
                'physical networks to interfaces with [linux_bridge] '
                'physical_interface_mappings')
        self.mappings = parse_interface_mappings(
            conf.linux_bridge.physical_interface_mappings)
        self._monitor: link_monitor.LinkMonitor | None = None
        self.root = ip_lib.IPWrapper()
        # Normalised: compared with the address the kernel reports.
        self.local_ip: str | None = (str(ip_lib.parse_ip(conf.l2.local_ip))
                                     if conf.l2.local_ip else None)
        # VXLAN tunnel peers. One lock orders peer changes with VXLAN device
        # creation, so a device never misses a peer nor keeps a deleted one.
        self.vxlan_peers: set[str] = set()
        self._vxlan_lock = threading.Lock()
        group = conf[VXLAN_GROUP].vxlan_group
        # None: unicast flooding to the peers (the default).
        self.vxlan_groups: ip_lib.IPNetwork | None = (
            parse_vxlan_group(group, self.local_ip) if group else None)

    def initialize(self) -> None:
        for physnet, iface in self.mappings.items():
            if not ip_lib.device_exists(iface):
                LOG.warning('Interface %s of physical network %s does not exist',
                            iface, physnet)
        if self.vxlan_groups is not None:
            try:
                where = self._local_interface()
            except LocalInterfaceNotFound as exc:
                where = 'the interface of [l2] local_ip, once it exists'
                LOG.warning('%s', exc)
            LOG.info('VXLAN flooding through multicast group(s) %s on %s',
                     self.vxlan_groups, where)

    def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None

    def get_configurations(self) -> dict[str, Any]:
        return {'interface_mappings': dict(self.mappings),
                'bridge_mappings': {},
                'l2_population': False}

    # -- devices ------------------------------------------------------------
    def start_device_monitor(self, on_plugged: mechanism.DeviceCallback,
                             on_unplugged: mechanism.DeviceCallback,
                             on_resync: mechanism.DeviceCallback | None = None) -> None:
        def on_event(kind: str, name: str) -> None:
            if kind == link_monitor.ADDED:
                on_plugged(name)
            elif kind == link_monitor.REMOVED:
                on_unplugged(name)
            elif on_resync is not None:
                on_resync('netlink events were lost')

        self._monitor = link_monitor.LinkMonitor(
            on_event, name_filter=lambda n: not n or bool(_TAP_RE.fullmatch(n)))
        self._monitor.start()

    def list_plugged_ports(self) -> set[str]:
        return {link['name'] for link in ip_lib.list_links()
                if _TAP_RE.fullmatch(link['name'])}

    def _physical_interface(self, segment: type_driver.SegmentRealisation) -> str:
        iface = self.mappings.get(segment.physical_network or '')
        if iface is None:
            raise SegmentNotRealisable(
                f'physical network {segment.physical_network!r} is not in '
                f'[linux_bridge] physical_interface_mappings '
                f'({", ".join(sorted(self.mappings)) or "empty"})')
        return iface

    def _vlan_uplink(self, segment: type_driver.SegmentRealisation) -> str:
        iface = self._physical_interface(segment)
        if segment.vlan_id is None:
            raise SegmentNotRealisable('vlan segment without a VLAN id')
        name = vlan_subinterface_name(iface, segment.vlan_id)
        try:
            self.root.add_vlan(name, iface, segment.vlan_id, exist_ok=True)
        except ip_lib.VlanNotSupported as exc:
            raise SegmentNotRealisable(
                f'vlan {segment.vlan_id} on physical network '
                f'{segment.physical_network!r}: {exc}') from None
        return name

    def _local_interface(self) -> str:
        """The interface holding ``[l2] local_ip``, from the local routing table.

        A multicast VXLAN device must name it: that is where the kernel
        joins the group and sends the floods. One netlink dump, and it
        follows the address if the operator moves it.
        """
        local = ipaddress.ip_address(self.local_ip or '')
        wanted = f'{local}/{local.max_prefixlen}'
        for route in ip_lib.list_routes(ip_version=local.version, table='local'):
            if route['type'] == 'local' and route['dst'] == wanted and route['device']:
                return route['device']
        raise LocalInterfaceNotFound(
            f'no interface holds [l2] local_ip {local}, needed for VXLAN '
            f'multicast group {self.vxlan_groups}')

    def _multicast_vxlan(self, name: str, vni: int, mtu: int | None) -> None:
        """``vxlan-<vni>`` flooding to its group; re-created if set up otherwise.

        Caller holds ``_vxlan_lock``.
        """
        assert self.vxlan_groups is not None
        group = vxlan_group_for(self.vxlan_groups, vni)
        dev = self._local_interface()
        device = ip_lib.IPDevice(name)
        attributes = device.link.attributes if device.exists() else None
        # Only a VXLAN device is replaced: add_vxlan refuses any other kind.
        if attributes is not None and attributes.get('kind') == 'vxlan':
            info = attributes.get('vxlan') or {}
            actual = (info.get('group'), info.get('dev'), info.get('local'))
            if actual == (group, dev, self.local_ip):
                if mtu is not None and attributes.get('mtu') != mtu:
                    device.link.set_mtu(mtu)
                return
            # wire_port enslaves the new device to the network's bridge.
            LOG.info('Re-creating %s for group %s on %s (group %s, dev %s, '
                     'local %s before)', name, group, dev, *actual)
            device.delete()
        self.root.add_vxlan(name, vni, local_ip=self.local_ip, group=group,
                            dev=dev, dstport=self.conf.l2.vxlan_udp_port,
                            mtu=mtu, exist_ok=True)

    def _vxlan_uplink(self, vni: int, mtu: int | None) -> str:
        name = naming.vxlan_device_name(vni)
        with self._vxlan_lock:
            if self.vxlan_groups is not None:
                self._multicast_vxlan(name, vni, mtu)
                return name
            if not ip_lib.device_exists(name):
                self.root.add_vxlan(name, vni, local_ip=self.local_ip,
                                    dstport=self.conf.l2.vxlan_udp_port,
                                    mtu=mtu, exist_ok=True)
            elif mtu is not None and ip_lib.IPDevice(name).link.mtu != mtu:
                ip_lib.IPDevice(name).link.set_mtu(mtu)
            present = {e['dst'] for e in ip_lib.list_fdb_entries(name)
                       if e['self'] and e['mac'] == ip_lib.ZERO_MAC}
            for peer in sorted(self.vxlan_peers - present):
                ip_lib.add_fdb_entry(name, ip_lib.ZERO_MAC, peer)
        return name

    def _uplink(self, segment: type_driver.SegmentRealisation, mtu: int | None) -> str:
        """Create the segment's uplink device; returns its name."""
        if segment.network_type == 'flat':
            return self._physical_interface(segment)
        if segment.network_type == 'vlan':
            return self._vlan_uplink(segment)
        if segment.network_type == 'vxlan' and segment.tunnel_key is not None:
            return self._vxlan_uplink(segment.tunnel_key, mtu)
        raise SegmentNotRealisable(
            f'linuxbridge cannot realise a {segment.network_type} segment')

    @staticmethod
    def _keep_host_off_the_network(device: ip_lib.IPDevice) -> None:
        """No IPv6 on a bridge or uplink the driver made, as Neutron did.

        Otherwise the host takes part in the tenant network: it would
        autoconfigure from tenants' router advertisements and its own
        DAD/RS/MLD frames would cross the tunnels to every peer.
        """
        with contextlib.suppress(FileNotFoundError):  # IPv6 off at boot
            device.disable_ipv6()

    def wire_port(self, binding: mechanism.PortBinding) -> None:
        try:
            self._wire(binding)
        except ip_lib.NetworkInterfaceNotFound:
            if ip_lib.device_exists(binding.device):
                raise  # something else is missing
            raise mechanism.DeviceGone(f'{binding.device} was unplugged') from None

    def _wire(self, binding: mechanism.PortBinding) -> None:
        mtu = _network_mtu(binding.details)
        # The uplink first: a segment this host cannot build leaves no bridge.
        uplink = self._uplink(binding.segment, mtu)
        bridge_name = naming.bridge_name(binding.network_id)
        bridge = self.root.add_bridge(bridge_name, exist_ok=True)
        self._keep_host_off_the_network(bridge)
        if binding.segment.network_type != 'flat':  # not the operator's NIC
            self._keep_host_off_the_network(ip_lib.IPDevice(uplink))
        tap = ip_lib.IPDevice(binding.device)
        for dev in (ip_lib.IPDevice(uplink), tap):
            attributes = dev.link.attributes
            if dev is tap and mtu is not None and attributes.get('mtu') != mtu:
                dev.link.set_mtu(mtu)  # as Neutron's agent: taps follow the network
            if attributes.get('master') != bridge_name:
                dev.link.set_master(bridge_name)
            dev.link.set_up()
        bridge.link.set_up()

    def filter_bridge(self, port_id: str, network_id: str | None) -> str | None:
        """The network's ``brq``, which the port's tap joins."""
        return naming.bridge_name(network_id) if network_id else None

    def unwire_port(self, port_id: str) -> None:
        dev = ip_lib.IPDevice(port_id)
        # A tap can vanish between the checks (its namespace or VM went):
        # gone is unplugged, not a failure to retry.
        with contextlib.suppress(ip_lib.NetworkInterfaceNotFound):
            if dev.exists() and dev.link.attributes.get('master'):
                dev.link.set_nomaster()

    def cleanup_network(self, network_id: str) -> None:
        bridge_name = naming.bridge_name(network_id)
        members = [link for link in ip_lib.list_links()
                   if link.get('master') == bridge_name]
        if any(_TAP_RE.fullmatch(m['name']) for m in members):
            return
        for member in members:
            name = member['name']
            if name.startswith(naming.VXLAN_PREFIX) or (
                    member.get('kind') == 'vlan' and _VLAN_NAME_RE.fullmatch(name)):
                ip_lib.IPDevice(name).delete()  # ours: made for this network
            else:
                ip_lib.IPDevice(name).link.set_nomaster()
        bridge = ip_lib.IPDevice(bridge_name)
        if bridge.exists():
            bridge.delete()

    # -- tunnels ------------------------------------------------------------
    def _own_vxlan_devices(self) -> list[str]:
        """The ``vxlan-<vni>`` devices this driver manages on the host."""
        devices = []
        for link in ip_lib.list_links(kind='vxlan'):
            info = link.get('vxlan') or {}
            if (link['name'].startswith(naming.VXLAN_PREFIX)
                    and not info.get('group')
                    and (self.local_ip is None or info.get('local') == self.local_ip)):
                devices.append(link['name'])
        return devices

    def _peer(self, tunnel_ip: str, tunnel_type: str) -> str | None:
        """The peer address to act on, or None for what this driver ignores."""
        if tunnel_type != 'vxlan':
            # Other agents' endpoints (e.g. OVS with gre) are fanned out to
            # every agent: normal in a mixed deployment, so not a warning.
            LOG.debug('Ignoring %s tunnel endpoint %s: linuxbridge only '
                      'carries vxlan tunnels', tunnel_type, tunnel_ip)
            return None
        try:
            peer = str(ip_lib.parse_ip(tunnel_ip))
        except ip_lib.InvalidNetworkValue as exc:
            LOG.warning('Ignoring tunnel endpoint: %s', exc)
            return None
        if peer == self.local_ip:
            return None
        return peer

    def tunnel_update(self, tunnel_ip: str, tunnel_type: str) -> None:
        peer = self._peer(tunnel_ip, tunnel_type)
        if peer is None:
            return
        with self._vxlan_lock:
            if peer in self.vxlan_peers:
                # Every resync repeats tunnel_sync: devices already have this
                # peer (an entry removed behind our back is restored when
                # the resync rewires the ports, see _vxlan_uplink).
                return
            self.vxlan_peers.add(peer)
            for device in self._own_vxlan_devices():
                with contextlib.suppress(ip_lib.NetworkInterfaceNotFound):
                    ip_lib.add_fdb_entry(device, ip_lib.ZERO_MAC, peer)
        LOG.info('VXLAN peer %s added', peer)

    def tunnel_delete(self, tunnel_ip: str, tunnel_type: str) -> None:
        peer = self._peer(tunnel_ip, tunnel_type)
        if peer is None:
            return
        with self._vxlan_lock:
            self.vxlan_peers.discard(peer)
            for device in self._own_vxlan_devices():
                # The flood entry and any MAC learnt behind the gone peer;
                # a device deleted meanwhile took its entries along.
                with contextlib.suppress(ip_lib.NetworkInterfaceNotFound):
                    for entry in ip_lib.list_fdb_entries(device):
                        if entry['self'] and entry['dst'] == peer:
                            ip_lib.delete_fdb_entry(device, entry['mac'], peer)
        LOG.info('VXLAN peer %s removed', peer)
