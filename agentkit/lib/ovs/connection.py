"""The shared OVSDB connection: one IDL replica per endpoint and process.

Why shared: each connection costs a socket, a full copy of the database
and three threads, and every component of an agent (mechanism driver,
interface driver, firewall) talks to the same switch. Why per process: a
child after ``fork()`` inherits the parent's socket but not its threads,
so :func:`get_connection` gives it a fresh one.

Threads: ovsdbapp runs ``Idl.run()`` on its connection thread and RowEvent
``run()`` on its handler thread. Nothing here calls user code on either: all
user callbacks run on the connection's single dispatcher thread, in the
order the changes happened. Callbacks must stay short (queue work for the
agent loop); a callback may issue OVSDB commands.

Transactions and ``--no-wait``: by default a write behaves like
``ovs-vsctl`` *without* ``--no-wait``: it bumps ``Open_vSwitch.next_cfg`` and
returns only once ovs-vswitchd has applied it (``cur_cfg``), so new ports
already have their ofport. ``wait=False`` returns as soon as ovsdb-server
committed: it never blocks on ovs-vswitchd (down, restarting, busy), but
ofports may still be empty, so use :meth:`.bridge.OVSBridge.get_ofport`,
which waits. Measured here (OVS 3.1, userspace datapath): the wait costs a
few ms per single-port transaction; for batches of 50-200 ports the
difference is within run-to-run noise (vswitchd works while the IDL digests
the commit). When ovs-vswitchd is down, a waiting write takes ``timeout``
seconds and then succeeds (ovsdbapp logs the missed deadline; the data is
committed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ovsdbapp.backend.ovs_idl import connection as ovs_connection
from ovsdbapp.backend.ovs_idl import event as ovs_event
from ovsdbapp.backend.ovs_idl import idlutils
from ovsdbapp.backend.ovs_idl import transaction as ovs_transaction
from ovsdbapp import exceptions as ovsdbapp_exc

from agentkit import exceptions
from agentkit.lib import timing
from agentkit.lib.ovs import bridge as ovs_bridge
from agentkit.lib.ovs import errors
from agentkit.lib.ovs import events
from agentkit.lib.ovs import idl
from agentkit.lib.ovs import rows
from agentkit.lib.ovs import validation
from agentkit.lib.ovs import vswitchd
from agentkit.lib.ovs.events import InterfaceCallback, InterfaceWatcher
from agentkit.lib.ovs.rows import IFACE_ID, InterfaceInfo

LOG = logging.getLogger(__name__)

SCHEMA = 'Open_vSwitch'
DEFAULT_OVSDB_CONNECTION = 'unix:/var/run/openvswitch/db.sock'
DEFAULT_TIMEOUT = 10.0

# Reasons passed to resync callbacks.
RESYNC_OVSDB_RECONNECTED = 'ovsdb-reconnected'
RESYNC_VSWITCHD_RESTARTED = 'vswitchd-restarted'

# How deep this thread is in transaction() blocks (0: none); only the
# outermost one commits, so only its commit is timed.
_txn_depth = threading.local()


ResyncCallback = Callable[[str], None]


class OvsdbConnection:
    """One IDL replica of an OVSDB endpoint with commands, events, callbacks.

    Normally obtained with :func:`get_connection` so the whole process
    shares one (each connection costs a socket, a full copy of the database
    and three threads). Constructing one directly gives a private
    connection, e.g. for tests; call :meth:`close` when done.

    :param endpoint: e.g. ``unix:/var/run/openvswitch/db.sock`` ([ovs]
        ovsdb_connection).
    :param timeout: default seconds for a transaction ([ovs] ovsdb_timeout),
        including the wait for ovs-vswitchd in ``wait`` mode.
    :param connect_timeout: seconds to wait for the initial connection and
        dump (default: ``timeout``).
    :param wait: default for :meth:`transaction`'s ``wait``.
    :param unmonitored_columns: ``{table: columns}`` not replicated; see
        idl.DEFAULT_UNMONITORED_COLUMNS.
    :raises .errors.OvsdbUnavailable: the endpoint could not be reached in time.
    """

    def __init__(self, endpoint: str = DEFAULT_OVSDB_CONNECTION,
                 timeout: float = DEFAULT_TIMEOUT,
                 connect_timeout: float | None = None, wait: bool = True,
                 unmonitored_columns: Mapping[str, Iterable[str]] | None = None) -> None:
        self.endpoint = endpoint.strip()
        self.timeout = timeout
        self.pid = os.getpid()
        self.closed = False
        self._watchers: list[InterfaceWatcher] = []
        self._resync_callbacks: list[ResyncCallback] = []
        self._vswitchd_monitor: vswitchd.VswitchdMonitor | None = None
        self._state_lock = threading.Lock()
        # Bridge uuid -> (the replica's change_seqno when read, its port
        # uuids); see _bridge_port_uuids_locked.
        self._bridge_ports: dict[Any, tuple[Any, frozenset[Any]]] = {}
        if unmonitored_columns is None:
            unmonitored_columns = idl.DEFAULT_UNMONITORED_COLUMNS
        try:
            helper = idlutils.get_schema_helper(self.endpoint, SCHEMA)
        except Exception as e:
            raise errors.OvsdbUnavailable(f'cannot read the {SCHEMA} schema from '
                                          f'{self.endpoint}: {e}') from e
        self.unmonitored_columns = idl.register_tables(helper, unmonitored_columns)
        self.handler = ovs_event.RowEventHandler()
        self.dispatcher = events.Dispatcher('ovsdb-callbacks')
        self._idl = idl.NotifyingIdl(self.endpoint, helper, self.handler,
                                     self._idl_reconnected)
        connection = ovs_connection.Connection(
            idl=self._idl, timeout=connect_timeout or timeout)
        try:
            self.api = idl.OvsApi(connection, wait=wait)
        except ovsdbapp_exc.OvsdbConnectionUnavailable as e:
            self._idl.close()
            self.handler.shutdown()
            self.dispatcher.stop()
            raise errors.OvsdbUnavailable(
                f'cannot connect to OVSDB at {self.endpoint}: {e}') from e
        connection.timeout = timeout
        self.lock = connection.lock

    # -- transactions -----------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, wait: bool | None = None,
                    timeout: float | None = None) -> Iterator[ovs_transaction.Transaction]:
        """Collect operations and commit them as ONE OVSDB transaction.

        Every :class:`.bridge.OVSBridge` write issued on this thread inside the
        block joins it, as do raw ovsdbapp commands added with
        ``txn.add(conn.api.db_set(...))``. Nested blocks join the outermost
        one (their ``wait``/``timeout`` are ignored). Reads inside the block
        see the committed state, not the pending writes. Nothing is written
        if the block raises; if the commit fails, everything is rolled back
        and :class:`.errors.OvsdbError` is raised.

        :param wait: True: return once ovs-vswitchd applied the change
            (ofports assigned). False: return once ovsdb-server committed
            (``--no-wait``). None: the connection default.
        """
        body_done = False
        depth = getattr(_txn_depth, 'value', 0)
        _txn_depth.value = depth + 1
        try:
            # log_errors=False: the error is raised to the caller instead.
            with self.api.transaction(check_error=True, log_errors=False,
                                      wait=wait, timeout=timeout) as txn:
                yield txn
                body_done = True
                commit_started = time.perf_counter()
        except exceptions.AgentkitError:
            raise
        except Exception as e:
            if not body_done:
                raise
            raise errors.OvsdbError(
                f'OVSDB transaction on {self.endpoint} failed: {e}') from e
        finally:
            _txn_depth.value = depth
            if body_done and depth == 0:  # the commit happened here
                timing.LEDGER.record(timing.OVSDB, 'commit',
                                     time.perf_counter() - commit_started)

    def execute(self, *commands: Any, wait: bool | None = None) -> list[Any]:
        """Run ovsdbapp commands in one transaction and return their results."""
        with self.transaction(wait=wait) as txn:
            for command in commands:
                txn.add(command)
        return [command.result for command in commands]

    # -- reads ------------------------------------------------------------

    def bridge(self, name: str, datapath_type: str | None = None) -> ovs_bridge.OVSBridge:
        return ovs_bridge.OVSBridge(name, self, datapath_type)

    def list_bridges(self) -> list[str]:
        with self.lock:
            return sorted(b.name for b in self.api.tables['Bridge'].rows.values())

    def list_interfaces_with_iface_id(self, bridge: str | None = None) -> list[InterfaceInfo]:
        """Every interface carrying an iface-id, on one bridge or all.

        For the agent's full sync at start-up and after a resync signal, so
        ports plugged while the agent was down are not missed.
        """
        with self.lock:
            return self.list_interfaces_locked(bridge)

    def list_interfaces_locked(self, bridge: str | None) -> list[InterfaceInfo]:
        bridges = self.api.tables['Bridge'].rows.values()
        result = []
        for br in bridges:
            if bridge is not None and br.name != bridge:
                continue
            for port in br.ports:
                for iface in port.interfaces:
                    if IFACE_ID in (iface.external_ids or {}):
                        result.append(rows.interface_info(iface, br.name))
        return result

    def bridge_of_interface_locked(self, iface: Any, only: str | None = None) -> str | None:
        """Bridge holding an Interface row, from the replica (lock held).

        With ``only``, just that bridge is checked (the filtering case).
        """
        port = rows.row_by_name(self._idl, 'Port', iface.name)   # usual case: same name
        if port is None or iface.uuid not in {i.uuid for i in port.interfaces}:
            port = next((p for p in self.api.tables['Port'].rows.values()
                         if iface.uuid in {i.uuid for i in p.interfaces}), None)
            if port is None:
                return None
        if only is not None:
            bridges = [b for b in (rows.row_by_name(self._idl, 'Bridge', only),) if b is not None]
        else:
            bridges = list(self.api.tables['Bridge'].rows.values())
        for br in bridges:
            if port.uuid in self._bridge_port_uuids_locked(br):
                return str(br.name)
        return None

    def _bridge_port_uuids_locked(self, br: Any) -> frozenset[Any]:
        """The uuids of a Bridge row's ports, converted once per change.

        Reading ``br.ports`` builds (and sorts) a Row object per port: on a
        bridge of 1,000 ports, done for each interface event, it made the
        IDL thread quadratic (55% of the agent's time plugging 1,000 ports,
        measured). The replica changes only when the IDL applies an update
        from ovsdb-server, which bumps ``change_seqno`` before it notifies
        any row of it: the same seqno means the same ports.
        """
        seqno = self._idl.change_seqno
        cached = self._bridge_ports.get(br.uuid)
        if cached is not None and cached[0] == seqno:
            return cached[1]
        uuids = frozenset(p.uuid for p in br.ports)
        if len(self._bridge_ports) > 64:  # bridges come and go (trunks)
            self._bridge_ports.clear()
        self._bridge_ports[br.uuid] = (seqno, uuids)
        return uuids

    # -- events -----------------------------------------------------------

    def watch_interfaces(self, on_iface_id: InterfaceCallback | None = None,
                         on_ofport: InterfaceCallback | None = None,
                         on_deleted: InterfaceCallback | None = None,
                         bridge: str | None = None) -> InterfaceWatcher:
        """Call back when interfaces are plugged, get an ofport, or go away.

        * ``on_iface_id``: an Interface has ``external_ids:iface-id`` (on
          create, or when set later) - nova/os-vif plugged a Neutron port.
        * ``on_ofport``: such an interface has a valid ofport (> 0), the
          moment flows can be written for it. Fires once, also when the
          ofport was already there as the iface-id appeared.
        * ``on_deleted``: an interface that was reported is deleted, or its
          iface-id removed or replaced (the replacement then fires
          ``on_iface_id``). ``interface.iface_id`` is the old port id.

        With ``bridge``, only that bridge's interfaces are reported and
        foreign ones are dropped on the IDL thread before any further work
        (the stock Neutron agent processes every port on the switch, which
        is costly on a busy host). Callbacks run on the connection's
        dispatcher thread in order; they must be idempotent since a
        reconnect or resync may repeat information. Use
        ``watcher.initial`` for the initial full sync.
        """
        if bridge is not None:
            validation.validate_name(bridge, 'bridge')
        watcher = InterfaceWatcher(self, bridge, on_iface_id, on_ofport, on_deleted)
        with self._state_lock:
            self._watchers.append(watcher)
        watcher.start()
        return watcher

    def forget_watcher(self, watcher: InterfaceWatcher) -> None:
        with self._state_lock:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    def add_resync_callback(self, callback: ResyncCallback) -> None:
        """Call ``callback(reason)`` when the agent must do a full resync.

        Reasons: RESYNC_OVSDB_RECONNECTED - the OVSDB session was lost and
        re-established (ovsdb-server restart, socket reset); changes made
        meanwhile may not have been reported one by one (interfaces that
        vanished are reported as deleted just before this callback).
        RESYNC_VSWITCHD_RESTARTED - needs :meth:`start_vswitchd_monitor`;
        flows and datapath state are gone and must be reprogrammed.
        """
        with self._state_lock:
            self._resync_callbacks.append(callback)

    def start_vswitchd_monitor(self, pidfile: str | None = None,
                               interval: float = 1.0) -> vswitchd.VswitchdMonitor:
        """Poll ovs-vswitchd's pidfile and signal RESYNC_VSWITCHD_RESTARTED.

        ``pidfile`` defaults to ``<rundir>/ovs-vswitchd.pid``, rundir from
        ``Open_vSwitch.external_ids:rundir`` (set by ovs-ctl) or
        /var/run/openvswitch. Idempotent: returns the running monitor.
        """
        with self._state_lock:
            if self._vswitchd_monitor is None:
                if pidfile is None:
                    with self.lock:
                        ovs_row = next(iter(self.api.tables[SCHEMA].rows.values()), None)
                        rundir = ((ovs_row.external_ids or {}).get('rundir')
                                  if ovs_row is not None else None)
                    pidfile = os.path.join(rundir or vswitchd.DEFAULT_RUNDIR,
                                           vswitchd.VSWITCHD_PIDFILE_NAME)
                self._vswitchd_monitor = vswitchd.VswitchdMonitor(
                    pidfile, lambda: self._signal_resync(RESYNC_VSWITCHD_RESTARTED),
                    interval)
                self._vswitchd_monitor.start()
            return self._vswitchd_monitor

    def _idl_reconnected(self) -> None:
        # Connection thread: hand over to the handler thread, behind the
        # row events of the fresh dump.
        LOG.warning('OVSDB session to %s re-established', self.endpoint)
        self.handler.notifications.put(
            (events.SyntheticEvent(self._after_reconnect), 'reconnect', None, None))

    def _after_reconnect(self) -> None:
        with self._state_lock:
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher.reconcile()
        self._signal_resync(RESYNC_OVSDB_RECONNECTED)

    def _signal_resync(self, reason: str) -> None:
        with self._state_lock:
            callbacks = list(self._resync_callbacks)
        for callback in callbacks:
            self.dispatcher.submit(callback, reason)

    def wait_for_interface(self, name: str, predicate: Callable[[Any], Any],
                           timeout: float) -> Any:
        """Wait until the Interface row ``name`` satisfies ``predicate``.

        Re-checks the replica after every change to that row (woken by a
        row event, no polling). Returns the predicate's truthy value, or
        None on timeout. The predicate runs with the connection lock held
        and receives the live row or None.
        """
        waker = events.RowWakeup('Interface', name)
        self.handler.watch_event(waker)
        deadline = time.monotonic() + timeout
        try:
            while True:
                waker.event.clear()
                with self.lock:
                    value = predicate(rows.row_by_name(self._idl, 'Interface', name))
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                waker.event.wait(remaining)
        finally:
            self.handler.unwatch_event(waker)

    # -- lifecycle --------------------------------------------------------

    def close(self) -> None:
        """Stop all threads of this connection (and forget it if shared)."""
        if self.closed:
            return
        self.closed = True
        if self._vswitchd_monitor is not None:
            self._vswitchd_monitor.stop()
        for watcher in list(self._watchers):
            watcher.stop()
        self.api.ovsdb_connection.stop(timeout=self.timeout)
        self.handler.shutdown()
        self.dispatcher.stop()
        with _registry_lock:
            if _registry.get(self.endpoint) is self:
                del _registry[self.endpoint]


_registry: dict[str, OvsdbConnection] = {}
_registry_lock = threading.Lock()


def get_connection(endpoint: str = DEFAULT_OVSDB_CONNECTION,
                   timeout: float = DEFAULT_TIMEOUT,
                   connect_timeout: float | None = None,
                   wait: bool = True) -> OvsdbConnection:
    """The process-wide connection to ``endpoint``, connecting on first use.

    Callers pass ``conf.ovs.ovsdb_connection`` and ``conf.ovs.ovsdb_timeout``.
    The first caller's timeouts and ``wait`` default win; later callers get
    the same object (override per transaction instead). A child process
    after ``fork()`` gets its own connection (the parent's threads and
    socket are not usable there).
    """
    key = endpoint.strip()
    with _registry_lock:
        conn = _registry.get(key)
        if conn is not None and not conn.closed and conn.pid == os.getpid():
            return conn
        conn = OvsdbConnection(key, timeout=timeout, connect_timeout=connect_timeout,
                               wait=wait)
        _registry[key] = conn
        return conn
