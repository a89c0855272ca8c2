"""agentkit.lib.polling: the wait every "until the host shows it" goes through."""

import time

from agentkit.lib import polling
from tests import base


class WaitUntilTest(base.TestCase):

    def test_returns_the_first_true_result(self) -> None:
        answers = iter([None, 0, '', 1234, 5678])
        self.assertEqual(1234, polling.wait_until(lambda: next(answers), timeout=5))

    def test_checks_once_even_without_time(self) -> None:
        self.assertEqual('up', polling.wait_until(lambda: 'up', timeout=0))

    def test_none_when_the_state_never_comes(self) -> None:
        calls = []
        started = time.monotonic()
        self.assertIsNone(polling.wait_until(lambda: calls.append(1), timeout=0.3))
        took = time.monotonic() - started
        self.assertGreaterEqual(took, 0.3)
        self.assertLess(took, 0.3 + 2 * polling.MAX_DELAY + 0.2)
        # Fast first checks, then at most MAX_DELAY apart: not one check
        # per timeout, not a busy loop.
        self.assertGreater(len(calls), 8)
        self.assertLess(len(calls), 0.3 / polling.MAX_DELAY + 20)

    def test_an_error_in_the_check_is_not_swallowed(self) -> None:
        def check() -> bool:
            raise OSError('permission denied')
        self.assertRaises(OSError, polling.wait_until, check, timeout=1)
