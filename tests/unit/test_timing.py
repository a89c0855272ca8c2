"""agentkit.lib.timing: what each kind of outside call records."""

import threading
from unittest import mock

from agentkit.lib import timing
from agentkit.rpc import client as rpc_client
from tests import base


class LedgerTest(base.TestCase):

    def test_sums_calls_and_seconds_per_name(self):
        ledger = timing.Ledger()
        ledger.record(timing.RPC, 'sync_routers', 0.5)
        ledger.record(timing.RPC, 'sync_routers', 0.25)
        ledger.record(timing.OVSDB, 'commit', 0.125)
        self.assertEqual(
            {'rpc': {'sync_routers': {'calls': 2, 'seconds': 0.75}},
             'ovsdb': {'commit': {'calls': 1, 'seconds': 0.125}}},
            ledger.snapshot())
        ledger.reset()
        self.assertEqual({}, ledger.snapshot())

    def test_timed_block_recorded_also_when_it_raises(self):
        ledger = timing.Ledger()
        with self.assertRaises(ValueError):
            with ledger.timed(timing.PRIVSEP, 'netlink'):
                raise ValueError('boom')
        self.assertEqual(1, ledger.snapshot()['privsep']['netlink']['calls'])

    def test_threads_do_not_lose_records(self):
        ledger = timing.Ledger()

        def work():
            for _ in range(1000):
                ledger.record(timing.RPC, 'x', 0.001)
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(4000, ledger.snapshot()['rpc']['x']['calls'])


class RpcCallTimedTest(base.TestCase):

    def test_each_call_recorded_under_its_method(self):
        api = object.__new__(rpc_client.ServerApiClient)
        api.client = mock.Mock()
        api.default_timeout = 60
        before = timing.LEDGER.snapshot().get('rpc', {}).get(
            'timing_test_method', {'calls': 0})['calls']
        api._call('1.1', 'timing_test_method', a=1)
        api.client.prepare.return_value.call.side_effect = RuntimeError('gone')
        self.assertRaises(RuntimeError, api._call, '1.1', 'timing_test_method')
        after = timing.LEDGER.snapshot()['rpc']['timing_test_method']['calls']
        self.assertEqual(before + 2, after)
