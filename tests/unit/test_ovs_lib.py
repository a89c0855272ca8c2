"""Unit tests for agentkit.lib.ovs's pure logic: validation, event classification."""

import os
import subprocess
import threading
import time
import types
import uuid

import fixtures

from agentkit import exceptions
from agentkit.lib.ovs import bridge as ovs_bridge
from agentkit.lib.ovs import events as ovs_events
from agentkit.lib.ovs import idl as ovs_idl
from agentkit.lib.ovs import rows as ovs_rows
from agentkit.lib.ovs import validation as ovs_validation
from agentkit.lib.ovs import vswitchd as ovs_vswitchd
from tests import base

CREATE = ovs_events.ROW_CREATE
UPDATE = ovs_events.ROW_UPDATE
DELETE = ovs_events.ROW_DELETE


def fake_iface(uid=None, name='tap1', external_ids=None, ofport=(), type=''):
    return types.SimpleNamespace(uuid=uid or uuid.uuid4(), name=name,
                                 external_ids=dict(external_ids or {}),
                                 ofport=list(ofport), type=type)


def old(**changed):
    """Like python-ovs' ``old`` row: only the columns that changed."""
    return types.SimpleNamespace(**changed)


class TestValidation(base.TestCase):

    def test_valid_names(self):
        for name in ('br-int', 'tap0123456789a', 'a', 'x' * 15):
            self.assertEqual(name, ovs_validation.validate_name(name))

    def test_invalid_names(self):
        for name in ('', 'x' * 16, 'a/b', 'a b', 'tab\t', '.', '..', None, 5, 'nl\n'):
            self.assertRaises(exceptions.InvalidIdentifier, ovs_validation.validate_name, name)
        # InvalidIdentifier is also a ValueError for generic callers.
        self.assertRaises(ValueError, ovs_validation.validate_name, 'x' * 16)

    def test_normalize_map(self):
        self.assertEqual({}, ovs_validation.normalize_map(None, 'x'))
        self.assertEqual({'a': 'true', 'b': 'false', 'c': '5', 'd': 'v'},
                         ovs_validation.normalize_map({'a': True, 'b': False, 'c': 5, 'd': 'v'},
                                                      'x'))
        self.assertRaises(TypeError, ovs_validation.normalize_map, {'a': {'n': 1}}, 'x')
        self.assertRaises(TypeError, ovs_validation.normalize_map, {'a': None}, 'x')
        self.assertRaises(TypeError, ovs_validation.normalize_map, {1: 'a'}, 'x')
        self.assertRaises(TypeError, ovs_validation.normalize_map, {'': 'a'}, 'x')
        self.assertRaises(TypeError, ovs_validation.normalize_map, [('a', 'b')], 'x')

    def test_tag(self):
        self.assertIsNone(ovs_validation.validate_tag(None))
        self.assertEqual(0, ovs_validation.validate_tag(0))
        self.assertEqual(4095, ovs_validation.validate_tag(4095))
        for bad in (-1, 4096, True, '5', 1.0):
            self.assertRaises(ValueError, ovs_validation.validate_tag, bad)

    def test_mtu(self):
        self.assertIsNone(ovs_validation.validate_mtu(None))
        self.assertEqual(1450, ovs_validation.validate_mtu(1450))
        for bad in (0, 67, 65536, True, '1500'):
            self.assertRaises(ValueError, ovs_validation.validate_mtu, bad)

    def test_port_args(self):
        ovs_validation.validate_port_args('p', None, {})
        ovs_validation.validate_port_args('p', 'internal', {})
        ovs_validation.validate_port_args('p', 'patch', {'peer': 'q'})
        ovs_validation.validate_port_args('p', 'vxlan', {'remote_ip': '192.0.2.1'})
        self.assertRaises(ValueError, ovs_validation.validate_port_args, 'p', 'bogus', {})
        self.assertRaises(ValueError, ovs_validation.validate_port_args, 'p', 'system', {})
        self.assertRaises(ValueError, ovs_validation.validate_port_args, 'p', 'patch', {})
        self.assertRaises(ValueError, ovs_validation.validate_port_args, 'p', 'gre', {})
        self.assertRaises(ValueError, ovs_validation.validate_port_args, 'x' * 16, None, {})

    def test_bridge_rejects_bad_arguments_before_touching_ovsdb(self):
        self.assertRaises(exceptions.InvalidIdentifier, ovs_bridge.OVSBridge, 'x' * 16, None)
        self.assertRaises(ValueError, ovs_bridge.OVSBridge, 'br', None, datapath_type='dpdk')


class TestTunnelOptions(base.TestCase):

    def test_vxlan_defaults_to_key_flow(self):
        self.assertEqual({'remote_ip': '192.0.2.1', 'key': 'flow'},
                         ovs_validation.build_tunnel_options('vxlan', '192.0.2.1'))

    def test_full_vxlan(self):
        opts = ovs_validation.build_tunnel_options(
            'vxlan', '192.0.2.1', local_ip='192.0.2.2', key=1001, dst_port=4790,
            df_default=True, extra={'tos': 'inherit'})
        self.assertEqual({'remote_ip': '192.0.2.1', 'local_ip': '192.0.2.2', 'key': '1001',
                          'dst_port': '4790', 'df_default': 'true', 'tos': 'inherit'}, opts)

    def test_ipv6_is_normalised_and_flow_allowed(self):
        opts = ovs_validation.build_tunnel_options('gre', '2001:DB8::0001', local_ip='flow',
                                                   key=None)
        self.assertEqual({'remote_ip': '2001:db8::1', 'local_ip': 'flow'}, opts)

    def test_rejects(self):
        build = ovs_validation.build_tunnel_options
        self.assertRaises(ValueError, build, 'stt', '192.0.2.1')
        self.assertRaises(ValueError, build, 'vxlan', 'not-an-ip')
        self.assertRaises(ValueError, build, 'vxlan', '192.0.2.1', local_ip='2001:db8::1')
        self.assertRaises(ValueError, build, 'vxlan', '192.0.2.1', key=2 ** 24)
        self.assertRaises(ValueError, build, 'vxlan', '192.0.2.1', key=-1)
        self.assertRaises(ValueError, build, 'vxlan', '192.0.2.1', key='5')
        self.assertRaises(ValueError, build, 'gre', '192.0.2.1', dst_port=4789)
        self.assertRaises(ValueError, build, 'vxlan', '192.0.2.1', dst_port=0)
        self.assertRaises(ValueError, build, 'vxlan', '192.0.2.1', extra={'key': '5'})
        # GRE keys are 32 bit.
        self.assertEqual('4294967295', build('gre', '192.0.2.1', key=2 ** 32 - 1)['key'])


class TestRelevance(base.TestCase):
    relevant = staticmethod(ovs_events.is_relevant_interface_change)

    def test_create_and_delete_need_iface_id(self):
        self.assertTrue(self.relevant(CREATE, fake_iface(external_ids={'iface-id': 'p'}), None))
        self.assertFalse(self.relevant(CREATE, fake_iface(), None))
        self.assertTrue(self.relevant(DELETE, fake_iface(external_ids={'iface-id': 'p'}), None))
        self.assertFalse(self.relevant(DELETE, fake_iface(), None))

    def test_updates(self):
        with_id = fake_iface(external_ids={'iface-id': 'p', 'attached-mac': 'm2'}, ofport=[3])
        self.assertFalse(self.relevant(UPDATE, with_id, old(link_state='down')))
        self.assertFalse(self.relevant(UPDATE, with_id, None))
        self.assertTrue(self.relevant(UPDATE, with_id, old(ofport=[])))
        self.assertTrue(self.relevant(UPDATE, with_id, old(external_ids={})))
        self.assertTrue(self.relevant(UPDATE, with_id, old(external_ids={'iface-id': 'q'})))
        # Only the MAC changed: the port identity did not.
        self.assertFalse(self.relevant(
            UPDATE, with_id, old(external_ids={'iface-id': 'p', 'attached-mac': 'm1'})))
        without_id = fake_iface(ofport=[3])
        self.assertFalse(self.relevant(UPDATE, without_id, old(ofport=[])))
        self.assertTrue(self.relevant(UPDATE, without_id,
                                      old(external_ids={'iface-id': 'p'})))


class TestInterfaceTracker(base.TestCase):

    def setUp(self):
        super().setUp()
        self.tracker = ovs_events.InterfaceTracker('br-int')
        self.uid = uuid.uuid4()

    def kinds(self, events):
        return [kind for kind, _ in events]

    def row(self, iface_id='p1', ofport=(), **kw):
        ext = {'iface-id': iface_id, 'attached-mac': 'fa:16:3e:00:00:01'} if iface_id else {}
        return fake_iface(uid=self.uid, external_ids=ext, ofport=ofport, **kw)

    def test_plug_lifecycle(self):
        events = self.tracker.process(CREATE, self.row(), 'br-int')
        self.assertEqual([ovs_events.IFACE_ID_SET], self.kinds(events))
        info = events[0][1]
        self.assertEqual(('p1', 'fa:16:3e:00:00:01', None, 'br-int'),
                         (info.iface_id, info.mac, info.ofport, info.bridge))
        events = self.tracker.process(UPDATE, self.row(ofport=[7]), 'br-int')
        self.assertEqual([ovs_events.OFPORT_ASSIGNED], self.kinds(events))
        self.assertEqual(7, events[0][1].ofport)
        self.assertEqual([], self.tracker.process(UPDATE, self.row(ofport=[7]), 'br-int'))
        events = self.tracker.process(DELETE, self.row(ofport=[7]), None)
        self.assertEqual([ovs_events.IFACE_DELETED], self.kinds(events))
        self.assertEqual('br-int', events[0][1].bridge)
        self.assertEqual([], self.tracker.process(DELETE, self.row(), None))

    def test_create_with_ofport_reports_both_once(self):
        events = self.tracker.process(CREATE, self.row(ofport=[4]), 'br-int')
        self.assertEqual([ovs_events.IFACE_ID_SET, ovs_events.OFPORT_ASSIGNED], self.kinds(events))
        # The re-announcement after a reconnect is not a new plug.
        self.assertEqual([], self.tracker.process(CREATE, self.row(ofport=[4]), 'br-int'))

    def test_failed_ofport_is_not_assigned_until_valid(self):
        self.tracker.process(CREATE, self.row(), 'br-int')
        self.assertEqual([], self.tracker.process(UPDATE, self.row(ofport=[-1]), 'br-int'))
        self.assertEqual([ovs_events.OFPORT_ASSIGNED],
                         self.kinds(self.tracker.process(UPDATE, self.row(ofport=[9]), 'br-int')))
        self.tracker.process(UPDATE, self.row(ofport=[]), 'br-int')
        self.assertEqual([ovs_events.OFPORT_ASSIGNED],
                         self.kinds(self.tracker.process(UPDATE, self.row(ofport=[9]), 'br-int')))

    def test_iface_id_replaced_and_removed(self):
        self.tracker.process(CREATE, self.row(ofport=[4]), 'br-int')
        events = self.tracker.process(UPDATE, self.row('p2', ofport=[4]), 'br-int')
        self.assertEqual([ovs_events.IFACE_DELETED, ovs_events.IFACE_ID_SET,
                          ovs_events.OFPORT_ASSIGNED], self.kinds(events))
        self.assertEqual(['p1', 'p2', 'p2'], [info.iface_id for _, info in events])
        self.assertEqual((4, 'br-int'), (events[0][1].ofport, events[0][1].bridge))
        events = self.tracker.process(UPDATE, self.row(None, ofport=[4]), 'br-int')
        self.assertEqual([ovs_events.IFACE_DELETED], self.kinds(events))
        self.assertEqual('p2', events[0][1].iface_id)
        self.assertEqual(set(), self.tracker.known_uuids())

    def test_unknown_bridge_keeps_last_known(self):
        self.tracker.process(CREATE, self.row(), 'br-int')
        events = self.tracker.process(UPDATE, self.row(ofport=[5]), None)
        self.assertEqual('br-int', events[0][1].bridge)

    def test_rows_without_iface_id_are_ignored(self):
        self.assertEqual([], self.tracker.process(CREATE, self.row(None, ofport=[3]), 'br-int'))
        self.assertEqual([], self.tracker.process(DELETE, self.row(None), None))

    def test_seed_and_reconcile(self):
        kept = ovs_rows.interface_info(self.row(ofport=[3]), 'br-int')
        gone = ovs_rows.interface_info(fake_iface(external_ids={'iface-id': 'p9'}), 'br-int')
        self.tracker.seed([kept, gone])
        # Seeded interfaces are known: no report for their re-announcement.
        self.assertEqual([], self.tracker.process(CREATE, self.row(ofport=[3]), 'br-int'))
        events = self.tracker.reconcile([kept])
        self.assertEqual([ovs_events.IFACE_DELETED], self.kinds(events))
        self.assertEqual(gone, events[0][1])   # last known state: name, ofport...
        self.assertEqual({kept.uuid}, self.tracker.known_uuids())
        self.assertEqual([], self.tracker.reconcile([kept]))


class TestInterfaceInfo(base.TestCase):

    def test_from_fake_row(self):
        row = fake_iface(name='tapx', external_ids={'iface-id': 'p', 'attached-mac': 'm'},
                         ofport=[12], type='internal')
        info = ovs_rows.interface_info(row, 'br')
        self.assertEqual(('tapx', str(row.uuid), 'br', 'p', 'm', 12, 'internal'),
                         (info.name, info.uuid, info.bridge, info.iface_id, info.mac,
                          info.ofport, info.type))
        self.assertTrue(info.ofport_valid)
        self.assertFalse(ovs_rows.interface_info(fake_iface(ofport=[-1]), None).ofport_valid)
        self.assertIsNone(ovs_rows.interface_info(fake_iface(), None).ofport)


class TestReconnectDetector(base.TestCase):

    def test_first_connect_is_not_a_reconnect(self):
        det = ovs_idl.ReconnectDetector()
        # connecting, dump loaded, steady, session lost, dump again, steady
        states = [False, False, True, True, False, False, True, True]
        self.assertEqual([False, False, False, False, False, False, True, False],
                         [det.update(m) for m in states])


class TestLocalEndpoint(base.TestCase):

    def test_local_endpoints(self):
        for endpoint in ('unix:/var/run/openvswitch/db.sock', 'tcp:127.0.0.1:6640',
                         ' tcp:127.0.0.1:6640', 'ssl:127.0.0.2:6640', 'tcp:[::1]:6640',
                         'tcp:localhost:6640'):
            self.assertTrue(ovs_vswitchd.is_local_endpoint(endpoint), endpoint)

    def test_remote_or_unknown_endpoints(self):
        for endpoint in ('tcp:192.0.2.1:6640', 'ssl:[2001:db8::1]:6640',
                         'tcp:ovs.example.org:6640', 'ptcp:6640', 'tcp:', ''):
            self.assertFalse(ovs_vswitchd.is_local_endpoint(endpoint), endpoint)


class TestVswitchdMonitor(base.TestCase):

    def setUp(self):
        super().setUp()
        self.pidfile = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                    'ovs-vswitchd.pid')
        self.restarts = []

    def spawn(self):
        proc = subprocess.Popen(['sleep', '60'])
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        return proc

    def point_to(self, pid):
        with open(self.pidfile, 'w') as f:
            f.write(f'{pid}\n')

    def test_identity(self):
        self.assertIsNone(ovs_vswitchd.read_process_identity(self.pidfile))
        self.point_to('garbage')
        self.assertIsNone(ovs_vswitchd.read_process_identity(self.pidfile))
        self.point_to(os.getpid())
        pid, start = ovs_vswitchd.read_process_identity(self.pidfile)
        self.assertEqual(os.getpid(), pid)
        self.assertGreater(start, 0)

    def test_restart_detected_once(self):
        first, second = self.spawn(), self.spawn()
        self.point_to(first.pid)
        mon = ovs_vswitchd.VswitchdMonitor(self.pidfile, lambda: self.restarts.append(1))
        self.assertFalse(mon.check())
        self.point_to(second.pid)          # --monitor restarted the daemon
        self.assertTrue(mon.check())
        self.assertFalse(mon.check())
        self.assertEqual([1], self.restarts)

    def test_down_then_up_is_a_restart(self):
        first = self.spawn()
        self.point_to(first.pid)
        mon = ovs_vswitchd.VswitchdMonitor(self.pidfile, lambda: self.restarts.append(1))
        first.kill()
        first.wait()
        self.assertFalse(mon.check())      # down: nothing to resync yet
        self.assertEqual([], self.restarts)
        self.point_to(self.spawn().pid)
        self.assertTrue(mon.check())
        self.assertEqual([1], self.restarts)

    def test_polls_until_stopped_and_survives_a_failed_poll(self):
        mon = ovs_vswitchd.VswitchdMonitor(self.pidfile, lambda: None, interval=0.01)
        polls = []

        def check():
            polls.append(time.monotonic())
            if len(polls) == 2:
                raise OSError('transient')
            return False
        mon.check = check
        mon.start()
        mon.start()                        # idempotent: one worker
        deadline = time.monotonic() + 5
        while len(polls) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        mon.stop()
        self.assertGreaterEqual(len(polls), 4)
        time.sleep(0.1)
        stopped_at = len(polls)
        time.sleep(0.1)
        self.assertEqual(stopped_at, len(polls))

    def test_not_running_at_start_then_started(self):
        mon = ovs_vswitchd.VswitchdMonitor(self.pidfile, lambda: self.restarts.append(1))
        self.assertFalse(mon.check())
        self.point_to(self.spawn().pid)
        self.assertTrue(mon.check())


class TestDispatcher(base.TestCase):

    def test_order_kept_and_errors_isolated(self):
        disp = ovs_events.Dispatcher('test-dispatch')
        self.addCleanup(disp.stop)
        seen, done = [], threading.Event()

        def boom(_):
            raise RuntimeError('callback bug')
        for i in range(20):
            disp.submit(seen.append, i)
            if i == 5:
                disp.submit(boom, i)
        disp.submit(lambda: done.set())
        self.assertTrue(done.wait(5))
        self.assertEqual(list(range(20)), seen)
        self.assertNotEqual(threading.current_thread(), disp._thread)
