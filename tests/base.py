"""Shared test base classes."""

import logging
import uuid

import fixtures
import testtools
from oslo_config import cfg

from agentkit.conf import common as common_conf


class TestCase(testtools.TestCase):
    """Base for all tests: a clean cfg.CONF with agentkit's common options."""

    def setUp(self) -> None:
        super().setUp()
        self.useFixture(fixtures.NestedTempfile())
        self.log = self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        self.conf = cfg.CONF
        common_conf.register_common_opts(self.conf)
        self.conf([], project='agentkit', default_config_files=[])
        self.addCleanup(self.conf.reset)

    @staticmethod
    def unique_id() -> str:
        return str(uuid.uuid4())
