"""ovsdbapp plumbing: the IDL, the transactions and the API object.

Why subclasses of ovsdbapp: its IDL does not report reconnects, its
vsctl-like transaction gives the caller and ovs-vswitchd one shared
deadline (so a committed write can be reported as timed out), and its API
object keeps the connection on the class (a second endpoint would talk to
the first). Each class here fixes one of those and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ovsdbapp.backend.ovs_idl import connection as ovs_connection
from ovsdbapp.backend.ovs_idl import event as ovs_event
from ovsdbapp.backend.ovs_idl import transaction as ovs_transaction
from ovsdbapp.schema.open_vswitch import impl_idl

# Columns left out of the IDL replica. ovs-vswitchd rewrites
# Interface.statistics of every interface every 5 s; on a host with hundreds
# of ports that is a steady stream of updates nobody here reads.
DEFAULT_UNMONITORED_COLUMNS: Mapping[str, frozenset[str]] = {
    'Interface': frozenset({'statistics'}),
}


class ReconnectDetector:
    """Notices the IDL reaching MONITORING again after the first time.

    Python-ovs restarts its state machine on every new session and returns
    to IDL_S_MONITORING once the (full or incremental) dump is loaded; a
    second arrival in that state means the session was re-established.
    """

    def __init__(self) -> None:
        self._was_monitoring = False
        self._connected_once = False

    def update(self, monitoring: bool) -> bool:
        reconnected = monitoring and not self._was_monitoring and self._connected_once
        if monitoring:
            self._connected_once = True
        self._was_monitoring = monitoring
        return reconnected


class NotifyingIdl(ovs_connection.OvsdbIdl):  # type: ignore[misc]  # ovsdbapp is untyped
    """IDL that forwards row changes to an ovsdbapp RowEventHandler, so
    commands and events share one connection, and reports reconnects."""

    def __init__(self, remote: str, schema_helper: Any,
                 handler: ovs_event.RowEventHandler,
                 on_reconnect: Callable[[], None]) -> None:
        super().__init__(remote, schema_helper)
        self._handler = handler
        self._on_reconnect = on_reconnect
        self._reconnects = ReconnectDetector()

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        self._handler.notify(event, row, updates)

    def run(self) -> bool:
        changed = bool(super().run())
        if self._reconnects.update(self.state == self.IDL_S_MONITORING):
            self._on_reconnect()
        return changed


class NoWaitTransaction(ovs_transaction.Transaction):  # type: ignore[misc]  # ovsdbapp is untyped
    """Commit without waiting for ovs-vswitchd (``ovs-vsctl --no-wait``)."""

    def pre_commit(self, txn: Any) -> None:
        # Commands that insert Interfaces record them here (the waiting
        # transaction uses the set to check ofports afterwards).
        txn.expected_ifaces = set()


class WaitTransaction(impl_idl.OvsVsctlTransaction):  # type: ignore[misc]  # ovsdbapp is untyped
    """ovsdbapp's vsctl-like transaction (waits for ovs-vswitchd's cur_cfg),
    with the caller outwaiting the connection thread.

    Upstream, the caller's wait for the result and the connection thread's
    wait for ovs-vswitchd share one budget, and the caller's starts first:
    with vswitchd down or slow, the caller gets "timed out" for a write
    that was committed. Here the connection thread gets ``timeout`` and the
    caller a grace on top, so such a write returns (the missed vswitchd
    deadline is logged by ovsdbapp) and a timeout means the commit itself
    did not complete.
    """
    CALLER_GRACE = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.work_timeout = float(getattr(self, 'timeout'))  # set by ovsdbapp
        self.timeout = self.work_timeout + self.CALLER_GRACE

    def time_remaining(self) -> float:
        return self.work_timeout - float(self.elapsed_time())

    def timeout_exceeded(self) -> bool:
        return float(self.elapsed_time()) > self.work_timeout


class OvsApi(impl_idl.OvsdbIdl):  # type: ignore[misc]  # ovsdbapp is untyped
    """ovsdbapp's Open_vSwitch API, with a per-instance connection.

    ovsdbapp keeps the connection on the *class* (the first instance's
    connection is silently reused by every later one), which would make
    a second endpoint talk to the first; here each instance has its own.
    """

    def __init__(self, connection: ovs_connection.Connection, wait: bool) -> None:
        self._wait_default = wait
        super().__init__(connection)

    @property
    def ovsdb_connection(self) -> ovs_connection.Connection:
        return self._instance_connection

    @ovsdb_connection.setter
    def ovsdb_connection(self, connection: ovs_connection.Connection) -> None:
        self._instance_connection = connection

    def create_transaction(self, check_error: bool = False, log_errors: bool = True,
                           wait: bool | None = None, timeout: float | None = None,
                           **kwargs: Any) -> ovs_transaction.Transaction:
        wait = self._wait_default if wait is None else wait
        cls = WaitTransaction if wait else NoWaitTransaction
        return cls(self, self.ovsdb_connection, timeout=timeout,
                   check_error=check_error, log_errors=log_errors)


def expect_interface(txn: Any, iface: Any) -> None:
    """Record an Interface a command inserts, so a waiting transaction
    checks that ovs-vswitchd gave it an ofport."""
    expected = getattr(txn, 'expected_ifaces', None)
    if expected is not None:
        expected.add(iface.uuid)


def register_tables(helper: Any,
                    unmonitored: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    """Replicate every table, less the unmonitored columns; returns those."""
    skipped: dict[str, set[str]] = {}
    for table, spec in helper.schema_json['tables'].items():
        drop = set(unmonitored.get(table, ())) & set(spec['columns'])
        if drop:
            helper.register_columns(table, [c for c in spec['columns'] if c not in drop])
            skipped[table] = drop
        else:
            helper.register_table(table)
    return skipped
