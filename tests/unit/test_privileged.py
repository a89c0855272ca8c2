"""The privileged layer's own checks, run in-process (no root, no daemon).

Each refusal of a request the agent should never make is shown here:
namespace names, spawns of anything but agentkit's daemons, iptables
inputs that touch chains agentkit does not own.
"""

from __future__ import annotations

import os

from agentkit.lib import ip_lib
from agentkit.privileged import namespaces
from tests import base


class NamespaceNamesTest(base.TestCase):

    def test_names_agentkit_creates_are_valid(self) -> None:
        for name in ('qdhcp-' + '0' * 8 + '-1111-2222-3333-' + '4' * 12,
                     'qrouter-abc', 'snat-x', 'fip-y', 'akp1234abcd', '_leading_underscore',
                     'a', 'a' * namespaces.MAX_NAME_LEN):
            self.assertEqual(name, namespaces.check_name(name))
            self.assertEqual(name, ip_lib.validate_namespace(name))

    def test_unsafe_names_are_refused_by_root_and_agent_alike(self) -> None:
        for name in ('', '.', '..', '../etc', 'a/b', '-n', '.hidden', 'a b', 'a\0b',
                     'a' * (namespaces.MAX_NAME_LEN + 1), None, 5, b'qdhcp-x'):
            if name is not None:
                self.assertRaises(ValueError, namespaces.check_name, name)
                self.assertRaises(Exception, ip_lib.validate_namespace, name)
            self.assertFalse(namespaces.is_valid_name(name))

    def test_path_and_missing_namespace(self) -> None:
        self.assertEqual(os.path.join(namespaces.NETNS_RUN_DIR, 'qrouter-x'),
                         namespaces.path('qrouter-x'))
        missing = 'akn-missing-%d' % os.getpid()
        exc = self.assertRaises(namespaces.NetworkNamespaceNotFound,
                                namespaces.open_namespace, missing)
        self.assertIn(missing, str(exc))
        self.assertIsNone(namespaces.open_namespace(None))

    def test_root_namespace_runs_in_the_calling_thread(self) -> None:
        self.assertEqual(42, namespaces.run_in_namespace(None, lambda: 42))
        with namespaces.netns_fd(None) as fd:
            self.assertEqual(os.stat('/proc/self/ns/net').st_ino, os.fstat(fd).st_ino)
