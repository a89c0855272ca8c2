"""The declarative port writer: a port is stated, only differences are written.

Why: agents re-state their ports at start and on every resync. If the
patch and tunnel ports, the VM ports' tags and the DHCP/router ports were
rewritten each time, every resync would be an OVSDB change that
ovs-vswitchd reconfigures for. Here a wanted port is a :class:`PortSpec`;
:class:`ApplyPortSpecs` compares it with the IDL replica inside the
transaction and sets only the columns that differ, so an agent that finds
everything in place (a restart) commits nothing at all: no OVSDB update,
no vswitchd reconfiguration, no traffic hiccup. Every Port and Interface
row agentkit creates or changes goes through :class:`ApplyPortSpecs` (a
bridge's own internal port included; :meth:`.bridge.OVSBridge.add_port` is
a one-port shorthand), except the compare-and-set of
:class:`SetTagIfUntagged`.

Ownership: ports agentkit creates for its own wiring carry
``other_config`` ``agentkit_role`` (:data:`ROLE_KEY`), so a restarted
agent tells its own wiring from ports others plugged.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ovsdbapp.backend.ovs_idl import command as ovs_command

from agentkit.lib.ovs import errors
from agentkit.lib.ovs import idl
from agentkit.lib.ovs import rows
from agentkit.lib.ovs import validation

if TYPE_CHECKING:
    from agentkit.lib.ovs.connection import OvsdbConnection

ROLE_KEY = 'agentkit_role'
# Map columns a spec merges into: verify() makes a concurrent edit retry.
MERGED_MAPS = frozenset({'other_config', 'external_ids'})


class Keep(enum.Enum):
    """A column a spec does not own: left as it is (see :data:`KEEP`)."""
    KEEP = 'keep'


# ``tag=KEEP`` leaves the tag alone; ``tag=None`` means "no tag" (a trunk).
KEEP = Keep.KEEP


@dataclasses.dataclass(frozen=True)
class PortSpec:
    """A port (with one interface of the same name) as its writer wants it.

    A spec states only the columns its writer owns: ``None`` (``KEEP`` for
    ``tag``) leaves a column as it is on an existing port, and at OVS's
    default on a new one. ``type`` None is a system device (tap, veth) on a
    new port. ``options`` replaces the interface's options; ``external_ids``
    (Interface) and ``other_config`` (Port) keys are merged into what is
    there, others' keys are kept. ``create`` False: the port is someone
    else's (a VM's), only adjust it, wherever it is;
    :class:`.errors.OvsdbNotFound` if it does not exist. Map values are
    normalised to strings.
    """

    bridge: str
    name: str
    type: str | None = None
    options: Mapping[str, str] | None = None
    tag: int | None | Keep = KEEP
    protected: bool | None = None
    other_config: Mapping[str, str] = dataclasses.field(default_factory=dict)
    external_ids: Mapping[str, str] = dataclasses.field(default_factory=dict)
    mtu_request: int | None = None
    create: bool = True

    def __post_init__(self) -> None:
        validation.validate_name(self.bridge, 'bridge')
        if self.options is not None:
            object.__setattr__(self, 'options',
                               validation.normalize_map(self.options, 'options'))
        validation.validate_port_args(self.name, self.type, dict(self.options or {}))
        if self.tag is not KEEP:
            validation.validate_tag(self.tag)
        validation.validate_mtu(self.mtu_request)
        for column in ('other_config', 'external_ids'):
            object.__setattr__(self, column,
                               validation.normalize_map(getattr(self, column), column))


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
    mtu_request: int | None = None

    @property
    def role(self) -> str | None:
        return self.other_config.get(ROLE_KEY)

    @property
    def iface_id(self) -> str | None:
        return self.iface_external_ids.get(rows.IFACE_ID)


@dataclasses.dataclass
class PortChanges:
    """What :func:`diff_port` found: create the port, or set these columns."""

    create: bool = False
    port: dict[str, Any] = dataclasses.field(default_factory=dict)
    iface: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.create or bool(self.port) or bool(self.iface)


def _merged_if_differs(current: Mapping[str, str],
                       wanted: Mapping[str, str]) -> dict[str, str] | None:
    if all(current.get(k) == v for k, v in wanted.items()):
        return None
    return {**current, **wanted}


def diff_port(spec: PortSpec, current: PortState | None) -> PortChanges:
    """Columns to write so that ``current`` matches ``spec`` (pure).

    A port missing, or on another bridge, is to be (re)created: OVS cannot
    move a port between bridges.
    """
    if current is None or current.bridge != spec.bridge:
        return PortChanges(create=True)
    changes = PortChanges()
    if spec.tag is not KEEP and current.tag != spec.tag:
        changes.port['tag'] = [] if spec.tag is None else spec.tag
    if spec.protected is not None and current.protected != spec.protected:
        changes.port['protected'] = spec.protected
    other_config = _merged_if_differs(current.other_config, spec.other_config)
    if other_config is not None:
        changes.port['other_config'] = other_config
    if spec.type is not None and current.type != spec.type:
        changes.iface['type'] = spec.type
    if spec.options is not None and dict(current.options) != dict(spec.options):
        changes.iface['options'] = dict(spec.options)
    external_ids = _merged_if_differs(current.iface_external_ids, spec.external_ids)
    if external_ids is not None:
        changes.iface['external_ids'] = external_ids
    if spec.mtu_request is not None and current.mtu_request != spec.mtu_request:
        changes.iface['mtu_request'] = spec.mtu_request
    return changes


# --------------------------------------------------------------------------
# Reading the replica.
# --------------------------------------------------------------------------

def _same_named_interface(port: Any) -> Any:
    return next((i for i in port.interfaces if i.name == port.name), None)


def _state(port: Any, bridge: str | None) -> PortState:
    iface = _same_named_interface(port)

    def iface_column(name: str, default: Any) -> Any:
        return default if iface is None else rows.column(iface, name, default)

    return PortState(
        name=port.name, bridge=bridge,
        type=iface_column('type', '') or '',
        options=dict(iface_column('options', {}) or {}),
        tag=rows.optional(rows.column(port, 'tag', [])),
        protected=bool(rows.optional(rows.column(port, 'protected', False))),
        other_config=dict(rows.column(port, 'other_config', {}) or {}),
        iface_external_ids=dict(iface_column('external_ids', {}) or {}),
        mtu_request=rows.optional(iface_column('mtu_request', [])))


class _BridgeMembers:
    """Which bridge holds a port, for one command.

    Port rows do not point back at their bridge. Each bridge's membership is
    built once per command, and only for the bridges the command names:
    looking every port up separately would be quadratic with thousands of
    tunnel ports, and scanning every bridge costs even no-op commands.
    Ports inserted earlier in the same transaction are known from the
    transaction's own record: python-ovs does not list them in the
    ``ports`` of a bridge inserted by that transaction too.
    """

    def __init__(self, idl_: Any, txn: Any) -> None:
        self.idl = idl_
        self._members: dict[str, set[Any]] = {}
        if not hasattr(txn, 'agentkit_inserted_ports'):
            txn.agentkit_inserted_ports = {}
        # port name -> bridge name, for ports inserted by this transaction
        self.inserted: dict[str, str] = txn.agentkit_inserted_ports

    def bridge_of(self, port: Any, expected: str) -> Any:
        """The bridge holding ``port``; checks ``expected`` first."""
        if port.name in self.inserted:
            return rows.row_by_name(self.idl, 'Bridge', self.inserted[port.name])
        br = rows.row_by_name(self.idl, 'Bridge', expected)
        if br is not None:
            members = self._members.get(expected)
            if members is None:
                members = self._members[expected] = {p.uuid for p in br.ports}
            if port.uuid in members:
                return br
        return rows.bridge_of_port(self.idl, port)   # rare: the port moved


def read_ports(conn: OvsdbConnection, bridge: str) -> list[PortState]:
    """Ports of ``bridge`` (without its own internal port); [] if it is absent."""
    with conn.lock:
        br = rows.row_by_name(conn.api.idl, 'Bridge', bridge)
        if br is None:
            return []
        return [_state(p, bridge) for p in br.ports if p.name != bridge]


def read_port(conn: OvsdbConnection, name: str) -> PortState | None:
    """The port called ``name`` wherever it is (names are switch-global)."""
    with conn.lock:
        port = rows.row_by_name(conn.api.idl, 'Port', name)
        if port is None:
            return None
        br = rows.bridge_of_port(conn.api.idl, port)
        return _state(port, br.name if br is not None else None)


# --------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------

class ApplyPortSpecs(ovs_command.BaseCommand):  # type: ignore[misc]  # ovsdbapp is untyped
    """Bring ports to their specs, writing only what differs.

    Runs on the IDL thread with the replica consistent, so the comparison
    and the writes are one atomic step. A port of that name on another
    bridge is moved if ``move``, else :class:`.errors.OvsdbError` (it may
    be someone else's). ``result``: names of the ports created or changed.
    """

    def __init__(self, api: Any, specs: Iterable[PortSpec], move: bool = True) -> None:
        super().__init__(api)
        self.specs = list(specs)
        self.move = move

    def run_idl(self, txn: Any) -> None:
        idl_ = self.api.idl
        changed = []
        owners = _BridgeMembers(idl_, txn)
        for spec in self.specs:
            br = rows.row_by_name(idl_, 'Bridge', spec.bridge)
            if br is None:
                raise errors.OvsdbNotFound(f'bridge {spec.bridge} does not exist')
            port = rows.row_by_name(idl_, 'Port', spec.name)
            current: PortState | None
            if not spec.create:
                if port is None:
                    raise errors.OvsdbNotFound(f'port {spec.name} does not exist')
                # Not ours to move, so where it is does not matter; and
                # reading a big bridge's membership for every VM port
                # wired would make wiring quadratic.
                owner, current = br, _state(port, spec.bridge)
            else:
                owner = owners.bridge_of(port, spec.bridge) if port is not None else None
                current = (_state(port, owner.name if owner is not None else None)
                           if port is not None else None)
            changes = diff_port(spec, current)
            if not changes:
                continue
            if changes.create:
                self._check_may_create(spec, port)
                if port is not None:
                    _delete(port, owner)
                self._insert(txn, br, spec)
                owners.inserted[spec.name] = spec.bridge
            else:
                self._update(port, changes)
            changed.append(spec.name)
        self.result = changed

    def _check_may_create(self, spec: PortSpec, port: Any) -> None:
        if port is not None and not self.move:
            raise errors.OvsdbError(f'port {spec.name} exists on another bridge, '
                                    f'not on {spec.bridge}')

    @staticmethod
    def _update(port: Any, changes: PortChanges) -> None:
        iface = _same_named_interface(port)
        if iface is None and changes.iface:
            raise errors.OvsdbError(f'port {port.name} has no interface of that name')
        for row, columns in ((port, changes.port), (iface, changes.iface)):
            for column, value in columns.items():
                if column in MERGED_MAPS:
                    row.verify(column)
                setattr(row, column, value)

    def _insert(self, txn: Any, br: Any, spec: PortSpec) -> None:
        iface = txn.insert(self.api.tables['Interface'])
        iface.name = spec.name
        if spec.type:
            iface.type = spec.type
        if spec.options:
            iface.options = dict(spec.options)
        if spec.external_ids:
            iface.external_ids = dict(spec.external_ids)
        if spec.mtu_request is not None:
            iface.mtu_request = spec.mtu_request
        idl.expect_interface(txn, iface)
        port = txn.insert(self.api.tables['Port'])
        port.name = spec.name
        port.interfaces = [iface]
        if isinstance(spec.tag, int):
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


class DeletePorts(ovs_command.BaseCommand):  # type: ignore[misc]  # ovsdbapp is untyped
    """Delete ``(bridge, name)`` ports, each only from that bridge (a
    same-named port elsewhere is left alone). Absent ones are skipped, or
    :class:`.errors.OvsdbNotFound` unless ``missing_ok``. ``result``: the
    names deleted."""

    def __init__(self, api: Any, ports: Iterable[tuple[str, str]],
                 missing_ok: bool = True) -> None:
        super().__init__(api)
        self.ports = list(ports)
        self.missing_ok = missing_ok

    def run_idl(self, txn: Any) -> None:
        owners = _BridgeMembers(self.api.idl, txn)
        deleted = []
        for bridge, name in self.ports:
            port = rows.row_by_name(self.api.idl, 'Port', name)
            owner = owners.bridge_of(port, bridge) if port is not None else None
            if owner is None or owner.name != bridge:
                if self.missing_ok:
                    continue
                raise errors.OvsdbNotFound(f'port {name} is not on bridge {bridge}')
            _delete(port, owner)
            owners.inserted.pop(name, None)
            deleted.append(name)
        self.result = deleted


class SetTagIfUntagged(ovs_command.BaseCommand):  # type: ignore[misc]  # ovsdbapp is untyped
    """Give a port a tag (and ``protected``) only if it has no tag, atomically.

    Not a :class:`PortSpec`: this is a guard, not a wanted state.
    ``verify('tag')`` makes the commit fail (and ovsdbapp retry the check)
    if someone else tagged the port after the replica was read, so a
    concurrent wiring is never overwritten. ``result``: True if written.
    """

    def __init__(self, api: Any, name: str, tag: int, protected: bool = False) -> None:
        super().__init__(api)
        self.name = name
        self.tag = validation.validate_tag(tag)
        self.protected = protected

    def run_idl(self, txn: Any) -> None:
        port = rows.row_by_name(self.api.idl, 'Port', self.name)
        self.result = False
        if port is None:
            return
        port.verify('tag')
        if rows.optional(port.tag) is None:
            port.tag = self.tag
            port.protected = self.protected
            self.result = True


def port_refs(states: Iterable[PortState]) -> list[tuple[str, str]]:
    """``(bridge, name)`` of the snapshots that were on a bridge, for
    :class:`DeletePorts`."""
    return [(s.bridge, s.name) for s in states if s.bridge is not None]


def apply(conn: OvsdbConnection, specs: Iterable[PortSpec],
          deletions: Iterable[PortState] = ()) -> list[str]:
    """Apply specs and delete ports in ONE transaction, without waiting for
    ovs-vswitchd (nothing here needs an ofport). Ports of a spec's name on
    another bridge are moved. Returns the names deleted and changed; commits
    nothing when everything already matches."""
    specs = list(specs)
    doomed = port_refs(deletions)
    if not specs and not doomed:
        return []
    delete = DeletePorts(conn.api, doomed)
    command = ApplyPortSpecs(conn.api, specs)
    with conn.transaction(wait=False) as txn:
        if doomed:
            txn.add(delete)
        if specs:
            txn.add(command)
    return list(delete.result or []) + list(command.result or [])
