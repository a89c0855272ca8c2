"""Noticing that ovs-vswitchd restarted, which OVSDB does not show.

A restarted ovs-vswitchd re-reads the database and writes back the same
values (verified on OVS 3.1: no row changes at all), so the database shows
no trace of the restart, although every OpenFlow flow and the datapath
state were lost. Neutron uses a canary flow (OpenFlow); an OVSDB-only
library uses the pidfile that ovs-ctl and ``--monitor`` keep current.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable

from futurist import periodics

LOG = logging.getLogger(__name__)

DEFAULT_RUNDIR = '/var/run/openvswitch'
VSWITCHD_PIDFILE_NAME = 'ovs-vswitchd.pid'


def is_local_endpoint(endpoint: str) -> bool:
    """Whether an OVSDB endpoint is on this host, and so is the
    ovs-vswitchd whose pidfile :class:`VswitchdMonitor` can watch.

    A ``unix:`` socket, or ``tcp:``/``ssl:`` to a loopback address:
    Neutron's own default is ``tcp:127.0.0.1:6640``.
    """
    kind, _, rest = endpoint.strip().partition(':')
    if kind == 'unix':
        return True
    if kind not in ('tcp', 'ssl'):
        return False
    if rest.startswith('['):
        host = rest[1:rest.find(']')]
    else:
        host = rest.rsplit(':', 1)[0] if ':' in rest else rest
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_process_identity(pidfile: str) -> tuple[int, int] | None:
    """(pid, start time) of the live process named by an OVS pidfile.

    The start time (``/proc/<pid>/stat`` field 22) guards against pid reuse.
    Returns None if the file is missing or the process is gone.
    """
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
        with open(f'/proc/{pid}/stat') as f:
            stat = f.read()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(')') + 2:].split()
    try:
        if fields[0] == 'Z':
            return None
        return pid, int(fields[19])
    except (IndexError, ValueError):
        return None


class VswitchdMonitor:
    """Polls ovs-vswitchd's pidfile and calls back when a new process runs.

    Why not OVSDB: a restarted ovs-vswitchd re-reads the database and writes
    back the same values (verified on OVS 3.1: no row changes at all), so
    the database shows no trace of the restart, although every OpenFlow
    flow and the datapath state were lost. Neutron uses a canary flow
    (OpenFlow); an OVSDB-only library uses the pidfile that ovs-ctl and
    ``--monitor`` keep current. Only meaningful on the host running OVS.
    """

    def __init__(self, pidfile: str, on_restart: Callable[[], None],
                 interval: float = 1.0) -> None:
        self.pidfile = pidfile
        self.interval = interval
        self._on_restart = on_restart
        self._last = read_process_identity(pidfile)
        # Not running when we start watching: its appearance is a (re)start
        # after which the agent must program it.
        self._down = self._last is None
        self._worker: periodics.PeriodicWorker | None = None

    def check(self) -> bool:
        """One poll; True (and the callback) if a different process now runs."""
        current = read_process_identity(self.pidfile)
        if current is None:
            if not self._down:
                LOG.warning('ovs-vswitchd is not running (%s)', self.pidfile)
            self._down = True
            return False    # report once the replacement is up
        restarted = current != self._last and (self._last is not None or self._down)
        self._last = current
        self._down = False
        if restarted:
            LOG.warning('ovs-vswitchd restarted (pid now %d)', current[0])
            self._on_restart()
        return restarted

    def start(self) -> None:
        """Poll every ``interval`` seconds on a thread of its own.

        futurist's PeriodicWorker does the scheduling and logs a failed
        poll (the next one still runs). Idempotent.
        """
        if self._worker is not None:
            return

        @periodics.periodic(self.interval)
        def poll_vswitchd_pidfile() -> None:
            self.check()

        self._worker = periodics.PeriodicWorker([(poll_vswitchd_pidfile, (), {})])
        threading.Thread(target=self._worker.start, daemon=True,
                         name='ovs-vswitchd-monitor').start()

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()
