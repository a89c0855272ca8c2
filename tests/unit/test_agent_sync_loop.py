"""When an agent syncs in full: at start and for a reason, audits on a slow clock, never else."""

import os
import time

import fixtures
from oslo_config import cfg

from agentkit.conf import common

from tests import base
from tests.unit import test_systemd


class AuditingAgent(test_systemd.FakeAgent):

    def load_drivers(self):
        super().load_drivers()
        self.audits = 0

    def audit_state(self):
        self.audits += 1


def _wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


class SyncLoopTest(base.TestCase):

    def start(self, audit_interval):
        self.conf.set_override('audit_interval', audit_interval, 'agent')
        agent = AuditingAgent(self.conf)
        self.addCleanup(agent.halt)
        agent.run_loops()
        self.assertTrue(_wait(lambda: agent.fullsyncs_done == 1))
        return agent

    def test_no_periodic_full_sync(self):
        agent = self.start(600)
        time.sleep(0.5)
        self.assertEqual((1, 0), (agent.fullsyncs_done, agent.audits))

    def test_a_scheduled_resync_runs_at_once(self):
        agent = self.start(600)
        agent.schedule_resync('server revived agent')
        self.assertTrue(_wait(lambda: agent.fullsyncs_done == 2, 2.0))
        self.assertEqual(0, agent.audits)

    def test_audits_on_their_interval(self):
        agent = self.start(1)
        self.assertTrue(_wait(lambda: agent.audits >= 1, 3.0))
        self.assertEqual(agent.audits + 1, agent.fullsyncs_done)

    def test_zero_turns_audits_off_and_sighup_turns_them_on(self):
        agent = self.start(0)
        time.sleep(1.2)
        self.assertEqual(0, agent.audits)
        self.conf.set_override('audit_interval', 1, 'agent')
        agent._resync_event.set()  # what reload() does after re-reading options
        self.assertTrue(_wait(lambda: agent.audits >= 1, 3.0))

    def test_old_option_name_still_works(self):
        path = os.path.join(self.useFixture(fixtures.TempDir()).path, 'agent.ini')
        with open(path, 'w') as f:
            f.write('[agent]\nresync_interval = 30\n')
        conf = cfg.ConfigOpts()
        common.register_common_opts(conf)
        conf(['--config-file', path], project='agentkit')
        self.assertEqual(30, conf.agent.audit_interval)
