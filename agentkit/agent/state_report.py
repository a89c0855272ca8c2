"""Periodic ``report_state`` to neutron-server.

neutron-server marks an agent dead after ``agent_down_time`` without a
report and stops scheduling to it, so reports run on their own thread,
independent of how busy the agent is, and a failed report is only logged:
the next one is tried on schedule.
"""

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from agentkit.rpc import report_api

LOG = logging.getLogger(__name__)

AGENT_REVIVED = 'revived'
#: seconds beyond its timeout after which a report that succeeded counts as
#: one that waited out a broker outage (the wait for the reply alone is
#: bounded by the timeout: the rest was the send, held while reconnecting)
STALL_SLACK = 5.0


class StateReporter:
    """Sends the agent's state every ``interval()`` seconds.

    :param build_state: returns the ``agent_state`` dict (without
        ``start_flag``, which the reporter adds to the first report after
        start).
    :param interval: returns the current report interval; read every cycle so
        a SIGHUP change of the mutable option takes effect.
    :param on_revived: called when the server says it had considered the
        agent dead, or answers again after failed reports or after a report
        that waited far beyond its timeout (the broker or the server was
        away, and casts sent meanwhile may be lost): the agent must resync
        everything.
    :param use_call: the metadata agent casts after its first report, as
        Neutron's does; everything else calls.
    """

    def __init__(self, api: report_api.ReportStateApi,
                 build_state: Callable[[], dict[str, Any]],
                 interval: Callable[[], int],
                 on_revived: Callable[[], None] | None = None,
                 use_call: bool = True,
                 log_heartbeats: Callable[[], bool] = lambda: False) -> None:
        self._api = api
        self._build_state = build_state
        self._interval = interval
        self._on_revived = on_revived
        self._use_call = use_call
        self._log_heartbeats = log_heartbeats
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.uuid = str(uuid.uuid4())
        self.start_flag = True
        self.reports_sent = 0
        self.failures = 0
        self._failing = False

    def report_once(self) -> bool:
        """Send one report; True on success. Never raises."""
        state = dict(self._build_state())
        state['uuid'] = self.uuid
        if self.start_flag:
            state['start_flag'] = True
        use_call = self._use_call or self.start_flag
        timeout = max(self._interval(), 1)
        started = time.monotonic()
        try:
            result = self._api.report_state(
                state, use_call=use_call, timeout=timeout if use_call else None)
        except Exception as exc:
            self.failures += 1
            self._failing = True
            LOG.warning('Failed reporting state to neutron-server (will retry '
                        'in %ss): %s: %s', self._interval(),
                        type(exc).__name__, exc)
            return False
        first = self.start_flag
        self.start_flag = False
        self.reports_sent += 1
        recovered, self._failing = self._failing, False
        took = time.monotonic() - started
        if took > timeout + STALL_SLACK:
            # The report waited in the transport beyond its own timeout:
            # oslo.messaging held it while reconnecting to the broker, so
            # the agent was cut off although no report failed.
            LOG.info('A state report took %.0fs (the broker was unreachable '
                     'meanwhile)', took)
            recovered = True
        if self._log_heartbeats():
            LOG.info('Reported state: %s', state)
        if self._on_revived is None or first:
            return True
        if result == AGENT_REVIVED:
            LOG.info('neutron-server had considered this agent dead; '
                     'resyncing everything')
            self._on_revived()
        elif recovered:
            LOG.info('neutron-server answers again after failed or stalled '
                     'state reports; resyncing everything')
            self._on_revived()
        return True

    def start(self) -> None:
        if self._interval() <= 0:
            LOG.warning('report_interval is 0: not reporting state; '
                        'neutron-server will consider this agent dead')
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name='state-report',
                                        daemon=True)
        self._thread.start()

    def reschedule(self) -> None:
        """Report now and then at the (possibly changed) interval."""
        self._wake.set()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.report_once()
            interval = self._interval()
            if interval <= 0:
                return
            self._wake.wait(interval)
            self._wake.clear()
