"""The parts of systemd's notification protocol that oslo.service lacks.

oslo.service's :mod:`oslo_service.systemd` sends ``READY=1`` and nothing
else. A ``Type=notify`` unit with a watchdog also needs ``WATCHDOG=1`` every
half ``WATCHDOG_USEC``, and operators want ``STATUS=`` (shown by
``systemctl status``) and ``STOPPING=1``. This module sends those, to the
same ``NOTIFY_SOCKET``; without that variable every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from oslo_service import systemd as oslo_systemd

LOG = logging.getLogger(__name__)


def _address(path: str) -> str:
    """``@name`` is an abstract-namespace socket (leading NUL byte)."""
    return '\0' + path[1:] if path.startswith('@') else path


class Notifier:
    """Talks to the service manager that started this process, if any.

    The environment is read once, at construction: the watchdog settings
    are the ones systemd gave this process (``WATCHDOG_PID``, when set,
    must be ours; a child that inherited them must not pet the watchdog).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.socket_path: str | None = env.get('NOTIFY_SOCKET') or None
        self.watchdog_usec: int | None = None
        usec = env.get('WATCHDOG_USEC')
        pid = env.get('WATCHDOG_PID')
        if self.socket_path and usec:
            try:
                value = int(usec)
                owner = int(pid) if pid else os.getpid()
            except ValueError:
                LOG.warning('Ignoring malformed WATCHDOG_USEC=%r/WATCHDOG_PID=%r',
                            usec, pid)
            else:
                if value > 0 and owner == os.getpid():
                    self.watchdog_usec = value

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    @property
    def watchdog_timeout(self) -> float | None:
        """Seconds after which systemd acts on a silent watchdog (None: off)."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 1e6

    @property
    def watchdog_interval(self) -> float | None:
        """How often to send ``WATCHDOG=1``: half the timeout, as sd_watchdog_enabled(3)
        advises, so one late wake-up does not trip it."""
        timeout = self.watchdog_timeout
        return None if timeout is None else timeout / 2

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; False if not delivered."""
        if self.socket_path is None:
            return False
        message = '\n'.join(fields).encode()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(_address(self.socket_path))
            sock.sendall(message)
        except OSError as exc:
            LOG.debug('systemd notification %r failed: %s', message, exc)
            return False
        finally:
            sock.close()
        return True

    def ready(self, status: str | None = None) -> None:
        """``READY=1`` through oslo.service, then the status line."""
        if self.socket_path is None:
            return
        if os.environ.get('NOTIFY_SOCKET') == self.socket_path:
            # notify(), not notify_once(): that one unsets NOTIFY_SOCKET,
            # which the later STATUS/WATCHDOG/STOPPING messages still need.
            oslo_systemd.notify()
        else:  # constructed from another environment (tests)
            self.send('READY=1')
        if status:
            self.status(status)

    def status(self, text: str) -> None:
        self.send('STATUS=' + text.replace('\n', ' '))

    def watchdog(self) -> None:
        self.send('WATCHDOG=1')

    def stopping(self, status: str = 'stopping') -> None:
        self.send('STOPPING=1', 'STATUS=' + status)
