"""A fake ``/proc`` for unit tests of drivers that own daemons (dnsmasq, haproxy).

external_process recognises a daemon by ``/proc/<pid>/cmdline``; tests write
and remove those files instead of starting processes.
"""

from __future__ import annotations

import os


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
