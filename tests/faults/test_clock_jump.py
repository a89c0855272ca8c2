"""Fault: the wall clock jumps an hour forward, then two back, under agentkit-l2.

The agent runs under libfaketime (Debian package ``faketime``, bindep.txt):
``LD_PRELOAD`` of its multi-threaded library, the offset read from a file at
every clock read (``FAKETIME_TIMESTAMP_FILE`` + ``FAKETIME_NO_CACHE``), and
``DONT_FAKE_MONOTONIC=1``: only the wall clock jumps, as it does when NTP
steps it or an operator sets the date. The host's clock is never touched.

The fake server receives every state report: the wall-clock time the agent
puts in each one shows the jump took effect in the agent (the positive
control), and the server's own monotonic receive times show the reports
kept their interval. The agent must not resync and must keep wiring ports
plugged after each jump.
"""

import datetime
import os
import time
import uuid

from tests import reliability
from tests.functional import base
from tests.functional import test_l2_agent_ovs

LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1'
REPORT_INTERVAL = 2  # the harness's [agent] report_interval
TIME_FORMAT = '%Y-%m-%dT%H:%M:%S.%f'


class ClockJumpTest(test_l2_agent_ovs.L2AgentOVSHarness):

    def setUp(self) -> None:
        super().setUp()
        if not os.path.exists(LIBFAKETIME):
            self.skipTest(f'{LIBFAKETIME} missing (Debian package faketime, see bindep.txt)')
        self.offset_file = self.get_temp_path('faketime')
        self.set_offset('+0')

    def set_offset(self, offset: str) -> None:
        """libfaketime's relative offset ("+1h", "-1h") from the real clock."""
        tmp = self.offset_file + '.tmp'
        with open(tmp, 'w') as f:
            f.write(offset + '\n')
        os.replace(tmp, self.offset_file)

    def reports(self, since: int) -> list[tuple[float, float]]:
        """(server receive time, monotonic; agent's wall clock, epoch s) of
        this agent's reports since ``since``."""
        found = []
        for method, kw in self.neutron.calls[since:]:
            if (method == 'report_state'
                    and kw['agent_state']['agent_state']['host'] == self.host):
                sent = datetime.datetime.strptime(kw['time'], TIME_FORMAT).replace(
                    tzinfo=datetime.timezone.utc).timestamp()
                found.append((kw['_received'], sent))
        return found

    def wait_reports(self, since: int, count: int) -> list[tuple[float, float]]:
        return base.wait_until(lambda: len(self.reports(since)) >= count
                               and self.reports(since), 10 * count * REPORT_INTERVAL,
                               f'{count} state reports')

    def jump(self, offset: str, expected_skew: float, vni: int) -> dict[str, float]:
        """Set the offset; check the reports carry the jumped clock, keep their
        interval, and a VM plugged afterwards is wired."""
        mark = self.neutron.mark()
        self.set_offset(offset)
        jumped_at = time.monotonic()
        reports = self.wait_reports(mark, 4)
        # The agent's wall clock moved (libfaketime took effect)...
        skews = [sent - (time.time() - (time.monotonic() - received))
                 for received, sent in reports[1:]]
        for skew in skews:
            self.assertAlmostEqual(expected_skew, skew, delta=60,
                                   msg=f'agent clock skew {skew:.0f}s after {offset}')
        # ... its reports did not (no burst, no stall).
        gaps = [b[0] - a[0] for a, b in zip(reports, reports[1:])]
        for gap in gaps:
            self.assertGreater(gap, REPORT_INTERVAL / 2, gaps)
            self.assertLess(gap, REPORT_INTERVAL * 3, gaps)
        vm = self.add_vm(str(uuid.uuid4()), vni, f'10.252.9.{vni % 200 + 1}/24')
        self.wait_up(vm.port_id)
        return {'first report after the jump s': round(reports[0][0] - jumped_at, 2),
                'report gaps min s': round(min(gaps), 2),
                'report gaps max s': round(max(gaps), 2),
                'VM wired after the jump s': round(time.monotonic() - jumped_at, 2)}

    def test_wall_clock_jumps(self) -> None:
        env = dict(os.environ, LD_PRELOAD=LIBFAKETIME, DONT_FAKE_MONOTONIC='1',
                   FAKETIME_TIMESTAMP_FILE=self.offset_file, FAKETIME_NO_CACHE='1')
        proc = self.start_agent(env=env)
        vm = self.add_vm(str(uuid.uuid4()), 1001, '10.252.9.1/24')
        self.wait_up(vm.port_id)
        # Control: without a jump the agent's clock is the real one.
        mark = self.neutron.mark()
        before = self.wait_reports(mark, 2)
        self.assertAlmostEqual(0, before[-1][1] - time.time(), delta=60)
        proc.wait_for_output('Full sync (')  # how a resync is logged
        syncs = proc.output().count('Full sync (')

        forward = self.jump('+1h', 3600, 1002)
        backward = self.jump('-1h', -3600, 1003)

        output = proc.output()
        self.assertEqual(syncs, output.count('Full sync ('), 'a resync after a clock jump')
        self.assertNotIn('resyncing everything', output)
        self.assertIsNone(proc.proc.poll(), 'agentkit-l2 exited')
        result = {'+1h ' + k: v for k, v in forward.items()}
        result.update({'-2h ' + k: v for k, v in backward.items()})
        result['report_interval s'] = REPORT_INTERVAL
        result['resyncs'] = 0
        reliability.record(
            'clock-jump', kind='fault', order=60,
            fault='wall clock jump (+1 h, then -2 h)',
            injected='agentkit-l2 under libfaketime (`DONT_FAKE_MONOTONIC=1`, offset '
                     'file re-read at run time) set to +1 h, then to -1 h',
            checked="the reports' own timestamps show the jump; the server receives "
                    'them at the same interval (no burst, no stall); no resync; a VM '
                    'plugged after each jump is wired',
            result=result)
        print(f'clock-jump: {result}')
