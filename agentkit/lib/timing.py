"""Where an agent's time goes: wall time per kind of outside call.

An agent spends most of its time waiting on others: neutron-server (RPC
calls), ovsdb-server (transactions), its privsep daemons (netlink,
iptables, daemons). Knowing the split is what tells an operator (or a
benchmark) whether a slow port is the agent's fault. Each such call adds
its wall time to the process-wide :data:`LEDGER` under a category
(``rpc``, ``ovsdb``, ``privsep``) and a name (the RPC method, the privsep
module); the Guru Meditation Report prints it (``kill -USR2``) and
benchmarks diff two reports.

Calls overlap (several workers), so the sum over categories can exceed
the elapsed time; each figure is "time spent waiting on X", summed over
threads. Recording costs one lock and a dict update (~1 us).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

#: the categories agentkit records (a report lists them in this order)
RPC = 'rpc'
OVSDB = 'ovsdb'
PRIVSEP = 'privsep'
CATEGORIES = (RPC, OVSDB, PRIVSEP)


class Ledger:
    """Calls and seconds per (category, name), summed since the start."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, str], list[float]] = {}

    def record(self, category: str, name: str, seconds: float) -> None:
        with self._lock:
            entry = self._totals.setdefault((category, name), [0, 0.0])
            entry[0] += 1
            entry[1] += seconds

    @contextlib.contextmanager
    def timed(self, category: str, name: str) -> Iterator[None]:
        """Record the wall time of the block (also when it raises)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.record(category, name, time.perf_counter() - started)

    def snapshot(self) -> dict[str, dict[str, dict[str, float]]]:
        """{category: {name: {'calls': n, 'seconds': s}}}, a copy."""
        with self._lock:
            items = [(key, tuple(value)) for key, value in self._totals.items()]
        result: dict[str, dict[str, dict[str, float]]] = {}
        for (category, name), (calls, seconds) in sorted(items):
            result.setdefault(category, {})[name] = {
                'calls': int(calls), 'seconds': round(seconds, 6)}
        return result

    def reset(self) -> None:
        with self._lock:
            self._totals.clear()


#: the ledger of this process
LEDGER = Ledger()


def timed(category: str, name: str) -> contextlib.AbstractContextManager[None]:
    """``with timing.timed(timing.RPC, method):`` on the process ledger."""
    return LEDGER.timed(category, name)
