"""agentkit.lib.ovs against a real Open vSwitch.

Most tests use the host's switch (userspace datapath: every bridge is
created with datapath_type=netdev). Every bridge and port carries an
``akb<random hex>`` name and is deleted by a cleanup; other bridges are
never touched. Tests that restart daemons use a private ovsdb-server (and
ovs-vswitchd) in a temporary directory; those private instances never get
a bridge, because a second vswitchd instantiating a netdev bridge would
compete with the host's for the global ``ovs-netdev`` tap device.

``ovs-vsctl`` appears only here, playing nova/os-vif (an external writer)
and as an independent check of what agentkit.lib.ovs wrote.
"""

import json
import os
import signal
import subprocess
import threading
import time
import uuid

import fixtures
from ovsdbapp.backend.ovs_idl import event as ovs_event
from testtools import content

from agentkit.lib.ovs import bridge as ovs_bridge
from agentkit.lib.ovs import connection as ovs_connection
from agentkit.lib.ovs import errors as ovs_errors
from agentkit.lib.ovs import events as ovs_events
from agentkit.lib.ovs import idl as ovs_idl
from agentkit.lib.ovs import ports as ovs_ports
from agentkit.lib.ovs import validation as ovs_validation
from agentkit.lib.ovs import vswitchd as ovs_vswitchd
from tests.functional import base

ENDPOINT = ovs_connection.DEFAULT_OVSDB_CONNECTION
WAIT = 10.0


def vsctl(*args, db=None):
    cmd = ['ovs-vsctl', '--timeout=10']
    if db:
        cmd += [f'--db={db}', '--no-wait']
    out = subprocess.run(cmd + list(args), check=True, capture_output=True, text=True)
    return out.stdout.strip()


def vsctl_json(table, record, column):
    """A column as ovs-vsctl reports it, decoded from its JSON output."""
    out = vsctl('--format=json', '--columns=' + column, 'list', table, record)
    return _decode(json.loads(out)['data'][0][0])


def _decode(value):
    if isinstance(value, list) and value and value[0] == 'map':
        return {k: _decode(v) for k, v in value[1]}
    if isinstance(value, list) and value and value[0] == 'set':
        return [_decode(v) for v in value[1]]
    if isinstance(value, list) and value and value[0] == 'uuid':
        return value[1]
    return value


def wait_until(predicate, timeout=WAIT, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


class Recorder:
    """Collects callback invocations; tests wait on conditions over them."""

    def __init__(self):
        self.events = []
        self.threads = set()
        self.cond = threading.Condition()

    def __call__(self, item):
        with self.cond:
            self.events.append((time.monotonic(), item))
            self.threads.add(threading.current_thread().name)
            self.cond.notify_all()

    def wait_for(self, predicate, timeout=WAIT):
        with self.cond:
            ok = self.cond.wait_for(lambda: any(predicate(e) for _, e in self.events), timeout)
            return next((t, e) for t, e in self.events if predicate(e)) if ok else None

    def matching(self, predicate):
        with self.cond:
            return [e for _, e in self.events if predicate(e)]


class OvsTestCase(base.FunctionalTestCase):

    def setUp(self):
        super().setUp()
        try:
            vsctl('show')
        except (OSError, subprocess.CalledProcessError) as e:
            self.skipTest(f'Open vSwitch is not running ({e}); run tools/install-deps.sh')
        self.ovs = ovs_connection.OvsdbConnection(ENDPOINT, timeout=WAIT)
        self.addCleanup(self.ovs.close)
        self.prefix = 'akb' + uuid.uuid4().hex[:7]

    def name(self, suffix=''):
        name = self.prefix + suffix
        assert len(name) <= 15, name
        return name

    def new_bridge(self, suffix='', **create_kwargs):
        br = ovs_bridge.OVSBridge(self.name(suffix), self.ovs, datapath_type='netdev')
        self.addCleanup(vsctl, '--if-exists', 'del-br', br.name)
        br.create(**create_kwargs)
        return br


class TestBridge(OvsTestCase):

    def test_create_races_with_another_process(self):
        """Agents starting together ensure the same bridge over their own connections.

        Before verify() the second insert failed the whole transaction on
        the unique name (agentkit-l3 exited at start in the fullstack
        suite); now every creator succeeds and there is one bridge.
        """
        conns = [self.ovs] + [ovs_connection.OvsdbConnection(ENDPOINT, timeout=WAIT)
                              for _ in range(2)]
        for conn in conns[1:]:
            self.addCleanup(conn.close)
        for round_no in range(8):
            name = self.name(f'r{round_no}')
            self.addCleanup(vsctl, '--if-exists', 'del-br', name)
            start, errors = threading.Barrier(len(conns)), []

            def create(conn):
                start.wait(10)
                try:
                    ovs_bridge.OVSBridge(name, conn, datapath_type='netdev').create()
                except Exception as exc:  # noqa: BLE001 - what the test checks
                    errors.append(exc)
            threads = [threading.Thread(target=create, args=(c,)) for c in conns]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            self.assertEqual([], errors, f'round {round_no}')
            self.assertEqual(1, vsctl('list-br').split().count(name))
            # with its one internal port (the LOCAL port)
            self.assertEqual([name], vsctl('--bare', '--columns=name', 'find', 'Port',
                                           f'name={name}').split())

    def test_create_is_idempotent_and_merges(self):
        br = self.new_bridge(fail_mode='secure', external_ids={'bridge-id': 'a'})
        br.create(external_ids={'owner': 'agentkit'}, other_config={'mac-table-size': 1024})
        self.assertEqual([br.name], [b for b in vsctl('list-br').split() if b == br.name])
        self.assertEqual('netdev', vsctl_json('Bridge', br.name, 'datapath_type'))
        self.assertEqual('secure', vsctl_json('Bridge', br.name, 'fail_mode'))
        self.assertEqual({'bridge-id': 'a', 'owner': 'agentkit'},
                         vsctl_json('Bridge', br.name, 'external_ids'))
        self.assertEqual({'mac-table-size': '1024'},
                         vsctl_json('Bridge', br.name, 'other_config'))
        self.assertTrue(br.exists())
        self.assertEqual('netdev', br.get_datapath_type())
        self.assertEqual([], br.get_port_names())
        # ovs-vswitchd instantiated it: its internal port has the LOCAL ofport.
        self.assertEqual(65534, br.get_ofport(br.name))

    def test_delete(self):
        br = self.new_bridge()
        br.add_port(self.name('p'), type='internal')
        br.delete()
        self.assertFalse(br.exists())
        self.assertNotIn(br.name, vsctl('list-br').split())
        self.assertEqual('', vsctl('--if-exists', 'get', 'Interface', self.name('p'), 'name'))
        br.delete()  # absent: no error

    def test_missing_bridge(self):
        br = ovs_bridge.OVSBridge(self.name(), self.ovs, datapath_type='netdev')
        self.assertFalse(br.exists())
        self.assertRaises(ovs_errors.OvsdbNotFound, br.add_port, self.name('p'))
        self.assertRaises(ovs_errors.OvsdbNotFound, br.get_port_names)


class TestPorts(OvsTestCase):

    def test_internal_port_attributes(self):
        br = self.new_bridge()
        port = self.name('p')
        br.add_port(port, type='internal', external_ids={'iface-id': 'id-1'}, tag=7,
                    other_config={'net_uuid': 'n1', 'segmentation_id': 1001},
                    mtu_request=1450)
        self.assertEqual([port], br.get_port_names())
        self.assertEqual('internal', vsctl_json('Interface', port, 'type'))
        self.assertEqual(7, vsctl_json('Port', port, 'tag'))
        self.assertEqual({'net_uuid': 'n1', 'segmentation_id': '1001'},
                         vsctl_json('Port', port, 'other_config'))
        self.assertEqual(1450, vsctl_json('Interface', port, 'mtu_request'))
        self.assertEqual({'iface-id': 'id-1'}, vsctl_json('Interface', port, 'external_ids'))
        # The volatile statistics column is not replicated (see module doc).
        self.assertNotIn('statistics', self.ovs.api.tables['Interface'].columns)
        ofport = br.get_ofport(port)
        self.assertGreater(ofport, 0)
        self.assertEqual(ofport, vsctl_json('Interface', port, 'ofport'))

    def test_wait_mode_returns_with_ofport_assigned(self):
        br = self.new_bridge()
        for i in range(5):
            port = self.name(f'w{i}')
            br.add_port(port, type='internal')            # connection default: wait
            # Read the replica directly, no waiting: vswitchd already did it.
            self.assertTrue(br.get_interface(port).ofport_valid, port)

    def test_tag_get_set_clear(self):
        br = self.new_bridge()
        port = self.name('p')
        br.add_port(port, type='internal')
        self.assertIsNone(br.get_port_tag(port))
        br.add_port(port, tag=42)
        self.assertEqual(42, vsctl_json('Port', port, 'tag'))
        self.assertEqual(42, br.get_port_tag(port))
        br.add_port(port)                   # tag not stated: kept
        self.assertEqual(42, br.get_port_tag(port))
        br.add_port(port, tag=None)
        self.assertEqual([], vsctl_json('Port', port, 'tag'))
        self.assertIsNone(br.get_port_tag(port))
        self.assertRaises(ValueError, br.add_port, port, tag=4096)
        # A port that is someone else's is adjusted, never created.
        self.assertRaises(ovs_errors.OvsdbNotFound, ovs_ports.apply, self.ovs,
                          [ovs_ports.PortSpec(br.name, self.name('zz'), tag=1, create=False)])
        self.assertEqual([port], br.get_port_names())

    def test_external_ids_and_other_config_merge(self):
        br = self.new_bridge()
        port = self.name('p')
        br.add_port(port, type='internal', external_ids={'iface-id': 'x'})
        br.add_port(port, external_ids={'attached-mac': 'fa:16:3e:aa:bb:cc'})
        expected = {'iface-id': 'x', 'attached-mac': 'fa:16:3e:aa:bb:cc'}
        self.assertEqual(expected, vsctl_json('Interface', port, 'external_ids'))
        self.assertEqual(expected, br.get_interface_external_ids(port))
        br.add_port(port, external_ids={'iface-id': 'y'})
        self.assertEqual({**expected, 'iface-id': 'y'},
                         vsctl_json('Interface', port, 'external_ids'))
        br.add_port(port, other_config={'tag': 3})
        br.add_port(port, other_config={'net_uuid': 'n'})
        self.assertEqual({'tag': '3', 'net_uuid': 'n'}, br.get_port_other_config(port))
        self.assertEqual({'tag': '3', 'net_uuid': 'n'}, vsctl_json('Port', port, 'other_config'))

    def test_writing_a_port_as_it_is_changes_no_row(self):
        br = self.new_bridge()
        port = self.name('p')
        state = dict(type='internal', external_ids={'iface-id': 'x'}, tag=5,
                     other_config={'net_uuid': 'n'}, mtu_request=1400)
        br.add_port(port, **state)
        changes = []

        class Ev(ovs_event.RowEvent):
            def __init__(self, table):
                super().__init__((ovs_events.ROW_CREATE, ovs_events.ROW_UPDATE,
                                  ovs_events.ROW_DELETE), table, None)

            def run(self, event, row, old):
                if getattr(row, 'name', None) in (port, br.name):
                    changes.append((event, row.name))
        for table in ('Bridge', 'Port', 'Interface'):
            ev = Ev(table)
            self.ovs.handler.watch_event(ev)
            self.addCleanup(self.ovs.handler.unwatch_event, ev)
        # A change of another port is the marker that events got through.
        marker = self.name('m')
        br.add_port(port, **state)
        ovs_ports.apply(self.ovs, [ovs_ports.PortSpec(br.name, port, type='internal',
                                                      tag=5, protected=False)])
        br.add_port(marker, type='internal')
        self.assertTrue(wait_until(lambda: any(n == br.name for _, n in changes)))
        self.assertEqual([], [c for c in changes if c[1] == port])

    def test_add_port_again_converges(self):
        br = self.new_bridge()
        port = self.name('p')
        br.add_port(port, type='internal', tag=1, external_ids={'iface-id': 'a'})
        first = vsctl_json('Interface', port, '_uuid')
        br.add_port(port, tag=2, external_ids={'attached-mac': 'm'})
        self.assertEqual([port], br.get_port_names())
        self.assertEqual(first, vsctl_json('Interface', port, '_uuid'))
        self.assertEqual('internal', vsctl_json('Interface', port, 'type'))  # kept
        self.assertEqual(2, vsctl_json('Port', port, 'tag'))
        self.assertEqual({'iface-id': 'a', 'attached-mac': 'm'},
                         vsctl_json('Interface', port, 'external_ids'))

    def test_port_on_other_bridge_is_left_alone(self):
        br1, br2 = self.new_bridge('a'), self.new_bridge('b')
        port = self.name('p')
        br1.add_port(port, type='internal')
        self.assertRaises(ovs_errors.OvsdbError, br2.add_port, port, type='internal')
        br2.delete_port(port)               # if_exists: not on br2, nothing happens
        self.assertEqual([port], br1.get_port_names())
        self.assertRaises(ovs_errors.OvsdbNotFound, br2.delete_port, port, if_exists=False)
        br1.delete_port(port)
        self.assertEqual([], br1.get_port_names())
        self.assertEqual('', vsctl('--if-exists', 'get', 'Port', port, 'name'))

    def test_patch_pair(self):
        br1, br2 = self.new_bridge('a'), self.new_bridge('b')
        pa, pb = self.name('pa'), self.name('pb')
        ovs_ports.apply(self.ovs, [
            ovs_ports.PortSpec(br1.name, pa, 'patch', {'peer': pb}),
            ovs_ports.PortSpec(br2.name, pb, 'patch', {'peer': pa})])
        self.assertEqual('patch', vsctl_json('Interface', pa, 'type'))
        self.assertEqual({'peer': pb}, vsctl_json('Interface', pa, 'options'))
        self.assertEqual({'peer': pa}, vsctl_json('Interface', pb, 'options'))
        self.assertGreater(br1.get_ofport(pa), 0)
        self.assertGreater(br2.get_ofport(pb), 0)
        self.assertEqual([], vsctl_json('Interface', pa, 'error'))

    def _random_ip(self):
        return '198.18.%d.%d' % tuple(os.urandom(1)[0] for _ in range(2))

    def test_vxlan_and_gre_ports(self):
        br = self.new_bridge()
        vx, gre = self.name('vx'), self.name('gr')
        remote = self._random_ip()
        br.add_port(vx, type='vxlan', tag=None, options=ovs_validation.build_tunnel_options(
            'vxlan', remote, local_ip='198.19.0.1', dst_port=4790, df_default=False))
        br.add_port(gre, type='gre', options=ovs_validation.build_tunnel_options(
            'gre', self._random_ip(), key=int.from_bytes(os.urandom(3), 'big')))
        self.assertEqual('vxlan', vsctl_json('Interface', vx, 'type'))
        self.assertEqual({'remote_ip': remote, 'local_ip': '198.19.0.1', 'key': 'flow',
                          'dst_port': '4790', 'df_default': 'false'},
                         vsctl_json('Interface', vx, 'options'))
        self.assertEqual('gre', vsctl_json('Interface', gre, 'type'))
        for port in (vx, gre):
            self.assertGreater(br.get_ofport(port), 0)
            self.assertEqual([], vsctl_json('Interface', port, 'error'))
        info = br.get_interface(vx)
        self.assertEqual((br.name, 'vxlan'), (info.bridge, info.type))

    def test_list_interfaces_on_this_bridge_only(self):
        br1, br2 = self.new_bridge('a'), self.new_bridge('b')
        br1.add_port(self.name('p1'), type='internal', external_ids={'iface-id': 'one'})
        br1.add_port(self.name('p2'), type='internal')
        br2.add_port(self.name('p3'), type='internal', external_ids={'iface-id': 'one'})
        listed = br1.list_interfaces_with_iface_id()
        self.assertEqual([(self.name('p1'), br1.name, 'one')],
                         [(i.name, i.bridge, i.iface_id) for i in listed])
        everywhere = {i.name for i in self.ovs.list_interfaces_with_iface_id()}
        self.assertTrue({self.name('p1'), self.name('p3')} <= everywhere)

    def test_get_ofport_times_out_for_missing_interface(self):
        br = self.new_bridge()
        start = time.monotonic()
        self.assertRaises(ovs_errors.OfportTimeout, br.get_ofport, self.name('no'), timeout=0.3)
        self.assertGreaterEqual(time.monotonic() - start, 0.3)

    def test_get_ofport_waits_for_a_port_created_later(self):
        br = self.new_bridge()
        port = self.name('late')
        timer = threading.Timer(0.2, vsctl, ('add-port', br.name, port, '--', 'set',
                                             'Interface', port, 'type=internal'))
        timer.start()
        self.addCleanup(timer.join)
        ofport = br.get_ofport(port, timeout=WAIT)
        self.assertEqual(vsctl_json('Interface', port, 'ofport'), ofport)


class TestBatch(OvsTestCase):

    def _bridge_port_counts(self, bridge):
        """Record (ports before, ports after) of every update of this bridge."""
        counts = []

        class Ev(ovs_event.RowEvent):
            def __init__(self):
                super().__init__((ovs_events.ROW_UPDATE,), 'Bridge', (('name', '=', bridge),))

            def run(self, event, row, old):
                if hasattr(old, 'ports'):
                    counts.append((len(old.ports), len(row.ports)))
        ev = Ev()
        self.ovs.handler.watch_event(ev)
        self.addCleanup(self.ovs.handler.unwatch_event, ev)
        return counts

    def _batch(self, n, wait):
        br = self.new_bridge()
        counts = self._bridge_port_counts(br.name)
        names = [self.name('%03d' % i) for i in range(n)]
        start = time.monotonic()
        with self.ovs.transaction(wait=wait):
            for i, port in enumerate(names):
                br.add_port(port, type='internal', external_ids={'iface-id': f'id-{i}'},
                            tag=i % 4094 + 1)
            # Nothing is written before the block ends.
            self.assertEqual([], br.get_port_names())
        elapsed = time.monotonic() - start
        # Snapshot first: what the replica holds the moment commit returned.
        ofports = {i.name: i.ofport for i in br.list_interfaces_with_iface_id()}
        self.addDetail(f'batch-{n}-wait-{wait}', content.text_content(f'{elapsed:.3f} s'))
        self.assertEqual(sorted(names), br.get_port_names())
        # One OVSDB transaction: the bridge went from 1 port (its own) to
        # n+1 in a single update, not n updates of one port each.
        self.assertTrue(wait_until(lambda: counts), 'no Bridge update seen')
        self.assertEqual([(1, n + 1)], counts)
        return br, names, ofports

    def test_batch_of_50_ports_waits_for_ofports(self):
        br, names, ofports = self._batch(50, wait=True)
        # wait=True returned after ovs-vswitchd applied it: no waiting needed.
        self.assertEqual(set(names), set(ofports))
        self.assertTrue(all(p is not None and p > 0 for p in ofports.values()), ofports)
        self.assertEqual(len(names), len(set(ofports.values())))
        self.assertEqual(ofports[names[7]], vsctl_json('Interface', names[7], 'ofport'))

    def test_batch_no_wait(self):
        br, names, _ = self._batch(50, wait=False)
        ofports = [br.get_ofport(n, timeout=WAIT) for n in names]
        self.assertEqual(len(names), len(set(ofports)))

    def test_bridge_and_ports_in_one_transaction(self):
        br = ovs_bridge.OVSBridge(self.name(), self.ovs, datapath_type='netdev')
        self.addCleanup(vsctl, '--if-exists', 'del-br', br.name)
        with self.ovs.transaction() as txn:
            br.create(external_ids={'bridge-id': br.name})
            br.add_port(self.name('p'), type='internal', tag=3)
            br.add_port(self.name('q'), type='internal')
            br.add_port(self.name('q'), tag=4)      # a port of this same txn
            txn.add(self.ovs.api.db_set('Port', self.name('q'),
                                        ('external_ids', {'raw': 'ovsdbapp'})))
            self.assertFalse(br.exists())
        self.assertEqual([self.name('p'), self.name('q')], br.get_port_names())
        self.assertEqual((3, 4), (vsctl_json('Port', self.name('p'), 'tag'),
                                  vsctl_json('Port', self.name('q'), 'tag')))
        self.assertEqual({'raw': 'ovsdbapp'}, vsctl_json('Port', self.name('q'), 'external_ids'))
        self.assertGreater(br.get_interface(self.name('p')).ofport, 0)

    def test_failed_batch_writes_nothing(self):
        br = self.new_bridge()
        other = self.new_bridge('x')
        taken = self.name('xp')
        other.add_port(taken, type='internal')
        counts = self._bridge_port_counts(br.name)

        def conflicting_batch():
            with self.ovs.transaction():
                br.add_port(self.name('ok'), type='internal')
                br.add_port(taken, type='internal')     # on another bridge

        def failing_caller():
            with self.ovs.transaction():
                br.add_port(self.name('ok'), type='internal')
                raise KeyError('caller bug')

        self.assertRaises(ovs_errors.OvsdbError, conflicting_batch)
        self.assertEqual([], br.get_port_names())
        # The caller's own exception is not disguised as an OVSDB error.
        self.assertRaises(KeyError, failing_caller)
        self.assertEqual([], br.get_port_names())
        self.assertEqual([], counts)


class TestInterfaceEvents(OvsTestCase):

    def watch(self, bridge=None):
        rec = Recorder()
        watcher = self.ovs.watch_interfaces(on_iface_id=rec, on_ofport=rec,
                                            on_deleted=rec, bridge=bridge)
        self.addCleanup(watcher.stop)
        return watcher, rec

    @staticmethod
    def ev(kind, name):
        return lambda e: e.kind == kind and e.interface.name == name

    def nova_plug(self, bridge, port, port_id, mac):
        vsctl('add-port', bridge, port, '--', 'set', 'Interface', port, 'type=internal',
              f'external_ids:iface-id={port_id}', f'external_ids:attached-mac={mac}',
              'external_ids:iface-status=active')

    def test_external_plug_and_unplug_with_bridge_filter(self):
        br, foreign = self.new_bridge('a'), self.new_bridge('b')
        mine, theirs = self.name('vm'), self.name('fo')
        filtered_watcher, filtered = self.watch(br.name)
        _, everything = self.watch()
        self.assertEqual([], filtered_watcher.initial)

        port_id = str(uuid.uuid4())
        t0 = time.monotonic()
        self.nova_plug(br.name, mine, port_id, 'fa:16:3e:00:00:01')
        t_vsctl = time.monotonic()
        got_id = filtered.wait_for(self.ev(ovs_events.IFACE_ID_SET, mine))
        got_ofport = filtered.wait_for(self.ev(ovs_events.OFPORT_ASSIGNED, mine))
        self.assertIsNotNone(got_id)
        self.assertIsNotNone(got_ofport)
        (t_id, e_id), (t_of, e_of) = got_id, got_ofport
        self.assertEqual((port_id, 'fa:16:3e:00:00:01', br.name),
                         (e_id.interface.iface_id, e_id.interface.mac, e_id.interface.bridge))
        self.assertEqual(vsctl_json('Interface', mine, 'ofport'), e_of.interface.ofport)
        self.assertGreater(e_of.interface.ofport, 0)
        # Off the IDL and ovsdbapp handler threads.
        self.assertEqual({'ovsdb-callbacks'}, filtered.threads)
        self.addDetail('latency', content.text_content(
            f'ovs-vsctl add-port exec: {(t_vsctl - t0) * 1000:.1f} ms; '
            f'iface-id callback: {(t_id - t0) * 1000:.1f} ms; '
            f'ofport callback: {(t_of - t0) * 1000:.1f} ms after launch'))
        self.assertLess(t_of - t0, 2.0)

        self.nova_plug(foreign.name, theirs, str(uuid.uuid4()), 'fa:16:3e:00:00:02')
        vsctl('del-port', foreign.name, theirs)
        # The unfiltered watcher proves the foreign events happened ...
        self.assertIsNotNone(everything.wait_for(self.ev(ovs_events.IFACE_DELETED, theirs)))
        self.assertEqual(3, len(everything.matching(lambda e: e.interface.name == theirs)))
        vsctl('del-port', br.name, mine)
        got_del = filtered.wait_for(self.ev(ovs_events.IFACE_DELETED, mine))
        self.assertIsNotNone(got_del)
        self.assertEqual((port_id, br.name), (got_del[1].interface.iface_id,
                                              got_del[1].interface.bridge))
        # ... and, callbacks being delivered in order, the filtered one had
        # its chance to see them before it saw its own port's deletion.
        self.assertEqual([], filtered.matching(lambda e: e.interface.name == theirs))
        self.assertEqual([ovs_events.IFACE_ID_SET, ovs_events.OFPORT_ASSIGNED,
                          ovs_events.IFACE_DELETED],
                         [e.kind for e in filtered.matching(lambda e: True)])

    def test_iface_id_set_changed_and_removed_later(self):
        br = self.new_bridge()
        port = self.name('p')
        _, rec = self.watch(br.name)
        vsctl('add-port', br.name, port, '--', 'set', 'Interface', port, 'type=internal')
        ofport = br.get_ofport(port)
        vsctl('set', 'Interface', port, 'external_ids:iface-id=first')
        self.assertIsNotNone(rec.wait_for(self.ev(ovs_events.OFPORT_ASSIGNED, port)))
        vsctl('set', 'Interface', port, 'external_ids:iface-id=second')
        self.assertIsNotNone(rec.wait_for(
            lambda e: e.kind == ovs_events.IFACE_ID_SET and e.interface.iface_id == 'second'))
        vsctl('remove', 'Interface', port, 'external_ids', 'iface-id')
        self.assertIsNotNone(rec.wait_for(
            lambda e: e.kind == ovs_events.IFACE_DELETED and e.interface.iface_id == 'second'))
        got = [(e.kind, e.interface.iface_id) for e in rec.matching(lambda e: True)]
        self.assertEqual([(ovs_events.IFACE_ID_SET, 'first'), (ovs_events.OFPORT_ASSIGNED, 'first'),
                          (ovs_events.IFACE_DELETED, 'first'),
                          (ovs_events.IFACE_ID_SET, 'second'),
                          (ovs_events.OFPORT_ASSIGNED, 'second'),
                          (ovs_events.IFACE_DELETED, 'second')],
                         got)
        self.assertEqual(ofport, rec.matching(lambda e: True)[1].interface.ofport)

    def test_existing_ports_are_in_initial_not_in_events(self):
        br = self.new_bridge()
        old, new = self.name('o'), self.name('n')
        br.add_port(old, type='internal', external_ids={'iface-id': 'old'})
        watcher, rec = self.watch(br.name)
        self.assertEqual([('old', old)], [(i.iface_id, i.name) for i in watcher.initial])
        self.assertTrue(watcher.initial[0].ofport_valid)
        br.add_port(new, type='internal', external_ids={'iface-id': 'new'})
        self.assertIsNotNone(rec.wait_for(self.ev(ovs_events.OFPORT_ASSIGNED, new)))
        br.delete_port(old)
        self.assertIsNotNone(rec.wait_for(self.ev(ovs_events.IFACE_DELETED, old)))
        self.assertEqual([], rec.matching(lambda e: e.interface.name == old
                                          and e.kind != ovs_events.IFACE_DELETED))

    def test_callback_may_issue_commands(self):
        br = self.new_bridge()
        port = self.name('p')
        tagged = threading.Event()

        def on_ofport(event):
            br.add_port(event.interface.name, tag=99)   # the agent wiring a port
            tagged.set()
        watcher = self.ovs.watch_interfaces(on_ofport=on_ofport, bridge=br.name)
        self.addCleanup(watcher.stop)
        self.nova_plug(br.name, port, 'pid', 'fa:16:3e:00:00:03')
        self.assertTrue(tagged.wait(WAIT))
        self.assertEqual(99, vsctl_json('Port', port, 'tag'))


class TestResync(OvsTestCase):

    def test_session_reset_signals_resync(self):
        rec = Recorder()
        self.ovs.add_resync_callback(rec)
        self.ovs.api.ovsdb_connection.force_reconnect()
        self.assertIsNotNone(rec.wait_for(lambda r: r == ovs_connection.RESYNC_OVSDB_RECONNECTED))
        # Still usable afterwards.
        br = self.new_bridge()
        self.assertTrue(br.exists())

    def test_host_vswitchd_monitor_sees_no_restart(self):
        rec = Recorder()
        self.ovs.add_resync_callback(rec)
        mon = self.ovs.start_vswitchd_monitor(interval=0.05)
        self.assertIs(mon, self.ovs.start_vswitchd_monitor())
        self.assertIsNotNone(ovs_vswitchd.read_process_identity(mon.pidfile),
                             f'{mon.pidfile} does not name a running ovs-vswitchd')
        time.sleep(0.3)  # several polls of a steady daemon
        self.assertEqual([], rec.matching(lambda r: True))


class PrivateOvs(fixtures.Fixture):
    """ovsdb-server (and optionally ovs-vswitchd) in a temporary directory.

    Never create bridges in it: see the module docstring.
    """

    def __init__(self, with_vswitchd=False):
        super().__init__()
        self.with_vswitchd = with_vswitchd

    def _setUp(self):
        self.dir = self.useFixture(fixtures.TempDir()).path
        self.sock = os.path.join(self.dir, 'db.sock')
        self.endpoint = 'unix:' + self.sock
        self.db = os.path.join(self.dir, 'conf.db')
        self.env = dict(os.environ, OVS_RUNDIR=self.dir, OVS_LOGDIR=self.dir,
                        OVS_DBDIR=self.dir)
        subprocess.run(['ovsdb-tool', 'create', self.db,
                        '/usr/share/openvswitch/vswitch.ovsschema'], check=True)
        self.start_ovsdb()
        self.addCleanup(self.stop, 'ovsdb')
        vsctl('init', db=self.endpoint)
        if self.with_vswitchd:
            self.start_vswitchd()
            self.addCleanup(self.stop, 'vswitchd')

    def _daemon(self, name, args):
        subprocess.run(args + [f'--pidfile={self.pidfile(name)}',
                               f'--unixctl={self.dir}/{name}.ctl',
                               f'--log-file={self.dir}/{name}.log', '--detach'],
                       check=True, env=self.env, capture_output=True)

    def pidfile(self, name):
        return os.path.join(self.dir, f'{name}.pid')

    def start_ovsdb(self):
        self._daemon('ovsdb', ['ovsdb-server', f'--remote=punix:{self.sock}', self.db])

    def start_vswitchd(self):
        self._daemon('vswitchd', ['ovs-vswitchd', self.endpoint])

    def stop(self, name):
        """Stop our own daemon (by the pid in its pidfile) and wait for it."""
        ident = ovs_vswitchd.read_process_identity(self.pidfile(name))
        if ident is None:
            return
        os.kill(ident[0], signal.SIGTERM)
        if not wait_until(lambda: ovs_vswitchd.read_process_identity(self.pidfile(name)) != ident):
            raise RuntimeError(f'private {name} did not stop')


class TestPrivateOvs(base.FunctionalTestCase):

    def setUp(self):
        super().setUp()
        for tool in ('ovsdb-server', 'ovsdb-tool', 'ovs-vswitchd'):
            if subprocess.run(['which', tool], capture_output=True).returncode:
                self.skipTest(f'{tool} not installed')

    def test_shared_connection_per_endpoint(self):
        priv = self.useFixture(PrivateOvs())
        conn = ovs_connection.get_connection(priv.endpoint, timeout=5)
        self.addCleanup(conn.close)
        self.assertIs(conn, ovs_connection.get_connection(priv.endpoint + ' '))
        other = ovs_connection.get_connection(ENDPOINT, timeout=5)   # the host's, left open
        self.assertIsNot(conn, other)
        self.assertEqual((priv.endpoint, ENDPOINT), (conn.endpoint, other.endpoint))
        conn.close()
        again = ovs_connection.get_connection(priv.endpoint, timeout=5)
        self.addCleanup(again.close)
        self.assertIsNot(conn, again)

    def test_unreachable_endpoint(self):
        missing = 'unix:' + os.path.join(self.useFixture(fixtures.TempDir()).path, 'none')
        self.assertRaises(ovs_errors.OvsdbUnavailable, ovs_connection.OvsdbConnection, missing,
                          timeout=1)

    def _db_transact(self, priv, *ops):
        subprocess.run(['ovsdb-tool', 'transact', priv.db,
                        json.dumps(['Open_vSwitch'] + list(ops))],
                       check=True, capture_output=True)

    def test_waiting_write_without_vswitchd_returns_after_timeout(self):
        priv = self.useFixture(PrivateOvs())     # no ovs-vswitchd to wait for
        conn = ovs_connection.OvsdbConnection(priv.endpoint, timeout=1)
        self.addCleanup(conn.close)
        br = conn.bridge('akbwait')
        start = time.monotonic()
        br.create()                              # wait=True: gives up waiting
        waited = time.monotonic() - start
        self.assertTrue(br.exists())
        self.assertGreaterEqual(waited, 1.0)
        self.assertLess(waited, 1.0 + ovs_idl.WaitTransaction.CALLER_GRACE)
        start = time.monotonic()
        with conn.transaction(wait=False):
            br.add_port('akbwaitp', external_ids={'iface-id': 'x'})
        self.assertLess(time.monotonic() - start, 1.0)
        self.assertEqual(['akbwaitp'], br.get_port_names())

    def test_ovsdb_restart_reports_changes_made_while_down(self):
        priv = self.useFixture(PrivateOvs())
        # No ovs-vswitchd here: writes must not wait for it.
        conn = ovs_connection.OvsdbConnection(priv.endpoint, timeout=5, wait=False)
        self.addCleanup(conn.close)
        br = conn.bridge('akbpriv', datapath_type='netdev')   # rows only, never run
        br.create()
        br.add_port('akbkeep', external_ids={'iface-id': 'keep'})
        br.add_port('akbgone', external_ids={'iface-id': 'gone'})
        rec, resync = Recorder(), Recorder()
        watcher = conn.watch_interfaces(on_iface_id=rec, on_deleted=rec, bridge=br.name)
        conn.add_resync_callback(resync)
        self.assertEqual({'keep', 'gone'}, {i.iface_id for i in watcher.initial})
        gone_port = next(p for p in conn.api.tables['Port'].rows.values()
                         if p.name == 'akbgone')

        priv.stop('ovsdb')
        # While ovsdb-server is down, remove one port and add another
        # straight in the database file.
        self._db_transact(
            priv,
            {'op': 'mutate', 'table': 'Bridge', 'where': [['name', '==', br.name]],
             'mutations': [['ports', 'delete', ['uuid', str(gone_port.uuid)]]]},
            {'op': 'delete', 'table': 'Port', 'where': [['name', '==', 'akbgone']]},
            {'op': 'insert', 'table': 'Interface', 'uuid-name': 'i',
             'row': {'name': 'akbnew',
                     'external_ids': ['map', [['iface-id', 'new']]]}},
            {'op': 'insert', 'table': 'Port', 'uuid-name': 'p',
             'row': {'name': 'akbnew', 'interfaces': ['named-uuid', 'i']}},
            {'op': 'mutate', 'table': 'Bridge', 'where': [['name', '==', br.name]],
             'mutations': [['ports', 'insert', ['named-uuid', 'p']]]})
        priv.start_ovsdb()

        self.assertIsNotNone(resync.wait_for(lambda r: r == ovs_connection.RESYNC_OVSDB_RECONNECTED,
                                             timeout=20))
        self.assertIsNotNone(rec.wait_for(lambda e: e.interface.iface_id == 'new'))
        got = sorted((e.kind, e.interface.iface_id) for e in rec.matching(lambda e: True))
        # 'keep' is not re-reported although the reconnect re-sent every row.
        self.assertEqual([(ovs_events.IFACE_DELETED, 'gone'),
                          (ovs_events.IFACE_ID_SET, 'new')], got)
        self.assertEqual(['akbkeep', 'akbnew'], br.get_port_names())

    def test_vswitchd_restart_signals_resync(self):
        priv = self.useFixture(PrivateOvs(with_vswitchd=True))
        conn = ovs_connection.OvsdbConnection(priv.endpoint, timeout=5)
        self.addCleanup(conn.close)
        resync = Recorder()
        conn.add_resync_callback(resync)
        mon = conn.start_vswitchd_monitor(pidfile=priv.pidfile('vswitchd'), interval=0.05)
        before = ovs_vswitchd.read_process_identity(mon.pidfile)
        self.assertIsNotNone(before)
        priv.stop('vswitchd')
        priv.start_vswitchd()
        got = resync.wait_for(lambda r: r == ovs_connection.RESYNC_VSWITCHD_RESTARTED)
        self.assertIsNotNone(got)
        self.assertNotEqual(before, ovs_vswitchd.read_process_identity(mon.pidfile))
        self.assertEqual([ovs_connection.RESYNC_VSWITCHD_RESTARTED],
                         resync.matching(lambda r: True))
        # The database saw nothing of it, which is why the pidfile is used.
        self.assertEqual([], conn.list_bridges())
