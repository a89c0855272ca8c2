"""Interface events: turning OVSDB row changes into "port plugged/unplugged".

Why stateful: python-ovs reports every column change of every interface
(link state, statistics, MTU...), and re-announces every row after a
reconnect. The agent needs three facts, each once: an interface got an
``iface-id`` (nova plugged a Neutron port), it got a usable ofport, it
went away. :class:`InterfaceTracker` derives them; :class:`InterfaceWatcher`
feeds it from ovsdbapp's handler thread and hands results to one
:class:`Dispatcher` thread, so user callbacks never run on ovsdbapp's
threads and always run in the order the changes happened.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ovsdbapp.backend.ovs_idl import event as ovs_event

from agentkit.lib.ovs.rows import IFACE_ID, InterfaceInfo, interface_info

if TYPE_CHECKING:
    from agentkit.lib.ovs.connection import OvsdbConnection

LOG = logging.getLogger(__name__)

ROW_CREATE = ovs_event.RowEvent.ROW_CREATE
ROW_UPDATE = ovs_event.RowEvent.ROW_UPDATE
ROW_DELETE = ovs_event.RowEvent.ROW_DELETE

# Kinds of InterfaceEvent.
IFACE_ID_SET = 'iface_id_set'
OFPORT_ASSIGNED = 'ofport_assigned'
IFACE_DELETED = 'iface_deleted'


@dataclasses.dataclass(frozen=True)
class InterfaceEvent:
    """What :meth:`OvsdbConnection.watch_interfaces` callbacks receive."""
    kind: str                  # IFACE_ID_SET, OFPORT_ASSIGNED or IFACE_DELETED
    interface: InterfaceInfo
    seen_at: float             # time.monotonic() when the change was processed


def is_relevant_interface_change(event: str, row: Any, old: Any) -> bool:
    """Cheap first filter, run on the IDL thread for every Interface change.

    Most Interface updates (link state, status, MTU...) are noise to the
    agent. An update matters only if the iface-id changed or an interface
    with an iface-id had its ofport changed. ``old`` carries only the
    columns that changed in this update.
    """
    if event in (ROW_CREATE, ROW_DELETE):
        return IFACE_ID in (row.external_ids or {})
    if event != ROW_UPDATE or old is None:
        return False
    if hasattr(old, 'external_ids'):
        if (old.external_ids or {}).get(IFACE_ID) != (row.external_ids or {}).get(IFACE_ID):
            return True
    return hasattr(old, 'ofport') and IFACE_ID in (row.external_ids or {})


class InterfaceTracker:
    """Turns Interface row changes into IFACE_ID_SET / OFPORT_ASSIGNED /
    IFACE_DELETED, once each, remembering what it already reported.

    Being stateful (rather than trusting each update's ``old`` columns)
    makes it correct across reconnects: after an ovsdb-server restart the
    IDL re-announces every row as created, which must not re-report ports,
    and rows deleted while disconnected are never announced, which
    :meth:`reconcile` catches. Not thread-safe: used from one thread.
    """

    def __init__(self, bridge: str | None = None) -> None:
        self.bridge = bridge
        # uuid -> last reported state of interfaces that have an iface-id
        self._known: dict[str, InterfaceInfo] = {}

    def seed(self, interfaces: Iterable[InterfaceInfo]) -> None:
        """Remember interfaces that exist already, without reporting them."""
        for info in interfaces:
            if info.iface_id is not None:
                self._known[info.uuid] = info

    def known_uuids(self) -> set[str]:
        return set(self._known)

    def process(self, event: str, row: Any, bridge: str | None) -> list[tuple[str, InterfaceInfo]]:
        """Events for one row change; ``bridge`` is where the row is now
        (None if unknown, e.g. its port is already gone)."""
        uuid = str(row.uuid)
        known = self._known.get(uuid)
        if event == ROW_DELETE:
            if known is None:
                return []
            del self._known[uuid]
            return [(IFACE_DELETED, dataclasses.replace(
                interface_info(row, known.bridge), iface_id=known.iface_id))]
        if bridge is None and known is not None:
            bridge = known.bridge
        info = interface_info(row, bridge)
        out: list[tuple[str, InterfaceInfo]] = []
        if known is not None and known.iface_id != info.iface_id:
            # iface-id removed or replaced: the old Neutron port is gone here.
            del self._known[uuid]
            out.append((IFACE_DELETED, dataclasses.replace(known, ofport=info.ofport)))
            known = None
        if info.iface_id is None:
            return out
        if known is None:
            out.append((IFACE_ID_SET, info))
        if info.ofport_valid and (known is None or not known.ofport_valid):
            out.append((OFPORT_ASSIGNED, info))
        self._known[uuid] = info
        return out

    def reconcile(self, present: Iterable[InterfaceInfo]) -> list[tuple[str, InterfaceInfo]]:
        """Report known interfaces missing from a fresh full listing."""
        now = {i.uuid for i in present if i.iface_id is not None}
        return [(IFACE_DELETED, self._known.pop(uuid))
                for uuid in sorted(set(self._known) - now)]


class RowWakeup(ovs_event.RowEvent):  # type: ignore[misc]  # ovsdbapp is untyped
    """Sets a threading.Event whenever the row with this name changes."""

    def __init__(self, table: str, name: str) -> None:
        super().__init__((ROW_CREATE, ROW_UPDATE, ROW_DELETE), table,
                         (('name', '=', name),))
        self.event = threading.Event()

    # ovsdbapp keeps events in sets and compares them by table/conditions;
    # two threads waiting for the same port must not collapse into one.
    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def run(self, event: str, row: Any, old: Any) -> None:
        self.event.set()


class SyntheticEvent:
    """Queued on ovsdbapp's handler thread so a signal stays in order with
    the row events that preceded it."""
    ONETIME = False

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn = fn

    def run(self, event: Any, row: Any, updates: Any) -> None:
        self._fn()


class Dispatcher:
    """One thread that runs user callbacks in order, off the IDL threads."""

    def __init__(self, name: str) -> None:
        self._queue: queue.Queue[tuple[Callable[..., None], tuple[Any, ...]] | None] = \
            queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self._queue.put((fn, args))

    def stop(self, timeout: float | None = 5.0) -> None:
        self._queue.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:
                LOG.exception('OVSDB callback %r failed', fn)


InterfaceCallback = Callable[[InterfaceEvent], None]


class _InterfaceRowEvent(ovs_event.RowEvent):  # type: ignore[misc]  # ovsdbapp is untyped
    def __init__(self, watcher: InterfaceWatcher) -> None:
        super().__init__((ROW_CREATE, ROW_UPDATE, ROW_DELETE), 'Interface', None)
        self._watcher = watcher

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def match_fn(self, event: str, row: Any, old: Any) -> bool:
        # IDL thread, connection lock held: the replica is consistent with
        # this change, so this is where bridge membership can be checked.
        return self._watcher._match(event, row, old)

    def run(self, event: str, row: Any, old: Any) -> None:
        # ovsdbapp handler thread; row is a frozen copy.
        self._watcher._handle(event, row)


class InterfaceWatcher:
    """Reports Interface changes that matter to an L2 agent.

    Created by :meth:`OvsdbConnection.watch_interfaces`. ``initial`` holds
    the interfaces with an iface-id that existed at registration, taken
    atomically with it: process them as the full sync, then rely on the
    callbacks; nothing plugged in between is lost.
    """

    def __init__(self, conn: OvsdbConnection, bridge: str | None,
                 on_iface_id: InterfaceCallback | None,
                 on_ofport: InterfaceCallback | None,
                 on_deleted: InterfaceCallback | None) -> None:
        self._conn = conn
        self.bridge = bridge
        self._callbacks = {IFACE_ID_SET: on_iface_id, OFPORT_ASSIGNED: on_ofport,
                           IFACE_DELETED: on_deleted}
        self._tracker = InterfaceTracker(bridge)
        self._row_event = _InterfaceRowEvent(self)
        self.initial: list[InterfaceInfo] = []
        self.active = False

    def start(self) -> None:
        """Take the initial listing and start watching, atomically."""
        with self._conn.lock:
            self.initial = self._conn.list_interfaces_locked(self.bridge)
            self._tracker.seed(self.initial)
            self._conn.handler.watch_event(self._row_event)
            self.active = True

    def stop(self) -> None:
        """Stop reporting; callbacks already queued may still run."""
        self.active = False
        self._conn.handler.unwatch_event(self._row_event)
        self._conn.forget_watcher(self)

    def _match(self, event: str, row: Any, old: Any) -> bool:
        if not is_relevant_interface_change(event, row, old):
            return False
        if self.bridge is None or event == ROW_DELETE:
            return True   # deletes are filtered by the tracker's memory
        return self._conn.bridge_of_interface_locked(row, only=self.bridge) == self.bridge

    def _handle(self, event: str, row: Any) -> None:
        if not self.active:
            return
        bridge = self.bridge
        if bridge is None and event != ROW_DELETE:
            with self._conn.lock:
                live = self._conn.api.tables['Interface'].rows.get(row.uuid)
                bridge = self._conn.bridge_of_interface_locked(live) if live else None
        self._emit(self._tracker.process(event, row, bridge))

    def reconcile(self) -> None:
        """After a reconnect: report interfaces that vanished meanwhile."""
        if not self.active:
            return
        with self._conn.lock:
            present = self._conn.list_interfaces_locked(self.bridge)
        self._emit(self._tracker.reconcile(present))

    def _emit(self, events: list[tuple[str, InterfaceInfo]]) -> None:
        now = time.monotonic()
        for kind, info in events:
            callback = self._callbacks[kind]
            if callback is not None:
                self._conn.dispatcher.submit(callback, InterfaceEvent(kind, info, now))
