import threading
import time

from agentkit.agent import work_queue as wq
from tests import base


class WorkQueueTest(base.TestCase):

    def _queue(self, handler, **kw):
        q = wq.WorkQueue(handler, **kw)
        self.addCleanup(q.stop, 2)
        return q

    def test_rpc_priority_overtakes_sync(self):
        order = []
        q = self._queue(lambda u: order.append(u.resource_id), workers=1)
        for i in range(5):
            q.put(wq.ResourceUpdate(f's{i}', 'sync', wq.PRIORITY_SYNC))
        q.put(wq.ResourceUpdate('rpc', 'sync', wq.PRIORITY_RPC))
        q.start()
        self.assertTrue(q.wait_idle(5))
        self.assertEqual('rpc', order[0])
        self.assertEqual(sorted(f's{i}' for i in range(5)), sorted(order[1:]))

    def test_in_progress_is_pending_and_running(self):
        release = threading.Event()
        started = threading.Event()

        def handler(update):
            started.set()
            release.wait(5)
        q = self._queue(handler, workers=1)
        q.put(wq.ResourceUpdate('running', 'sync', wq.PRIORITY_RPC))
        q.put(wq.ResourceUpdate('pending', 'sync', wq.PRIORITY_SYNC))
        q.start()
        self.assertTrue(started.wait(5))
        self.assertEqual({'running', 'pending'}, q.in_progress())
        release.set()
        self.assertTrue(q.wait_idle(5))
        self.assertEqual(set(), q.in_progress())

    def test_pending_updates_coalesce_to_latest(self):
        seen = []
        q = self._queue(lambda u: seen.append((u.resource_id, u.payload)),
                        workers=1)
        for i in range(10):
            q.put(wq.ResourceUpdate('net1', 'sync', wq.PRIORITY_SYNC, payload=i))
        q.put(wq.ResourceUpdate('net1', 'sync', wq.PRIORITY_RPC, payload='last'))
        self.assertEqual(1, len(q))
        q.start()
        self.assertTrue(q.wait_idle(5))
        self.assertEqual([('net1', 'last')], seen)

    def test_update_that_must_not_supersede_leaves_the_pending_one(self):
        seen = []
        q = self._queue(lambda u: seen.append(u.payload), workers=1)
        self.assertTrue(q.put(wq.ResourceUpdate('r1', 'refresh', wq.PRIORITY_RPC, 'rpc')))
        self.assertFalse(q.put(wq.ResourceUpdate('r1', 'apply', wq.PRIORITY_SYNC, 'sync'),
                               supersede=False))
        self.assertTrue(q.put(wq.ResourceUpdate('r2', 'apply', wq.PRIORITY_SYNC, 'other'),
                              supersede=False))
        # An update of the same priority is replaced as usual.
        self.assertTrue(q.put(wq.ResourceUpdate('r2', 'apply', wq.PRIORITY_SYNC, 'newer'),
                              supersede=False))
        q.start()
        self.assertTrue(q.wait_idle(5))
        self.assertEqual(['rpc', 'newer'], seen)

    def test_same_resource_never_runs_concurrently(self):
        active = set()
        overlaps = []
        lock = threading.Lock()

        def handler(update):
            with lock:
                if update.resource_id in active:
                    overlaps.append(update.resource_id)
                active.add(update.resource_id)
            time.sleep(0.05)
            with lock:
                active.discard(update.resource_id)

        q = self._queue(handler, workers=4)
        q.start()
        for i in range(6):
            q.put(wq.ResourceUpdate('same', 'sync', payload=i))
            q.put(wq.ResourceUpdate(f'other{i}', 'sync'))
            time.sleep(0.01)
        self.assertTrue(q.wait_idle(10))
        self.assertEqual([], overlaps)

    def test_failures_retry_then_exhaust(self):
        calls = []
        exhausted = []

        def handler(update):
            calls.append(update.tries)
            raise RuntimeError('boom')

        self.useFixture(__import__('fixtures').MonkeyPatch(
            'agentkit.agent.work_queue._BACKOFF_BASE', 0.01))
        q = self._queue(handler, workers=1, max_retries=2,
                        on_exhausted=lambda u, e: exhausted.append((u, e)))
        q.start()
        q.put(wq.ResourceUpdate('bad', 'sync'))
        self.assertTrue(q.wait_idle(5))
        self.assertEqual([0, 1, 2], calls)
        self.assertEqual(1, len(exhausted))
        self.assertEqual('bad', exhausted[0][0].resource_id)
        self.assertIsInstance(exhausted[0][1], RuntimeError)

    def test_one_failing_resource_does_not_block_others(self):
        done = []

        def handler(update):
            if update.resource_id == 'bad':
                raise ValueError('nope')
            done.append(update.resource_id)

        q = self._queue(handler, workers=2, max_retries=0)
        q.start()
        q.put(wq.ResourceUpdate('bad', 'sync'))
        q.put(wq.ResourceUpdate('good', 'sync'))
        self.assertTrue(q.wait_idle(5))
        self.assertEqual(['good'], done)

    def test_stop_returns_promptly(self):
        q = self._queue(lambda u: None, workers=3)
        q.start()
        started = time.monotonic()
        q.stop(2)
        self.assertLess(time.monotonic() - started, 2.5)
        self.assertEqual([], q._threads)


class WorkQueueObservationTest(base.TestCase):
    """snapshot/mark/done_through: what READY and the GMR read."""

    def test_snapshot_pending_and_running(self):
        gate = threading.Event()
        q = wq.WorkQueue(lambda u: gate.wait(5), workers=1)
        self.addCleanup(q.stop, 2)
        self.addCleanup(gate.set)
        q.put(wq.ResourceUpdate('busy', 'apply'))
        q.start()
        deadline = time.monotonic() + 5
        while q.longest_running() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        q.put(wq.ResourceUpdate('s1', 'sync', wq.PRIORITY_SYNC))
        q.put(wq.ResourceUpdate('r1', 'delete', wq.PRIORITY_RPC))
        q.put(wq.ResourceUpdate('later', 'sync', wq.PRIORITY_RPC), delay=60)
        snap = q.snapshot()
        self.assertEqual(3, snap['pending_total'])
        self.assertEqual(1, snap['running_total'])
        self.assertEqual((1, 1), (snap['workers'], snap['workers_alive']))
        self.assertEqual(['r1', 'later', 's1'],
                         [p['resource_id'] for p in snap['pending']])
        self.assertEqual(['rpc', 'rpc', 'sync'], [p['priority'] for p in snap['pending']])
        self.assertGreater(snap['pending'][1]['due_in_s'], 50)
        self.assertEqual([('busy', 'apply')], [(r['resource_id'], r['action'])
                                               for r in snap['running']])
        self.assertEqual(1, len(q.snapshot(limit=1)['pending']))
        self.assertEqual(('busy', 'apply'), q.longest_running()[:2])

    def test_done_through_ignores_later_and_superseding_work(self):
        gate_a, gate_b = threading.Event(), threading.Event()
        q = wq.WorkQueue(lambda u: (gate_a if u.resource_id == 'a' else gate_b).wait(5),
                         workers=2)
        self.addCleanup(q.stop, 2)
        self.addCleanup(gate_a.set)
        self.addCleanup(gate_b.set)
        q.put(wq.ResourceUpdate('a', 'sync', wq.PRIORITY_SYNC))
        q.put(wq.ResourceUpdate('b', 'sync', wq.PRIORITY_SYNC))
        mark = q.mark()
        self.assertFalse(q.done_through(mark))
        # b is superseded by an event after the mark: only a is waited for
        q.put(wq.ResourceUpdate('b', 'delete', wq.PRIORITY_RPC))
        q.start()
        deadline = time.monotonic() + 5
        while q.snapshot()['running_total'] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertFalse(q.done_through(mark))  # a is running
        gate_a.set()
        while q.snapshot()['running_total'] > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(['b'], [r['resource_id'] for r in q.snapshot()['running']])
        self.assertTrue(q.done_through(mark))  # b's running update is newer
        gate_b.set()
        self.assertTrue(q.wait_idle(5))
        self.assertTrue(q.done_through(mark))
        self.assertTrue(q.workers_alive())
        q.stop(2)
        self.assertFalse(q.workers_alive())
