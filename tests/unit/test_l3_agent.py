"""The L3 agent's decisions with RPC and the router driver mocked.

Which routers are built, refused or removed, how the full sync chunks
``sync_routers`` and picks stale routers, and which routers a network
update touches. The router dicts follow the shape ``sync_routers`` of
neutron-server 29 returns (only the keys these decisions read).
"""

from __future__ import annotations

import os
import uuid
from typing import Any
from unittest import mock

import fixtures
import oslo_messaging

from agentkit.agent import l3
from agentkit.agent import router_intent
from agentkit.agent import work_queue
from agentkit.api import l3 as l3_api
from drivers.l3 import namespace
from tests import base


def _uuid() -> str:
    return str(uuid.uuid4())


def port(network_id: str | None = None) -> dict[str, Any]:
    return {'id': _uuid(), 'network_id': network_id or _uuid(),
            'mac_address': 'fa:16:3e:00:00:01', 'mtu': 1450,
            'fixed_ips': [{'subnet_id': _uuid(), 'ip_address': '10.0.0.1', 'prefixlen': 24}],
            'subnets': []}


def floating_ip(status: str = 'DOWN') -> dict[str, Any]:
    return {'id': _uuid(), 'status': status, 'floating_ip_address': '172.24.4.10',
            'fixed_ip_address': '10.0.0.10', 'port_id': _uuid()}


def router(router_id: str | None = None, network_id: str | None = None,
           **attrs: Any) -> dict[str, Any]:
    return {'id': router_id or _uuid(), 'admin_state_up': True, 'ha': False,
            'distributed': False, 'gw_port': port(), '_interfaces': [port(network_id)],
            '_floatingips': [], 'routes': [], **attrs}


class FakeServer:
    """get_router_ids / sync_routers over a dict, recording the calls."""

    def __init__(self) -> None:
        self.routers: dict[str, dict[str, Any]] = {}
        self.scheduled: list[str] = []
        self.calls: list[list[str]] = []
        self.timeouts_above: int | None = None
        self.statuses: list[tuple[str, dict[str, str]]] = []

    def get_router_ids(self) -> list[str]:
        return list(self.scheduled)

    def sync_routers(self, router_ids: list[str]) -> list[dict[str, Any]]:
        self.calls.append(list(router_ids))
        if self.timeouts_above is not None and len(router_ids) > self.timeouts_above:
            raise oslo_messaging.MessagingTimeout('too many routers at once')
        # neutron-server leaves admin-down routers out (get_sync_data active=True).
        return [dict(self.routers[r]) for r in router_ids
                if r in self.routers and self.routers[r]['admin_state_up']]

    def update_floatingip_statuses(self, router_id: str, statuses: dict[str, str]) -> None:
        self.statuses.append((router_id, statuses))


class L3AgentTestCase(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.agent = l3.L3Agent.__new__(l3.L3Agent)
        self.state_path = self.useFixture(fixtures.TempDir()).path
        self.agent.conf = mock.Mock(handle_internal_only_routers=True,
                                    state_path=self.state_path)
        self.agent.queue = work_queue.WorkQueue(self.agent.process_update)
        self.agent.routers = {}
        self.agent.unsupported = {}
        self.agent.sync_chunk_size = l3.SYNC_ROUTERS_MAX_CHUNK_SIZE
        self.agent.rpc_seen = {}
        self.agent.metadata = None
        self.server = FakeServer()
        self.agent.plugin = self.server
        self.driver = mock.Mock(spec=namespace.NamespaceRouterDriver)
        self.driver.existing_routers.return_value = set()
        self.driver.process_router.return_value = {}
        # The ABC's own refusal logic, not a mock of it.
        self.driver.unsupported_reason.side_effect = (
            lambda r: l3_api.RouterDriver.unsupported_reason(self.driver, r))
        self.agent.router_driver = self.driver

    def drain(self) -> None:
        """Run what is queued, one update at a time, in this thread."""
        while True:
            update = self._pop()
            if update is None:
                return
            self.agent.process_update(update)

    def _pop(self) -> work_queue.ResourceUpdate | None:
        q = self.agent.queue
        with q._cond:
            if not q._pending:
                return None
            rid = min(q._pending, key=lambda r: (q._pending[r][1].priority, q._pending[r][0]))
            return q._pending.pop(rid)[1]

    def built(self) -> list[str]:
        routers = [c.args[0] for c in self.driver.process_router.call_args_list]
        # The driver gets the validated router, never the RPC dict.
        self.assertTrue(all(isinstance(r, l3_api.Router) for r in routers))
        return [r.id for r in routers]

    def deleted(self) -> list[str]:
        return [c.args[0] for c in self.driver.delete_router.call_args_list]


class FullSyncTest(L3AgentTestCase):

    def test_150_routers_in_chunks(self) -> None:
        for _ in range(150):
            r = router()
            self.server.routers[r['id']] = r
            self.server.scheduled.append(r['id'])
        self.agent.sync_chunk_size = 64
        self.agent.sync_state()
        self.assertEqual([64, 64, 22], [len(c) for c in self.server.calls])
        self.drain()
        self.assertEqual(set(self.server.scheduled), set(self.built()))
        self.assertEqual([], self.deleted())

    def test_chunk_shrinks_on_timeouts_and_grows_back(self) -> None:
        for _ in range(150):
            r = router()
            self.server.routers[r['id']] = r
            self.server.scheduled.append(r['id'])
        self.server.timeouts_above = 40
        self.agent.sync_state()
        # 256 -> 128 -> 64 -> 32, then 32 at a time.
        self.assertEqual([150, 128, 64, 32, 32, 32, 32, 22],
                         [len(c) for c in self.server.calls])
        self.assertEqual(64, self.agent.sync_chunk_size)  # +32 after a good sync
        self.drain()
        self.assertEqual(150, len(set(self.built())))
        self.assertIn('sync_routers of 64 routers timed out; asking for 32', self.log.output)

    def test_timeout_at_the_smallest_chunk_fails_the_sync(self) -> None:
        r = router()
        self.server.routers[r['id']] = r
        self.server.scheduled = [r['id']]
        self.server.timeouts_above = 0
        self.assertRaises(oslo_messaging.MessagingTimeout, self.agent.sync_state)
        self.assertEqual([], self.deleted())

    def test_stale_and_admin_down_routers_are_removed(self) -> None:
        up, down, gone = router(), router(admin_state_up=False), _uuid()
        for r in (up, down):
            self.server.routers[r['id']] = r
        self.server.scheduled = [up['id'], down['id']]
        self.driver.existing_routers.return_value = {up['id'], down['id'], gone}
        self.agent.sync_state()
        self.drain()
        self.assertEqual([up['id']], self.built())
        self.assertEqual({down['id'], gone}, set(self.deleted()))

    def test_router_scheduled_during_the_sync_is_not_deleted(self) -> None:
        """The host is looked at before the server is asked."""
        new = router()
        self.server.routers[new['id']] = new

        def ids() -> list[str]:
            # The router is scheduled and built between the two steps.
            self.driver.existing_routers.return_value = {new['id']}
            return []
        self.server.get_router_ids = ids  # type: ignore[method-assign]
        self.agent.sync_state()
        self.drain()
        self.assertEqual([], self.deleted())

    def test_sync_snapshot_does_not_replace_a_newer_rpc_update(self) -> None:
        r = router()
        self.server.routers[r['id']] = r
        self.server.scheduled = [r['id']]
        self.agent.enqueue(r['id'], l3.REFRESH)
        self.agent.sync_state()
        update = self._pop()
        self.assertEqual((l3.REFRESH, work_queue.PRIORITY_RPC),
                         (update.action, update.priority))

    def test_snapshot_older_than_a_processed_rpc_update_is_dropped(self) -> None:
        """router_deleted handled while the sync ran: its snapshot must not rebuild it."""
        r = router()
        self.server.routers[r['id']] = r
        self.server.scheduled = [r['id']]
        real_sync_routers = self.server.sync_routers

        def sync_routers(router_ids: list[str]) -> list[dict[str, Any]]:
            reply = real_sync_routers(router_ids)
            # Meanwhile the router is deleted and the agent handles the cast.
            del self.server.routers[r['id']]
            l3.L3RpcCallbacks(self.agent).router_deleted({}, router_id=r['id'])
            self.agent.process_update(self._pop())
            return reply
        self.server.sync_routers = sync_routers  # type: ignore[method-assign]
        self.agent.sync_state()
        self.drain()
        self.assertEqual([], self.built())
        self.assertEqual([r['id']], self.deleted())

    def test_a_newer_sync_replaces_an_older_syncs_pending_update(self) -> None:
        r = router()
        self.server.routers[r['id']] = r
        self.server.scheduled = [r['id']]
        self.agent.enqueue(r['id'], l3.DELETE, l3.SyncSnapshot(None, 0.0),
                           work_queue.PRIORITY_SYNC)  # e.g. a retry of the last sync
        self.agent.sync_state()
        self.drain()
        self.assertEqual([r['id']], self.built())
        self.assertEqual([], self.deleted())

    def test_audit_at_rest_asks_and_reports_nothing(self) -> None:
        """get_router_ids and one sync_routers chunk; no status that did not change."""
        for _ in range(5):
            r = router(_floatingips=[floating_ip()])
            self.server.routers[r['id']] = r
            self.server.scheduled.append(r['id'])

        def process_router(r: l3_api.Router) -> dict[str, str]:
            # The driver's contract: only statuses that differ from the payload's.
            return {f.id: 'ACTIVE' for f in r.floating_ips if f.status != 'ACTIVE'}
        self.driver.process_router.side_effect = process_router
        real_update = self.server.update_floatingip_statuses

        def update(router_id: str, statuses: dict[str, str]) -> None:
            real_update(router_id, statuses)
            for fip in self.server.routers[router_id]['_floatingips']:
                fip['status'] = statuses.get(fip['id'], fip['status'])
        self.server.update_floatingip_statuses = update  # type: ignore[method-assign]
        self.agent.sync_state()
        self.drain()
        self.assertEqual(5, len(self.server.statuses))
        self.server.calls.clear()
        self.server.statuses.clear()
        for _ in range(2):
            self.agent.audit_state()
            self.drain()
        self.assertEqual([sorted(self.server.scheduled)] * 2,
                         [sorted(c) for c in self.server.calls])
        self.assertEqual([], self.server.statuses)
        self.assertEqual([], self.deleted())

    def test_unusable_entry_fails_only_its_router(self) -> None:
        """Parsed at the edge: one bad entry is neither built nor deleted."""
        good, bad = router(), router(_interfaces='junk')
        for r in (good, bad):
            self.server.routers[r['id']] = r
        self.server.scheduled = [good['id'], bad['id']]
        self.driver.existing_routers.return_value = {bad['id']}
        self.agent.sync_state()
        self.drain()
        self.assertEqual([good['id']], self.built())
        self.assertEqual([], self.deleted())
        self.assertIn('Router %s from the server is unusable, left as it is: '
                      % bad['id'], self.log.output)
        self.assertIn('_interfaces must be a list', self.log.output)

    def test_refused_routers_gone_from_the_server_are_no_longer_reported(self) -> None:
        ha = router(ha=True)
        self.server.routers[ha['id']] = ha
        self.server.scheduled = [ha['id']]
        self.agent.sync_state()
        self.drain()
        self.assertIn(ha['id'], self.agent.unsupported)
        del self.server.routers[ha['id']]
        self.server.scheduled = []  # unscheduled without the agent hearing of it
        self.agent.sync_state()
        self.drain()
        self.assertEqual({}, self.agent.unsupported)


class RouterDecisionsTest(L3AgentTestCase):

    def process(self, r: dict[str, Any]) -> None:
        self.server.routers[r['id']] = r
        self.agent.process_update(work_queue.ResourceUpdate(r['id'], l3.REFRESH))

    def test_ha_and_distributed_routers_are_refused_with_a_reason(self) -> None:
        fip = {'id': _uuid(), 'status': 'DOWN'}  # unusable, its id is still reported
        ha = router(ha=True, _floatingips=[fip])
        dvr = router(distributed=True)
        self.process(ha)
        self.process(dvr)
        self.assertEqual([], self.built())
        self.assertEqual([(ha['id'], {fip['id']: 'ERROR'})], self.server.statuses)
        self.assertIn('Router %s is not built on this host: HA routers' % ha['id'],
                      self.log.output)
        self.agent.get_configurations = l3.L3Agent.get_configurations.__get__(self.agent)
        self.driver.get_configurations.return_value = {}
        self.agent.conf = mock.Mock(agent_mode='legacy', interface_driver='openvswitch',
                                    state_path=self.state_path)
        conf = self.agent.get_configurations()
        self.assertEqual(2, conf['unsupported_routers'])
        self.assertIn('distributed (DVR)', conf['unsupported_router_reasons'][dvr['id']])
        # Refused again on the next update: logged once only.
        self.process(ha)
        self.assertEqual(1, self.log.output.count('Router %s is not built' % ha['id']))

    def test_router_converted_to_ha_is_taken_down(self) -> None:
        r = router()
        self.process(r)
        self.assertEqual([r['id']], self.built())
        self.process(dict(r, ha=True))
        self.assertEqual([r['id']], self.deleted())
        self.assertNotIn(r['id'], self.agent.routers)

    def test_refused_router_left_on_the_host_by_an_earlier_run_is_removed(self) -> None:
        r = router(ha=True)
        self.driver.existing_routers.return_value = {r['id']}
        self.process(r)
        self.assertEqual([r['id']], self.deleted())
        self.assertEqual([], self.built())

    def test_deleted_router_is_forgotten_also_when_refused(self) -> None:
        r = router(distributed=True)
        self.process(r)
        self.assertIn(r['id'], self.agent.unsupported)
        self.agent.process_update(work_queue.ResourceUpdate(r['id'], l3.DELETE))
        self.assertEqual({}, self.agent.unsupported)

    def test_admin_down_router_in_a_payload_is_removed(self) -> None:
        r = router()
        self.process(r)
        self.agent.process_update(work_queue.ResourceUpdate(
            r['id'], l3.APPLY, payload=l3_api.Router.from_rpc(dict(r, admin_state_up=False))))
        self.assertEqual([r['id']], self.deleted())
        self.assertNotIn(r['id'], self.agent.routers)

    def test_unusable_refresh_leaves_the_router_as_it_is(self) -> None:
        r = router()
        self.process(r)
        self.process(dict(r, routes={'destination': '10.0.0.0/8'}))
        self.assertEqual([r['id']], self.built())
        self.assertEqual([], self.deleted())
        self.assertIn(r['id'], self.agent.routers)
        self.assertIn('routes must be a list', self.log.output)

    def test_bad_parts_are_left_out_but_the_router_is_built(self) -> None:
        r = router()
        r['_interfaces'].append({'id': _uuid(), 'network_id': _uuid()})  # no MAC, no IPs
        r['_floatingips'] = [{'id': _uuid(), 'status': 'DOWN'}]
        self.process(r)
        built = self.driver.process_router.call_args.args[0]
        self.assertEqual([r['_interfaces'][0]['id']], [p.id for p in built.interfaces])
        self.assertEqual({r['_interfaces'][1]['id']}, built.unusable_interface_ids)
        self.assertEqual({r['_floatingips'][0]['id']: 'DOWN'}, built.unusable_floating_ips)

    def test_partly_failed_router_reports_statuses_and_retries(self) -> None:
        r = router()
        self.driver.process_router.side_effect = l3_api.RouterProcessingError(
            r['id'], ['extra route 10.60.0.0/24 via 10.99.0.1: unreachable'],
            {'f1': 'ACTIVE'})
        self.assertRaises(l3_api.RouterProcessingError, self.process, r)
        self.assertEqual([(r['id'], {'f1': 'ACTIVE'})], self.server.statuses)
        self.assertIn(r['id'], self.agent.routers)

    def test_network_update_refreshes_only_attached_routers(self) -> None:
        net = _uuid()
        attached, other = router(network_id=net), router()
        gateway_only = router()
        gateway_only['gw_port']['network_id'] = net
        for r in (attached, other, gateway_only):
            self.process(r)
        self.agent.enqueue = mock.Mock()
        l3.L3RpcCallbacks(self.agent).network_update(
            {}, network={'id': net, 'mtu': 1400})
        self.assertEqual({attached['id'], gateway_only['id']},
                         {c.args[0] for c in self.agent.enqueue.call_args_list})
        self.assertEqual({l3.REFRESH}, {c.args[1] for c in self.agent.enqueue.call_args_list})


class RouterIntentTest(L3AgentTestCase):
    """The record agentkit-doctor reads: what the driver was asked to build."""

    def test_recorded_on_apply_removed_with_the_router(self) -> None:
        fip = floating_ip()
        r = router(enable_snat=False, _floatingips=[fip],
                   routes=[{'destination': '10.9.0.0/16', 'nexthop': '10.0.0.9'}])
        self.server.routers[r['id']] = r
        self.agent.enqueue(r['id'], l3.REFRESH)
        self.drain()
        recorded = router_intent.read(self.state_path, r['id'])
        assert recorded is not None
        # Exactly what the driver got, read back through the type's own record.
        self.assertEqual(self.driver.process_router.call_args.args[0], recorded.router)
        self.assertFalse(recorded.router.enable_snat)
        self.assertEqual([('172.24.4.10', '10.0.0.10')],
                         [(f.floating_ip, f.fixed_ip) for f in recorded.router.floating_ips])
        self.assertEqual('sync_routers', recorded.source)
        mode = os.stat(recorded.path).st_mode & 0o777
        self.assertEqual((0o600, 0o700), (mode, os.stat(os.path.dirname(recorded.path))
                                          .st_mode & 0o777))
        # The same router again (a full sync) is not written again.
        written = os.stat(recorded.path).st_mtime_ns
        os.utime(recorded.path, ns=(written - 10 ** 9, written - 10 ** 9))
        self.agent.enqueue(r['id'], l3.REFRESH)
        self.drain()
        self.assertEqual(written - 10 ** 9, os.stat(recorded.path).st_mtime_ns)
        r['_floatingips'] = []
        self.agent.enqueue(r['id'], l3.REFRESH)
        self.drain()
        self.assertEqual((), router_intent.read(self.state_path, r['id']).router.floating_ips)
        self.agent.enqueue(r['id'], l3.DELETE)
        self.drain()
        self.assertIsNone(router_intent.read(self.state_path, r['id']))

    def test_refused_router_has_no_record(self) -> None:
        r = router(ha=True)
        router_intent.write(self.state_path, l3_api.Router.from_rpc(router(r['id'])))
        self.server.routers[r['id']] = r
        self.agent.enqueue(r['id'], l3.REFRESH)
        self.drain()
        self.assertEqual(set(), router_intent.recorded_ids(self.state_path))

    def test_a_record_without_its_router_goes_in_a_full_sync(self) -> None:
        gone = l3_api.Router.from_rpc(router())
        router_intent.write(self.state_path, gone)
        self.agent.sync_state()
        self.drain()
        self.assertEqual([gone.id], self.deleted())
        self.assertEqual(set(), router_intent.recorded_ids(self.state_path))

    def test_a_record_that_cannot_be_written_does_not_fail_the_router(self) -> None:
        r = router()
        self.server.routers[r['id']] = r
        with open(os.path.join(self.state_path, router_intent.DIRECTORY), 'w'):
            pass   # a file where the directory should be
        self.agent.enqueue(r['id'], l3.REFRESH)
        self.drain()
        self.assertEqual([r['id']], self.built())
        self.assertIn('cannot record what the server asked for', self.log.output)

    def test_unreadable_record_is_a_clear_error(self) -> None:
        r = l3_api.Router.from_rpc(router())
        router_intent.write(self.state_path, r)
        with open(router_intent.path(self.state_path, r.id), 'w') as f:
            f.write('{"router": {"id": 5}}')
        exc = self.assertRaises(ValueError, router_intent.read, self.state_path, r.id)
        self.assertIn('not a router record', str(exc))


class AgentUpdatedTest(base.TestCase):

    def test_set_up_again_triggers_a_full_resync(self) -> None:
        agent = mock.Mock()
        callbacks = l3.L3RpcCallbacks(agent)
        callbacks.agent_updated({}, payload={'admin_state_up': False})
        agent.schedule_resync.assert_not_called()
        callbacks.agent_updated({}, payload={'admin_state_up': True})
        agent.schedule_resync.assert_called_once_with('agent set administratively up')
        callbacks.agent_updated({}, payload={'admin_state_up': 'yes'})  # malformed
        self.assertEqual(1, agent.schedule_resync.call_count)
