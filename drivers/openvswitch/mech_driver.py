"""``openvswitch`` mechanism driver: VM ports on br-int, provider bridges, tunnels.

* br-int (standalone, NORMAL switching): every network gets a host-local
  VLAN, the access tag of its ports, recorded in the ports'
  ``other_config`` so a restarted agent adopts it (:mod:`local_vlans`,
  :mod:`adoption`). A port the agent has not wired yet is put on the dead
  VLAN 4095 as soon as it is plugged: an untagged port would be a trunk
  carrying every network. Dead ports are also ``protected``: NORMAL
  switching forwards VLAN 4095 like any other.
* flat/vlan networks leave through the provider bridge of their physical
  network (``[l2] bridge_mappings``) over a per-network tagged patch pair
  (:mod:`provider`).
* vxlan/gre networks reach the peers neutron-server reports through
  per-(network, peer) tunnel ports on the tunnel bridge (:mod:`tunnels`).

All of it is OVSDB state, no OpenFlow: see :mod:`provider` for why. Every
write is declarative (:mod:`agentkit.lib.ovs.ports`): the network wiring and the VM's
tag are one transaction that only writes what differs, so re-wiring on
resync or after a restart writes nothing and never disturbs traffic.
"""

import logging
import threading
from typing import Any

from oslo_config import cfg

from agentkit import exceptions
from agentkit.api import agent_types
from agentkit.api import mechanism
from agentkit.api import type_driver
from agentkit.lib import naming
from agentkit.lib.ovs import bridge as ovs_bridge
from agentkit.lib.ovs import connection as ovs_connection
from agentkit.lib.ovs import errors as ovs_errors
from agentkit.lib.ovs import events as ovs_events
from agentkit.lib.ovs import ports as ovs_ports
from agentkit.lib.ovs import rows as ovs_rows
from agentkit.lib.ovs import validation as ovs_validation
from agentkit.lib.ovs import vswitchd
from drivers.openvswitch import adoption
from drivers.openvswitch import local_vlans
from drivers.openvswitch import provider
from drivers.openvswitch import tunnels

LOG = logging.getLogger(__name__)

# os-vif plugs a trunk parent into a bridge of its own, tbr-<trunk id>, for
# Neutron's trunk handler to patch into br-int. agentkit has none: the full
# sync lists such ports so the agent reports them refused (no trunks here).
TRUNK_BRIDGE_PREFIX = 'tbr-'
DEFAULT_CAPABILITIES = {'datapath_types': ['netdev', 'system'],
                        'iface_types': ['internal', 'patch', 'vxlan', 'gre', 'geneve']}
VHOSTUSER_SOCKET_DIR = '/var/run/openvswitch'
# Firewall drivers that filter on a Linux bridge between the VM's tap and
# br-int: nova/os-vif must then plug VMs the "hybrid" way (qbr/qvb/qvo).
HYBRID_PLUG_FIREWALL_DRIVERS = frozenset({'iptables_hybrid'})
SEGMENTATION_ID = 'segmentation_id'

# Kept importable from here (it was defined in this module first).
parse_bridge_mappings = provider.parse_bridge_mappings


class OpenvswitchMechanismDriver(mechanism.MechanismDriver):
    agent_type = agent_types.OPEN_VSWITCH
    supported_network_types = frozenset({'flat', 'vlan', 'gre', 'vxlan'})

    def __init__(self, conf: cfg.ConfigOpts, host: str) -> None:
        super().__init__(conf, host)
        self.bridge_mappings = provider.parse_bridge_mappings(conf.l2.bridge_mappings)
        self.tunnel_types = list(conf.l2.tunnel_types)
        bad = [t for t in self.tunnel_types if t not in tunnels.SUPPORTED_TYPES]
        if bad:
            raise exceptions.InvalidConfiguration(
                f'[l2] tunnel_types: {", ".join(bad)} not supported by the '
                f'openvswitch driver (it supports {", ".join(sorted(tunnels.SUPPORTED_TYPES))})')
        self.local_ip = (tunnels.validate_ip(str(conf.l2.local_ip))
                         if conf.l2.local_ip else None)
        self._check_names()
        self.vlans = local_vlans.LocalVlanManager()
        self.peers = tunnels.TunnelPeers()
        # Serialises changes of shared wiring (a network's patches and
        # tunnels, the peer set, cleanups) between the agent's workers.
        self._lock = threading.RLock()
        self._watcher: Any = None
        self.br_tun: ovs_bridge.OVSBridge | None = None
        # port id -> its interface's name on br-int, kept by the device
        # monitor and every listing; checked in O(1) before use (see
        # _port_name).
        self._port_names: dict[str, str] = {}

    def _check_names(self) -> None:
        ovs_conf = self.conf.ovs
        bridges = [('[ovs] integration_bridge', ovs_conf.integration_bridge)]
        if self.tunnel_types:
            bridges.append(('[ovs] tunnel_bridge', ovs_conf.tunnel_bridge))
            # The same rule agentkit.conf.checks applies at load, under the
            # same condition (tunnel_types set).
            try:
                ovs_validation.validate_patch_ports(ovs_conf.int_peer_patch_port,
                                                    ovs_conf.tun_peer_patch_port)
            except exceptions.InvalidIdentifier as exc:
                raise exceptions.InvalidConfiguration(f'[ovs] {exc}') from None
        bridges += [(f'[l2] bridge_mappings {p}', b) for p, b in self.bridge_mappings.items()]
        seen: dict[str, str] = {}
        for what, name in bridges:
            try:
                ovs_validation.validate_name(name, 'bridge')
            except exceptions.InvalidIdentifier as exc:
                raise exceptions.InvalidConfiguration(f'{what}: {exc}') from None
            if name in seen:
                raise exceptions.InvalidConfiguration(
                    f'{what} and {seen[name]} name the same bridge {name!r}')
            seen[name] = what

    # -- lifecycle ----------------------------------------------------------
    def initialize(self) -> None:
        ovs_conf = self.conf.ovs
        self.ovs = ovs_connection.get_connection(ovs_conf.ovsdb_connection,
                                                 timeout=ovs_conf.ovsdb_timeout)
        self.br_int = self.ovs.bridge(ovs_conf.integration_bridge,
                                      ovs_conf.datapath_type)
        self.br_int.create(fail_mode='standalone')
        self._setup_provider_bridges()
        if self.tunnel_types:
            self._setup_tunnel_bridge()
        self._adopt()

    def _setup_provider_bridges(self) -> None:
        """Create missing provider bridges; never reconfigure existing ones
        (they are the operator's, with the physical NIC on them)."""
        datapath = self.conf.ovs.datapath_type
        for physnet, name in self.bridge_mappings.items():
            bridge = self.ovs.bridge(name, datapath)
            if not bridge.exists():
                bridge.create(fail_mode='standalone')
                LOG.info('Created provider bridge %s for %s (datapath %s)',
                         name, physnet, datapath)
                continue
            actual = bridge.get_datapath_type() or 'system'
            if actual != datapath:
                # Patch ports do not join bridges of different datapaths.
                raise exceptions.InvalidConfiguration(
                    f'[l2] bridge_mappings: bridge {name} of {physnet} has '
                    f'datapath_type {actual}, the agent uses {datapath}')
            if bridge.get_fail_mode() == 'secure':
                LOG.warning('Provider bridge %s is in fail_mode secure: traffic '
                            'passes only if its flows switch it (NORMAL)', name)

    def _setup_tunnel_bridge(self) -> None:
        ovs_conf = self.conf.ovs
        self.br_tun = self.ovs.bridge(ovs_conf.tunnel_bridge, ovs_conf.datapath_type)
        self.br_tun.create(fail_mode='standalone')
        ovs_ports.apply(self.ovs, tunnels.int_tun_patch_specs(
            self.br_int.name, self.br_tun.name,
            ovs_conf.int_peer_patch_port, ovs_conf.tun_peer_patch_port))

    def _wiring_bridges(self) -> list[str]:
        names = [self.br_int.name, *self.bridge_mappings.values()]
        if self.br_tun is not None:
            names.append(self.br_tun.name)
        return names

    def _adopt(self) -> None:
        """Take over what the previous run left: local VLANs stay as they
        are; wiring of networks without any port left is removed."""
        int_ports = ovs_ports.read_ports(self.ovs, self.br_int.name)
        in_use = adoption.recorded_vlans(int_ports)
        for net_id, vlan in in_use.items():
            self.vlans.restore(net_id, vlan)
        wiring = [p for br in self._wiring_bridges()
                  for p in ovs_ports.read_ports(self.ovs, br)]
        stale = adoption.stale_wiring(wiring, set(in_use))
        if stale:
            ovs_ports.apply(self.ovs, [], deletions=stale)
        LOG.info('Adopted %d local VLAN(s) from %s; removed %d stale wiring '
                 'port(s)', len(self.vlans), self.br_int.name, len(stale))

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    def get_configurations(self) -> dict[str, Any]:
        return {
            'bridge_mappings': dict(self.bridge_mappings),
            'integration_bridge': self.conf.ovs.integration_bridge,
            'datapath_type': self.conf.ovs.datapath_type,
            'ovs_hybrid_plug': self._ovs_hybrid_plug(),
            'l2_population': False,
            'arp_responder_enabled': False,
            'enable_distributed_routing': False,
            'in_distributed_mode': False,
            'baremetal_smartnic': False,
            'vhostuser_socket_dir': VHOSTUSER_SOCKET_DIR,
            'ovs_capabilities': self._ovs_capabilities(),
            'resource_provider_bandwidths': {},
            'resource_provider_inventory_defaults': {},
            'resource_provider_packet_processing_without_direction': {},
            'resource_provider_packet_processing_with_direction': {},
            'resource_provider_packet_processing_inventory_defaults': {},
            'resource_provider_hypervisors': {},
        }

    def filter_bridge(self, port_id: str, network_id: str | None) -> str | None:
        """os-vif's ``qbr`` of the port when VMs are hybrid-plugged."""
        return naming.hybrid_bridge_name(port_id) if self._ovs_hybrid_plug() else None

    def _ovs_hybrid_plug(self) -> bool:
        """Whether VMs need a qbr bridge for the firewall to see their tap.

        neutron-server's ML2 openvswitch driver reads this key and tells
        nova to hybrid-plug (tap in qbr, qvb/qvo veth to br-int); without
        it the tap lands on br-int and iptables never sees the VM's frames.
        The agent loads the noop firewall when security groups are off.
        """
        sg_conf = self.conf.securitygroup
        return bool(sg_conf.enable_security_group
                    and sg_conf.firewall_driver in HYBRID_PLUG_FIREWALL_DRIVERS)

    def _ovs_capabilities(self) -> dict[str, list[str]]:
        """What this ovs-vswitchd says it supports (Open_vSwitch table), as
        Neutron reports it; the server picks the VIF type from it."""
        ovs = getattr(self, 'ovs', None)
        if ovs is None:
            return {k: list(v) for k, v in DEFAULT_CAPABILITIES.items()}
        with ovs.lock:
            row = next(iter(ovs.api.tables['Open_vSwitch'].rows.values()), None)
            found = {k: sorted(getattr(row, k, None) or []) if row is not None else []
                     for k in DEFAULT_CAPABILITIES}
        return {k: found[k] or list(v) for k, v in DEFAULT_CAPABILITIES.items()}

    # -- devices ------------------------------------------------------------
    def start_device_monitor(self, on_plugged: mechanism.DeviceCallback,
                             on_unplugged: mechanism.DeviceCallback,
                             on_resync: mechanism.DeviceCallback | None = None) -> None:
        # Both events always carry an iface-id (the watcher reports only
        # interfaces that have one); the checks keep the types honest.
        def plugged(ev: ovs_events.InterfaceEvent) -> None:
            port_id = ev.interface.iface_id
            if port_id is None:
                return
            self._port_names[port_id] = ev.interface.name
            self._quarantine(ev.interface.name)
            on_plugged(port_id)

        def unplugged(ev: ovs_events.InterfaceEvent) -> None:
            port_id = ev.interface.iface_id
            if port_id is None:
                return
            if self._port_names.get(port_id) == ev.interface.name:
                self._port_names.pop(port_id, None)
            on_unplugged(port_id)

        self._watcher = self.ovs.watch_interfaces(
            on_iface_id=plugged, on_deleted=unplugged, bridge=self.br_int.name)
        if on_resync is not None:
            self.ovs.add_resync_callback(on_resync)
            if vswitchd.is_local_endpoint(self.conf.ovs.ovsdb_connection):
                # ovs-vswitchd is local: a restart loses its datapath state
                # without any trace in OVSDB, so watch its pidfile.
                self.ovs.start_vswitchd_monitor()

    def _quarantine(self, name: str) -> None:
        """Dead-VLAN a just-plugged untagged port until it is wired.

        On a NORMAL-switching br-int an untagged port is a trunk: it would
        receive every network's floods and could inject frames tagged for
        any of them.
        """
        try:
            with self.ovs.transaction(wait=False) as txn:
                txn.add(ovs_ports.SetTagIfUntagged(self.ovs.api, name,
                                                   local_vlans.DEAD_VLAN, protected=True))
        except ovs_errors.OvsdbError as exc:
            LOG.warning('Could not put new port %s on the dead VLAN: %s', name, exc)

    def list_plugged_ports(self) -> set[str]:
        ports = set(self._index_port_names())
        for bridge in self.ovs.list_bridges():
            if bridge.startswith(TRUNK_BRIDGE_PREFIX):
                ports |= {i.iface_id for i in self.ovs.list_interfaces_with_iface_id(bridge)
                          if i.iface_id}
        return ports

    def _port_name(self, port_id: str) -> str | None:
        """The port's interface on br-int, None if it is not plugged there.

        The name the device monitor (or the last listing) saw is used once
        its row, found by name in O(1), still carries this iface-id. While
        the monitor runs, a port it never saw is not plugged: the agent
        learns of plugs only from it and from listings, both of which record
        the name first. Searching br-int's interfaces for each port made
        wiring 1,000 ports quadratic: 60% of the agent's time, measured.
        """
        name = self._port_names.get(port_id)
        if name is not None:
            try:
                ids = self.br_int.get_interface_external_ids(name)
            except ovs_errors.OvsdbNotFound:
                ids = {}
            if ids.get(ovs_rows.IFACE_ID) == port_id:
                return name
        elif self._watcher is not None:
            return None
        return self._index_port_names().get(port_id)

    def _index_port_names(self) -> dict[str, str]:
        """Re-read {port id: interface name} of br-int's plugged ports."""
        names = {i.iface_id: i.name for i in self.br_int.list_interfaces_with_iface_id()
                 if i.iface_id}
        self._port_names = dict(names)
        return names

    def _network_wiring(self, network_id: str, segment: type_driver.SegmentRealisation,
                        vlan: int, other_config: dict[str, str],
                        segment_changed: bool
                        ) -> tuple[list[ovs_ports.PortSpec], list[ovs_ports.PortState]]:
        """Ports a network needs on this host, and ports of its old segment.

        A segment the host cannot carry beyond itself (tunnel type not
        enabled, physical network not mapped) is wired locally only, with an
        error logged, as Neutron's agent does: the server should not have
        bound the port here, and the local ports still reach each other.
        """
        if segment.is_tunnel:
            key, tunnel_type = segment.tunnel_key, segment.tunnel_type
            if tunnel_type is None or tunnel_type not in self.tunnel_types \
                    or self.br_tun is None or self.local_ip is None or key is None:
                log = LOG.error if segment_changed else LOG.debug
                log('Network %s: tunnel type %s is not in [l2] tunnel_types '
                    '(%s); its ports are wired on this host only', network_id,
                    segment.tunnel_type, ', '.join(self.tunnel_types) or 'empty')
                return [], []
            specs = [tunnels.tunnel_port_spec(
                self.br_tun.name, tunnel_type, key, vlan,
                self.local_ip, peer, self.conf.l2.vxlan_udp_port, other_config)
                for peer in self.peers.get(tunnel_type)]
            old: list[ovs_ports.PortState] = []
            if segment_changed:
                # Ports of another key (the segment was updated). Ports of
                # this key to peers not reported (yet) are kept: no loss.
                current = (segment.tunnel_type, str(key))
                old = [p for p in adoption.network_wiring(
                       ovs_ports.read_ports(self.ovs, self.br_tun.name), network_id)
                       if (p.other_config.get(tunnels.TUNNEL_TYPE_KEY),
                           p.other_config.get(SEGMENTATION_ID)) != current]
            return specs, old
        if segment.physical_network:
            try:
                bridge = provider.bridge_for(segment, self.bridge_mappings)
            except provider.UnmappedPhysicalNetwork as exc:
                log = LOG.error if segment_changed else LOG.debug
                log('Network %s: %s; its ports are wired on this host only',
                    network_id, exc)
                return [], []
            return provider.patch_specs(network_id, segment, vlan, self.br_int.name,
                                        bridge, other_config), []
        return [], []

    def wire_port(self, binding: mechanism.PortBinding) -> None:
        name = self._port_name(binding.port_id)
        if name is None:
            raise mechanism.DeviceGone(f'port {binding.port_id} is not plugged on '
                                       f'{self.br_int.name}')
        segment = binding.segment
        with self._lock:
            changed = self.vlans.segment(binding.network_id) != segment
            vlan = self.vlans.get_or_allocate(binding.network_id, segment)
            other_config = local_vlans.port_other_config(binding.network_id, vlan, segment)
            specs, old = self._network_wiring(binding.network_id, segment, vlan,
                                              other_config, changed)
            # The VM's port is nova's: adjusted, never created.
            vm_port = ovs_ports.PortSpec(
                self.br_int.name, name, other_config=other_config,
                tag=vlan if binding.admin_state_up else local_vlans.DEAD_VLAN,
                protected=not binding.admin_state_up, create=False)
            command = ovs_ports.ApplyPortSpecs(self.ovs.api, [*specs, vm_port])
            # One transaction: the network's wiring and the VM's tag. No
            # need to wait for ovs-vswitchd: nothing here needs an ofport.
            with self.ovs.transaction(wait=False) as txn:
                if old:
                    txn.add(ovs_ports.DeletePorts(self.ovs.api, ovs_ports.port_refs(old)))
                txn.add(command)
        wired = [n for n in command.result if n != name]
        if wired:
            LOG.info('Wired network %s (local VLAN %d): %s', binding.network_id,
                     vlan, ', '.join(wired))

    def unwire_port(self, port_id: str) -> None:
        """Dead VLAN and ``protected``: dead ports must not reach each other."""
        name = self._port_name(port_id)
        if name is not None:
            ovs_ports.apply(self.ovs, [ovs_ports.PortSpec(
                self.br_int.name, name, tag=local_vlans.DEAD_VLAN, protected=True,
                create=False)])

    def cleanup_network(self, network_id: str) -> None:
        """Remove the network's patch/tunnel ports once no port is wired in it."""
        with self._lock:
            vlan = self.vlans.get(network_id)
            int_ports = ovs_ports.read_ports(self.ovs, self.br_int.name)
            if adoption.network_has_live_port(int_ports, network_id, vlan):
                LOG.info('Network %s still has a wired port; keeping its wiring',
                         network_id)
                return
            wiring = adoption.network_wiring(
                [p for br in self._wiring_bridges()
                 for p in (int_ports if br == self.br_int.name
                           else ovs_ports.read_ports(self.ovs, br))], network_id)
            ovs_ports.apply(self.ovs, [], deletions=wiring)
            self.vlans.release(network_id)
        if vlan is not None or wiring:
            LOG.info('Released network %s (local VLAN %s, %d wiring port(s))',
                     network_id, vlan, len(wiring))

    # -- tunnels --------------------------------------------------------------
    def tunnel_update(self, tunnel_ip: str, tunnel_type: str) -> None:
        """A peer appeared: a tunnel port to it for every local network of its type."""
        if tunnel_type not in self.tunnel_types or self.br_tun is None:
            LOG.debug('Ignoring %s peer %s: type not enabled', tunnel_type, tunnel_ip)
            return
        try:
            ip = tunnels.validate_ip(tunnel_ip)
        except ValueError as exc:
            LOG.warning('Ignoring tunnel peer %r: %s', tunnel_ip, exc)
            return
        if ip == self.local_ip:
            return
        with self._lock:
            new = self.peers.add(tunnel_type, ip)
            specs = [tunnels.tunnel_port_spec(
                self.br_tun.name, tunnel_type, seg.tunnel_key, vlan,
                self.local_ip, ip, self.conf.l2.vxlan_udp_port,  # type: ignore[arg-type]
                local_vlans.port_other_config(net, vlan, seg))
                for net, vlan, seg in self.vlans.wired_networks()
                if seg.tunnel_type == tunnel_type and seg.tunnel_key is not None]
            changed = ovs_ports.apply(self.ovs, specs)
        if new or changed:
            LOG.info('Tunnel peer %s (%s): %d port(s) written', ip, tunnel_type,
                     len(changed))

    def tunnel_delete(self, tunnel_ip: str, tunnel_type: str) -> None:
        """A peer went away: remove every tunnel port to it (found in OVSDB)."""
        if self.br_tun is None:
            return
        try:
            ip = tunnels.validate_ip(tunnel_ip)
        except ValueError as exc:
            LOG.warning('Ignoring tunnel peer %r: %s', tunnel_ip, exc)
            return
        with self._lock:
            self.peers.remove(tunnel_type, ip)
            gone = [p for p in ovs_ports.read_ports(self.ovs, self.br_tun.name)
                    if p.role == tunnels.ROLE_TUNNEL
                    and p.other_config.get(tunnels.REMOTE_IP_KEY) == ip
                    and p.other_config.get(tunnels.TUNNEL_TYPE_KEY) == tunnel_type]
            ovs_ports.apply(self.ovs, [], deletions=gone)
        LOG.info('Tunnel peer %s (%s) removed with %d port(s)', ip, tunnel_type, len(gone))
