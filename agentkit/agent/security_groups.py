"""The L2 agent's side of security groups (Neutron's ``SecurityGroupAgentRpc``).

Why a module of its own: the firewall driver only applies what it is
given; someone has to ask neutron-server for it, remember which port is in
which group, and decide which ports a notification affects. That is this
class, so the L2 agent itself only says "this port is about to be wired",
"these groups changed" and "this port is gone".

What it asks: ``security_group_info_for_devices`` (security-group RPC 1.3)
for the ports it filters, never per-port rules. Network-owned ports and
ports with port security off need no call at all (the port details say
so). A ``security_groups_rule_updated`` refreshes the members of the
groups named; a ``security_groups_member_updated`` the ports whose rules
name the groups as remote — with one RPC for all of them, and nothing for
any other port.

Ordering: an answer is fetched and applied under one lock, so an answer
fetched before a change can never be applied after one fetched later.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agentkit import exceptions
from agentkit.api import firewall as firewall_api
from agentkit.api import security_group as sg
from agentkit.lib import naming

LOG = logging.getLogger(__name__)

#: (port_id, network_id) -> the Linux bridge the port's tap crosses, if any.
BridgeOf = Callable[[str, str | None], str | None]
# How long a port's wiring waits for the first full firewall sync before it
# gives up (and is retried): applied alone, its filter would rewrite the
# host's chains without the ports the sync is about to re-add.
FIRST_SYNC_WAIT = 5.0


class FirewallNotSynced(exceptions.AgentkitError):
    """The first full firewall sync has not succeeded yet; retried later."""


def host_device(device: str) -> str:
    """The tap of an agent device reference (a port id, or a tap already)."""
    return naming.tap_device_name(device) if naming.is_valid_id(device) else device


class SecurityGroupAgent:
    """Fetches security-group information and feeds the firewall driver.

    :param firewall: the loaded firewall driver.
    :param fetch: ``security_group_info_for_devices`` of the server's RPC
        client (takes port ids, returns the raw reply).
    :param bridge_of: the mechanism driver's answer to "which Linux bridge
        does this port's tap cross".

    Locks: ``_lock`` orders every fetch-and-apply (an answer fetched earlier
    is never applied after one fetched later); ``_index_lock`` guards the
    port/group index the notification handlers read, so they never wait
    for an RPC in flight.
    """

    def __init__(self, firewall: firewall_api.FirewallDriver,
                 fetch: Callable[[list[str]], Any], bridge_of: BridgeOf) -> None:
        self.firewall = firewall
        self._fetch = fetch
        self._bridge_of = bridge_of
        self._lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._ports: dict[str, sg.PortFilter] = {}
        # group id -> remote groups / address groups its rules name
        self._remotes: dict[str, frozenset[str]] = {}
        # port id -> the details the last full sync filtered it from: wiring
        # with those very details needs no new call.
        self._fresh: dict[str, Mapping[str, Any]] = {}
        self._pending: set[str] = set()
        # what was last applied of each group and remote (the audit compares)
        self._applied_groups: dict[str, sg.SecurityGroup] = {}
        self._applied_members: dict[str, tuple[Any, Any]] = {}
        self._refresh_queued = False
        self._pending_lock = threading.Lock()
        self._first_sync = threading.Event()
        if not firewall.needs_security_group_info:
            self._first_sync.set()

    @property
    def enabled(self) -> bool:
        return self.firewall.needs_security_group_info

    # -- ports being wired ---------------------------------------------------
    def sync_all(self, ports: Iterable[Mapping[str, Any]], devices: Iterable[str]) -> None:
        """Filter every port of the host in one apply, with one call (full sync).

        ``ports`` are the details of the bound ports, as the server sent
        them (network-owned and unprotected ones need no call); ``devices``
        every device plugged on the host: those without usable details
        pass nothing until their wiring filters them.

        :raises Exception: the call or the apply failed; wiring waits for
            a full sync that succeeds.
        """
        if not self.enabled:
            return
        local: dict[str, sg.PortFilter] = {}
        used: dict[str, Mapping[str, Any]] = {}
        for details in ports:
            try:
                port = self._from_details(details)
            except Exception as exc:  # noqa: BLE001 - quarantined, its wiring reports it
                LOG.warning('Full firewall sync: a port without usable details: %s', exc)
                continue
            local[port.port_id] = port
            used[port.port_id] = details
        known = {p.device for p in local.values()}
        unknown = sorted({host_device(d) for d in devices} - known)
        with self._pending_lock:
            # This sync fetches everything a pending refresh would (also
            # after the work queue gave up retrying one).
            self._pending.clear()
            self._refresh_queued = False
        if not local and not unknown:
            self._first_sync.set()
            return
        with self._lock:
            protected = {p: f for p, f in local.items() if f.filtered}
            others = [f for f in local.values() if not f.filtered]
            filters = self._fetch_and_apply(sorted(protected), protected, others,
                                            unknown_devices=unknown)
            self._fresh = {f.port_id: used[f.port_id] for f in filters
                           if f.port_id in used}
        self._first_sync.set()

    def prepare_port(self, details: Mapping[str, Any]) -> None:
        """Filter one port before it is wired (``details`` as the server sent them).

        :raises FirewallNotSynced: no full sync has succeeded yet.
        """
        failed = self.prepare_ports([details])
        for exc in failed.values():
            raise exc

    def prepare_ports(self, ports: Iterable[Mapping[str, Any]]) -> dict[str, Exception]:
        """Filter the ports of one batch before they are wired: one call, one apply.

        ``ports`` are their details as the server sent them; those a full
        sync filtered from these very details need nothing.

        :returns: {port id: error} of ports without usable details.
        :raises FirewallNotSynced: no full sync has succeeded yet.
        :raises Exception: the call or the apply failed (every port of the batch).
        """
        if not self.enabled:
            return {}
        errors: dict[str, Exception] = {}
        local: dict[str, tuple[sg.PortFilter, Mapping[str, Any]]] = {}
        for details in ports:
            try:
                port = self._from_details(details)
            except Exception as exc:  # noqa: BLE001 - that port fails, not the batch
                errors[str(details.get('port_id'))] = exc
                continue
            local[port.port_id] = (port, details)
        if not local:
            return errors
        if not self._first_sync.wait(FIRST_SYNC_WAIT):
            raise FirewallNotSynced(f'{len(local)} port(s) wait for the first full '
                                    f'firewall sync')
        with self._lock:
            todo = {port_id: port for port_id, (port, details) in local.items()
                    if self._fresh.pop(port_id, None) is not details}
            # DHCP and router ports, port security off: nothing to ask.
            protected = {p: f for p, f in todo.items() if f.filtered}
            others = [f for f in todo.values() if not f.filtered]
            if protected or others:
                self._fetch_and_apply(sorted(protected), protected, others)
        return errors

    def remove_devices(self, devices: Iterable[str]) -> None:
        """Forget the ports of these device references (port ids or taps)."""
        wanted = set(devices)
        with self._lock:
            with self._index_lock:
                gone = [p.port_id for p in self._ports.values()
                        if p.port_id in wanted or p.device in wanted]
                for port_id in gone:
                    del self._ports[port_id]
                    self._fresh.pop(port_id, None)
                self._prune()
            taps = [host_device(d) for d in wanted if naming.is_valid_id(d)
                    or d.startswith(naming.TAP_PREFIX)]
            self.firewall.remove_port_filters(gone, taps)

    # -- notifications -----------------------------------------------------------
    def ports_in_groups(self, group_ids: Iterable[str]) -> set[str]:
        """Ports that are members of any of ``group_ids`` (their rules changed)."""
        wanted = set(group_ids)
        with self._index_lock:
            return {p.port_id for p in self._ports.values()
                    if p.filtered and wanted.intersection(p.security_groups)}

    def ports_with_remotes(self, group_ids: Iterable[str]) -> set[str]:
        """Ports whose rules name any of ``group_ids`` as remote (their members changed)."""
        wanted = set(group_ids)
        with self._index_lock:
            return {p.port_id for p in self._ports.values()
                    if p.filtered and any(wanted & self._remotes.get(g, frozenset())
                                          for g in p.security_groups)}

    def request_refresh(self, port_ids: Iterable[str]) -> bool:
        """Remember ports to refresh; True when the caller must queue a run."""
        with self._pending_lock:
            self._pending.update(port_ids)
            if self._pending and not self._refresh_queued:
                self._refresh_queued = True
                return True
            return False

    def refresh_pending(self) -> None:
        """Refresh every port asked for so far, with one call.

        On failure the ports stay asked for: the work queue retries this
        run, and a full sync (what it falls back to) covers them too.
        """
        with self._pending_lock:
            port_ids, self._pending = self._pending, set()
            self._refresh_queued = False
        try:
            with self._lock:
                known = {p: self._ports[p] for p in port_ids if p in self._ports}
                if known:
                    self._fetch_and_apply(sorted(known), known)
        except Exception:
            with self._pending_lock:
                self._pending |= port_ids
                self._refresh_queued = True  # the retry of this run
            raise

    def audit(self) -> bool:
        """Compare every filtered port with the server in one call; apply
        only if the answer differs from what is applied.

        :returns: True if something differed (and was applied).
        """
        if not self.enabled:
            return False
        with self._lock:
            with self._index_lock:
                known = {p: f for p, f in self._ports.items() if f.filtered}
            if not known:
                return False
            reply = self._fetch(sorted(known))
            info, _devices = sg.SecurityGroupInfo.from_rpc(reply)
            filters = self._filters_from(info, _devices, known)
            same = (
                {f.port_id: f for f in filters} == known
                and all(self._applied_groups.get(g) == group
                        for g, group in info.groups.items())
                and all(self._applied_members.get(m) == (members,
                                                         info.member_families.get(m))
                        for m, members in info.members.items()))
            if same:
                LOG.debug('Firewall audit: %d port(s), nothing differs', len(known))
                return False
            LOG.info('Firewall audit: the server\'s security groups differ from the '
                     'host\'s; re-applying %d port(s)', len(known))
            self._fetch_and_apply(sorted(known), known, reply=reply)
            return True

    # -- internals (caller holds _lock) -------------------------------------------
    def _from_details(self, details: Mapping[str, Any]) -> sg.PortFilter:
        port_id = naming.validate_id(details.get('port_id'), 'port')
        return sg.PortFilter.from_rpc(details, self._bridge_of(port_id,
                                                               details.get('network_id')))

    def _fetch_and_apply(self, refs: list[str],
                         asked: Mapping[str, sg.PortFilter] | None = None,
                         others: Iterable[sg.PortFilter] = (),
                         unknown_devices: list[str] | None = None,
                         reply: Any = None) -> list[sg.PortFilter]:
        """One RPC for ``refs`` (unless its ``reply`` is given), one apply
        (with ``others``, which need no call); ``asked`` are ports that must
        end up filtered even if the server does not answer for them.
        ``unknown_devices`` makes the apply a full sync (see :meth:`sync_all`)."""
        if reply is None and refs:
            reply = self._fetch(refs)
        info, devices = (sg.SecurityGroupInfo.from_rpc(reply) if refs
                         else (sg.SecurityGroupInfo(), {}))
        filters = list(others) + self._filters_from(info, devices, asked or {})
        if unknown_devices is None:
            self.firewall.apply_port_filters(filters, info)
        else:
            self.firewall.sync_port_filters(filters, info, unknown_devices)
        with self._index_lock:
            for port in filters:
                self._ports[port.port_id] = port
            for group in info.groups.values():
                self._remotes[group.id] = frozenset(
                    r.remote_id for r in group.rules if r.remote_id)
            self._applied_groups.update(info.groups)
            self._applied_members.update(
                {m: (members, info.member_families.get(m))
                 for m, members in info.members.items()})
            self._prune()
        return filters

    def _filters_from(self, info: sg.SecurityGroupInfo,
                      devices: Mapping[str, Mapping[str, Any]],
                      asked: Mapping[str, sg.PortFilter]) -> list[sg.PortFilter]:
        """The filters of a reply's ``devices``, and of the ``asked`` ports it
        did not answer for (closed: no groups)."""
        unanswered = dict(asked)
        filters = []
        for port_id, device in devices.items():
            known = unanswered.get(port_id) or self._ports.get(port_id)
            network_id = device.get('network_id') or (known.network_id if known else None)
            bridge = known.bridge if known and known.bridge else \
                self._bridge_of(port_id, network_id)
            try:
                filters.append(sg.PortFilter.from_rpc(device, bridge, network_id))
            except Exception as exc:  # noqa: BLE001 - one bad port, not all
                LOG.error('Port %s: unusable security group information: %s', port_id, exc)
                continue
            unanswered.pop(port_id, None)
        for known in unanswered.values():
            # Deleted meanwhile, trusted now, or unusable: the closed
            # default (no groups) until the port's own events settle it.
            LOG.info('Port %s: no usable security group information from the server; '
                     'filtering it with no groups', known.port_id)
            filters.append(dataclasses.replace(known, security_groups=()))
        return filters

    def _apply(self, filters: list[sg.PortFilter], info: sg.SecurityGroupInfo) -> None:
        self._fetch_and_apply([], others=filters)

    def _prune(self) -> None:
        """Forget the rules of groups no port is in any more (caller holds _index_lock)."""
        used = {g for p in self._ports.values() for g in p.security_groups}
        for group in set(self._remotes) - used:
            del self._remotes[group]
        for group in set(self._applied_groups) - used:
            del self._applied_groups[group]
        remotes = set().union(*self._remotes.values()) if self._remotes else set()
        for remote in set(self._applied_members) - remotes:
            del self._applied_members[remote]
