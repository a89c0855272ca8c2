"""``agentkit-l2``: the per-host switch agent.

Generic over the switch: everything host-specific is the mechanism driver's
(openvswitch, linuxbridge); segment semantics are the type drivers'. This
module owns the conversation with neutron-server: which ports are plugged,
their details, reporting them up/down/failed, and resyncing.
"""

import logging
import re
import threading
from typing import Any

import oslo_messaging

from agentkit import exceptions
from agentkit import loader
from agentkit.agent import base
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

# Linux bridge agents name ports by their tap device, as Neutron's did;
# neutron-server resolves that short form to the port.
_TAP_DEVICE_RE = re.compile(r'tap[0-9a-f]{8}-[0-9a-f]{2}')


def validate_device(device: Any) -> str:
    """A port id, or a ``tap<id[:11]>`` device reference."""
    if isinstance(device, str) and _TAP_DEVICE_RE.fullmatch(device):
        return device
    return naming.validate_id(device, 'port')


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
        consumer.require(kwargs, 'security_groups', list, 'security_groups_rule_updated')
        self.agent.refresh_firewall()

    @consumer.endpoint_method
    def security_groups_member_updated(self, context: Any, **kwargs: Any) -> None:
        consumer.require(kwargs, 'security_groups', list,
                         'security_groups_member_updated')
        self.agent.refresh_firewall()


class L2Agent(base.Agent):
    """Wires plugged ports into their segments through the mechanism driver."""

    binary = 'agentkit-l2'
    report_topic = topics.NO_TOPIC
    privsep_contexts = ('network',)

    def load_drivers(self) -> None:
        conf = self.conf
        self.mech: mech_api.MechanismDriver = loader.load_driver(
            loader.MECHANISM_DRIVERS, conf.l2.mechanism_driver,
            mech_api.MechanismDriver, conf=conf, host=self.host)
        self.agent_type = self.mech.agent_type
        supported = self.mech.supported_network_types
        unsupported = [t for t in conf.l2.type_drivers if t not in supported]
        if unsupported:
            raise exceptions.InvalidConfiguration(
                f'mechanism driver {conf.l2.mechanism_driver!r} does not support '
                f'network type(s) {", ".join(unsupported)} enabled in '
                f'[l2] type_drivers (it supports: {", ".join(sorted(supported))})')
        self.type_drivers: dict[str, type_api.TypeDriver] = {}
        for name, drv in loader.load_drivers(
                loader.TYPE_DRIVERS, conf.l2.type_drivers, type_api.TypeDriver,
                conf=conf, host=self.host).items():
            self.type_drivers[drv.network_type] = drv
        bad_tunnels = [t for t in conf.l2.tunnel_types if t not in self.type_drivers]
        if bad_tunnels:
            raise exceptions.InvalidConfiguration(
                f'[l2] tunnel_types {", ".join(bad_tunnels)} not enabled in '
                f'[l2] type_drivers ({", ".join(conf.l2.type_drivers)})')
        if conf.l2.tunnel_types and not conf.l2.local_ip:
            raise exceptions.InvalidConfiguration(
                '[l2] tunnel_types is set but [l2] local_ip is not')
        fw_name = (conf.securitygroup.firewall_driver
                   if conf.securitygroup.enable_security_group else 'noop')
        self.firewall: firewall_api.FirewallDriver = loader.load_driver(
            loader.FIREWALL_DRIVERS, fw_name, firewall_api.FirewallDriver,
            conf=conf, host=self.host)
        self.extensions = list(loader.load_drivers(
            loader.AGENT_EXTENSIONS, conf.l2.extensions,
            extension_api.AgentExtension, conf=conf, host=self.host).values())
        for ext in self.extensions:
            ext.consume_api(self)
        self._lock = threading.Lock()
        self.plugged_ports: set[str] = set()
        self.wired: dict[str, str] = {}  # port id -> network id
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
        return {topics.agent_notifier_topic(r, op): endpoints for r, op in names}

    def setup_rpc_clients(self) -> None:
        self.plugin = plugin_api.L2PluginApi(
            self.transport, self.host,
            timeout=self.conf.agent.rpc_response_max_timeout)

    # -- events -------------------------------------------------------------
    def enqueue(self, port_id: str, action: str,
                priority: int = work_queue.PRIORITY_RPC) -> None:
        self.queue.put(work_queue.ResourceUpdate(port_id, action, priority))

    def build_state(self) -> dict[str, Any]:
        state = super().build_state()
        versions = self.mech.resource_versions
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
        self.mech.tunnel_update(tunnel_ip, tunnel_type)

    def refresh_firewall(self) -> None:
        with self._lock:
            ports = list(self.wired)
        for port_id in ports:
            self.enqueue(port_id, WIRE)

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
        for port_id in plugged:
            self.enqueue(port_id, WIRE, work_queue.PRIORITY_SYNC)
        for port_id in gone:
            self.enqueue(port_id, UNWIRE, work_queue.PRIORITY_SYNC)

    def process_update(self, update: work_queue.ResourceUpdate) -> None:
        if update.action == WIRE:
            self._wire(update.resource_id)
        elif update.action == UNWIRE:
            self._unwire(update.resource_id)

    def _fail_port(self, port_id: str, reason: str) -> None:
        LOG.error('Port %s failed: %s', port_id, reason)
        self.plugin.update_device_list([], [port_id], self.agent_id)

    def _wire(self, port_id: str) -> None:
        reply = self.plugin.get_devices_details_list_and_failed_devices(
            [port_id], self.agent_id)
        details_list = (reply or {}).get('devices', [])
        if port_id in (reply or {}).get('failed_devices', []):
            raise RuntimeError(f'server failed to return details of {port_id}')
        details = next((d for d in details_list if isinstance(d, dict)
                        and d.get('device') in (port_id, None)), None)
        if not details or 'network_id' not in details:
            LOG.info('Port %s is not bound to this host (yet); skipping', port_id)
            return
        try:
            naming.validate_id(details.get('port_id', details.get('device')), 'port')
            network_id = naming.validate_id(details['network_id'], 'network')
            segment = type_api.Segment.from_dict(details)
        except (exceptions.InvalidIdentifier, type_api.InvalidSegment) as exc:
            self._fail_port(port_id, str(exc))
            return
        tdriver = self.type_drivers.get(segment.network_type)
        if tdriver is None:
            self._fail_port(port_id, f'network type {segment.network_type!r} '
                                     f'is not enabled on this host')
            return
        try:
            tdriver.validate_segment(segment)
        except type_api.InvalidSegment as exc:
            self._fail_port(port_id, str(exc))
            return
        binding = mech_api.PortBinding(
            port_id=details.get('port_id', port_id), network_id=network_id,
            mac_address=str(details.get('mac_address', '')),
            device=port_id,
            segment=tdriver.realise(segment),
            admin_state_up=bool(details.get('admin_state_up', True)),
            details=details)
        if self.firewall.needs_security_group_info:
            # Filter before wiring, so a new port never passes traffic
            # unfiltered; the driver decides what port security off means.
            self.firewall.update_security_group_info(
                self.plugin.security_group_info_for_devices([port_id]))
        self.firewall.prepare_port_filter(details)
        try:
            self.mech.wire_port(binding)
        except type_api.InvalidSegment as exc:
            # The host cannot realise this segment (e.g. no 8021q): retrying
            # will not help, so report the port failed instead.
            self._fail_port(port_id, str(exc))
            return
        for ext in self.extensions:
            ext.handle_port({}, details)
        with self._lock:
            self.wired[port_id] = network_id
        if binding.admin_state_up:
            self.plugin.update_device_list([port_id], [], self.agent_id)
            self.devices_up += 1
        else:
            self.plugin.update_device_list([], [port_id], self.agent_id)

    def _unwire(self, port_id: str) -> None:
        self.mech.unwire_port(port_id)
        self.firewall.remove_port_filter(port_id)
        for ext in self.extensions:
            ext.delete_port({}, {'port_id': port_id})
        with self._lock:
            network_id = self.wired.pop(port_id, None)
            still_used = network_id in self.wired.values()
        if network_id and not still_used:
            self.mech.cleanup_network(network_id)
        self.plugin.update_device_list([], [port_id], self.agent_id)
