"""Fault: radvd killed under the radvd manager (the L3 agent's, with its monitor).

A router namespace advertises a SLAAC prefix to a VM namespace (see
tests/functional/test_radvd.py); the VM pings the router through the kill.
"""

import os
import signal
import time

from drivers.l3 import radvd
from tests import reliability
from tests.functional import base
from tests.functional import canary as canary_lib
from tests.functional import test_radvd


class RadvdKilledTest(test_radvd.RadvdTestCase):

    def test_radvd_killed(self) -> None:
        prefix = test_radvd.random_prefix()
        router_ns, device, vm_ns = self.topology(prefix)
        manager = self.new_manager()
        manager.update(self.router_id, router_ns, [radvd.RaInterface(
            device, (radvd.RaPrefix(prefix, radvd.SLAAC),), mtu=1400)])
        addresses = self.wait_for_address_in(vm_ns, prefix)
        router = test_radvd.host(prefix)
        canary = canary_lib.Canary([(vm_ns, router)])
        self.addCleanup(canary.stop)
        time.sleep(1)

        pid = manager.pid(self.router_id)
        self.assertIsNotNone(pid)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        base.wait_until(lambda: manager.pid(self.router_id) not in (None, pid),
                        test_radvd.TIMEOUT, 'radvd respawned', interval=0.02)
        respawned_in = time.monotonic() - killed_at
        # The new radvd answers a solicitation with the prefix.
        ra = self.observed_ra(vm_ns)
        self.assertIsNotNone(self.prefix_block(ra, prefix), ra)
        base.wait_until(lambda: manager.get_configurations()['radvd_respawns'] == 1,
                        test_radvd.TIMEOUT, 'the monitor counting one respawn')
        time.sleep(1)
        counts = canary.stop()
        self.assertEqual(0, counts['pings lost'], counts)
        self.assertEqual(set(addresses), set(addresses) & self.global_addresses(vm_ns))
        self.assertTrue(self.default_route(vm_ns), 'the VM lost its default route')
        result = {'check_child_processes_interval s': 1,
                  'radvd respawned in s': round(respawned_in, 2), **counts,
                  'SLAAC addresses lost': 0}
        reliability.record(
            'radvd-killed', kind='fault', order=31,
            fault='radvd killed',
            injected='`kill -9` of a router\'s radvd under the L3 radvd manager, '
                     'check_child_processes_interval=1',
            checked='respawned (new pid, counted); the new radvd answers a router '
                    'solicitation with the prefix; the VM keeps its SLAAC address and '
                    'default route and pings the router throughout',
            result=result)
        print(f'radvd-killed: {result}')
