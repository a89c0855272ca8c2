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
from agentkit.agent import port_cache
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
# pushing that version. Only what is really consumed (not Trunk...).
ADDRESS_GROUP_VERSION = topics.ADDRESS_GROUP_PUSH.rsplit('-', 1)[1]  # '1.2'
# Trunks are not implemented; their parents are looked up (bulk_pull) only to
# refuse them, in the version neutron-server 29 has.
TRUNK_RESOURCE = 'Trunk'
TRUNK_VERSION = '1.1'
# The audit compares the wired ports with the server's Port objects: a
# bulk_pull changes nothing on the server, whereas asking for port details
# moves every ACTIVE port back to BUILD (each would need a new report).
PORT_RESOURCE = port_cache.PORT_RESOURCE
PORT_VERSION = port_cache.PORT_VERSION
# Ports that arrive together are handled as one batch: one details call, one
# security-group call, one status report. A first event waits this long for
# the rest of its burst (the switch reports plugs one by one).
WIRE_BATCH_WINDOW = 0.05
WIRE_BATCH_MAX = 256
UP = 'up'
DOWN = 'down'
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


def _ovo_data(obj: Any) -> dict[str, Any]:
    data = obj.get('versioned_object.data') if isinstance(obj, dict) else None
    return data if isinstance(data, dict) else {}


#: How long after its report an audit leaves a port's status alone (see audit_state).
REPORT_SETTLE_SECONDS = 30.0


def port_differs(obj: dict[str, Any] | None, details: dict[str, Any] | None,
                 reported: str | None, host: str, check_status: bool = True) -> bool:
    """Whether the server's Port object ``obj`` disagrees with the details
    the port was wired from, or with the state it was ``reported`` in.

    What is compared is what the wiring or the report depends on; a field
    the object does not carry is not taken for a difference.
    """
    if obj is None or details is None or reported is None:
        return True
    expected = 'ACTIVE' if reported == 'up' else 'DOWN'
    if check_status and obj.get('status') != expected:
        return True
    for key in ('network_id', 'admin_state_up', 'device_owner'):
        if key in obj and obj[key] != details.get(key):
            return True
    if 'mac_address' in obj and \
            str(obj['mac_address']).lower() != str(details.get('mac_address', '')).lower():
        return True
    if 'fixed_ips' in obj:
        have = {_ovo_data(ip).get('ip_address') for ip in obj['fixed_ips'] or []}
        wired = {ip.get('ip_address') for ip in details.get('fixed_ips') or []
                 if isinstance(ip, dict)}
        if have != wired:
            return True
    security = _ovo_data(obj.get('security'))
    if 'port_security_enabled' in security and \
            security['port_security_enabled'] != details.get('port_security_enabled', True):
        return True
    bindings = [_ovo_data(b) for b in obj.get('bindings') or []]
    active = [b for b in bindings if b.get('status', 'ACTIVE') == 'ACTIVE']
    if active and all(b.get('host') != host for b in active):
        return True
    levels = [_ovo_data(level) for level in obj.get('binding_levels') or []]
    levels = [level for level in levels if level.get('host', host) == host]
    if levels:
        # The bottom level's segment is the one the port is wired into.
        bottom = max(levels, key=lambda level: level.get('level') or 0)
        segment = _ovo_data(bottom.get('segment'))
        if segment and (segment.get('network_type'), segment.get('segmentation_id'),
                        segment.get('physical_network')) != (
                details.get('network_type'), details.get('segmentation_id'),
                details.get('physical_network')):
            return True
    return False


class _Endpoint:
    """An RPC endpoint of the L2 agent: a failing handler schedules its resync."""

    def __init__(self, agent: 'L2Agent') -> None:
        self.agent = agent

    def on_error(self, method: str) -> None:
        self.agent.on_error(method)


class L2RpcCallbacks(_Endpoint):
    """Server -> agent notifications (``q-agent-notifier-*`` fanouts).

    Each method only validates and queues; the work happens on the queue.
    """

    # neutron-server sends port_update 1.0, security_groups_*_updated 1.1 and
    # network_update 1.4; Neutron's OVS agent serves up to 1.7.
    target = oslo_messaging.Target(version='1.7')

    @consumer.endpoint_method
    def port_update(self, context: Any, **kwargs: Any) -> None:
        port = consumer.require(kwargs, 'port', dict, 'port_update')
        port_id = naming.validate_id(consumer.require(port, 'id', str, 'port'),
                                     'port')
        self.agent.port_cache.want_revision(port_id, port.get('revision_number'))
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
        self.agent.port_cache.want_revision(net_id, network.get('revision_number'))
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
        peer = _tunnel_peer(kwargs, 'tunnel_update')
        if peer[1] in self.agent.conf.l2.tunnel_types:
            self.agent.add_tunnel(*peer)

    @consumer.endpoint_method
    def tunnel_delete(self, context: Any, **kwargs: Any) -> None:
        tunnel_ip, tunnel_type = _tunnel_peer(kwargs, 'tunnel_delete')
        if tunnel_type in self.agent.conf.l2.tunnel_types:
            self.agent.mech.tunnel_delete(tunnel_ip, tunnel_type)

    @consumer.endpoint_method
    def security_groups_rule_updated(self, context: Any, **kwargs: Any) -> None:
        groups = _group_ids(kwargs, 'security_groups_rule_updated')
        self.agent.refresh_firewall(self.agent.security_groups.ports_in_groups(groups))

    @consumer.endpoint_method
    def security_groups_member_updated(self, context: Any, **kwargs: Any) -> None:
        groups = _group_ids(kwargs, 'security_groups_member_updated')
        self.agent.refresh_firewall(self.agent.security_groups.ports_with_remotes(groups))


class AddressGroupPushCallbacks(_Endpoint):
    """``push`` of ``AddressGroup`` objects (``neutron-vo-AddressGroup-1.2`` fanout).

    neutron-server sends no security-group notification when an address
    group's addresses change, only this push; ports whose rules name the
    group as ``remote_address_group_id`` are refreshed from
    ``security_group_info_for_devices`` like for a member change.
    """

    # neutron's ResourcesPushRpcCallback: push 1.1 (resource_list).
    target = oslo_messaging.Target(version='1.1')

    @consumer.endpoint_method
    def push(self, context: Any, **kwargs: Any) -> None:
        resources = consumer.require(kwargs, 'resource_list', list, 'push')
        ids = []
        for resource in resources:
            data = consumer.require(resource, 'versioned_object.data', dict,
                                    'AddressGroup push')
            ids.append(naming.validate_id(data.get('id'), 'address group'))
        self.agent.refresh_firewall(self.agent.security_groups.ports_with_remotes(ids))


class PortPushCallbacks(_Endpoint):
    """``push`` of ``Port`` and ``Network`` objects (``neutron-vo-Port-1.11``,
    ``neutron-vo-Network-1.3`` fanouts) into the agent's port cache, from
    which ports are wired without asking the server for their details."""

    # neutron's ResourcesPushRpcCallback: push 1.1 (resource_list).
    target = oslo_messaging.Target(version='1.1')

    @consumer.endpoint_method
    def push(self, context: Any, **kwargs: Any) -> None:
        resources = consumer.require(kwargs, 'resource_list', list, 'push')
        event_type = consumer.require(kwargs, 'event_type', str, 'push')
        cache = self.agent.port_cache
        by_name: dict[Any, list[Any]] = {}
        bad = []
        for index, resource in enumerate(resources):
            if not isinstance(resource, dict):
                bad.append(f'resource_list[{index}] is a {type(resource).__name__}')
                continue
            by_name.setdefault(resource.get('versioned_object.name'), []).append(resource)
        if bad:
            # One line for the push however many entries are bad; the good
            # objects of the same message are still applied (loses nothing).
            shown = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
            LOG.error('Rejected %d of %d push RPC entries, not objects: %s; '
                      'applying the other %d', len(bad), len(resources), shown,
                      len(resources) - len(bad))
        for name, objects in by_name.items():
            if name == port_cache.PORT_RESOURCE:
                cache.push_ports(objects, event_type)
            elif name == port_cache.NETWORK_RESOURCE:
                cache.push_networks(objects, event_type)
            else:
                LOG.warning('Ignoring a push of %d %.40r object(s)', len(objects), name)


def _tunnel_peer(kwargs: dict[str, Any], method: str) -> tuple[str, str]:
    """(tunnel_ip, tunnel_type) of a tunnel notification, the IP validated;
    a type not enabled here is the caller's to ignore (the server announces
    every peer of every type)."""
    tunnel_ip = consumer.require(kwargs, 'tunnel_ip', str, method)
    tunnel_type = consumer.require(kwargs, 'tunnel_type', str, method)
    try:
        ipaddress.ip_address(tunnel_ip)
    except ValueError:
        raise exceptions.InvalidPayload(
            f'tunnel_ip {tunnel_ip[:60]!r} is not an IP address') from None
    return tunnel_ip, tunnel_type


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
        # port id -> UP/DOWN as last reported to (and accepted by) the server:
        # a port is reported again only when that changes.
        self.reported: dict[str, str] = {}
        self.reported_at: dict[str, float] = {}  # port id -> when it was last reported
        # device reference -> the details it was wired from (the audit compares)
        self.wired_details: dict[str, dict[str, Any]] = {}
        # Port details from the server's pushes: no details call for a port
        # the server has told this agent about (see agent/port_cache.py).
        self.port_cache = port_cache.PortCache(self.host)
        self.queue.enable_batching(self.process_wire_batch, (WIRE,),
                                   window=WIRE_BATCH_WINDOW, max_size=WIRE_BATCH_MAX,
                                   in_flight=1)

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
        pushes: list[object] = [PortPushCallbacks(self)]
        consumed[topics.PORT_PUSH] = pushes
        consumed[topics.NETWORK_PUSH] = pushes
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
        versions[port_cache.PORT_RESOURCE] = port_cache.PORT_VERSION
        versions[port_cache.NETWORK_RESOURCE] = port_cache.NETWORK_VERSION
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
        # A full sync follows a start, a server or broker that was away, or a
        # failure: pushes may have been missed, so the cache starts over.
        self.port_cache.clear()
        for tunnel_type in self.conf.l2.tunnel_types:
            reply = self.plugin.tunnel_sync(self.conf.l2.local_ip, tunnel_type)
            for tunnel in (reply or {}).get('tunnels', []):
                ip = tunnel.get('ip_address') if isinstance(tunnel, dict) else None
                if isinstance(ip, str):
                    self.add_tunnel(ip, tunnel_type)
        plugged = self._list_plugged()
        with self._lock:
            gone = set(self.wired) - plugged
            self.plugged_ports = plugged
        # One call for every port's details, and every port's filter in one
        # go before any is (re)wired: after a restart, a port-by-port
        # rewrite of the chains would leave the ports not yet re-wired
        # unfiltered in between.
        fetched_at = time.monotonic()
        found, _failed = self._fetch_details(plugged)
        port_ids = {port_id for d in found.values()
                    if naming.is_valid_id(port_id := d.get('port_id'))}
        parents = self._find_trunk_parents(port_ids)
        with self._lock:
            self.trunk_parents = parents
        self.security_groups.sync_all([d for d in found.values() if 'network_id' in d],
                                      plugged)
        with self._lock:
            self._events_at = {d: t for d, t in self._events_at.items() if d in plugged}
        # An event queued meanwhile is newer than this snapshot: it stays
        # (supersede=False), never replaced by the sync's wiring or unwiring.
        for device in plugged:
            # Failed ones fetch their details again on their own.
            self.queue.put(work_queue.ResourceUpdate(
                device, WIRE, work_queue.PRIORITY_SYNC,
                payload=(fetched_at, found[device]) if device in found else None),
                supersede=False)
        for port_id in gone:
            self.queue.put(work_queue.ResourceUpdate(port_id, UNWIRE,
                                                     work_queue.PRIORITY_SYNC),
                           supersede=False)

    def _list_plugged(self) -> set[str]:
        plugged = set()
        for port_id in self.mech.list_plugged_ports():
            try:
                plugged.add(validate_device(port_id))
            except exceptions.InvalidIdentifier as exc:
                LOG.warning('Ignoring plugged device: %s', exc)
        return plugged

    def audit_state(self) -> None:
        """Compare the host with the server in bulk; change only what differs.

        One read of the switch, one ``bulk_pull`` of the wired ports' Port
        objects (which, unlike asking for details, leaves their status
        alone) and one security-group call. Ports plugged but unknown,
        wired but unplugged, or whose server side differs from what they
        were wired and reported with are queued like events; the others
        are neither re-wired nor re-reported. No tunnel_sync: tunnels
        change by their own notifications.
        """
        plugged = self._list_plugged()
        with self._lock:
            self.plugged_ports = plugged
            wired = dict(self.wired)
            wired_details = dict(self.wired_details)
            port_ids = dict(self.port_ids)
            reported = dict(self.reported)
        # A port reported moments ago may still be settling on the server
        # (it sets ACTIVE after the report, port by port): its status is not
        # compared yet, or the audit would re-wire it for nothing and
        # provision it a second time.
        settled_before = time.monotonic() - REPORT_SETTLE_SECONDS
        with self._lock:
            recent = {p for p, t in self.reported_at.items() if t > settled_before}
        # A port wired but not reported yet is in flight: its own batch
        # reports it; comparing it now would re-wire it a second time.
        compare = {d: port_ids[d] for d in plugged & set(wired)
                   if d in port_ids and port_ids[d] in reported}
        try:
            objects = self._pull_ports(set(compare.values()))
        except oslo_messaging.RemoteError as exc:
            LOG.warning('Cannot pull Port objects from neutron-server (%s); the audit '
                        'falls back to a full sync', exc.exc_type)
            self.sync_state()
            return
        changed = {d for d, p in compare.items()
                   if port_differs(objects.get(p), wired_details.get(d),
                                   reported.get(p), self.host,
                                   check_status=p not in recent)}
        changed |= plugged - set(wired)
        # A port with work queued or running (a plug event being wired) is
        # in flight too: queueing it again would wire it, and fetch its
        # details (the server provisions it again), a second time.
        busy = self.queue.in_progress()
        changed -= busy
        for device in sorted(changed):
            self.queue.put(work_queue.ResourceUpdate(device, WIRE, work_queue.PRIORITY_SYNC),
                           supersede=False)
        gone = set(wired) - plugged - busy
        for device in sorted(gone):
            self.queue.put(work_queue.ResourceUpdate(device, UNWIRE,
                                                     work_queue.PRIORITY_SYNC),
                           supersede=False)
        self.security_groups.audit()
        with self._lock:
            known = set(self.port_ids.values()) | set(self.wired)
            self.reported = {p: s for p, s in self.reported.items() if p in known}
            self.reported_at = {p: t for p, t in self.reported_at.items() if p in known}
        LOG.info('Audit: %d port(s) compared, %d to re-wire, %d to unwire',
                 len(compare), len(changed), len(gone))

    def _pull_ports(self, port_ids: set[str]) -> dict[str, dict[str, Any]]:
        """{port id: Port object data} of ``port_ids``, in one call."""
        if not port_ids:
            return {}
        reply = self.plugin.bulk_pull(PORT_RESOURCE, PORT_VERSION,
                                      {'id': sorted(port_ids)})
        objects = {}
        for obj in reply if isinstance(reply, list) else []:
            data = obj.get('versioned_object.data') if isinstance(obj, dict) else None
            if isinstance(data, dict) and data.get('id') in port_ids:
                objects[data['id']] = data
        return objects

    def process_update(self, update: work_queue.ResourceUpdate) -> None:
        if update.action == WIRE:
            # Normally the queue hands WIRE to process_wire_batch; alone here.
            failure = self.process_wire_batch([update]).get(update.resource_id)
            if failure is not None:
                raise failure
        elif update.action == UNWIRE:
            self._unwire(update.resource_id)
        elif update.action == REFRESH_FIREWALL:
            self.security_groups.refresh_pending()

    def process_wire_batch(self, updates: list[work_queue.ResourceUpdate]
                           ) -> dict[str, BaseException]:
        """Wire the ports of one batch with one call of each kind.

        One details call for the ports whose details the batch lacks (a full
        sync's payload is used unless an event came after it), one trunk
        lookup for the ports new to the agent, one security-group call, one
        ``update_device_list`` for the ports whose reported state changes.
        Each port fails on its own: the returned {device: error} are retried
        by the queue, the others are done.
        """
        failures: dict[str, BaseException] = {}
        details_of: dict[str, dict[str, Any] | None] = {}
        need: list[str] = []
        fresh: set[str] = set()  # details just learnt: from the cache or the server
        for update in updates:
            details = None
            if update.payload is not None:
                fetched_at, details = update.payload
                with self._lock:
                    if self._events_at.get(update.resource_id, 0.0) > fetched_at:
                        details = None  # an event came after the sync's fetch
            if details is None:
                details = self._cached_details(update.resource_id)
                if details is not None:
                    fresh.add(update.resource_id)
            if details is None:
                need.append(update.resource_id)
            else:
                details_of[update.resource_id] = details
        if fresh or need:
            LOG.info('Details of %d port(s): %d from pushed objects, %d asked of the server',
                     len(fresh) + len(need), len(fresh), len(need))
        if need:
            try:
                found, failed = self._fetch_details(need)
            except Exception as exc:
                found, failed = {}, set()
                failures.update({device: exc for device in need})
            for device in failed:
                failures[device] = RuntimeError(f'server failed to return details of {device}')
            for device in need:
                if device not in failures:
                    details_of[device] = found.get(device)
                    fresh.add(device)
        self._lookup_new_trunk_parents(
            {d: details for d in fresh if (details := details_of.get(d))})
        outcomes: dict[str, tuple[str, str]] = {}  # device -> (port id, UP/DOWN)
        bindings: dict[str, mech_api.PortBinding] = {}
        for device, details in details_of.items():
            try:
                planned = self._plan(device, details)
            except Exception as exc:
                failures[device] = exc
                continue
            if isinstance(planned, mech_api.PortBinding):
                bindings[device] = planned
            elif planned is not None:
                outcomes[device] = planned
        if bindings:
            # Filter before wiring, so a new port never passes traffic unfiltered.
            try:
                refused = self.security_groups.prepare_ports(
                    [b.details for b in bindings.values()])
            except Exception as exc:
                refused = {b.port_id: exc for b in bindings.values()}
            for device, binding in list(bindings.items()):
                if binding.port_id in refused:
                    failures[device] = refused[binding.port_id]
                    del bindings[device]
        for device, binding in bindings.items():
            try:
                outcome = self._wire_binding(device, binding)
            except Exception as exc:
                failures[device] = exc
                continue
            if outcome is not None:
                outcomes[device] = outcome
        self._report(outcomes, failures)
        return failures

    def _cached_details(self, device: str) -> dict[str, Any] | None:
        """Details from the pushed objects; None (ask the server) if the
        cache cannot tell or fails on what was pushed."""
        try:
            return self.port_cache.details(server_device(device))
        except Exception:
            LOG.exception('Port %s: cannot build details from pushed objects; '
                          'asking the server', device)
            return None

    def _lookup_new_trunk_parents(self, details_of: dict[str, dict[str, Any]]) -> None:
        """One trunk lookup for the ports new to this agent (a full sync
        looked every port up already; known ports were looked up before)."""
        with self._lock:
            new = {port_id for device, d in details_of.items()
                   if device not in self.wired and naming.is_valid_id(port_id := d.get('port_id'))}
        if not new:
            return
        parents = self._find_trunk_parents(new)
        with self._lock:
            for port_id in new:
                self.trunk_parents.pop(port_id, None)
            self.trunk_parents.update(parents)

    def _report(self, outcomes: dict[str, tuple[str, str]],
                failures: dict[str, BaseException]) -> None:
        """Report in one call the ports whose state differs from what the
        server was last told; those it fails (or the call) go to ``failures``."""
        with self._lock:
            changed = {device: (port_id, state) for device, (port_id, state)
                       in outcomes.items() if self.reported.get(port_id) != state}
        if not changed:
            return
        up = sorted({p for p, state in changed.values() if state == UP})
        down = sorted({p for p, state in changed.values() if state == DOWN})
        try:
            reply = self.plugin.update_device_list(up, down, self.agent_id)
        except Exception as exc:
            failures.update({device: exc for device in changed})
            return
        if not isinstance(reply, dict):
            reply = {}
        refused = set(reply.get('failed_devices_up') or []) | \
            set(reply.get('failed_devices_down') or [])
        with self._lock:
            for device, (port_id, state) in changed.items():
                if port_id in refused:
                    failures[device] = RuntimeError(
                        f'server failed to set port {port_id} {state}')
                    continue
                self.reported[port_id] = state
                self.reported_at[port_id] = time.monotonic()
                if state == UP:
                    self.devices_up += 1

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

    def _refuse_port(self, device: str, port_id: str, reason: str) -> tuple[str, str]:
        """Leave a port this agent cannot realise isolated, to be reported DOWN.

        A WARNING, not an ERROR: the agent works as designed; the port asks
        for something it does not implement. Anything a previous run wired
        for the port is undone, so it is never half-wired.
        """
        LOG.warning('Port %s refused: %s', port_id, reason)
        self.mech.unwire_port(device)
        with self._lock:
            self.wired.pop(device, None)
            self.wired_details.pop(device, None)
        return port_id, DOWN

    def _fail_port(self, device: str, reason: str) -> tuple[str, str]:
        LOG.error('Port %s failed: %s', device, reason)
        return self.port_ids.get(device) or server_device(device), DOWN

    def _fetch_details(self, devices: Iterable[str]
                       ) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """Port details of ``devices`` in one call: ({device: details}, failed devices).

        Answering, neutron-server moves each bound, enabled port back to
        BUILD: what it was told of those ports no longer holds, so they are
        reported again once wired.
        """
        asked = {server_device(d): d for d in devices}
        if not asked:
            return {}, set()
        reply = self.plugin.get_devices_details_list_and_failed_devices(
            sorted(asked), self.agent_id) or {}
        failed = {asked[d] for d in reply.get('failed_devices') or [] if d in asked}
        found = {}
        for entry in reply.get('devices') or []:
            device = asked.get(str(entry.get('device'))) if isinstance(entry, dict) else None
            if device is not None and device not in failed:
                found[device] = entry
        with self._lock:
            for entry in found.values():
                if 'network_id' in entry and entry.get('admin_state_up', True) and \
                        self.reported.get(entry.get('port_id')) == UP:
                    del self.reported[entry['port_id']]
        return found, failed

    def _wire(self, device: str, details: dict[str, Any] | None = None) -> None:
        """Wire one port (a batch of one); raises what failed it."""
        payload = None if details is None else (float('inf'), details)
        failure = self.process_wire_batch(
            [work_queue.ResourceUpdate(device, WIRE, payload=payload)]).get(device)
        if failure is not None:
            raise failure

    def _plan(self, device: str, details: dict[str, Any] | None
              ) -> mech_api.PortBinding | tuple[str, str] | None:
        """What to do with a port: its binding to wire, a (port id, DOWN)
        report for a port refused or failed, or None (not bound here)."""
        asked = server_device(device)
        if not details or 'network_id' not in details:
            LOG.info('Port %s is not bound to this host (yet); skipping', device)
            return None
        try:
            port_id = naming.validate_id(details.get('port_id', details.get('device')),
                                         'port')
            if not port_id.startswith(asked):
                raise exceptions.InvalidIdentifier(
                    f'server answered port {port_id} for device {device}')
            network_id = naming.validate_id(details['network_id'], 'network')
            segment = type_api.Segment.from_dict(details)
        except (exceptions.InvalidIdentifier, type_api.InvalidSegment) as exc:
            return self._fail_port(device, str(exc))
        with self._lock:
            self.port_ids[device] = port_id
            trunk_id = self.trunk_parents.get(port_id)
        if trunk_id is not None:
            return self._refuse_port(device, port_id, (
                f'it is the parent port of trunk {trunk_id}, and agentkit does not '
                f'implement trunks (VLAN-aware instances): its subports would get no '
                f'traffic. Use a host with an agent that supports trunks.'))
        tdriver = self.type_drivers.get(segment.network_type)
        if tdriver is None:
            reason = UNSUPPORTED_TYPE_REASONS.get(
                segment.network_type,
                f'network type {segment.network_type!r} is not enabled on this host '
                f'([l2] type_drivers: {", ".join(sorted(self.type_drivers))})')
            return self._refuse_port(device, port_id,
                                     f'its segment is {segment.network_type}: {reason}')
        try:
            tdriver.validate_segment(segment)
        except type_api.InvalidSegment as exc:
            return self._fail_port(device, str(exc))
        return mech_api.PortBinding(
            port_id=port_id, network_id=network_id,
            mac_address=str(details.get('mac_address', '')),
            device=device,
            segment=tdriver.realise(segment),
            admin_state_up=bool(details.get('admin_state_up', True)),
            details=details)

    def _wire_binding(self, device: str, binding: mech_api.PortBinding
                      ) -> tuple[str, str] | None:
        """Wire a port already filtered; the state to report, None if it is gone."""
        try:
            self.mech.wire_port(binding)
        except mech_api.DeviceGone as exc:
            LOG.info('Port %s not wired: %s', device, exc)
            # The attempt may have built the network's bridge and uplink
            # before it found the port gone: no wired port, nothing to keep.
            with self._lock:
                used = binding.network_id in self.wired.values()
            if not used:
                self.mech.cleanup_network(binding.network_id)
            return None
        except type_api.InvalidSegment as exc:
            # The host cannot realise this segment (e.g. no 8021q): retrying
            # will not help, so report the port failed instead.
            return self._fail_port(device, str(exc))
        for ext in self.extensions:
            ext.handle_port({}, binding.details)
        with self._lock:
            self.wired[device] = binding.network_id
            self.wired_details[device] = dict(binding.details)
        return binding.port_id, UP if binding.admin_state_up else DOWN

    def _unwire(self, device: str) -> None:
        self.mech.unwire_port(device)
        with self._lock:
            port_id = self.port_ids.pop(device, None)
            self.trunk_parents.pop(port_id or device, None)
            self.wired_details.pop(device, None)
        # Also a port a full sync filtered but that was never wired.
        self.security_groups.remove_devices([device] + ([port_id] if port_id else []))
        for ext in self.extensions:
            ext.delete_port({}, {'port_id': port_id or device})
        with self._lock:
            network_id = self.wired.pop(device, None)
            still_used = network_id in self.wired.values()
        if network_id and not still_used:
            self.mech.cleanup_network(network_id)
        failures: dict[str, BaseException] = {}
        self._report({device: (port_id or server_device(device), DOWN)}, failures)
        if device in failures:
            raise failures[device]
