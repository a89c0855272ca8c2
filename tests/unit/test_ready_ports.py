"""agentkit.agent.ready_ports: dhcp_ready_on_ports in batches."""

import threading
import time

from agentkit.agent import ready_ports
from tests import base


class ReadyPortsReporterTest(base.TestCase):

    def test_ports_of_many_networks_go_in_one_call(self):
        calls = []
        reporter = ready_ports.ReadyPortsReporter(calls.append, window=0.2)
        self.addCleanup(reporter.stop)
        reporter.start()
        for i in range(10):
            reporter.add([f'p{i}a', f'p{i}b'])
        self.assertTrue(base.eventually(lambda: calls))
        time.sleep(0.3)
        self.assertEqual(1, len(calls))
        self.assertEqual(20, len(calls[0]))

    def test_a_call_carries_at_most_max_ports(self):
        calls = []
        reporter = ready_ports.ReadyPortsReporter(calls.append, max_per_call=3)
        reporter.add(['a', 'b', 'c', 'd', 'e'])
        reporter.flush()
        self.assertEqual([['a', 'b', 'c'], ['d', 'e']], calls)
        self.assertEqual(set(), reporter.pending())

    def test_ports_of_a_failed_call_are_sent_again(self):
        calls = []
        fail = threading.Event()
        fail.set()

        def send(ids):
            calls.append(list(ids))
            if fail.is_set():
                fail.clear()
                raise TimeoutError('no reply')
        reporter = ready_ports.ReadyPortsReporter(send, window=0.01)
        self.patch(ready_ports, '_RETRY_FIRST', 0.05)
        self.addCleanup(reporter.stop)
        reporter.start()
        reporter.add(['a', 'b'])
        self.assertTrue(base.eventually(lambda: len(calls) == 2))
        self.assertEqual([['a', 'b'], ['a', 'b']], calls)
        self.assertEqual(set(), reporter.pending())

    def test_flush_keeps_the_ports_of_a_failing_call(self):
        def send(ids):
            raise TimeoutError('no reply')
        reporter = ready_ports.ReadyPortsReporter(send)
        reporter.add(['a'])
        self.assertRaises(TimeoutError, reporter.flush)
        self.assertEqual({'a'}, reporter.pending())
