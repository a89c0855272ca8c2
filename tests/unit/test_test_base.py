"""The shared test base keeps tests off the host's own state."""

import os
import tempfile

import fixtures
from oslo_config import cfg

from agentkit.conf import common as common_conf
from agentkit.agent import router_intent
from agentkit.api import l3 as l3_api
from tests import base
from tests.unit import test_l3_agent

HOST_STATE_PATH = '/var/lib/agentkit'


class TemporaryStatePathTest(base.TestCase):

    def _assert_temporary(self, conf: cfg.ConfigOpts) -> None:
        self.assertNotEqual(HOST_STATE_PATH, conf.state_path)
        self.assertTrue(os.path.isdir(conf.state_path))
        self.assertTrue(conf.state_path.startswith(tempfile.gettempdir() + os.sep),
                        conf.state_path)

    def test_global_conf_gets_a_temporary_state_path(self):
        self._assert_temporary(self.conf)

    def test_a_conf_the_test_builds_itself_gets_it_too(self):
        # As tests/unit/test_rpc_fuzz.py does: a fresh ConfigOpts.
        conf = cfg.ConfigOpts()
        common_conf.register_common_opts(conf)
        conf([], project='agentkit', default_config_files=[])
        self._assert_temporary(conf)
        self.assertEqual(self.conf.state_path, conf.state_path)

    def test_the_l3_intent_record_lands_in_it(self):
        # What the L3 agent of tests/unit/test_rpc_fuzz.py does with its own
        # ConfigOpts: the record is written, and where the test owns it.
        conf = cfg.ConfigOpts()
        common_conf.register_common_opts(conf)
        conf([], project='agentkit', default_config_files=[])
        self._assert_temporary(conf)  # before anything is written
        r = l3_api.Router.from_rpc(test_l3_agent.router())
        router_intent.write(conf.state_path, r)
        self.assertEqual({r.id}, router_intent.recorded_ids(self.conf.state_path))

    def test_a_test_override_still_wins(self):
        own = self.useFixture(fixtures.TempDir()).path
        self.conf.set_override('state_path', own)
        self.assertEqual(own, self.conf.state_path)
