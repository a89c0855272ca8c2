"""``agentkit-l2``: the per-host switch agent.

Generic over the switch: everything host-specific is the mechanism driver's
(openvswitch, linuxbridge); segment semantics are the type drivers'. This
module owns the conversation with neutron-server: which ports are plugged,
their details, reporting them up/down/failed, and resyncing.
"""

import ipaddress
import logging
import re
import threading
import time
from collections.abc import Iterable
from typing import Any

import oslo_messaging

from agentkit import exceptions
from agentkit import loader
from agentkit.agent import base
from agentkit.agent import security_groups
from agentkit.agent import work_queue
from agentkit.api import extension as extension_api
from agentkit.api import firewall as firewall_api
from agentkit.api import mechanism as mech_api
from agentkit.api import type_driver as type_api
from agentkit.lib import naming
from agentkit.rpc import consumer
from agentkit.rpc import plugin_api
from agentkit.rpc import topics

LOG = logging.getLogger(__name__)

WIRE = 'wire'
UNWIRE = 'unwire'
REFRESH_FIREWALL = 'refresh'
# The work-queue resource of security-group refreshes: one at a time, and
# a burst of notifications coalesces into one RPC.
FIREWALL_RESOURCE = 'security-groups'

# Versioned objects neutron-server pushes that this agent consumes, with the
# version it reads; reported as ``resource_versions`` so the server keeps
# pushing that version. Only what is really consumed (not Trunk, Port...).
ADDRESS_GROUP_VERSION = topics.ADDRESS_GROUP_PUSH.rsplit('-', 1)[1]  # '1.2'
# Trunks are not implemented; their parents are looked up (bulk_pull) only to
# refuse them, in the version neutron-server 29 has.
TRUNK_RESOURCE = 'Trunk'
TRUNK_VERSION = '1.1'
# Network types that are refused with a specific reason.
UNSUPPORTED_TYPE_REASONS = {
    'geneve': 'geneve is the overlay of OVN, which agentkit does not implement; '
              'use vxlan (or gre) tenant networks with agentkit hosts',
}

# Linux bridge agents name ports by their tap device, as Neutron's did;
# neutron-server resolves that short form to the port.
_TAP_DEVICE_RE = re.compile(r'tap[0-9a-f]{8}-[0-9a-f]{2}')


def validate_device(device: Any) -> str:
    """A port id, or a ``tap<id[:11]>`` device reference."""
    if isinstance(device, str) and _TAP_DEVICE_RE.fullmatch(device):
        return device
    return naming.validate_id(device, 'port')


def server_device(device: str) -> str:
    """The form of a device reference neutron-server resolves in port details.

    ``get_devices_details_list_and_failed_devices`` matches devices as
    port-id *prefixes* (neutron 29 no longer strips ``tap``), so a Linux
    bridge tap is asked for by the 11 characters of the id it carries.
    """
    if _TAP_DEVICE_RE.fullmatch(device):
        return device[len(naming.TAP_PREFIX):]
    return device


def settle_neutron_options(conf: Any) -> None:
    """Apply what Neutron's option values mean before any driver reads them.

    Set as overrides, so every reader sees the effective value: the
    mechanism driver's hybrid-plug choice, for one, must see the firewall
    actually loaded, not Neutron's class path or an unsupported name.

    :raises UnsupportedNeutronDriver: a Neutron firewall agentkit lacks and
        no ``[securitygroup] unsupported_firewall_fallback``.
    :raises InvalidConfiguration: ``[vxlan] enable_vxlan = false`` with vxlan
        in ``[l2] tunnel_types``.
    """
    sg = conf.securitygroup
    if sg.enable_security_group:
        name = loader.resolve(loader.FIREWALL_DRIVERS, sg.firewall_driver,
                              fallback=sg.unsupported_firewall_fallback)
        if name != sg.firewall_driver:
            conf.set_override('firewall_driver', name, group='securitygroup')
    tunnel_types = list(conf.l2.tunnel_types)
    enable_vxlan = conf.vxlan.enable_vxlan
    if enable_vxlan and 'vxlan' not in tunnel_types:
        LOG.info('[vxlan] enable_vxlan = true: vxlan added to [l2] tunnel_types')
        conf.set_override('tunnel_types', tunnel_types + ['vxlan'], group='l2')
    elif enable_vxlan is False and 'vxlan' in tunnel_types:
        raise exceptions.InvalidConfiguration(
            '[vxlan] enable_vxlan = false contradicts [l2] tunnel_types = '
            f'{",".join(tunnel_types)}')
    if conf.l2.l2_population:
        LOG.warning('l2_population = true: Neutron\'s L2 population is not '
                    'implemented by agentkit; tunnels go to every peer '
                    'neutron-server announces and the agent reports '
                    'l2_population false')


class L2RpcCallbacks:
    """Server -> agent notifications (``q-agent-notifier-*`` fanouts).

    Each method only validates and queues; the work happens on the queue.
    """

    # neutron-server sends port_update 1.0, security_groups_*_updated 1.1 and
    # network_update 1.4; Neutron's OVS agent serves up to 1.7.
    target = oslo_messaging.Target(version='1.7')

    def __init__(self, agent: 'L2Agent') -> None:
        self.agent = agent

    def on_error(self, method: str) -> None:
        self.agent.on_error(method)

    @consumer.endpoint_method
    def port_update(self, context: Any, **kwargs: Any) -> None:
        port = consumer.require(kwargs, 'port', dict, 'port_update')
        port_id = naming.validate_id(consumer.require(port, 'id', str, 'port'),
                                     'port')
        for device in self.agent.devices_of_port(port_id):
            self.agent.enqueue(device, WIRE)

    @consumer.endpoint_method
    def port_delete(self, context: Any, **kwargs: Any) -> None:
        port_id = naming.validate_id(
            consumer.require(kwargs, 'port_id', str, 'port_delete'), 'port')
        for device in self.agent.devices_of_port(port_id):
            self.agent.enqueue(device, UNWIRE)

    @consumer.endpoint_method
    def network_update(self, context: Any, **kwargs: Any) -> None:
        network = consumer.require(kwargs, 'network', dict, 'network_update')
        net_id = naming.validate_id(
            consumer.require(network, 'id', str, 'network'), 'network')
        for port_id in self.agent.ports_on_network(net_id):
            self.agent.enqueue(port_id, WIRE)

    @consumer.endpoint_method
    def network_delete(self, context: Any, **kwargs: Any) -> None:
        net_id = naming.validate_id(
            consumer.require(kwargs, 'network_id', str, 'network_delete'),
            'network')
        self.agent.forget_network(net_id)

    @consumer.endpoint_method
    def tunnel_update(self, context: Any, **kwargs: Any) -> None:
        tunnel_ip = consumer.require(kwargs, 'tunnel_ip', str, 'tunnel_update')
        tunnel_type = consumer.require(kwargs, 'tunnel_type', str, 'tunnel_update')
        self.agent.add_tunnel(tunnel_ip, tunnel_type)

    @consumer.endpoint_method
    def tunnel_delete(self, context: Any, **kwargs: Any) -> None:
        tunnel_ip = consumer.require(kwargs, 'tunnel_ip', str, 'tunnel_delete')
        tunnel_type = consumer.require(kwargs, 'tunnel_type', str, 'tunnel_delete')
        self.agent.mech.tunnel_delete(tunnel_ip, tunnel_type)

    @consumer.endpoint_method
    def security_groups_rule_updated(self, context: Any, **kwargs: Any) -> None:
        groups = _group_ids(kwargs, 'security_groups_rule_updated')
        self.agent.refresh_firewall(self.agent.security_groups.ports_in_groups(groups))

    @consumer.endpoint_method
    def security_groups_member_updated(self, context: Any, **kwargs: Any) -> None:
        groups = _group_ids(kwargs, 'security_groups_member_updated')
        self.agent.refresh_firewall(self.agent.security_groups.ports_with_remotes(groups))


class AddressGroupPushCallbacks:
    """``push`` of ``AddressGroup`` objects (``neutron-vo-AddressGroup-1.2`` fanout).

    neutron-server sends no security-group notification when an address
    group's addresses change, only this push; ports whose rules name the
    group as ``remote_address_group_id`` are refreshed from
    ``security_group_info_for_devices`` like for a member change.
    """

    # neutron's ResourcesPushRpcCallback: push 1.1 (resource_list).
    target = oslo_messaging.Target(version='1.1')

    def __init__(self, agent: 'L2Agent') -> None:
        self.agent = agent

    def on_error(self, method: str) -> None:
        self.agent.on_error(method)

    @consumer.endpoint_method
    def push(self, context: Any, **kwargs: Any) -> None:
        resources = consumer.require(kwargs, 'resource_list', list, 'push')
        ids = []
        for resource in resources:
            data = consumer.require(resource, 'versioned_object.data', dict,
                                    'AddressGroup push')
            ids.append(naming.validate_id(data.get('id'), 'address group'))
        self.agent.refresh_firewall(self.agent.security_groups.ports_with_remotes(ids))


def _group_ids(kwargs: dict[str, Any], method: str) -> list[str]:
    groups = consumer.require(kwargs, 'security_groups', list, method)
    return [naming.validate_id(g, 'security group') for g in groups]


class L2Agent(base.Agent):
    """Wires plugged ports into their segments through the mechanism driver."""

    binary = 'agentkit-l2'
    report_topic = topics.NO_TOPIC
    privsep_contexts = ('network',)

    def load_drivers(self) -> None:
        conf = self.conf
        settle_neutron_options(conf)
        self.mech: mech_api.MechanismDriver = loader.load_driver(
            loader.MECHANISM_DRIVERS, conf.l2.mechanism_driver,
            mech_api.MechanismDriver, conf=conf, host=self.host)
        self.agent_type = self.mech.agent_type
        self._ignored_peers: set[str] = set()
        supported = self.mech.supported_network_types
        # Unset: every type the mechanism can realise (and that is installed).
        type_names = conf.l2.type_drivers
        if type_names is None:
            installed = loader.available(loader.TYPE_DRIVERS)
            type_names = sorted(t for t in supported if t in installed)
        unsupported = [t for t in type_names if t not in supported]
        if unsupported:
            raise exceptions.InvalidConfiguration(
                f'mechanism driver {conf.l2.mechanism_driver!r} does not support '
                f'network type(s) {", ".join(unsupported)} enabled in '
                f'[l2] type_drivers (it supports: {", ".join(sorted(supported))})')
        self.type_drivers: dict[str, type_api.TypeDriver] = {}
        for name, drv in loader.load_drivers(
                loader.TYPE_DRIVERS, type_names, type_api.TypeDriver,
                conf=conf, host=self.host).items():
            self.type_drivers[drv.network_type] = drv
        bad_tunnels = [t for t in conf.l2.tunnel_types if t not in self.type_drivers]
        if bad_tunnels:
            raise exceptions.InvalidConfiguration(
                f'[l2] tunnel_types {", ".join(bad_tunnels)} not enabled in '
                f'[l2] type_drivers ({", ".join(type_names)})')
        if conf.l2.tunnel_types and not conf.l2.local_ip:
            raise exceptions.InvalidConfiguration(
                '[l2] tunnel_types is set but [l2] local_ip is not')
        fw_name = (conf.securitygroup.firewall_driver
                   if conf.securitygroup.enable_security_group else 'noop')
        self.firewall: firewall_api.FirewallDriver = loader.load_driver(
            loader.FIREWALL_DRIVERS, fw_name, firewall_api.FirewallDriver,
            conf=conf, host=self.host)
        if not self.firewall.needs_security_group_info:
            LOG.warning('Security groups are not applied on this host (firewall '
                        'driver %r): VMs are unfiltered, including anti-spoofing. '
                        'Set [securitygroup] firewall_driver = iptables_hybrid unless '
                        'something else filters them.', fw_name)
        self.extensions = list(loader.load_drivers(
            loader.AGENT_EXTENSIONS, conf.l2.extensions,
            extension_api.AgentExtension, conf=conf, host=self.host).values())
        for ext in self.extensions:
            ext.consume_api(self)
        self._lock = threading.Lock()
        self.plugged_ports: set[str] = set()
        self.wired: dict[str, str] = {}  # device reference -> network id
        self.port_ids: dict[str, str] = {}  # device reference -> port id
        self._events_at: dict[str, float] = {}  # device reference -> last RPC event
        self.trunk_parents: dict[str, str] = {}  # port id -> its trunk's id
        self._trunk_lookup_warned = False
        self.devices_up = 0

    # -- driver lifecycle -------------------------------------------------
    def initialize_drivers(self) -> None:
        self.mech.initialize()
        self.firewall.initialize()
        for ext in self.extensions:
            ext.initialize()
        self.mech.start_device_monitor(
            self._on_plugged, self._on_unplugged,
            on_resync=lambda reason: self.schedule_resync(f'switch: {reason}'))

    def drivers(self) -> list[Any]:
        return [*self.extensions, self.firewall, self.mech,
                *self.type_drivers.values()]

    def get_configurations(self) -> dict[str, Any]:
        conf = self.conf
        configurations: dict[str, Any] = {
            'mechanism_driver': conf.l2.mechanism_driver,
            'tunnel_types': list(conf.l2.tunnel_types),
            'tunneling_ip': conf.l2.local_ip,
            'network_types': sorted(self.type_drivers),
            'extensions': list(conf.l2.extensions),
            'devices': len(self.wired),
            'log_agent_heartbeats': conf.agent.log_agent_heartbeats,
        }
        configurations.update(self.mech.get_configurations())
        return configurations

    def rpc_topics(self) -> dict[str, list[object]]:
        endpoints: list[object] = [L2RpcCallbacks(self)]
        names = [(topics.PORT, topics.UPDATE), (topics.PORT, topics.DELETE),
                 (topics.NETWORK, topics.UPDATE), (topics.NETWORK, topics.DELETE),
                 (topics.TUNNEL, topics.UPDATE), (topics.TUNNEL, topics.DELETE),
                 (topics.SECURITY_GROUP, topics.UPDATE)]
        consumed: dict[str, list[object]] = {
            topics.agent_notifier_topic(r, op): endpoints for r, op in names}
        if self.firewall.needs_security_group_info:
            consumed[topics.ADDRESS_GROUP_PUSH] = [AddressGroupPushCallbacks(self)]
        return consumed

    def setup_rpc_clients(self) -> None:
        self.plugin = plugin_api.L2PluginApi(
            self.transport, self.host)
        self.security_groups = security_groups.SecurityGroupAgent(
            self.firewall, self.plugin.security_group_info_for_devices,
            self.mech.filter_bridge)

    # -- events -------------------------------------------------------------
    def enqueue(self, port_id: str, action: str,
                priority: int = work_queue.PRIORITY_RPC) -> None:
        if priority == work_queue.PRIORITY_RPC:
            # Details a full sync fetched before this event are stale now.
            with self._lock:
                self._events_at[port_id] = time.monotonic()
        self.queue.put(work_queue.ResourceUpdate(port_id, action, priority))

    def resource_versions(self) -> dict[str, str]:
        """The versioned objects this agent consumes from server pushes.

        neutron-server always pushes its own versions; an agent's report
        only adds the versions it reads. Advertising objects it ignores
        (e.g. Trunk) would tell operators, and the server's version
        tracking, that the agent handles them.
        """
        versions = dict(self.mech.resource_versions or {})
        if self.firewall.needs_security_group_info:
            versions['AddressGroup'] = ADDRESS_GROUP_VERSION
        return versions

    def build_state(self) -> dict[str, Any]:
        state = super().build_state()
        versions = self.resource_versions()
        if versions:
            state['resource_versions'] = versions
        return state

    def devices_of_port(self, port_id: str) -> list[str]:
        """Plugged device references that name ``port_id`` (id or tap form)."""
        tap = naming.tap_device_name(port_id)
        with self._lock:
            return [d for d in self.plugged_ports | set(self.wired)
                    if d in (port_id, tap)]

    def _on_plugged(self, port_id: str) -> None:
        try:
            port_id = validate_device(port_id)
        except exceptions.InvalidIdentifier as exc:
            LOG.warning('Ignoring plugged device: %s', exc)
            return
        with self._lock:
            self.plugged_ports.add(port_id)
        self.enqueue(port_id, WIRE)

    def _on_unplugged(self, port_id: str) -> None:
        with self._lock:
            self.plugged_ports.discard(port_id)
        self.enqueue(port_id, UNWIRE)

    def ports_on_network(self, network_id: str) -> list[str]:
        with self._lock:
            return [p for p, n in self.wired.items() if n == network_id]

    def forget_network(self, network_id: str) -> None:
        for port_id in self.ports_on_network(network_id):
            self.enqueue(port_id, UNWIRE)

    def add_tunnel(self, tunnel_ip: str, tunnel_type: str) -> None:
        if tunnel_type not in self.conf.l2.tunnel_types:
            return
        if tunnel_ip == self.conf.l2.local_ip:
            return
        try:
            peer = ipaddress.ip_address(tunnel_ip)
        except ValueError:
            LOG.warning('Ignoring tunnel endpoint %r: not an IP address', tunnel_ip)
            return
        if peer.is_loopback and not ipaddress.ip_address(self.conf.l2.local_ip).is_loopback:
            # An endpoint a single-node setup registered (the server keeps the
            # endpoints of deleted agentkit agents): tunnelled to it, this
            # host's floods would come back to itself and teach its bridges
            # that its own ports sit behind that "peer".
            if tunnel_ip not in self._ignored_peers:
                self._ignored_peers.add(tunnel_ip)
                LOG.info('Ignoring loopback tunnel endpoint %s (this host is %s)',
                         tunnel_ip, self.conf.l2.local_ip)
            return
        self.mech.tunnel_update(tunnel_ip, tunnel_type)

    def refresh_firewall(self, port_ids: set[str]) -> None:
        """Re-filter these ports (their groups' rules or members changed), nothing else."""
        if port_ids and self.security_groups.request_refresh(port_ids):
            self.enqueue(FIREWALL_RESOURCE, REFRESH_FIREWALL)

    # -- sync ---------------------------------------------------------------
    def sync_state(self) -> None:
        for tunnel_type in self.conf.l2.tunnel_types:
            reply = self.plugin.tunnel_sync(self.conf.l2.local_ip, tunnel_type)
            for tunnel in (reply or {}).get('tunnels', []):
                ip = tunnel.get('ip_address') if isinstance(tunnel, dict) else None
                if isinstance(ip, str):
                    self.add_tunnel(ip, tunnel_type)
        plugged = set()
        for port_id in self.mech.list_plugged_ports():
            try:
                plugged.add(validate_device(port_id))
            except exceptions.InvalidIdentifier as exc:
                LOG.warning('Ignoring plugged device: %s', exc)
        with self._lock:
            gone = set(self.wired) - plugged
            self.plugged_ports = plugged
        # One call for every port's details, and every port's filter in one
        # go before any is (re)wired: after a restart, a port-by-port
        # rewrite of the chains would leave the ports not yet re-wired
        # unfiltered in between.
        fetched_at = time.monotonic()
        found, _failed = self._fetch_details(plugged)
        port_ids = {d.get('port_id') for d in found.values()
                    if naming.is_valid_id(d.get('port_id'))}
        parents = self._find_trunk_parents(port_ids)
        with self._lock:
            self.trunk_parents = parents
        self.security_groups.sync_all([d for d in found.values() if 'network_id' in d],
                                      plugged)
        with self._lock:
            self._events_at = {d: t for d, t in self._events_at.items() if d in plugged}
        for device in plugged:
            # Failed ones fetch their details again on their own.
            self.queue.put(work_queue.ResourceUpdate(
                device, WIRE, work_queue.PRIORITY_SYNC,
                payload=(fetched_at, found[device]) if device in found else None))
        for port_id in gone:
            self.enqueue(port_id, UNWIRE, work_queue.PRIORITY_SYNC)

    def process_update(self, update: work_queue.ResourceUpdate) -> None:
        if update.action == WIRE:
            details = None
            if update.payload is not None:
                fetched_at, details = update.payload
                with self._lock:
                    if self._events_at.get(update.resource_id, 0.0) > fetched_at:
                        details = None  # an event came after the sync's fetch
            self._wire(update.resource_id, details)
        elif update.action == UNWIRE:
            self._unwire(update.resource_id)
        elif update.action == REFRESH_FIREWALL:
            self.security_groups.refresh_pending()

    def _find_trunk_parents(self, port_ids: set[str]) -> dict[str, str]:
        """{port id: trunk id} of the ``port_ids`` that are trunk parents.

        One ``bulk_pull`` of Trunk objects (q-plugin, as Neutron's agents
        pull objects). Without an answer (old server, no trunk tables) no
        port is taken for a parent, so nothing is refused by mistake.
        """
        if not port_ids:
            return {}
        try:
            trunks = self.plugin.bulk_pull(TRUNK_RESOURCE, TRUNK_VERSION,
                                           {'port_id': sorted(port_ids)})
        except oslo_messaging.RemoteError as exc:
            if not self._trunk_lookup_warned:
                self._trunk_lookup_warned = True
                LOG.warning('Cannot look up trunks on neutron-server (%s); trunk parent '
                            'ports are not detected', exc.exc_type)
            return {}
        parents = {}
        for trunk in trunks if isinstance(trunks, list) else []:
            data = trunk.get('versioned_object.data') if isinstance(trunk, dict) else None
            if (isinstance(data, dict) and data.get('port_id') in port_ids
                    and naming.is_valid_id(data.get('id'))):
                parents[data['port_id']] = data['id']
        return parents

    def _refuse_port(self, device: str, port_id: str, reason: str) -> None:
        """Leave a port this agent cannot realise isolated and reported DOWN.

        A WARNING, not an ERROR: the agent works as designed; the port asks
        for something it does not implement. Anything a previous run wired
        for the port is undone, so it is never half-wired.
        """
        LOG.warning('Port %s refused: %s', port_id, reason)
        self.mech.unwire_port(device)
        with self._lock:
            self.wired.pop(device, None)
        self.plugin.update_device_list([], [port_id], self.agent_id)

    def _fail_port(self, device: str, reason: str) -> None:
        LOG.error('Port %s failed: %s', device, reason)
        self.plugin.update_device_list(
            [], [self.port_ids.get(device) or server_device(device)], self.agent_id)

    def _fetch_details(self, devices: Iterable[str]
                       ) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """Port details of ``devices`` in one call: ({device: details}, failed devices)."""
        asked = {server_device(d): d for d in devices}
        if not asked:
            return {}, set()
        reply = self.plugin.get_devices_details_list_and_failed_devices(
            sorted(asked), self.agent_id) or {}
        failed = {asked[d] for d in reply.get('failed_devices') or [] if d in asked}
        found = {}
        for entry in reply.get('devices') or []:
            device = asked.get(entry.get('device')) if isinstance(entry, dict) else None
            if device is not None and device not in failed:
                found[device] = entry
        return found, failed

    def _wire(self, device: str, details: dict[str, Any] | None = None) -> None:
        asked = server_device(device)
        fresh = details is None
        if details is None:
            found, failed = self._fetch_details([device])
            if failed:
                raise RuntimeError(f'server failed to return details of {device}')
            details = found.get(device)
        if not details or 'network_id' not in details:
            LOG.info('Port %s is not bound to this host (yet); skipping', device)
            return
        try:
            port_id = naming.validate_id(details.get('port_id', details.get('device')),
                                         'port')
            if not port_id.startswith(asked):
                raise exceptions.InvalidIdentifier(
                    f'server answered port {port_id} for device {device}')
            network_id = naming.validate_id(details['network_id'], 'network')
            segment = type_api.Segment.from_dict(details)
        except (exceptions.InvalidIdentifier, type_api.InvalidSegment) as exc:
            self._fail_port(device, str(exc))
            return
        with self._lock:
            self.port_ids[device] = port_id
            known = device in self.wired
        if fresh and not known:
            # A port new to this agent (a full sync looked its trunk up already).
            parent = self._find_trunk_parents({port_id})
            with self._lock:
                self.trunk_parents.pop(port_id, None)
                self.trunk_parents.update(parent)
        with self._lock:
            trunk_id = self.trunk_parents.get(port_id)
        if trunk_id is not None:
            self._refuse_port(device, port_id, (
                f'it is the parent port of trunk {trunk_id}, and agentkit does not '
                f'implement trunks (VLAN-aware instances): its subports would get no '
                f'traffic. Use a host with an agent that supports trunks.'))
            return
        tdriver = self.type_drivers.get(segment.network_type)
        if tdriver is None:
            reason = UNSUPPORTED_TYPE_REASONS.get(
                segment.network_type,
                f'network type {segment.network_type!r} is not enabled on this host '
                f'([l2] type_drivers: {", ".join(sorted(self.type_drivers))})')
            self._refuse_port(device, port_id,
                              f'its segment is {segment.network_type}: {reason}')
            return
        try:
            tdriver.validate_segment(segment)
        except type_api.InvalidSegment as exc:
            self._fail_port(device, str(exc))
            return
        binding = mech_api.PortBinding(
            port_id=port_id, network_id=network_id,
            mac_address=str(details.get('mac_address', '')),
            device=device,
            segment=tdriver.realise(segment),
            admin_state_up=bool(details.get('admin_state_up', True)),
            details=details)
        # Filter before wiring, so a new port never passes traffic unfiltered.
        self.security_groups.prepare_port(details)
        try:
            self.mech.wire_port(binding)
        except mech_api.DeviceGone as exc:
            LOG.info('Port %s not wired: %s', device, exc)
            return
        except type_api.InvalidSegment as exc:
            # The host cannot realise this segment (e.g. no 8021q): retrying
            # will not help, so report the port failed instead.
            self._fail_port(device, str(exc))
            return
        for ext in self.extensions:
            ext.handle_port({}, details)
        with self._lock:
            self.wired[device] = network_id
        if binding.admin_state_up:
            self.plugin.update_device_list([port_id], [], self.agent_id)
            self.devices_up += 1
        else:
            self.plugin.update_device_list([], [port_id], self.agent_id)

    def _unwire(self, device: str) -> None:
        self.mech.unwire_port(device)
        with self._lock:
            port_id = self.port_ids.pop(device, None)
            self.trunk_parents.pop(port_id or device, None)
        # Also a port a full sync filtered but that was never wired.
        self.security_groups.remove_devices([device] + ([port_id] if port_id else []))
        for ext in self.extensions:
            ext.delete_port({}, {'port_id': port_id or device})
        with self._lock:
            network_id = self.wired.pop(device, None)
            still_used = network_id in self.wired.values()
        if network_id and not still_used:
            self.mech.cleanup_network(network_id)
        self.plugin.update_device_list([], [port_id or server_device(device)],
                                       self.agent_id)
