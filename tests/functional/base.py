"""Base for functional tests: real kernel objects, real daemons, as root.

Every object a test creates carries a short random prefix and is removed by
a cleanup even when the test fails, so tests never touch what else runs on
the host and can run in parallel.
"""

import os
import uuid

from oslo_config import cfg

from agentkit import privsep_setup
from tests import base

_privsep_initialised = False


class FunctionalTestCase(base.TestCase):
    """Functional test: requires root; privsep daemons run as real helpers."""

    def setUp(self) -> None:
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest('functional tests need root (namespaces, OVS, '
                          'privsep daemons)')
        global _privsep_initialised
        if not _privsep_initialised:
            privsep_setup.setup_privsep(cfg.CONF)
            _privsep_initialised = True

    @staticmethod
    def short_name(prefix: str = 'ak') -> str:
        """A device-safe unique name (IFNAMSIZ is 16 including NUL)."""
        return (prefix + uuid.uuid4().hex)[:14]
