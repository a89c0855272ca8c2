"""L2 agent at rest and at scale: batched RPC, report once, scoped fanouts, bulk audit.

The agent is built without its start-up (drivers and server are mocks, as
in test_l2_agent_refusals); what is counted are the calls to the server.
"""

import threading
import uuid
from unittest import mock

from agentkit.agent import l2
from agentkit.agent import work_queue as wq
from tests.unit import test_l2_agent_refusals as refusals

details = refusals.details


AGENT_ID = 'agentkit-l2-host1'


def port_object(d, status='ACTIVE', host='host1'):
    """The Port object neutron-server's bulk_pull answers for port details ``d``."""
    def ovo(name, data):
        return {'versioned_object.name': name, 'versioned_object.version': '1.0',
                'versioned_object.namespace': 'versionedobjects',
                'versioned_object.data': data}
    return ovo('Port', {
        'id': d['port_id'], 'network_id': d['network_id'], 'status': status,
        'mac_address': d['mac_address'], 'admin_state_up': d['admin_state_up'],
        'device_owner': d['device_owner'],
        'fixed_ips': [ovo('IPAllocation', {'ip_address': ip['ip_address']})
                      for ip in d['fixed_ips']],
        'bindings': [ovo('PortBinding', {'host': host, 'status': 'ACTIVE'})],
        'binding_levels': [ovo('PortBindingLevel', {
            'host': host, 'level': 0, 'segment': ovo('NetworkSegment', {
                'network_type': d['network_type'],
                'segmentation_id': d['segmentation_id'],
                'physical_network': d['physical_network']})})]})


class QuietAgentTestCase(refusals.AgentTestCase):

    def make_agent(self, ports=(), real_queue=False):
        agent = super().make_agent()
        self.details = {p: details(p) for p in ports}
        self.objects = {}

        def serve(devices, agent_id):
            return {'devices': [self.details.get(d, {'device': d}) for d in devices],
                    'failed_devices': []}

        def pull(resource, version, filters):
            if resource == 'Trunk':
                return []
            return [self.objects[p] for p in filters['id'] if p in self.objects]
        agent.plugin.get_devices_details_list_and_failed_devices.side_effect = serve
        agent.plugin.bulk_pull.side_effect = pull
        agent.plugin.update_device_list.side_effect = \
            lambda up, down, agent_id: {'devices_up': up, 'devices_down': down,
                                        'failed_devices_up': [],
                                        'failed_devices_down': []}
        agent.mech.list_plugged_ports.return_value = set(ports)
        agent.security_groups.audit.return_value = False
        agent.conf = mock.Mock()
        agent.conf.l2.tunnel_types = []
        if not real_queue and isinstance(agent.queue, mock.Mock):
            agent.queue.in_progress.return_value = set()
        if real_queue:
            agent.queue = wq.WorkQueue(agent.process_update, workers=4, name='l2')
            agent.queue.enable_batching(agent.process_wire_batch, (l2.WIRE,),
                                        window=l2.WIRE_BATCH_WINDOW)
            self.addCleanup(agent.queue.stop, 2)
        return agent

    def calls(self, agent):
        return {name: getattr(agent.plugin, name).call_count for name in (
            'get_devices_details_list_and_failed_devices', 'update_device_list',
            'bulk_pull', 'tunnel_sync')}

    def reported_up(self, agent):
        return [p for c in agent.plugin.update_device_list.call_args_list
                for p in c.args[0]]


class TestBatching(QuietAgentTestCase):

    def test_ports_plugged_together_cost_one_call_of_each_kind(self):
        ports = [str(uuid.uuid4()) for _ in range(20)]
        agent = self.make_agent(ports, real_queue=True)
        agent.queue.start()
        for port in ports:  # as the switch's watcher delivers them, one by one
            agent._on_plugged(port)
        self.assertTrue(agent.queue.wait_idle(5))
        self.assertEqual(20, agent.mech.wire_port.call_count)
        agent.plugin.get_devices_details_list_and_failed_devices.assert_called_once_with(
            sorted(ports), AGENT_ID)
        agent.plugin.update_device_list.assert_called_once_with(sorted(ports), [], AGENT_ID)
        agent.security_groups.prepare_ports.assert_called_once()
        self.assertEqual(20, len(agent.security_groups.prepare_ports.call_args.args[0]))
        # and one trunk lookup for the 20 new ports
        self.assertEqual(1, agent.plugin.bulk_pull.call_count)

    def test_one_port_failing_leaves_the_others_done_and_is_retried_alone(self):
        good, bad = str(uuid.uuid4()), str(uuid.uuid4())
        agent = self.make_agent([good, bad])
        agent.mech.wire_port.side_effect = lambda b: (
            (_ for _ in ()).throw(OSError('ovsdb hiccup')) if b.port_id == bad else None)
        failures = agent.process_wire_batch([wq.ResourceUpdate(good, l2.WIRE),
                                             wq.ResourceUpdate(bad, l2.WIRE)])
        self.assertEqual({bad}, set(failures))
        self.assertIsInstance(failures[bad], OSError)
        agent.plugin.update_device_list.assert_called_once_with([good], [], AGENT_ID)
        self.assertEqual({good: l2.UP}, agent.reported)

    def test_ports_the_server_did_not_take_are_retried(self):
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        agent = self.make_agent([a, b])
        agent.plugin.update_device_list.side_effect = lambda up, down, agent_id: {
            'devices_up': [a], 'failed_devices_up': [b], 'devices_down': [],
            'failed_devices_down': []}
        failures = agent.process_wire_batch([wq.ResourceUpdate(a, l2.WIRE),
                                             wq.ResourceUpdate(b, l2.WIRE)])
        self.assertEqual({b}, set(failures))
        self.assertEqual({a: l2.UP}, agent.reported)

    def test_a_failing_report_fails_every_port_it_carried(self):
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        agent = self.make_agent([a, b])
        agent.plugin.update_device_list.side_effect = TimeoutError('no reply')
        failures = agent.process_wire_batch([wq.ResourceUpdate(a, l2.WIRE),
                                             wq.ResourceUpdate(b, l2.WIRE)])
        self.assertEqual({a, b}, set(failures))
        self.assertEqual({}, agent.reported)


class TestWorkQueueBatches(refusals.base.TestCase):

    def test_a_burst_joins_one_batch_and_failures_retry_alone(self):
        batches = []
        tried = {}

        def handle(updates):
            batches.append(sorted(u.resource_id for u in updates))
            failures = {}
            for u in updates:
                tried[u.resource_id] = tried.get(u.resource_id, 0) + 1
                if u.resource_id == 'p3' and tried['p3'] == 1:
                    failures['p3'] = RuntimeError('once')
            return failures
        q = wq.WorkQueue(lambda u: None, workers=2)
        q.enable_batching(handle, ('wire',), window=0.1)
        self.addCleanup(q.stop, 2)
        q.start()
        for i in range(5):
            q.put(wq.ResourceUpdate(f'p{i}', 'wire'))
        self.assertTrue(q.wait_idle(5))
        self.assertEqual([['p0', 'p1', 'p2', 'p3', 'p4'], ['p3']], batches)

    def test_one_batch_in_flight_lets_arrivals_join_the_next(self):
        release = threading.Event()
        batches = []
        others = []

        def handle(updates):
            batches.append(sorted(u.resource_id for u in updates))
            if len(batches) == 1:
                release.wait(5)
            return {}
        q = wq.WorkQueue(lambda u: others.append(u.resource_id), workers=4)
        q.enable_batching(handle, ('wire',), window=0.0, in_flight=1)
        self.addCleanup(q.stop, 2)
        q.start()
        q.put(wq.ResourceUpdate('p0', 'wire'))
        self.assertTrue(refusals.base.eventually(lambda: batches), 'the first batch')
        for i in range(1, 6):
            q.put(wq.ResourceUpdate(f'p{i}', 'wire'))
        q.put(wq.ResourceUpdate('n1', 'unwire'))  # not held back by the batch
        self.assertTrue(refusals.base.eventually(lambda: others), 'the unbatched update')
        self.assertEqual([['p0']], batches)  # three idle workers did not start one
        release.set()
        self.assertTrue(q.wait_idle(5))
        self.assertEqual([['p0'], ['p1', 'p2', 'p3', 'p4', 'p5']], batches)

    def test_other_actions_are_not_batched(self):
        seen = []
        q = wq.WorkQueue(lambda u: seen.append(u.resource_id), workers=1)
        q.enable_batching(lambda updates: {}, ('wire',), window=0.0)
        self.addCleanup(q.stop, 2)
        for i in range(3):
            q.put(wq.ResourceUpdate(f'r{i}', 'unwire'))
        q.start()
        self.assertTrue(q.wait_idle(5))
        self.assertEqual(['r0', 'r1', 'r2'], sorted(seen))


class TestReportOnce(QuietAgentTestCase):

    def test_unchanged_state_is_not_reported_again(self):
        port = str(uuid.uuid4())
        agent = self.make_agent([port])
        # Wired from a full sync's payload, then again from the same details
        # (no new fetch, so the server still has it ACTIVE): one report.
        payload = (float('inf'), self.details[port])
        agent.process_wire_batch([wq.ResourceUpdate(port, l2.WIRE, payload=payload)])
        agent.process_wire_batch([wq.ResourceUpdate(port, l2.WIRE, payload=payload)])
        self.assertEqual(2, agent.mech.wire_port.call_count)
        self.assertEqual([port], self.reported_up(agent))

    def test_a_details_fetch_needs_a_new_report(self):
        # neutron-server moves an ACTIVE port back to BUILD when it answers
        # its details: the port must be reported up again, once.
        port = str(uuid.uuid4())
        agent = self.make_agent([port])
        agent._wire(port)
        agent._wire(port)  # a port_update: details fetched again
        self.assertEqual([port, port], self.reported_up(agent))

    def test_admin_down_port_is_reported_down_once(self):
        port = str(uuid.uuid4())
        agent = self.make_agent([port])
        self.details[port]['admin_state_up'] = False
        agent._wire(port)
        agent._wire(port)
        agent._unwire(port)
        agent.plugin.update_device_list.assert_called_once_with([], [port], AGENT_ID)

    def test_unplug_reports_down_once(self):
        port = str(uuid.uuid4())
        agent = self.make_agent([port])
        agent._wire(port)
        agent._unwire(port)
        agent._unwire(port)  # port_delete after the unplug
        self.assertEqual([mock.call([port], [], AGENT_ID), mock.call([], [port], AGENT_ID)],
                         agent.plugin.update_device_list.call_args_list)

    def test_restarted_agent_reports_each_port_once(self):
        ports = [str(uuid.uuid4()) for _ in range(3)]
        agent = self.make_agent(ports)
        agent.sync_state()
        updates = [c.args[0] for c in agent.queue.put.call_args_list]
        self.assertEqual({}, agent.process_wire_batch(updates))
        agent.plugin.update_device_list.assert_called_once_with(sorted(ports), [], AGENT_ID)
        self.assertEqual(1, agent.plugin.get_devices_details_list_and_failed_devices.call_count)


class TestFanoutScope(QuietAgentTestCase):

    def setUp(self):
        super().setUp()
        self.net_a, self.net_b = str(uuid.uuid4()), str(uuid.uuid4())
        self.pa, self.pb = str(uuid.uuid4()), str(uuid.uuid4())
        self.agent = self.make_agent([self.pa, self.pb])
        self.agent.wired = {self.pa: self.net_a, self.pb: self.net_b}
        self.agent.plugged_ports = {self.pa, self.pb}
        self.callbacks = l2.L2RpcCallbacks(self.agent)

    def queued(self):
        return [(c.args[0].resource_id, c.args[0].action)
                for c in self.agent.queue.put.call_args_list]

    def test_network_update_touches_only_that_network(self):
        self.callbacks.network_update(None, network={'id': self.net_a})
        self.assertEqual([(self.pa, l2.WIRE)], self.queued())

    def test_port_update_touches_only_that_port(self):
        self.callbacks.port_update(None, port={'id': self.pb})
        self.assertEqual([(self.pb, l2.WIRE)], self.queued())

    def test_security_group_fanouts_with_noop_firewall_do_nothing(self):
        from agentkit.agent import security_groups
        noop = mock.Mock(needs_security_group_info=False)
        self.agent.security_groups = security_groups.SecurityGroupAgent(
            noop, mock.Mock(), mock.Mock())
        group = str(uuid.uuid4())
        self.callbacks.security_groups_member_updated(None, security_groups=[group])
        self.callbacks.security_groups_rule_updated(None, security_groups=[group])
        self.assertEqual([], self.queued())
        self.agent.plugin.assert_not_called()
        self.assertEqual([], self.agent.plugin.method_calls)

    def test_security_group_fanout_refreshes_only_its_members(self):
        self.agent.security_groups.ports_in_groups.return_value = {self.pa}
        self.agent.security_groups.request_refresh.return_value = True
        self.callbacks.security_groups_rule_updated(None, security_groups=[str(uuid.uuid4())])
        self.agent.security_groups.request_refresh.assert_called_once_with({self.pa})
        self.assertEqual([(l2.FIREWALL_RESOURCE, l2.REFRESH_FIREWALL)], self.queued())
        self.agent.mech.wire_port.assert_not_called()


class TestAudit(QuietAgentTestCase):

    def wired_agent(self, n=3):
        ports = [str(uuid.uuid4()) for _ in range(n)]
        agent = self.make_agent(ports)
        agent.process_wire_batch([wq.ResourceUpdate(p, l2.WIRE) for p in ports])
        self.objects = {p: port_object(self.details[p]) for p in ports}
        agent.plugin.reset_mock()
        agent.mech.reset_mock()
        agent.queue.reset_mock()
        return agent, ports

    def test_nothing_differs_nothing_changes(self):
        agent, ports = self.wired_agent()
        agent.audit_state()
        agent.audit_state()
        self.assertEqual({'get_devices_details_list_and_failed_devices': 0,
                          'update_device_list': 0, 'bulk_pull': 2, 'tunnel_sync': 0},
                         self.calls(agent))
        agent.plugin.bulk_pull.assert_called_with('Port', '1.11', {'id': sorted(ports)})
        agent.queue.put.assert_not_called()
        agent.mech.wire_port.assert_not_called()
        agent.mech.unwire_port.assert_not_called()
        self.assertEqual(2, agent.security_groups.audit.call_count)

    def test_only_ports_that_differ_are_queued(self):
        agent, (a, b, c) = self.wired_agent()
        self.objects[a]['versioned_object.data']['status'] = 'DOWN'  # server lost the report
        self.objects[b]['versioned_object.data']['admin_state_up'] = False  # event lost
        new = str(uuid.uuid4())
        agent.mech.list_plugged_ports.return_value = {a, b, new}  # c unplugged, new plugged
        # Reported moments ago, a's status may still be settling: left alone.
        agent.audit_state()
        queued = {(c_.args[0].resource_id, c_.args[0].action)
                  for c_ in agent.queue.put.call_args_list}
        self.assertEqual({(b, l2.WIRE), (new, l2.WIRE), (c, l2.UNWIRE)}, queued)
        # Long after the report, a status that disagrees is a lost report.
        agent.queue.put.reset_mock()
        agent.reported_at = {p: t - 2 * l2.REPORT_SETTLE_SECONDS
                             for p, t in agent.reported_at.items()}
        agent.audit_state()
        queued = {(c_.args[0].resource_id, c_.args[0].action)
                  for c_ in agent.queue.put.call_args_list}
        self.assertEqual({(a, l2.WIRE), (b, l2.WIRE), (new, l2.WIRE), (c, l2.UNWIRE)},
                         queued)
        for call in agent.queue.put.call_args_list:
            self.assertEqual(wq.PRIORITY_SYNC, call.args[0].priority)
            self.assertIs(False, call.kwargs['supersede'])

    def test_a_port_with_work_under_way_is_left_to_it(self):
        # Plugged, its wiring batch queued or running: not wired yet, but
        # queueing it again would fetch its details (and make the server
        # provision it) a second time; seen under the real server.
        agent, (a, b, c) = self.wired_agent()
        new = str(uuid.uuid4())
        agent.mech.list_plugged_ports.return_value = {a, b, new}
        agent.queue.in_progress.return_value = {new, c}
        agent.audit_state()
        agent.queue.put.assert_not_called()

    def test_port_differs_reads_the_segment_and_host(self):
        d = details(str(uuid.uuid4()))
        self.assertFalse(l2.port_differs(port_object(d)['versioned_object.data'], d,
                                         'up', 'host1'))
        self.assertTrue(l2.port_differs(
            port_object(d, host='host2')['versioned_object.data'], d, 'up', 'host1'))
        moved = dict(d, segmentation_id=1002)
        self.assertTrue(l2.port_differs(port_object(moved)['versioned_object.data'], d,
                                        'up', 'host1'))
        self.assertTrue(l2.port_differs(None, d, 'up', 'host1'))
        self.assertTrue(l2.port_differs(port_object(d)['versioned_object.data'], d,
                                        None, 'host1'))

    def test_status_of_a_port_reported_moments_ago_is_left_alone(self):
        # The server sets ACTIVE after the report, port by port: an audit in
        # between sees BUILD, which is no reason to re-wire (seen under the
        # real server: the port was provisioned twice).
        d = details(str(uuid.uuid4()))
        building = port_object(d, status='BUILD')['versioned_object.data']
        self.assertTrue(l2.port_differs(building, d, 'up', 'host1'))
        self.assertFalse(l2.port_differs(building, d, 'up', 'host1', check_status=False))
        moved = dict(d, segmentation_id=1002)
        self.assertTrue(l2.port_differs(port_object(moved, status='BUILD')[
            'versioned_object.data'], d, 'up', 'host1', check_status=False))


class TestSyncRaces(QuietAgentTestCase):

    def test_a_newer_event_is_not_replaced_by_the_sync_snapshot(self):
        port, gone = str(uuid.uuid4()), str(uuid.uuid4())
        agent = self.make_agent([port])
        agent.queue = wq.WorkQueue(agent.process_update, workers=1)
        agent.wired = {gone: refusals.NET}
        # Snapshot taken; then events arrive before the sync queues its work.
        real_fetch = agent._fetch_details

        def fetch_then_events(devices):
            found = real_fetch(devices)
            agent.enqueue(port, l2.WIRE)
            agent.enqueue(gone, l2.WIRE)  # re-plugged after the snapshot
            return found
        agent._fetch_details = fetch_then_events
        agent.sync_state()
        pending = {p['resource_id']: (p['action'], p['priority'])
                   for p in agent.queue.snapshot()['pending']}
        self.assertEqual({port: (l2.WIRE, 'rpc'), gone: (l2.WIRE, 'rpc')}, pending)

    def test_a_sync_payload_older_than_an_event_is_not_used(self):
        port = str(uuid.uuid4())
        agent = self.make_agent([port])
        stale = dict(self.details[port], segmentation_id=1500)
        fetched_at = 0.0
        agent._events_at[port] = 1.0  # an event after the sync's fetch
        agent.process_wire_batch([wq.ResourceUpdate(port, l2.WIRE, wq.PRIORITY_SYNC,
                                                    payload=(fetched_at, stale))])
        binding = agent.mech.wire_port.call_args.args[0]
        self.assertEqual(1001, binding.segment.segmentation_id)
        agent.plugin.get_devices_details_list_and_failed_devices.assert_called_once()

    def test_stale_ports_come_from_the_same_snapshot_as_the_ports_to_wire(self):
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        agent = self.make_agent([a])
        agent.wired = {b: refusals.NET}
        snapshots = iter([{a}, {a, b}])  # b re-plugged after the first read
        agent.mech.list_plugged_ports.side_effect = lambda: next(snapshots)
        agent.sync_state()
        self.assertEqual(1, agent.mech.list_plugged_ports.call_count)
        queued = {(c.args[0].resource_id, c.args[0].action)
                  for c in agent.queue.put.call_args_list}
        self.assertEqual({(a, l2.WIRE), (b, l2.UNWIRE)}, queued)


def network_object(network_id, mtu=1450, revision=1):
    return {'versioned_object.name': 'Network', 'versioned_object.version': '1.3',
            'versioned_object.namespace': 'versionedobjects',
            'versioned_object.data': {'id': network_id, 'mtu': mtu,
                                      'revision_number': revision}}


class TestPushedDetails(QuietAgentTestCase):
    """Ports the server pushed are wired without a details call
    (the details themselves are checked against neutron 29 in test_port_cache)."""

    def push(self, agent, ports, revision=3, mtu=1450):
        callbacks = l2.PortPushCallbacks(agent)
        objects = []
        for port in ports:
            obj = port_object(self.details[port], status='DOWN')
            obj['versioned_object.data']['revision_number'] = revision
            objects.append(obj)
        callbacks.push(None, resource_list=objects, event_type='updated')
        callbacks.push(None, resource_list=[network_object(refusals.NET, mtu)],
                       event_type='updated')

    def test_pushed_ports_cost_one_report_and_nothing_else(self):
        ports = [str(uuid.uuid4()) for _ in range(20)]
        agent = self.make_agent(ports, real_queue=True)
        self.push(agent, ports)
        agent.queue.start()
        for port in ports:
            agent._on_plugged(port)
        self.assertTrue(agent.queue.wait_idle(5))
        self.assertEqual(20, agent.mech.wire_port.call_count)
        wired = agent.mech.wire_port.call_args_list[0].args[0]
        self.assertEqual((1001, 1450), (wired.segment.segmentation_id, wired.details['mtu']))
        agent.plugin.get_devices_details_list_and_failed_devices.assert_not_called()
        agent.plugin.update_device_list.assert_called_once_with(sorted(ports), [], AGENT_ID)
        self.assertEqual(20, agent.port_cache.hits)

    def test_a_port_update_newer_than_the_push_asks_the_server(self):
        port = str(uuid.uuid4())
        agent = self.make_agent([port])
        self.push(agent, [port], revision=3)
        agent.plugged_ports.add(port)
        agent.queue = mock.Mock()
        callbacks = l2.L2RpcCallbacks(agent)
        callbacks.port_update(None, port={'id': port, 'revision_number': 3})
        agent.process_wire_batch([wq.ResourceUpdate(port, l2.WIRE)])
        agent.plugin.get_devices_details_list_and_failed_devices.assert_not_called()
        callbacks.port_update(None, port={'id': port, 'revision_number': 4})
        agent.process_wire_batch([wq.ResourceUpdate(port, l2.WIRE)])
        agent.plugin.get_devices_details_list_and_failed_devices.assert_called_once_with(
            [port], AGENT_ID)

    def test_ports_the_cache_cannot_answer_are_asked_in_one_call(self):
        pushed, unknown = str(uuid.uuid4()), str(uuid.uuid4())
        agent = self.make_agent([pushed, unknown])
        self.push(agent, [pushed])
        agent.process_wire_batch([wq.ResourceUpdate(pushed, l2.WIRE),
                                  wq.ResourceUpdate(unknown, l2.WIRE)])
        agent.plugin.get_devices_details_list_and_failed_devices.assert_called_once_with(
            [unknown], AGENT_ID)
        self.assertEqual(2, agent.mech.wire_port.call_count)

    def test_a_full_sync_forgets_what_was_pushed(self):
        # Pushes lost while the broker or server was away must not be
        # answered from older ones: after a full sync the agent asks.
        port = str(uuid.uuid4())
        agent = self.make_agent([port])
        self.push(agent, [port])
        agent.sync_state()
        self.assertEqual(0, len(agent.port_cache))
        self.assertIsNone(agent.port_cache.details(port))

    def test_a_cache_failure_falls_back_to_the_server(self):
        port = str(uuid.uuid4())
        agent = self.make_agent([port])
        agent.port_cache = mock.Mock()
        agent.port_cache.details.side_effect = TypeError('profile is a dict')
        self.assertEqual({}, agent.process_wire_batch([wq.ResourceUpdate(port, l2.WIRE)]))
        agent.plugin.get_devices_details_list_and_failed_devices.assert_called_once_with(
            [port], AGENT_ID)
        agent.mech.wire_port.assert_called_once()

    def test_a_malformed_push_is_dropped_without_a_resync(self):
        port = str(uuid.uuid4())
        agent = self.make_agent([port])
        agent.on_error = mock.Mock()
        callbacks = l2.PortPushCallbacks(agent)
        callbacks.push(None, resource_list='not a list', event_type='updated')
        callbacks.push(None, resource_list=[{'versioned_object.name': 'Port',
                                             'versioned_object.data': {'id': '../x'}},
                                            None, 7], event_type='updated')
        callbacks.push(None, resource_list=[], event_type=None)
        agent.on_error.assert_not_called()
        self.assertEqual(0, len(agent.port_cache))
        self.push(agent, [port])  # and the next good push is taken
        self.assertEqual(1, len(agent.port_cache))


class TestPortGoneWhileWired(QuietAgentTestCase):
    """A port unplugged while it was being wired leaves nothing of its network."""

    def test_an_unused_network_is_cleaned_up(self):
        gone, other = str(uuid.uuid4()), str(uuid.uuid4())
        agent = self.make_agent([gone])
        agent.mech.wire_port.side_effect = l2.mech_api.DeviceGone(f'{gone} was unplugged')
        self.assertEqual({}, agent.process_wire_batch([wq.ResourceUpdate(gone, l2.WIRE)]))
        agent.mech.cleanup_network.assert_called_once_with(refusals.NET)
        agent.plugin.update_device_list.assert_not_called()
        # A network another wired port uses is kept.
        agent.mech.cleanup_network.reset_mock()
        agent.wired[other] = refusals.NET
        agent.process_wire_batch([wq.ResourceUpdate(gone, l2.WIRE)])
        agent.mech.cleanup_network.assert_not_called()
