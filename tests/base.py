"""Shared test base classes."""

import logging
import os
import time
import types
import uuid
from unittest import mock

import fixtures
import testtools
from oslo_config import cfg

from agentkit.conf import common as common_conf


def eventually(predicate, timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


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
        self.use_temporary_state_path()

    def use_temporary_state_path(self) -> str:
        """Point ``state_path`` at a fresh directory of this test.

        The default is the host's /var/lib/agentkit; code under test that
        records state (the L3 agent's intent record, pid files) must never
        write there from a test.  Both cfg.CONF and any ConfigOpts a test
        builds itself get the directory: the shared option's default is
        patched for the test's duration.  A test that needs its own
        directory sets its own override afterwards, which wins.  Mode 0755
        so daemons that drop to an unprivileged user can traverse it as they
        would the real one.
        """
        state_path = self.useFixture(fixtures.TempDir()).path
        os.chmod(state_path, 0o755)
        opt = next(o for o in common_conf.core_opts if o.name == 'state_path')
        self.useFixture(fixtures.MockPatchObject(opt, 'default', state_path))
        self.conf.clear_default('state_path')  # also drops cached values
        return state_path

    @staticmethod
    def unique_id() -> str:
        return str(uuid.uuid4())

    def patch_entrypoints(self, module: types.ModuleType) -> dict[str, mock.MagicMock]:
        """Replace every privsep entrypoint of ``module`` by an autospec mock.

        The spec comes from the undecorated function (an entrypoint is a
        functools.partial), so calls are checked against its signature.
        """
        from agentkit.privileged import network
        mocks = {}
        for name, obj in vars(module).items():
            if network.is_entrypoint(obj):
                patcher = mock.patch.object(module, name, autospec=obj.args[0])
                mocks[name] = patcher.start()
                self.addCleanup(patcher.stop)
        return mocks
