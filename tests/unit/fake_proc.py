"""A fake ``/proc`` for unit tests of drivers that own daemons (dnsmasq, haproxy, radvd).

external_process recognises a daemon by ``/proc/<pid>/cmdline``; tests write
and remove those files instead of starting processes.
"""

from __future__ import annotations

import os
import signal
import tempfile
from typing import Callable

import fixtures

from agentkit import exceptions
from agentkit.lib import external_process
from agentkit.privileged import process as priv_process


class FakeProcTable:
    """``<proc_path>/<pid>/cmdline`` entries for fake processes."""

    def __init__(self, proc_path: str, first_pid: int) -> None:
        self.proc_path = proc_path
        self.next_pid = first_pid

    def add(self, argv: list[str]) -> int:
        """A new process running ``argv``; returns its pid."""
        pid = self.next_pid
        self.next_pid += 1
        os.makedirs(os.path.join(self.proc_path, str(pid)))
        with open(os.path.join(self.proc_path, str(pid), 'cmdline'), 'wb') as f:
            f.write(b''.join(a.encode() + b'\0' for a in argv))
        return pid

    def remove(self, pid: int) -> None:
        """The process exits."""
        os.unlink(os.path.join(self.proc_path, str(pid), 'cmdline'))
        os.rmdir(os.path.join(self.proc_path, str(pid)))


class FakeDaemons(FakeProcTable):
    """Stand-ins for the privileged spawn and kill of a self-daemonizing tool.

    A spawned daemon appears in the fake /proc and writes the pid file
    :meth:`pid_file` finds in its argv, as the real one does; SIGTERM and
    SIGKILL remove it, SIGHUP is recorded (or, with ``vanish_on_hup``, the
    daemon dies of it); ``fail_kill`` makes that many kills fail as if the
    privsep daemon went away.
    """

    def __init__(self, proc_path: str, first_pid: int) -> None:
        super().__init__(proc_path, first_pid)
        self.spawned: list[tuple[list[str], str | None]] = []
        self.hups: list[int] = []
        self.terms: list[int] = []
        self.fail_kill = 0
        self.vanish_on_hup = False

    def pid_file(self, argv: list[str]) -> str:
        raise NotImplementedError

    def spawn(self, argv: list[str], namespace: str | None = None, daemonizes: bool = True,
              log_file: str | None = None, env: dict[str, str] | None = None
              ) -> dict[str, int | str]:
        argv = list(argv)
        self.spawned.append((argv, namespace))
        pid = self.add(argv)
        with open(self.pid_file(argv), 'w') as f:
            f.write('%d\n' % pid)
        return {'pid': pid - 1, 'returncode': 0, 'output': ''}

    def kill(self, pid: int, sig: int, expected: str | None = None) -> bool:
        if self.fail_kill:
            self.fail_kill -= 1
            raise exceptions.ProcessError('privsep daemon went away')
        argv = external_process.read_cmdline(pid, self.proc_path)
        if argv is None or (expected and not any(expected in a for a in argv)):
            return False
        if sig == signal.SIGHUP:
            if self.vanish_on_hup:
                self.remove(pid)
                return False
            self.hups.append(pid)
        else:
            self.terms.append(pid)
            self.remove(pid)
        return True


class FakeDaemonHost(fixtures.Fixture):
    """A nobody-reachable state directory and a fake /proc for a daemon driver.

    Patches the privileged spawn/kill with ``processes`` (a FakeProcTable
    subclass built on the fake /proc) and points ``driver_cls.proc_path`` at it.
    """

    def __init__(self, driver_cls: type,
                 processes: Callable[[str], FakeProcTable]) -> None:
        super().__init__()
        self.driver_cls = driver_cls
        self.make_processes = processes

    def _setUp(self) -> None:
        # NestedTempfile's private (0700) root would fail the reachability check.
        os.chmod(tempfile.gettempdir(), 0o755)
        tmp = self.useFixture(fixtures.TempDir()).path
        os.chmod(tmp, 0o755)
        self.state_path = os.path.join(tmp, 'state')
        proc = os.path.join(tmp, 'proc')
        os.mkdir(proc)
        self.procs = self.make_processes(proc)
        self.useFixture(fixtures.MockPatchObject(priv_process, 'spawn',
                                                 side_effect=self.procs.spawn))
        self.useFixture(fixtures.MockPatchObject(priv_process, 'kill',
                                                 side_effect=self.procs.kill))
        self.useFixture(fixtures.MockPatchObject(self.driver_cls, 'proc_path', proc))
