"""Reading the IDL replica: rows by name, and snapshots safe to keep.

Why snapshots: IDL rows are live views that change under the caller's
feet and may only be read with the connection lock held; callers get
frozen dataclasses instead. Callers of these helpers hold the lock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ovsdbapp.backend.ovs_idl import idlutils

# Interface.external_ids keys nova/os-vif (and the interface driver) set.
IFACE_ID = 'iface-id'
ATTACHED_MAC = 'attached-mac'


def optional(value: Any) -> Any:
    """Python-ovs gives optional columns as [] or [x]."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def column(row: Any, name: str, default: Any = None) -> Any:
    """A column's value, ``default`` if unset: a row inserted by the
    current transaction has only the columns written so far."""
    try:
        return getattr(row, name)
    except AttributeError:
        return default


def row_by_name(idl: Any, table: str, name: str) -> Any:
    """The row of ``table`` whose ``name`` column is ``name``, or None."""
    return idlutils.row_by_value(idl, table, 'name', name, None)


def bridge_of_port(idl: Any, port: Any) -> Any:
    """The Bridge row holding a Port row (a scan: Ports do not point back)."""
    for br in idl.tables['Bridge'].rows.values():
        if any(p.uuid == port.uuid for p in br.ports):
            return br
    return None


def set_map(row: Any, column: str, values: Mapping[str, str], replace: bool) -> None:
    """Merge (or replace) a map column; verify() makes concurrent edits retry."""
    if replace:
        setattr(row, column, dict(values))
        return
    merged = dict(getattr(row, column, {}) or {})
    merged.update(values)
    row.verify(column)
    setattr(row, column, merged)


@dataclasses.dataclass(frozen=True)
class InterfaceInfo:
    """A snapshot of one Interface row (safe to keep; not tied to the IDL)."""
    name: str
    uuid: str
    bridge: str | None
    iface_id: str | None
    mac: str | None            # external_ids:attached-mac (the VM's MAC)
    ofport: int | None         # None until ovs-vswitchd assigns one; -1 = failed
    type: str
    external_ids: Mapping[str, str]

    @property
    def ofport_valid(self) -> bool:
        return self.ofport is not None and self.ofport > 0


def interface_info(row: Any, bridge: str | None) -> InterfaceInfo:
    """Build an :class:`InterfaceInfo` from a live, frozen or fake row."""
    ext = dict(getattr(row, 'external_ids', {}) or {})
    ofport = optional(getattr(row, 'ofport', []))
    return InterfaceInfo(name=row.name, uuid=str(row.uuid), bridge=bridge,
                         iface_id=ext.get(IFACE_ID), mac=ext.get(ATTACHED_MAC),
                         ofport=ofport, type=getattr(row, 'type', '') or '',
                         external_ids=ext)
