"""Declarative OVS ports: the driver states what it wants, only differences are written.

Why: the agent re-wires every port at start and on every resync. If it
rewrote the patch and tunnel ports it owns each time, every resync would be
an OVSDB change that ovs-vswitchd reconfigures for. Here a wanted port is a
:class:`PortSpec`; :class:`ApplyPortSpecs` compares it with the IDL replica
inside the transaction and sets only the columns that differ, so an agent
that finds its wiring intact (a restart) commits nothing at all: no OVSDB
update, no vswitchd reconfiguration, no traffic hiccup.

Why not ``ovs_lib.OVSBridge.add_port``: it has no ``protected`` column (the
tunnel ports need it) and always writes every given column; its
``delete_port`` looks the port's bridge up on each call, which is quadratic
when a peer's thousand tunnel ports go at once. This module reads through
``ovs_lib``'s connection and adds its own ovsdbapp commands to its
transactions.

Ownership: every port the driver creates carries ``other_config``
``agentkit_role`` (see :data:`ROLE_KEY`), so a restarted agent tells its own
wiring from ports others plugged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from ovsdbapp.backend.ovs_idl import command as ovs_command
from ovsdbapp.backend.ovs_idl import idlutils

from agentkit.lib import ovs_lib

ROLE_KEY = 'agentkit_role'


@dataclasses.dataclass(frozen=True)
class PortSpec:
    """A port the driver wants, with the columns it owns.

    ``options`` replaces the interface's options; ``other_config`` keys are
    merged into what is there (others' keys are kept); ``tag`` None means
    no tag (a trunk port).
    """

    bridge: str
    name: str
    type: str
    options: Mapping[str, str]
    tag: int | None = None
    protected: bool = False
    other_config: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        ovs_lib.validate_name(self.bridge, 'bridge')
        ovs_lib.validate_port_args(self.name, self.type, dict(self.options))
        ovs_lib.validate_tag(self.tag)


@dataclasses.dataclass(frozen=True)
class PortState:
    """A snapshot of one Port row and its same-named Interface."""

    name: str
    bridge: str | None
    type: str
    options: Mapping[str, str]
    tag: int | None
    protected: bool
    other_config: Mapping[str, str]
    iface_external_ids: Mapping[str, str]

    @property
    def role(self) -> str | None:
        return self.other_config.get(ROLE_KEY)

    @property
    def iface_id(self) -> str | None:
        return self.iface_external_ids.get(ovs_lib.IFACE_ID)


@dataclasses.dataclass
class PortChanges:
    """What :func:`diff_port` found: create the port, or set these columns."""

    create: bool = False
    port: dict[str, Any] = dataclasses.field(default_factory=dict)
    iface: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.create or bool(self.port) or bool(self.iface)


def diff_port(spec: PortSpec, current: PortState | None) -> PortChanges:
    """Columns to write so that ``current`` matches ``spec`` (pure).

    A port missing, or on another bridge, is (re)created: OVS cannot move
    a port between bridges.
    """
    if current is None or current.bridge != spec.bridge:
        return PortChanges(create=True)
    changes = PortChanges()
    if current.tag != spec.tag:
        changes.port['tag'] = [] if spec.tag is None else spec.tag
    if current.protected != spec.protected:
        changes.port['protected'] = spec.protected
    if any(current.other_config.get(k) != v for k, v in spec.other_config.items()):
        changes.port['other_config'] = {**current.other_config, **spec.other_config}
    if current.type != spec.type:
        changes.iface['type'] = spec.type
    if dict(current.options) != dict(spec.options):
        changes.iface['options'] = dict(spec.options)
    return changes


# --------------------------------------------------------------------------
# Reading the replica (callers hold no lock; these take the connection's).
# --------------------------------------------------------------------------

def _optional(value: Any) -> Any:
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _state(port: Any, bridge: str | None) -> PortState:
    iface = next((i for i in port.interfaces if i.name == port.name), None)
    return PortState(
        name=port.name, bridge=bridge,
        type=(iface.type if iface is not None else '') or '',
        options=dict(iface.options or {}) if iface is not None else {},
        tag=_optional(port.tag),
        protected=bool(_optional(getattr(port, 'protected', False))),
        other_config=dict(port.other_config or {}),
        iface_external_ids=dict(iface.external_ids or {}) if iface is not None else {})


def _bridge_of(idl: Any, port: Any) -> Any:
    for br in idl.tables['Bridge'].rows.values():
        if any(p.uuid == port.uuid for p in br.ports):
            return br
    return None


class _Owners:
    """Which bridge holds a port, for one command.

    Port rows do not point back at their bridge. Each bridge's membership is
    built once per command, and only for the bridges the command names:
    looking every port up separately would be quadratic with thousands of
    tunnel ports, and scanning every bridge costs even no-op commands.
    """

    def __init__(self, idl: Any) -> None:
        self.idl = idl
        self._members: dict[str, set[Any]] = {}

    def bridge_of(self, port: Any, expected: str) -> Any:
        """The bridge holding ``port``; checks ``expected`` first."""
        br = idlutils.row_by_value(self.idl, 'Bridge', 'name', expected, None)
        if br is not None:
            members = self._members.get(expected)
            if members is None:
                members = self._members[expected] = {p.uuid for p in br.ports}
            if port.uuid in members:
                return br
        return _bridge_of(self.idl, port)   # rare: the port moved


def read_ports(conn: ovs_lib.OvsdbConnection, bridge: str) -> list[PortState]:
    """Ports of ``bridge`` (without its own internal port); [] if it is absent."""
    with conn.lock:
        br = idlutils.row_by_value(conn.api.idl, 'Bridge', 'name', bridge, None)
        if br is None:
            return []
        return [_state(p, bridge) for p in br.ports if p.name != bridge]


def read_port(conn: ovs_lib.OvsdbConnection, name: str) -> PortState | None:
    """The port called ``name`` wherever it is (names are switch-global)."""
    with conn.lock:
        port = idlutils.row_by_value(conn.api.idl, 'Port', 'name', name, None)
        if port is None:
            return None
        br = _bridge_of(conn.api.idl, port)
        return _state(port, br.name if br is not None else None)


# --------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------

class ApplyPortSpecs(ovs_command.BaseCommand):
    """Bring ports to their specs, writing only what differs.

    Runs on the IDL thread with the replica consistent, so the comparison
    and the writes are one atomic step. ``result``: names of the ports that
    were created or changed.
    """

    def __init__(self, api: Any, specs: Iterable[PortSpec]) -> None:
        super().__init__(api)
        self.specs = list(specs)

    def run_idl(self, txn: Any) -> None:
        idl = self.api.idl
        changed = []
        owners = _Owners(idl)
        for spec in self.specs:
            br = idlutils.row_by_value(idl, 'Bridge', 'name', spec.bridge, None)
            if br is None:
                raise ovs_lib.OvsdbNotFound(f'bridge {spec.bridge} does not exist')
            port = idlutils.row_by_value(idl, 'Port', 'name', spec.name, None)
            owner = owners.bridge_of(port, spec.bridge) if port is not None else None
            current = (_state(port, owner.name if owner is not None else None)
                       if port is not None else None)
            changes = diff_port(spec, current)
            if not changes:
                continue
            changed.append(spec.name)
            if changes.create:
                if port is not None:
                    _delete(port, owner)
                self._insert(txn, br, spec)
                continue
            iface = next(i for i in port.interfaces if i.name == spec.name)
            for column, value in changes.port.items():
                if column == 'other_config':
                    port.verify(column)
                setattr(port, column, value)
            for column, value in changes.iface.items():
                setattr(iface, column, value)
        self.result = changed

    def _insert(self, txn: Any, br: Any, spec: PortSpec) -> None:
        iface = txn.insert(self.api.tables['Interface'])
        iface.name = spec.name
        iface.type = spec.type
        iface.options = dict(spec.options)
        port = txn.insert(self.api.tables['Port'])
        port.name = spec.name
        port.interfaces = [iface]
        if spec.tag is not None:
            port.tag = spec.tag
        if spec.protected:
            port.protected = True
        if spec.other_config:
            port.other_config = dict(spec.other_config)
        br.addvalue('ports', port)


def _delete(port: Any, bridge: Any) -> None:
    if bridge is not None:
        bridge.delvalue('ports', port)
    for iface in port.interfaces:
        iface.delete()
    port.delete()


class DeletePorts(ovs_command.BaseCommand):
    """Delete ports, each only from the bridge it was seen on (a same-named
    port elsewhere is left alone); absent ones are skipped."""

    def __init__(self, api: Any, ports: Iterable[PortState]) -> None:
        super().__init__(api)
        self.ports = [p for p in ports if p.bridge is not None]

    def run_idl(self, txn: Any) -> None:
        owners = _Owners(self.api.idl)
        deleted = []
        for state in self.ports:
            port = idlutils.row_by_value(self.api.idl, 'Port', 'name', state.name, None)
            if port is None:
                continue
            owner = owners.bridge_of(port, str(state.bridge))
            if owner is None or owner.name != state.bridge:
                continue
            _delete(port, owner)
            deleted.append(state.name)
        self.result = deleted


class SetTagIfUntagged(ovs_command.BaseCommand):
    """Give a port a tag (and ``protected``) only if it has no tag, atomically.

    ``verify('tag')`` makes the commit fail (and ovsdbapp retry the check)
    if someone else tagged the port after the replica was read, so a
    concurrent wiring is never overwritten. ``result``: True if written.
    """

    def __init__(self, api: Any, name: str, tag: int, protected: bool = False) -> None:
        super().__init__(api)
        self.name = name
        self.tag = ovs_lib.validate_tag(tag)
        self.protected = protected

    def run_idl(self, txn: Any) -> None:
        port = idlutils.row_by_value(self.api.idl, 'Port', 'name', self.name, None)
        self.result = False
        if port is None:
            return
        port.verify('tag')
        if _optional(port.tag) is None:
            port.tag = self.tag
            port.protected = self.protected
            self.result = True


def apply(conn: ovs_lib.OvsdbConnection, specs: Iterable[PortSpec],
          deletions: Iterable[PortState] = ()) -> list[str]:
    """Apply specs and delete ports in ONE transaction, without waiting for
    ovs-vswitchd (nothing here needs an ofport). Returns changed port names;
    commits nothing when everything already matches."""
    specs = list(specs)
    deletions = [d for d in deletions if d.bridge is not None]
    if not specs and not deletions:
        return []
    delete = DeletePorts(conn.api, deletions)
    command = ApplyPortSpecs(conn.api, specs)
    with conn.transaction(wait=False) as txn:
        if deletions:
            txn.add(delete)
        if specs:
            txn.add(command)
    return list(delete.result or []) + list(command.result or [])
