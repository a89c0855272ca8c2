"""``dhcp_ready_on_ports``, many ports per call.

neutron-server keeps a new port DOWN until the DHCP agent says its host
entry is in place. A DHCP agent that configures many networks at once (its
first sync, 1,000 networks after a restart) told the server once per
network: one RPC call each, each worker waiting for the answer before the
next network. Here the networks' workers only hand their ready ports over;
one thread sends them, as many as arrived within a short window in one
call, and keeps any a failed call carried for the next one (as Neutron's
DHCP agent does with its ready-ports loop).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

LOG = logging.getLogger(__name__)

#: how long the first ready port waits for others to join its call
WINDOW_SECONDS = 0.1
#: ports per call (the server provisions them one by one within the call)
MAX_PORTS_PER_CALL = 256
_RETRY_FIRST, _RETRY_MAX = 1.0, 30.0


class ReadyPortsReporter:
    """Collects ready port ids and sends them with ``send`` in batches."""

    def __init__(self, send: Callable[[list[str]], object],
                 window: float = WINDOW_SECONDS,
                 max_per_call: int = MAX_PORTS_PER_CALL) -> None:
        self._send = send
        self._window = window
        self._max = max(1, max_per_call)
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, port_ids: Iterable[str]) -> None:
        """Report these ports ready (soon, in a call with others)."""
        with self._lock:
            self._pending.update(port_ids)
            if self._pending:
                self._wake.set()

    def pending(self) -> set[str]:
        with self._lock:
            return set(self._pending)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name='dhcp-ready-ports',
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop sending; ports still pending are reported again by the next
        agent's first sync (it reports every port it serves)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def flush(self) -> None:
        """Send everything pending now, in the caller's thread; raises if a
        call fails (its ports stay pending)."""
        while True:
            batch = self._take()
            if not batch:
                return
            self._send_or_keep(batch)

    def _take(self) -> list[str]:
        with self._lock:
            batch = sorted(self._pending)[:self._max]
            self._pending.difference_update(batch)
            if not self._pending:
                self._wake.clear()
            return batch

    def _send_or_keep(self, batch: list[str]) -> None:
        try:
            self._send(batch)
        except Exception:
            with self._lock:
                self._pending.update(batch)
                self._wake.set()
            raise

    def _loop(self) -> None:
        retry = _RETRY_FIRST
        while not self._stopping.is_set():
            self._wake.wait()
            if self._stopping.wait(self._window):
                return
            batch = self._take()
            if not batch:
                continue
            try:
                self._send_or_keep(batch)
                retry = _RETRY_FIRST
            except Exception as exc:
                LOG.warning('dhcp_ready_on_ports for %d port(s) failed, retrying in '
                            '%.0f s: %s', len(batch), retry, exc)
                if self._stopping.wait(retry):
                    return
                retry = min(retry * 2, _RETRY_MAX)
