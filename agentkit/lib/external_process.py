"""Run and watch the daemons an agent owns (dnsmasq, haproxy, ...).

A daemon is identified by the pair (service, uuid): one dnsmasq per network,
one haproxy per router. Its pid is kept in a pid file, so a restarted agent
*adopts* the daemons that outlived it instead of starting duplicates
(Neutron's DHCP and L3 agents rely on this: dnsmasq and haproxy detach
into their own sessions and survive agent restarts).

A pid file alone is not proof: after a reboot or a crash the pid may have
been recycled by an unrelated process. A daemon therefore only counts as
*active* if the pid is alive **and** its ``/proc/<pid>/cmdline`` contains the
uuid (dnsmasq's pid-file and state paths contain the network id, haproxy's
config path the router id).

Only spawning and signalling need root and go through
:mod:`agentkit.privileged.process`; reading pid files and ``/proc`` is done
here, unprivileged.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import signal
import threading
import time
from typing import Any, Callable

from oslo_log import log as logging

from agentkit import exceptions
from agentkit.lib import fileutils
from agentkit.lib import naming
from agentkit.lib import polling
from agentkit.privileged import process as priv_process

LOG = logging.getLogger(__name__)

PROC_PATH = '/proc'
#: Where root finds the daemons it starts (a fixed path, never the agent's PATH).
SEARCH_PATH = priv_process.DEFAULT_PATH
DEFAULT_START_TIMEOUT = 5.0
DEFAULT_STOP_TIMEOUT = 5.0
# After SIGKILL the kernel needs a moment to tear the process down.
_KILL_GRACE = 2.0
_SERVICE_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,63}')

CmdCallback = Callable[[str], list[str]]


class DaemonAction(enum.Enum):
    """What a driver did to one daemon to make it serve a new configuration."""

    START = 'start'        # not running
    RESTART = 'restart'    # running with another command line (or namespace)
    RELOAD = 'reload'      # same command line, a file changed: SIGHUP
    NONE = 'none'          # same command line, same files: adopt as is
    STOP = 'stop'          # nothing to serve


def least_disruptive_action(running_argv: list[str] | None, desired_argv: list[str],
                            files_changed: bool) -> DaemonAction:
    """What makes a daemon that re-reads its files on SIGHUP serve the new
    configuration while disturbing its clients least."""
    if running_argv is None:
        return DaemonAction.START
    if list(running_argv) != list(desired_argv):
        return DaemonAction.RESTART
    return DaemonAction.RELOAD if files_changed else DaemonAction.NONE


@dataclasses.dataclass(frozen=True)
class ProcessState:
    """A resource's daemon as its pid file and ``/proc`` show it, read only
    (what ``agentkit-doctor`` reports: the file to look at, the pid, argv)."""

    pid_file: str
    pid: int | None
    argv: tuple[str, ...] | None  # None: no live process of this resource

    def runs(self, binary: str) -> bool:
        """Whether the live process is ``binary`` (by its argv[0])."""
        return self.argv is not None and os.path.basename(self.argv[0]) == binary


def process_state(pid_file: str, resource_id: str,
                  proc_path: str = PROC_PATH) -> ProcessState:
    """The process ``pid_file`` names, if it is alive and names ``resource_id``
    in its argv (a recycled pid belongs to some other process)."""
    pid = read_pid_file(pid_file)
    argv = read_cmdline(pid, proc_path) if pid else None
    if argv is not None and not _names(argv, resource_id):
        argv = None
    return ProcessState(pid_file, pid, tuple(argv) if argv else None)


def _names(argv: list[str], resource_id: str) -> bool:
    """Whether a command line is the daemon of ``resource_id`` (its id is in it)."""
    return any(resource_id in arg for arg in argv)


def read_pid_file(path: str) -> int | None:
    """The pid stored in ``path``, or None if it is missing, empty or garbage."""
    try:
        with open(path, encoding='ascii', errors='replace') as f:
            text = f.read(64).strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        LOG.warning('Cannot read pid file %s: %s', path, exc)
        return None
    if not text.isascii() or not text.isdigit():
        if text:
            LOG.debug('Ignoring pid file %s with unexpected content %r', path, text[:20])
        return None
    pid = int(text)
    return pid if pid > 0 else None


def read_cmdline(pid: int, proc_path: str = PROC_PATH) -> list[str] | None:
    """argv of a running process, or None if there is no such live process.

    Zombies (and kernel threads) have an empty cmdline and count as not
    running: a killed daemon can linger as a zombie until init reaps it.
    """
    try:
        with open(os.path.join(proc_path, str(int(pid)), 'cmdline'), 'rb') as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    except OSError as exc:
        LOG.debug('Cannot read cmdline of pid %s: %s', pid, exc)
        return None
    if not raw:
        return None
    if raw.endswith(b'\0'):
        raw = raw[:-1]
    return [arg.decode('utf-8', 'surrogateescape') for arg in raw.split(b'\0')]


def _write_pid_file(path: str, pid: int) -> None:
    """Atomically (tmp + rename) so a reader never sees a half-written pid."""
    fileutils.write_atomic(path, '%d\n' % pid)


def _remove_file(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class ProcessManager:
    """Start, adopt, reload and stop one daemon identified by (service, uuid).

    :param uuid: the network/router id the daemon serves; it must appear in
        the daemon's command line (that is how a live daemon is recognised).
    :param service: short name for logs and the monitor, e.g. ``dnsmasq``.
    :param namespace: network namespace to run in, None for the host's.
    :param pids_path: directory of the default pid file ``<uuid>.pid``. Use
        one directory per service if several services share uuids.
    :param cmd_callback: ``f(pid_file) -> argv``: builds the command line.
    :param pid_file: path of a pid file the daemon writes itself (dnsmasq's
        ``--pid-file``); defaults to ``<pids_path>/<uuid>.pid``.
    :param daemonizes: True if the command detaches and writes ``pid_file``
        itself; False for a foreground command, whose pid the manager writes.
    :param log_file: where the daemon's stdout/stderr go (default: nowhere).
    """

    def __init__(self, uuid: str, service: str, namespace: str | None, pids_path: str,
                 cmd_callback: CmdCallback, *, pid_file: str | None = None,
                 daemonizes: bool = True, log_file: str | None = None,
                 env: dict[str, str] | None = None,
                 start_timeout: float = DEFAULT_START_TIMEOUT,
                 proc_path: str = PROC_PATH) -> None:
        self.uuid = naming.validate_id(uuid, kind=service)
        if not isinstance(service, str) or not _SERVICE_RE.fullmatch(service):
            raise exceptions.ProcessError('invalid service name %r' % (service,))
        self.service = service
        self.namespace = namespace
        self.pids_path = pids_path
        self.pid_file = pid_file or naming.safe_join(pids_path, self.uuid + '.pid')
        self.daemonizes = daemonizes
        self.log_file = log_file
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self._cmd_callback = cmd_callback
        self._proc_path = proc_path
        self._lock = threading.RLock()
        self._monitor: ProcessMonitor | None = None
        # Observable for tests and state reports.
        self.respawn_count = 0
        self.last_respawn: float | None = None
        self.last_start_seconds: float | None = None

    def __repr__(self) -> str:
        return '<ProcessManager %s %s pid_file=%s>' % (self.service, self.uuid, self.pid_file)

    @property
    def key(self) -> tuple[str, str]:
        return self.service, self.uuid

    # -- state ---------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The pid recorded in the pid file (not necessarily alive)."""
        return read_pid_file(self.pid_file)

    def _is_ours(self, pid: int) -> bool:
        argv = read_cmdline(pid, self._proc_path)
        return argv is not None and _names(argv, self.uuid)

    def state(self) -> ProcessState:
        """The daemon as its pid file and ``/proc`` show it now."""
        return process_state(self.pid_file, self.uuid, self._proc_path)

    @property
    def active(self) -> bool:
        """True if the pid-file pid is alive and is really this daemon."""
        pid = self.pid
        return pid is not None and self._is_ours(pid)

    def cmdline(self) -> list[str] | None:
        """argv of the running daemon, None if it is not active.

        Compare with :meth:`desired_cmdline` to decide whether a daemon found
        after an agent restart can be adopted or must be restarted.
        """
        argv = self.state().argv
        return list(argv) if argv is not None else None

    def desired_cmdline(self) -> list[str]:
        """argv the daemon would be started with now."""
        argv = self._cmd_callback(self.pid_file)
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise exceptions.ProcessError('command callback of %s for %s must return a '
                                          'non-empty list of str, got %r'
                                          % (self.service, self.uuid, argv))
        if not any(self.uuid in arg for arg in argv):
            # Without it the daemon could never be recognised as active and
            # the monitor would start a new copy on every check.
            raise exceptions.ProcessError('command line of %s must contain its uuid %s: %r'
                                          % (self.service, self.uuid, argv))
        return argv

    # -- actions -------------------------------------------------------------

    def enable(self, reload_cfg: bool = False) -> bool:
        """Start the daemon unless it is already running (then adopt it).

        With ``reload_cfg`` a running daemon is sent SIGHUP instead.
        Returns True if a new process was started.
        """
        with self._lock:
            if self.active:
                if reload_cfg:
                    self.reload()
                return False
            self._spawn()
            return True

    def reload(self) -> bool:
        """SIGHUP the daemon (dnsmasq re-reads its host/opts files, same pid).

        Only for daemons whose SIGHUP means "re-read": haproxy treats it as
        "dump server states", so a changed haproxy config needs
        :meth:`restart`. Returns False (and sends nothing) if the daemon is
        not running.
        """
        with self._lock:
            pid = self.pid
            if pid is None or not self._is_ours(pid):
                LOG.debug('%s for %s is not running; nothing to reload', self.service, self.uuid)
                return False
            sent = bool(priv_process.kill(pid, int(signal.SIGHUP), expected=self.uuid))
            if sent:
                LOG.debug('Reloaded %s for %s (pid %d)', self.service, self.uuid, pid)
            return sent

    def disable(self, sig: int = signal.SIGTERM,
                timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop watching and stop the daemon; SIGKILL if ``sig`` is not enough.

        The pid file is removed in any case.

        :raises ProcessError: if the process survives SIGKILL.
        """
        with self._lock:
            if self._monitor is not None:
                self._monitor.unregister(self)
            self._stop(sig, timeout)

    def restart(self, sig: int = signal.SIGTERM,
                timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop and start again (e.g. the desired command line changed).

        Unlike :meth:`disable`, the daemon stays registered with its monitor.
        """
        with self._lock:
            self._stop(sig, timeout)
            self._spawn()

    # -- internals -----------------------------------------------------------

    def _spawn(self) -> None:
        argv = self.desired_cmdline()
        os.makedirs(os.path.dirname(self.pid_file), mode=0o755, exist_ok=True)
        # A stale pid file must not be mistaken for the new process.
        _remove_file(self.pid_file)
        started = time.monotonic()
        result = priv_process.spawn(argv, namespace=self.namespace,
                                    daemonizes=self.daemonizes, log_file=self.log_file,
                                    env=self.env)
        if self.daemonizes:
            if result['returncode'] != 0:
                raise exceptions.ProcessError(
                    '%s for %s exited with status %s during start-up%s' % (
                        self.service, self.uuid, result['returncode'],
                        ': ' + result['output'] if result.get('output') else ''))
            pid = self._wait_for_pid_file(started)
        else:
            pid = int(result['pid'])
            _write_pid_file(self.pid_file, pid)
        self.last_start_seconds = time.monotonic() - started
        LOG.info('Started %s for %s with pid %d%s in %.1f ms', self.service, self.uuid, pid,
                 ' in namespace %s' % self.namespace if self.namespace else '',
                 self.last_start_seconds * 1000)

    def _wait_for_pid_file(self, started: float) -> int:
        def live_pid() -> int | None:
            pid = self.pid
            return pid if pid is not None and self._is_ours(pid) else None
        left = self.start_timeout - (time.monotonic() - started)
        pid = polling.wait_until(live_pid, max(left, 0.0))
        if pid is None:
            raise exceptions.ProcessError(
                '%s for %s did not write a pid file %s for a live process within '
                '%.1f s' % (self.service, self.uuid, self.pid_file, self.start_timeout))
        return pid

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        return bool(polling.wait_until(lambda: not self._is_ours(pid), timeout))

    def _stop(self, sig: int, timeout: float) -> None:
        pid = self.pid
        if pid is not None and self._is_ours(pid):
            priv_process.kill(pid, int(sig), expected=self.uuid)
            if not self._wait_gone(pid, timeout):
                LOG.warning('%s for %s (pid %d) ignored signal %d for %.1f s; sending SIGKILL',
                            self.service, self.uuid, pid, sig, timeout)
                priv_process.kill(pid, int(signal.SIGKILL), expected=self.uuid)
                if not self._wait_gone(pid, _KILL_GRACE):
                    raise exceptions.ProcessError('%s for %s (pid %d) survived SIGKILL'
                                                  % (self.service, self.uuid, pid))
            LOG.info('Stopped %s for %s (pid %d)', self.service, self.uuid, pid)
        _remove_file(self.pid_file)

    def _respawn_if_dead(self, monitor: ProcessMonitor, action: str) -> bool:
        """Called by ``monitor``; re-checks registration under the lock so a
        concurrent :meth:`disable` can never be undone by a late respawn."""
        with self._lock:
            if self._monitor is not monitor or self.active:
                return False
            LOG.error('%s for %s (last pid %s) is not running; %s', self.service,
                      self.uuid, self.pid,
                      'respawning' if action == ProcessMonitor.RESPAWN else 'not respawning')
            if action != ProcessMonitor.RESPAWN:
                return False
            self._spawn()
            self.respawn_count += 1
            self.last_respawn = time.time()
            return True


class ProcessMonitor:
    """Background thread that restarts registered daemons that died.

    Plain :mod:`threading` (it also works, green, under eventlet
    monkey-patching). A ``check_interval`` of 0 disables the thread;
    :meth:`check_once` can still be called directly.
    """

    RESPAWN = 'respawn'
    LOG_ONLY = 'log'
    ACTIONS = (RESPAWN, LOG_ONLY)

    def __init__(self, check_interval: float = 60.0, action: str = RESPAWN) -> None:
        if action not in self.ACTIONS:
            raise exceptions.InvalidConfiguration(
                'unknown process monitor action %r; choose from %s'
                % (action, ', '.join(self.ACTIONS)))
        if check_interval < 0:
            raise exceptions.InvalidConfiguration('check_interval must be >= 0')
        self.check_interval = check_interval
        self.action = action
        self._managers: dict[tuple[str, str], ProcessManager] = {}
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self.respawn_count = 0
        self.last_respawn: float | None = None

    def register(self, manager: ProcessManager) -> None:
        """Watch ``manager``; replaces a manager registered for the same key."""
        with self._lock:
            old = self._managers.get(manager.key)
            if old is not None and old is not manager:
                old._monitor = None
            self._managers[manager.key] = manager
            manager._monitor = self

    def unregister(self, manager: ProcessManager) -> None:
        """Stop watching ``manager`` (no-op if it is not registered here)."""
        with self._lock:
            if self._managers.get(manager.key) is manager:
                del self._managers[manager.key]
            if manager._monitor is self:
                manager._monitor = None

    def get(self, service: str, uuid: str) -> ProcessManager | None:
        with self._lock:
            return self._managers.get((service, uuid))

    @property
    def managers(self) -> list[ProcessManager]:
        with self._lock:
            return list(self._managers.values())

    def check_once(self) -> list[ProcessManager]:
        """Check every registered daemon once; return those respawned."""
        respawned = []
        for manager in self.managers:
            try:
                if manager._respawn_if_dead(self, self.action):
                    respawned.append(manager)
            except Exception:
                # One broken daemon must not stop the watch over the others;
                # the next check tries again.
                LOG.exception('Failed to respawn %s for %s', manager.service, manager.uuid)
        if respawned:
            with self._lock:
                self.respawn_count += len(respawned)
                self.last_respawn = time.time()
        return respawned

    def start(self) -> None:
        """Start the watch thread (idempotent)."""
        if self.check_interval == 0 or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop_event.clear()
        self._thread = threading.Thread(target=self._run, name='process-monitor', daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the watch thread and wait for it; the daemons keep running."""
        self._stop_event.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop_event.wait(self.check_interval):
            try:
                self.check_once()
            except Exception:  # never let the watch thread die
                LOG.exception('Process monitor check failed')

    def stats(self) -> dict[str, Any]:
        """Figures for the agent's state report."""
        with self._lock:
            return {'monitored_processes': len(self._managers),
                    'respawns': self.respawn_count,
                    'last_respawn': self.last_respawn}


class DaemonOwner:
    """What a driver owning one daemon per resource needs besides managers.

    A lock per resource (its start, reload and stop never interleave) and
    one :class:`ProcessMonitor`, started at first use with the agent's
    ``check_child_processes_interval``. The driver sets ``self._lock``,
    ``self._locks``, ``self.monitor`` (None) and ``self.conf``.
    """

    _lock: threading.Lock
    _locks: dict[str, threading.Lock]
    monitor: ProcessMonitor | None
    conf: Any

    def _resource_lock(self, resource_id: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(resource_id, threading.Lock())

    def _ensure_monitor(self) -> ProcessMonitor:
        with self._lock:
            if self.monitor is None:
                self.monitor = ProcessMonitor(
                    check_interval=self.conf.check_child_processes_interval)
            monitor = self.monitor
        monitor.start()  # no-op if running or the interval is 0
        return monitor
