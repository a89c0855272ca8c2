"""Waiting for the host to reach a state, with one back-off policy.

A daemon writing its pid file, ovs-vswitchd creating an internal port, a
process exiting after a signal: none of these announce themselves, so
agentkit polls. The first checks come fast (1 ms), so that a quick change
costs no idle wait, then back off to ``max_delay`` so that a slow one does
not keep a CPU busy (the agents share 2-CPU hosts with the VMs' switches).
"""

from collections.abc import Callable
from typing import TypeVar

import tenacity

T = TypeVar('T')

FIRST_DELAY = 0.001
MAX_DELAY = 0.05


def wait_until(check: Callable[[], T], timeout: float,
               max_delay: float = MAX_DELAY) -> T | None:
    """``check()``'s first true result, or None once ``timeout`` seconds passed.

    ``check`` runs at least once; the caller turns None into its own error,
    which can say what did not happen.
    """
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_not_result(bool),
        stop=tenacity.stop_after_delay(timeout),
        wait=tenacity.wait_exponential(multiplier=FIRST_DELAY, max=max_delay),
        retry_error_callback=lambda state: None,
        reraise=True)
    result: T | None = retrying(check)
    return result
