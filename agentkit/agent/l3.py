"""``agentkit-l3``: realises the routers neutron-server schedules here.

The router driver does the host work (namespace, qr-/qg- ports, NAT); this
module owns the RPC conversation: which routers are ours, their full
definitions from ``sync_routers``, and floating IP statuses back.
"""

import dataclasses
import logging
import os
import time
from typing import Any

import oslo_messaging

from agentkit import exceptions
from agentkit import loader
from agentkit.agent import base
from agentkit.agent import router_intent
from agentkit.agent import work_queue
from agentkit.api import agent_types
from agentkit.api import interface as interface_api
from agentkit.api import l3 as l3_api
from agentkit.api import metadata as metadata_api
from agentkit.lib import naming
from agentkit.rpc import consumer
from agentkit.rpc import l3_api as l3_rpc
from agentkit.rpc import topics

LOG = logging.getLogger(__name__)

REFRESH = 'refresh'
APPLY = 'apply'
DELETE = 'delete'
# Routers per sync_routers call: Neutron's agent starts at 256 and halves
# the chunk on every timeout down to 32, then grows it again by 32.
SYNC_ROUTERS_MAX_CHUNK_SIZE = 256
SYNC_ROUTERS_MIN_CHUNK_SIZE = 32
# Refused routers listed in the agent's configurations (the count is exact).
MAX_REPORTED_UNSUPPORTED = 20


@dataclasses.dataclass(frozen=True)
class SyncSnapshot:
    """A router (None: to delete) as a full sync saw it, and when.

    An RPC event about the router that arrived after ``as_of`` makes this
    snapshot obsolete, whether the event's own update is still queued or
    already done: the update is dropped instead of undoing the newer one.
    """

    router: l3_api.Router | None
    as_of: float


class L3RpcCallbacks:
    """``l3_agent`` casts/fanouts and network updates (API 1.x)."""

    # routers_updated arrives as 1.1 and network_update as 1.4; Neutron's L3
    # agent serves up to 1.5.
    target = oslo_messaging.Target(version='1.5')

    def __init__(self, agent: 'L3Agent') -> None:
        self.agent = agent

    def on_error(self, method: str) -> None:
        self.agent.on_error(method)

    @staticmethod
    def _ids(value: Any, what: str) -> list[str]:
        if not isinstance(value, list):
            raise exceptions.InvalidPayload(f'{what} must be a list of router ids')
        return [naming.validate_id(v, 'router') for v in value]

    @consumer.endpoint_method
    def routers_updated(self, context: Any, routers: Any = None, **kw: Any) -> None:
        for router_id in self._ids(routers, 'routers'):
            self.agent.enqueue(router_id, REFRESH)

    routers_updated_on_host = consumer.endpoint_alias(routers_updated, 'routers_updated_on_host')

    @consumer.endpoint_method
    def router_added_to_agent(self, context: Any, payload: Any = None, **kw: Any) -> None:
        for router_id in self._ids(payload, 'payload'):
            self.agent.enqueue(router_id, REFRESH)

    @consumer.endpoint_method
    def router_deleted(self, context: Any, router_id: Any = None, **kw: Any) -> None:
        self.agent.enqueue(naming.validate_id(router_id, 'router'), DELETE)

    @consumer.endpoint_method
    def router_removed_from_agent(self, context: Any, payload: Any = None,
                                  **kw: Any) -> None:
        router_id = consumer.require(payload, 'router_id', str, 'payload')
        self.agent.enqueue(naming.validate_id(router_id, 'router'), DELETE)

    @consumer.endpoint_method
    def fipnamespace_delete_on_ext_net(self, context: Any, **kw: Any) -> None:
        """DVR only; legacy routers have no fip- namespaces."""

    @consumer.endpoint_method
    def agent_updated(self, context: Any, payload: Any = None, **kw: Any) -> None:
        """The agent's admin state changed: while it was down the server
        told it nothing (and answered no routers), so catch up in full."""
        admin_state_up = consumer.require(payload, 'admin_state_up', bool, 'payload')
        if admin_state_up:
            self.agent.schedule_resync('agent set administratively up')

    @consumer.endpoint_method
    def network_update(self, context: Any, **kw: Any) -> None:
        network = consumer.require(kw, 'network', dict, 'network_update')
        self.agent.network_updated(naming.validate_id(network.get('id'), 'network'))


class L3Agent(base.Agent):
    binary = 'agentkit-l3'
    agent_type = agent_types.L3
    report_topic = topics.L3_AGENT
    privsep_contexts = ('network', 'daemons')

    def load_drivers(self) -> None:
        self.interface: interface_api.InterfaceDriver = loader.load_driver(
            loader.INTERFACE_DRIVERS, self.conf.interface_driver,
            interface_api.InterfaceDriver, conf=self.conf, host=self.host)
        self.router_driver: l3_api.RouterDriver = loader.load_driver(
            loader.L3_DRIVERS, self.conf.l3_driver, l3_api.RouterDriver,
            conf=self.conf, host=self.host, interface_driver=self.interface)
        self.metadata: metadata_api.MetadataDriver | None = None
        if self.conf.enable_metadata_proxy:
            self.metadata = loader.load_driver(
                loader.METADATA_DRIVERS, self.conf.metadata_driver,
                metadata_api.MetadataDriver, conf=self.conf, host=self.host)
        self.routers: dict[str, l3_api.Router] = {}
        # Routers the driver refused to build, with the reason.
        self.unsupported: dict[str, str] = {}
        self.sync_chunk_size = SYNC_ROUTERS_MAX_CHUNK_SIZE
        # When the last RPC event about each router arrived (monotonic).
        self.rpc_seen: dict[str, float] = {}

    def initialize_drivers(self) -> None:
        self.interface.initialize()
        self.router_driver.initialize()
        if self.metadata is not None:
            self.metadata.initialize()
        self.interface.watch_restarts(self.schedule_resync)

    def drivers(self) -> list[Any]:
        return [d for d in (self.metadata, self.router_driver, self.interface) if d]

    def setup_rpc_clients(self) -> None:
        self.plugin = l3_rpc.L3PluginApi(
            self.transport, self.host)

    def rpc_topics(self) -> dict[str, list[object]]:
        callbacks: list[object] = [L3RpcCallbacks(self)]
        return {topics.L3_AGENT: callbacks,
                topics.agent_notifier_topic(topics.NETWORK, topics.UPDATE): callbacks}

    def get_configurations(self) -> dict[str, Any]:
        routers = list(self.routers.values())
        configurations = {
            'agent_mode': self.conf.agent_mode,
            'routers': len(routers),
            'ex_gw_ports': sum(1 for r in routers if r.has_gateway),
            'interfaces': sum(len(r.interfaces) + len(r.unusable_interface_ids)
                              for r in routers),
            'floating_ips': sum(len(r.floating_ips) + len(r.unusable_floating_ips)
                                for r in routers),
            'interface_driver': self.conf.interface_driver,
            'log_agent_heartbeats': self.conf.agent.log_agent_heartbeats,
            'handle_internal_only_routers':
                self.conf.handle_internal_only_routers,
            'gateway_external_network_id': '',
        }
        if self.unsupported:
            refused = sorted(self.unsupported.items())[:MAX_REPORTED_UNSUPPORTED]
            configurations['unsupported_routers'] = len(self.unsupported)
            configurations['unsupported_router_reasons'] = dict(refused)
        configurations.update(self.router_driver.get_configurations())
        return configurations

    def enqueue(self, router_id: str, action: str, payload: Any = None,
                priority: int = work_queue.PRIORITY_RPC) -> None:
        if priority == work_queue.PRIORITY_RPC:
            self.rpc_seen[router_id] = time.monotonic()
        # A full sync's snapshot never replaces a pending RPC-driven update:
        # that one was queued later and is the newer intent.
        self.queue.put(work_queue.ResourceUpdate(router_id, action, priority, payload),
                       supersede=priority != work_queue.PRIORITY_SYNC)

    def network_updated(self, network_id: str) -> None:
        """Refresh only the routers with a port on ``network_id`` (e.g. its MTU)."""
        for router_id, router in list(self.routers.items()):
            if network_id in router.network_ids:
                self.enqueue(router_id, REFRESH)

    def sync_state(self) -> None:
        # What the host has is taken *before* the server is asked, so a
        # router built meanwhile (scheduled here while the sync runs) is
        # not mistaken for a stale one.
        as_of = time.monotonic()
        existing = set(self.routers) | self.router_driver.existing_routers()
        if self.metadata is not None:
            existing |= self.metadata.active_proxies(router=True)
        existing |= router_intent.recorded_ids(self.conf.state_path)
        router_ids = self.plugin.get_router_ids()
        if not isinstance(router_ids, list):
            raise exceptions.InvalidPayload('get_router_ids did not return a list')
        valid = []
        for router_id in router_ids:
            try:
                valid.append(naming.validate_id(router_id, 'router'))
            except exceptions.InvalidIdentifier as exc:
                LOG.error('Skipping router from the server: %s', exc)
        returned = set()
        for router_id, router in self._fetch_routers(valid):
            returned.add(router_id)  # even if unusable: not stale
            if router is not None:
                self.enqueue(router_id, APPLY, SyncSnapshot(router, as_of),
                             work_queue.PRIORITY_SYNC)
        # Scheduled here but not returned: admin-down (the server leaves
        # those out of sync_routers) or gone meanwhile.
        for router_id in existing - returned:
            self.enqueue(router_id, DELETE, SyncSnapshot(None, as_of),
                         work_queue.PRIORITY_SYNC)
        for router_id in set(self.unsupported) - returned:
            self.unsupported.pop(router_id, None)  # refused, and gone since
        for router_id, seen in list(self.rpc_seen.items()):
            if seen < as_of:
                self.rpc_seen.pop(router_id, None)  # older than this snapshot

    def _fetch_routers(self, router_ids: list[str]
                       ) -> list[tuple[str, l3_api.Router | None]]:
        """``sync_routers`` in chunks that shrink on timeouts, as Neutron's agent does.

        :returns: (id, router) of each router returned; router None when its
            entry is unusable (logged).
        :raises oslo_messaging.MessagingTimeout: even the smallest chunk timed out.
        """
        wanted = set(router_ids)
        routers: list[tuple[str, l3_api.Router | None]] = []
        start = 0
        while start < len(router_ids):
            chunk = router_ids[start:start + self.sync_chunk_size]
            try:
                reply = self.plugin.sync_routers(chunk)
            except oslo_messaging.MessagingTimeout:
                if self.sync_chunk_size <= SYNC_ROUTERS_MIN_CHUNK_SIZE:
                    raise
                self.sync_chunk_size = max(self.sync_chunk_size // 2,
                                           SYNC_ROUTERS_MIN_CHUNK_SIZE)
                LOG.warning('sync_routers of %d routers timed out; asking for %d at a '
                            'time', len(chunk), self.sync_chunk_size)
                continue
            if not isinstance(reply, list):
                raise exceptions.InvalidPayload('sync_routers did not return a list')
            routers += [(r['id'], self._parse(r)) for r in reply
                        if isinstance(r, dict) and r.get('id') in wanted]
            start += len(chunk)
        self.sync_chunk_size = min(self.sync_chunk_size + SYNC_ROUTERS_MIN_CHUNK_SIZE,
                                   SYNC_ROUTERS_MAX_CHUNK_SIZE)
        return routers

    def process_update(self, update: work_queue.ResourceUpdate) -> None:
        router_id = update.resource_id
        router = update.payload
        if isinstance(router, SyncSnapshot):
            if self.rpc_seen.get(router_id, router.as_of) > router.as_of:
                LOG.debug('Router %s: full-sync snapshot older than its last RPC '
                          'event; skipped', router_id)
                return
            router = router.router
        if update.action == DELETE:
            self._forget(router_id)
            return
        if update.action == REFRESH:
            routers = self.plugin.sync_routers([router_id])
            raw = next((r for r in routers or [] if isinstance(r, dict)
                        and r.get('id') == router_id), None)
            if raw is None:
                self._forget(router_id)
                return
            router = self._parse(raw)
            if router is None:
                return  # left as it is; logged
        if not router.admin_state_up:
            LOG.info('Router %s is administratively down; removing it', router_id)
            self._forget(router_id)
            return
        reason = self.router_driver.unsupported_reason(router)
        if reason is not None:
            self._refuse(router_id, router, reason)
            return
        self.unsupported.pop(router_id, None)
        if not router.has_gateway and not self.conf.handle_internal_only_routers:
            LOG.info('Router %s has no gateway; not handled here', router_id)
            self._delete_router(router_id)
            return
        started = time.monotonic()
        self._record_intent(router)
        try:
            statuses = self.router_driver.process_router(router)
        except l3_api.RouterProcessingError as exc:
            self.routers[router_id] = router
            if exc.fip_statuses:
                self.plugin.update_floatingip_statuses(router_id, exc.fip_statuses)
            raise
        self.routers[router_id] = router
        if self.metadata is not None:
            # After the namespace and its redirect exist; adopted if running.
            self.metadata.spawn_proxy(naming.router_namespace(router_id), router_id,
                                      router=True)
        if statuses:
            self.plugin.update_floatingip_statuses(router_id, statuses)
        # As Neutron's agent does: one line per router update, with its time.
        LOG.info('Finished router update for %s in %.3f s', router_id,
                 time.monotonic() - started)

    @staticmethod
    def _parse(raw: dict[str, Any]) -> l3_api.Router | None:
        """The edge: a ``sync_routers`` entry validated once, for the driver.

        An entry that is unusable as a whole fails only its router, which is
        left on the host as it is (neither built from bad data nor deleted);
        the next update or full sync reads it again.
        """
        try:
            return l3_api.Router.from_rpc(raw)
        except (exceptions.InvalidPayload, exceptions.InvalidIdentifier) as exc:
            LOG.error('Router %s from the server is unusable, left as it is: %s',
                      raw.get('id'), exc)
            return None

    def _record_intent(self, router: l3_api.Router) -> None:
        """What the driver is asked to build, for agentkit-doctor (router_intent).

        A record that cannot be written costs the doctor its comparison, not
        the router: logged, and the router is applied all the same. The same
        router again (a full sync, a retry) is not written again.
        """
        if self.routers.get(router.id) == router and os.path.exists(
                router_intent.path(self.conf.state_path, router.id)):
            return
        try:
            router_intent.write(self.conf.state_path, router)
        except OSError as exc:
            LOG.warning('Router %s: cannot record what the server asked for: %s',
                        router.id, exc)

    def _refuse(self, router_id: str, router: l3_api.Router, reason: str) -> None:
        """Never build a router the driver cannot build right; say so, once."""
        router_intent.remove(self.conf.state_path, router_id)  # not built here
        known = self.unsupported.get(router_id) == reason
        if not known:
            LOG.error('Router %s is not built on this host: %s', router_id, reason)
        self.unsupported[router_id] = reason
        if router_id in self.routers or not known and (
                router_id in self.router_driver.existing_routers()):
            self._delete_router(router_id)  # e.g. converted to HA while down
        shown = {f.id: f.status for f in router.floating_ips}
        shown.update(router.unusable_floating_ips)
        statuses = {fip_id: l3_api.FIP_ERROR for fip_id, status in shown.items()
                    if status != l3_api.FIP_ERROR}
        if statuses:
            self.plugin.update_floatingip_statuses(router_id, statuses)

    def _forget(self, router_id: str) -> None:
        """The router is no longer ours (deleted, unscheduled or down)."""
        self.unsupported.pop(router_id, None)
        self._delete_router(router_id)

    def _delete_router(self, router_id: str) -> None:
        if self.metadata is not None:
            self.metadata.destroy_proxy(router_id)  # before its namespace goes
        self.router_driver.delete_router(router_id)
        router_intent.remove(self.conf.state_path, router_id)
        self.routers.pop(router_id, None)
