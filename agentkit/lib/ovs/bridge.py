"""A bridge by name: create or delete it, add or delete its ports, read them.

Why a thin helper over :mod:`.ports`: most callers think "on this bridge,
this port", and a bridge's own settings (datapath type, fail mode) need a
command of their own. Every port write still goes through the declarative
writer, so writing a port as it already is commits nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ovsdbapp.backend.ovs_idl import command as ovs_command

from agentkit.lib.ovs import errors
from agentkit.lib.ovs import idl
from agentkit.lib.ovs import ports
from agentkit.lib.ovs import rows
from agentkit.lib.ovs import validation
from agentkit.lib.ovs.rows import InterfaceInfo

if TYPE_CHECKING:
    from agentkit.lib.ovs.connection import OvsdbConnection


class _EnsureBridgeCommand(ovs_command.BaseCommand):  # type: ignore[misc]  # ovsdbapp is untyped
    """Create a Bridge row or update an existing one (its internal port is
    written by the port writer, in the same transaction)."""

    def __init__(self, api: idl.OvsApi, name: str, datapath_type: str | None,
                 fail_mode: str | None, other_config: dict[str, str],
                 external_ids: dict[str, str]) -> None:
        super().__init__(api)
        self.name = name
        self.datapath_type = datapath_type
        self.fail_mode = fail_mode
        self.other_config = other_config
        self.external_ids = external_ids

    def run_idl(self, txn: Any) -> None:
        br = rows.row_by_name(self.api.idl, 'Bridge', self.name)
        new = br is None
        if new:
            # Another process (the other agents of the host start at the
            # same time and ensure the same integration bridge) may insert
            # it first: verify() turns that into TRY_AGAIN, and ovsdbapp
            # runs this again on the newer replica instead of failing the
            # transaction on the unique name.
            self.api._ovs.verify('bridges')
            br = txn.insert(self.api.tables['Bridge'])
            br.name = self.name
            self.api._ovs.addvalue('bridges', br)
        # Rows inserted by this transaction have no readable columns yet.
        if self.datapath_type is not None and (new or br.datapath_type != self.datapath_type):
            br.datapath_type = self.datapath_type
        if self.fail_mode is not None:
            br.fail_mode = self.fail_mode
        if self.other_config:
            rows.set_map(br, 'other_config', self.other_config, replace=new)
        if self.external_ids:
            rows.set_map(br, 'external_ids', self.external_ids, replace=new)
        self.result = br.uuid


class OVSBridge:
    """An OVS bridge by name; all writes go through the shared connection.

    Port and interface names are global on the switch, so getters that
    take a port name find it wherever it is; listing methods are limited to
    this bridge.
    """

    def __init__(self, name: str, ovs: OvsdbConnection,
                 datapath_type: str | None = None) -> None:
        self.name = validation.validate_name(name, 'bridge')
        if datapath_type is not None and datapath_type not in validation.DATAPATH_TYPES:
            raise ValueError(
                f'datapath_type must be one of {sorted(validation.DATAPATH_TYPES)}')
        self.ovs = ovs
        self.datapath_type = datapath_type

    def __repr__(self) -> str:
        return f'OVSBridge({self.name!r})'

    # -- bridge -----------------------------------------------------------

    def create(self, fail_mode: str | None = None,
               other_config: Mapping[str, Any] | None = None,
               external_ids: Mapping[str, Any] | None = None) -> None:
        """Create the bridge or bring an existing one to this state.

        Idempotent. Sets datapath_type if given at construction; maps are
        merged into what is there. e.g. ``external_ids={'bridge-id': name}``.
        """
        if fail_mode is not None and fail_mode not in validation.FAIL_MODES:
            raise ValueError(f'fail_mode must be one of {sorted(validation.FAIL_MODES)}')
        self.ovs.execute(
            _EnsureBridgeCommand(
                self.ovs.api, self.name, self.datapath_type, fail_mode,
                validation.normalize_map(other_config, 'other_config'),
                validation.normalize_map(external_ids, 'external_ids')),
            # Its own internal port (the LOCAL port), as ovs-vsctl add-br makes.
            ports.ApplyPortSpecs(self.ovs.api, [ports.PortSpec(
                self.name, self.name, type='internal')], move=False))

    def delete(self) -> None:
        """Delete the bridge with all its ports; no error if absent."""
        self.ovs.execute(self.ovs.api.del_br(self.name, if_exists=True))

    def exists(self) -> bool:
        with self.ovs.lock:
            return rows.row_by_name(self.ovs.api.idl, 'Bridge', self.name) is not None

    def get_fail_mode(self) -> str | None:
        fail_mode = rows.optional(self._get('Bridge', self.name, 'fail_mode'))
        return None if fail_mode is None else str(fail_mode)

    def get_datapath_type(self) -> str:
        return str(self._get('Bridge', self.name, 'datapath_type'))

    # -- ports ------------------------------------------------------------

    def add_port(self, name: str, type: str | None = None,
                 options: Mapping[str, Any] | None = None,
                 external_ids: Mapping[str, Any] | None = None,
                 tag: int | None | ports.Keep = ports.KEEP,
                 other_config: Mapping[str, Any] | None = None,
                 mtu_request: int | None = None) -> None:
        """Add a port (one interface of the same name) or bring it to this state.

        ``type``: None (a system device, e.g. a veth/tap), 'internal',
        'patch' (options peer=...), 'vxlan'/'gre'/'geneve' (options from
        :func:`.validation.build_tunnel_options`). ``external_ids`` go to
        the Interface (iface-id, attached-mac...), ``tag`` and
        ``other_config`` to the Port. If the port exists on this bridge,
        given options replace the old ones, maps are merged, ``tag=None``
        removes the tag, and arguments left out keep their current value;
        only what differs is written. On another bridge: OvsdbError.
        """
        spec = ports.PortSpec(
            self.name, name, type=type, options=options, tag=tag,
            other_config=other_config or {}, external_ids=external_ids or {},
            mtu_request=mtu_request)
        self.ovs.execute(ports.ApplyPortSpecs(self.ovs.api, [spec], move=False))

    def delete_port(self, name: str, if_exists: bool = True) -> None:
        """Delete a port of this bridge (never a same-named one elsewhere)."""
        self.ovs.execute(ports.DeletePorts(self.ovs.api, [(self.name, name)],
                                           missing_ok=if_exists))

    def get_port_names(self) -> list[str]:
        """Ports of this bridge, without the bridge's own internal port."""
        with self.ovs.lock:
            br = self._bridge_row()
            return sorted(p.name for p in br.ports if p.name != self.name)

    def get_port_tag(self, port: str) -> int | None:
        tag = rows.optional(self._get('Port', port, 'tag'))
        return None if tag is None else int(tag)

    def get_port_other_config(self, port: str) -> dict[str, str]:
        return dict(self._get('Port', port, 'other_config'))

    def get_interface_external_ids(self, iface: str) -> dict[str, str]:
        return dict(self._get('Interface', iface, 'external_ids'))

    def get_interface(self, name: str) -> InterfaceInfo:
        with self.ovs.lock:
            row = rows.row_by_name(self.ovs.api.idl, 'Interface', name)
            if row is None:
                raise errors.OvsdbNotFound(f'interface {name} does not exist')
            return rows.interface_info(row, self.ovs.bridge_of_interface_locked(row))

    def get_ofport(self, name: str, timeout: float | None = None) -> int:
        """The interface's OpenFlow port number, waiting for it if needed.

        ovs-vswitchd assigns ofports after the transaction that created the
        port; with ``wait=False`` writes, or ports plugged by others, the
        column may still be empty. Raises :class:`.errors.OfportTimeout`
        (with the Interface.error text, if any) when none arrives in
        ``timeout``.
        """
        timeout = self.ovs.timeout if timeout is None else timeout
        state: dict[str, Any] = {}

        def ready(row: Any) -> int | None:
            state['exists'] = row is not None
            if row is None:
                return None
            state['error'] = rows.optional(row.error)
            ofport = rows.optional(row.ofport)
            return ofport if ofport is not None and ofport > 0 else None

        ofport: int | None = self.ovs.wait_for_interface(name, ready, timeout)
        if ofport is None:
            if not state.get('exists'):
                raise errors.OfportTimeout(
                    f'interface {name} does not exist (waited {timeout} s)')
            raise errors.OfportTimeout(
                f'interface {name} has no ofport after {timeout} s'
                + (f": {state['error']}" if state.get('error') else ''))
        return ofport

    def list_interfaces_with_iface_id(self) -> list[InterfaceInfo]:
        return self.ovs.list_interfaces_with_iface_id(self.name)

    # -- helpers ----------------------------------------------------------

    def _bridge_row(self) -> Any:
        br = rows.row_by_name(self.ovs.api.idl, 'Bridge', self.name)
        if br is None:
            raise errors.OvsdbNotFound(f'bridge {self.name} does not exist')
        return br

    def _get(self, table: str, name: str, column: str) -> Any:
        with self.ovs.lock:
            row = rows.row_by_name(self.ovs.api.idl, table, name)
            if row is None:
                raise errors.OvsdbNotFound(f'{table} {name} does not exist')
            return getattr(row, column)
