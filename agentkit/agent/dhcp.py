"""``agentkit-dhcp``: DHCP for every network neutron-server schedules here.

Per network: a DHCP port from the server, which the DHCP driver plugs into
namespace ``qdhcp-<net>`` through the interface driver and serves (dnsmasq);
the agent talks to the server, the driver alone changes the host. RPC
notifications only queue work per network; bursts about one network coalesce
into one update. Everything is idempotent, so a full sync (at start, after a
revival or a failure) simply re-applies the server's view, adopting what
already runs. The slow audit asks the server once for every network and
touches only the networks that differ from what was last applied here.
"""

import dataclasses
import logging
import threading
import time
from typing import Any

import oslo_messaging

from agentkit import exceptions
from agentkit import loader
from agentkit.agent import base
from agentkit.agent import ready_ports
from agentkit.agent import work_queue
from agentkit.api import agent_types
from agentkit.api import device_owner
from agentkit.api import dhcp as dhcp_api
from agentkit.api import dhcp_payload
from agentkit.api import interface as interface_api
from agentkit.api import metadata as metadata_api
from agentkit.lib import naming
from agentkit.rpc import consumer
from agentkit.rpc import dhcp_api as dhcp_rpc
from agentkit.rpc import topics

LOG = logging.getLogger(__name__)

REFRESH = 'refresh'   # fetch the network from the server, then apply
APPLY = 'apply'       # apply the network dict in the payload
DISABLE = 'disable'   # stop serving the network here

# What neutron-server raises to create_dhcp_port while the network or its
# subnets are being deleted (it answers None for some of these cases, and
# raises the others): the next event settles it, nothing to retry.
DELETE_RACE_ERRORS = frozenset({'SubnetInUse', 'NetworkNotFound', 'SubnetNotFound',
                                'IpAddressGenerationFailure', 'NetworkInUse'})


@dataclasses.dataclass(frozen=True)
class SyncSnapshot:
    """A network (None: to disable) as a full sync or audit saw it, and when.

    An RPC event about the network that arrived after ``as_of`` makes the
    snapshot obsolete, whether that event's update is still queued or done:
    the snapshot is then dropped instead of undoing the newer state.
    ``audit`` snapshots are applied only if they differ from what this agent
    last applied (or the network's DHCP server is gone, ``served`` False).
    """

    network: dhcp_api.Network | None
    as_of: float
    audit: bool = False
    served: bool = False


def _readiness(port: dhcp_api.Port) -> tuple[Any, ...]:
    """What makes neutron-server ask for DHCP readiness again: the port's
    MAC and fixed IPs (it adds a DHCP provisioning block when they change)."""
    ips = sorted((ip.subnet_id, str(ip.address))
                 for ip in port.fixed_ips + port.unserved_fixed_ips)
    return (port.mac_address, tuple(ips))


class DhcpRpcCallbacks:
    """``dhcp_agent`` casts and ``dhcp_agent_fanout`` fanouts (API 1.0)."""

    target = oslo_messaging.Target(version='1.0')

    def __init__(self, agent: 'DhcpAgent') -> None:
        self.agent = agent

    def on_error(self, method: str) -> None:
        self.agent.on_error(method)

    def _network_id(self, payload: Any, *path: str) -> str:
        obj = payload
        for key in path[:-1]:
            obj = consumer.require(obj, key, dict, 'payload')
        return naming.validate_id(consumer.require(obj, path[-1], str, 'payload'),
                                  'network')

    @consumer.endpoint_method
    def network_create_end(self, context: Any, payload: Any = None, **kw: Any) -> None:
        self.agent.refresh(self._network_id(payload, 'network', 'id'))

    network_update_end = consumer.endpoint_alias(network_create_end, 'network_update_end')

    @consumer.endpoint_method
    def network_delete_end(self, context: Any, payload: Any = None, **kw: Any) -> None:
        self.agent.enqueue(self._network_id(payload, 'network_id'), DISABLE)

    @consumer.endpoint_method
    def subnet_create_end(self, context: Any, payload: Any = None, **kw: Any) -> None:
        self.agent.refresh(self._network_id(payload, 'subnet', 'network_id'))

    subnet_update_end = consumer.endpoint_alias(subnet_create_end, 'subnet_update_end')

    @consumer.endpoint_method
    def subnet_delete_end(self, context: Any, payload: Any = None, **kw: Any) -> None:
        self.agent.refresh(self._network_id(payload, 'network_id'))

    @consumer.endpoint_method
    def port_create_end(self, context: Any, payload: Any = None, **kw: Any) -> None:
        self.agent.refresh(self._network_id(payload, 'port', 'network_id'))

    port_update_end = consumer.endpoint_alias(port_create_end, 'port_update_end')

    @consumer.endpoint_method
    def port_delete_end(self, context: Any, payload: Any = None, **kw: Any) -> None:
        self.agent.refresh(self._network_id(payload, 'network_id'))

    @consumer.endpoint_method
    def agent_updated(self, context: Any, payload: Any = None, **kw: Any) -> None:
        if consumer.require(payload, 'admin_state_up', bool, 'payload'):
            self.agent.schedule_resync('agent admin state changed')


class DhcpAgent(base.Agent):
    binary = 'agentkit-dhcp'
    agent_type = agent_types.DHCP
    report_topic = topics.DHCP_AGENT
    privsep_contexts = ('network', 'daemons')

    def load_drivers(self) -> None:
        self.interface: interface_api.InterfaceDriver = loader.load_driver(
            loader.INTERFACE_DRIVERS, self.conf.interface_driver,
            interface_api.InterfaceDriver, conf=self.conf, host=self.host)
        self.dhcp: dhcp_api.DhcpDriver = loader.load_driver(
            loader.DHCP_DRIVERS, self.conf.dhcp_driver, dhcp_api.DhcpDriver,
            conf=self.conf, host=self.host, interface_driver=self.interface)
        self.metadata: metadata_api.MetadataDriver | None = None
        if self.conf.enable_isolated_metadata:
            self.metadata = loader.load_driver(
                loader.METADATA_DRIVERS, self.conf.metadata_driver,
                metadata_api.MetadataDriver, conf=self.conf, host=self.host)
            # The DHCP driver knows when a network is isolated (it routes
            # 169.254.169.254 via the DHCP port then) and calls this.
            setattr(self.dhcp, 'metadata_hook', self._metadata_hook)
        self._lock = threading.Lock()
        self.networks: dict[str, dhcp_api.Network] = {}
        # network id -> port id -> readiness (MAC, fixed IPs) last reported
        self._ready_ports: dict[str, dict[str, tuple[Any, ...]]] = {}
        # network id -> the server view last applied here (the typed view
        # leaves out what DHCP does not serve, e.g. a port's status)
        self._applied: dict[str, dhcp_api.Network] = {}
        # networks torn down here whose DHCP port is not released yet
        self._release_pending: set[str] = set()
        # When the last RPC event about each network arrived (monotonic).
        self.rpc_seen: dict[str, float] = {}
        # Started with the RPC clients; sends dhcp_ready_on_ports in batches.
        self.ready_reports = ready_ports.ReadyPortsReporter(
            lambda port_ids: self.plugin.dhcp_ready_on_ports(port_ids))

    def initialize_drivers(self) -> None:
        self.interface.initialize()
        self.dhcp.initialize()
        if self.metadata is not None:
            self.metadata.initialize()
        self.interface.watch_restarts(self.schedule_resync)

    def drivers(self) -> list[Any]:
        return [d for d in (self.metadata, self.dhcp, self.interface) if d]

    def _metadata_hook(self, network_id: str, namespace: str, enabled: bool) -> None:
        """Run the network's metadata proxy exactly while it is isolated."""
        assert self.metadata is not None
        if enabled:
            self.metadata.spawn_proxy(namespace, network_id, router=False)
        else:
            self.metadata.destroy_proxy(network_id)

    def setup_rpc_clients(self) -> None:
        self.plugin = dhcp_rpc.DhcpPluginApi(
            self.transport, self.host)
        self.ready_reports.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.ready_reports.stop(min(1.0, timeout * 0.1))
        super().stop(timeout)

    def rpc_topics(self) -> dict[str, list[object]]:
        return {topics.DHCP_AGENT: [DhcpRpcCallbacks(self)]}

    def get_configurations(self) -> dict[str, Any]:
        with self._lock:
            nets = list(self.networks.values())
        configurations = {
            'dhcp_driver': self.conf.dhcp_driver,
            'dhcp_lease_duration': self.conf.dhcp_lease_duration,
            'log_agent_heartbeats': self.conf.agent.log_agent_heartbeats,
            'networks': len(nets),
            'subnets': sum(len(n.subnets) for n in nets),
            'ports': sum(len(n.ports) for n in nets),
        }
        configurations.update(self.dhcp.get_configurations())
        configurations.update(self.interface.get_configurations())
        return configurations

    # -- queueing -----------------------------------------------------------
    def enqueue(self, network_id: str, action: str, payload: Any = None,
                priority: int = work_queue.PRIORITY_RPC, delay: float = 0.0
                ) -> None:
        if priority == work_queue.PRIORITY_RPC:
            self.rpc_seen[network_id] = time.monotonic()
        # A sync's snapshot never replaces a pending RPC-driven update: that
        # one was queued later and is the newer intent.
        self.queue.put(work_queue.ResourceUpdate(network_id, action, priority,
                                                 payload), delay=delay,
                       supersede=priority != work_queue.PRIORITY_SYNC)

    def refresh(self, network_id: str) -> None:
        """Re-read a network soon; a burst of events becomes one update."""
        self.enqueue(network_id, REFRESH,
                     delay=self.conf.dhcp_reload_coalesce_seconds)

    # -- sync -----------------------------------------------------------------
    def sync_state(self) -> None:
        """Full sync: apply every network the server schedules here."""
        self._sync(audit=False)

    def audit_state(self) -> None:
        """Audit: one ``get_active_networks_info``; only networks that differ
        from what was applied here (or whose DHCP server died) are touched."""
        self._sync(audit=True)

    def _sync(self, audit: bool) -> None:
        # The host is looked at *before* the server is asked, so a network
        # scheduled here while the call runs (and built by its RPC event)
        # is not mistaken for a stale one.
        as_of = time.monotonic()
        served = set(self.dhcp.active_networks())
        with self._lock:
            local = set(self.networks) | served | set(self._release_pending)
        if self.metadata is not None:
            local |= self.metadata.active_proxies(router=False)
        # With enable_dhcp_filter=False neutron 29 answers every network
        # scheduled here with all its subnets and all its ports.
        active = self.plugin.get_active_networks_info(enable_dhcp_filter=False)
        if not isinstance(active, list):
            raise exceptions.InvalidPayload('get_active_networks_info did not '
                                            'return a list')
        wanted = set()
        for raw in active:
            try:
                network = dhcp_payload.parse_network(raw)
            except exceptions.InvalidPayload as exc:
                LOG.error('Skipping malformed network from the server: %s', exc)
                continue
            wanted.add(network.id)
            self.enqueue(network.id, APPLY,
                         SyncSnapshot(network, as_of, audit, network.id in served),
                         work_queue.PRIORITY_SYNC)
        for network_id in local - wanted:
            LOG.info('Network %s is no longer hosted here; cleaning up', network_id)
            self.enqueue(network_id, DISABLE, SyncSnapshot(None, as_of),
                         work_queue.PRIORITY_SYNC)
        for network_id, seen in list(self.rpc_seen.items()):
            if seen < as_of:
                self.rpc_seen.pop(network_id, None)  # older than this snapshot

    def _local_networks(self) -> set[str]:
        """Networks this agent has state for: cached, or served by the driver.

        Like Neutron's agent, what counts is the agent's own state (the
        driver's state dirs under state_path), not every qdhcp- namespace on
        the host, which may belong to something else.
        """
        return set(self.networks) | set(self.dhcp.active_networks())

    def _unchanged(self, snapshot: SyncSnapshot) -> bool:
        """The audit's network is what was last applied, and still served."""
        network = snapshot.network
        assert network is not None
        net_id = network.id
        with self._lock:
            applied = self._applied.get(net_id)
            serving = net_id in self.networks
        if applied is None or applied != network:
            return False
        if serving and not snapshot.served:
            LOG.warning('Network %s: its DHCP server is not running; setting it up '
                        'again', net_id)
            return False
        return True

    def process_update(self, update: work_queue.ResourceUpdate) -> None:
        network = update.payload
        if isinstance(network, SyncSnapshot):
            if self.rpc_seen.get(update.resource_id, network.as_of) > network.as_of:
                LOG.debug('Network %s: sync snapshot older than its last RPC event; '
                          'skipped', update.resource_id)
                return
            if network.audit and update.action == APPLY and self._unchanged(network):
                return
            network = network.network
        if update.action == DISABLE:
            self.disable_network(update.resource_id)
            return
        if update.action == REFRESH:
            raw = self.plugin.get_network_info(update.resource_id)
            if not raw:
                self.disable_network(update.resource_id)
                return
            try:
                network = dhcp_payload.parse_network(raw)
            except exceptions.InvalidPayload as exc:
                LOG.error('Not configuring network %s, malformed data from the '
                          'server: %s', update.resource_id, exc)
                return
        try:
            self.configure_network(network)
        except exceptions.Conflict as exc:
            LOG.info('Network %s changed on the server while being configured '
                     '(%s); waiting for the next event', update.resource_id, exc)

    # -- per network ------------------------------------------------------------
    def configure_network(self, network: dhcp_api.Network) -> None:
        net_id = network.id
        if not network.admin_state_up or not network.dhcp_subnets:
            # neutron-server schedules networks without a DHCP subnet too:
            # nothing to serve, and nothing to release unless we hold a port.
            self.disable_network(net_id, network)
            with self._lock:
                self._applied[net_id] = network
            return
        network, port = self._ensure_dhcp_port(network)
        self.dhcp.enable(network, port)
        with self._lock:
            self.networks[net_id] = network
        self._report_ready(network)
        with self._lock:
            self._applied[net_id] = network

    def _ensure_dhcp_port(self, network: dhcp_api.Network
                          ) -> tuple[dhcp_api.Network, dhcp_api.Port]:
        """This host's DHCP port on ``network``, created or extended with
        neutron-server as needed; returns it and the network that lists it."""
        port = self._own_port(network)
        if port is not None:
            return self._cover_dhcp_subnets(network, port)
        device_id = dhcp_api.dhcp_port_device_id(self.host, network.id)
        if device_id in network.skipped_device_ids:
            # Creating another would leave the unusable one behind, and the
            # new one would likely be refused the same way at the next sync.
            raise exceptions.InvalidPayload(
                f'network {network.id}: this host\'s DHCP port ({device_id}) is '
                f'malformed in the server\'s answer (see the warning above); '
                f'not creating another')
        try:
            raw = self.plugin.create_dhcp_port({'port': {
                'network_id': network.id,
                'project_id': network.project_id,
                'device_id': dhcp_api.dhcp_port_device_id(self.host, network.id),
                'fixed_ips': [{'subnet_id': s.id} for s in network.dhcp_subnets],
                'name': '', 'admin_state_up': True}})
        except oslo_messaging.RemoteError as exc:
            if exc.exc_type not in DELETE_RACE_ERRORS:
                raise
            raise exceptions.Conflict(f'{exc.exc_type}: the network is changing') from None
        if not isinstance(raw, dict) or not raw.get('id'):
            # neutron-server answers None when the network or subnet is gone
            # or out of addresses: an expected race with a delete.
            raise exceptions.Conflict(f'server did not create a DHCP port for '
                                      f'network {network.id}')
        port = dhcp_payload.parse_port(raw, network)
        return dataclasses.replace(network, ports=network.ports + (port,)), port

    def _cover_dhcp_subnets(self, network: dhcp_api.Network, port: dhcp_api.Port
                            ) -> tuple[dhcp_api.Network, dhcp_api.Port]:
        """Give the DHCP port an address on every DHCP subnet.

        dnsmasq only serves a range it has an interface address in, so a
        subnet added to the network needs update_dhcp_port first.
        """
        held = port.fixed_ips + port.unserved_fixed_ips
        have = {ip.subnet_id for ip in held}
        missing = [s.id for s in network.dhcp_subnets if s.id not in have]
        if not missing:
            return network, port
        fixed_ips: list[dict[str, str]] = [
            {'subnet_id': ip.subnet_id, 'ip_address': str(ip.address)} for ip in held]
        fixed_ips += [{'subnet_id': subnet_id} for subnet_id in missing]
        updated = self.plugin.update_dhcp_port(
            port.id, {'port': {'network_id': network.id, 'fixed_ips': fixed_ips}})
        if not isinstance(updated, dict) or updated.get('id') != port.id:
            raise RuntimeError(f'server did not update DHCP port {port.id} '
                               f'for subnets {missing}')
        port = dhcp_payload.parse_port(updated, network)
        ports = tuple(port if p.id == port.id else p for p in network.ports)
        return dataclasses.replace(network, ports=ports), port

    def _report_ready(self, network: dhcp_api.Network) -> None:
        """``dhcp_ready_on_ports`` once host entries exist, so ports go ACTIVE.

        Once per port and readiness (MAC, fixed IPs): the server blocks a
        port on DHCP when it is created and when those change, never
        because a sync or an audit passed over it again.
        """
        ports = {p.id: _readiness(p) for p in network.ports
                 if p.device_owner != device_owner.DHCP}
        with self._lock:
            done = self._ready_ports.get(network.id, {})
            new = sorted(port_id for port_id, ready in ports.items()
                         if done.get(port_id) != ready)
        if new:
            self.ready_reports.add(new)
        with self._lock:
            self._ready_ports[network.id] = ports

    def _own_port(self, network: dhcp_api.Network) -> dhcp_api.Port | None:
        device_id = dhcp_api.dhcp_port_device_id(self.host, network.id)
        return next((p for p in network.ports if p.device_id == device_id
                     and p.device_owner == device_owner.DHCP), None)

    def disable_network(self, network_id: str,
                        network: dhcp_api.Network | None = None) -> None:
        """Stop serving ``network_id`` here, if this agent serves it.

        ``release_dhcp_port`` only for a network torn down here (cached, a
        DHCP server or a namespace left on the host), or one whose server
        view (``network``) still lists this agent's DHCP port: a network
        this agent never served costs the server nothing.
        """
        with self._lock:
            cached = self.networks.pop(network_id, None)
            self._ready_ports.pop(network_id, None)
            if network is None:
                self._applied.pop(network_id, None)
        served = cached is not None or self.dhcp.present(network_id)
        holds_port = network is not None and self._own_port(network) is not None
        if served or holds_port:
            with self._lock:
                self._release_pending.add(network_id)
        if served:
            self.dhcp.disable(network_id)
        elif self.metadata is not None:
            self.metadata.destroy_proxy(network_id)  # a proxy left alone, if any
        with self._lock:
            release = network_id in self._release_pending
        if not release:
            return
        # Idempotent on the server; also covers ports left by a previous run.
        self.plugin.release_dhcp_port(
            network_id, dhcp_api.dhcp_port_device_id(self.host, network_id))
        with self._lock:
            self._release_pending.discard(network_id)
        LOG.info('Network %s: DHCP disabled', network_id)
