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

from agentkit.api import firewall as firewall_api
from agentkit.api import security_group as sg
from agentkit.lib import naming

LOG = logging.getLogger(__name__)

#: (port_id, network_id) -> the Linux bridge the port's tap crosses, if any.
BridgeOf = Callable[[str, str | None], str | None]
# A port wired while the first full filter sync still runs waits this long
# for it: its own apply would otherwise rewrite the host's chains without
# the ports the sync is about to re-add (they would pass unfiltered).
FIRST_SYNC_WAIT = 60.0


class SecurityGroupAgent:
    """Fetches security-group information and feeds the firewall driver.

    :param firewall: the loaded firewall driver.
    :param fetch: ``security_group_info_for_devices`` of the server's RPC
        client (takes port ids, returns the raw reply).
    :param bridge_of: the mechanism driver's answer to "which Linux bridge
        does this port's tap cross".
    """

    def __init__(self, firewall: firewall_api.FirewallDriver,
                 fetch: Callable[[list[str]], Any], bridge_of: BridgeOf) -> None:
        self.firewall = firewall
        self._fetch = fetch
        self._bridge_of = bridge_of
        self._lock = threading.Lock()
        self._ports: dict[str, sg.PortFilter] = {}
        # group id -> remote groups / address groups its rules name
        self._remotes: dict[str, frozenset[str]] = {}
        # Ports the last full sync filtered: their wiring needs no new call.
        self._fresh: set[str] = set()
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._first_sync = threading.Event()
        if not firewall.needs_security_group_info:
            self._first_sync.set()

    @property
    def enabled(self) -> bool:
        return self.firewall.needs_security_group_info

    # -- ports being wired ---------------------------------------------------
    def sync_all(self, ports: Iterable[Mapping[str, Any]]) -> None:
        """Filter every port of the host in one apply, with one call (full sync).

        ``ports`` are the details of the bound ports, as the server sent
        them; network-owned and unprotected ones need no call.
        """
        try:
            if not self.enabled:
                return
            local = {}
            for details in ports:
                try:
                    port = self._from_details(details)
                except Exception as exc:  # noqa: BLE001 - its wiring reports it
                    LOG.warning('Full firewall sync skips a port: %s', exc)
                    continue
                local[port.port_id] = port
            if not local:
                return
            with self._lock:
                protected = {p: f for p, f in local.items() if f.filtered}
                others = [f for f in local.values() if not f.filtered]
                filters = self._fetch_and_apply(sorted(protected), protected, others)
                self._fresh = {f.port_id for f in filters}
        finally:
            self._first_sync.set()

    def prepare_port(self, details: Mapping[str, Any]) -> None:
        """Filter one port before it is wired (``details`` as the server sent them)."""
        if not self.enabled:
            return
        local = self._from_details(details)
        port_id = local.port_id
        if not self._first_sync.wait(FIRST_SYNC_WAIT):
            LOG.warning('The first full firewall sync has not finished; filtering '
                        'port %s on its own', port_id)
        with self._lock:
            if port_id in self._fresh:
                self._fresh.discard(port_id)
                known = self._ports.get(port_id)
                if known is not None and known.filtered == local.filtered:
                    return
            if not local.filtered:
                # DHCP and router ports, port security off: nothing to ask.
                self._apply([local], sg.SecurityGroupInfo())
                return
            self._fetch_and_apply([port_id], {port_id: local})

    def remove_ports(self, port_ids: Iterable[str]) -> None:
        ids = [p for p in port_ids if naming.is_valid_id(p)]
        with self._lock:
            for port_id in ids:
                self._ports.pop(port_id, None)
                self._fresh.discard(port_id)
            self.firewall.remove_port_filters(ids)

    # -- notifications -----------------------------------------------------------
    def ports_in_groups(self, group_ids: Iterable[str]) -> set[str]:
        """Ports that are members of any of ``group_ids`` (their rules changed)."""
        wanted = set(group_ids)
        with self._lock:
            return {p.port_id for p in self._ports.values()
                    if p.filtered and wanted.intersection(p.security_groups)}

    def ports_with_remotes(self, group_ids: Iterable[str]) -> set[str]:
        """Ports whose rules name any of ``group_ids`` as remote (their members changed)."""
        wanted = set(group_ids)
        with self._lock:
            return {p.port_id for p in self._ports.values()
                    if p.filtered and any(wanted & self._remotes.get(g, frozenset())
                                          for g in p.security_groups)}

    def request_refresh(self, port_ids: Iterable[str]) -> bool:
        """Remember ports to refresh; True if none were waiting (queue a run)."""
        with self._pending_lock:
            was_empty = not self._pending
            self._pending.update(port_ids)
            return was_empty and bool(self._pending)

    def refresh_pending(self) -> None:
        """Refresh every port asked for so far, with one call.

        On failure the ports are asked for again by the retry.
        """
        with self._pending_lock:
            port_ids, self._pending = self._pending, set()
        try:
            with self._lock:
                known = {p: self._ports[p] for p in port_ids if p in self._ports}
                if known:
                    self._fetch_and_apply(sorted(known), known)
        except Exception:
            with self._pending_lock:
                self._pending |= port_ids
            raise

    # -- internals (caller holds _lock) -------------------------------------------
    def _from_details(self, details: Mapping[str, Any]) -> sg.PortFilter:
        port_id = naming.validate_id(details.get('port_id'), 'port')
        return sg.PortFilter.from_rpc(details, self._bridge_of(port_id,
                                                               details.get('network_id')))

    def _fetch_and_apply(self, refs: list[str],
                         asked: Mapping[str, sg.PortFilter] | None = None,
                         others: Iterable[sg.PortFilter] = ()) -> list[sg.PortFilter]:
        """One RPC for ``refs``, one apply (with ``others``, which need no
        call); ``asked`` are ports that must end up filtered even if the
        server does not answer for them."""
        unanswered = dict(asked or {})
        info, devices = (sg.SecurityGroupInfo.from_rpc(self._fetch(refs)) if refs
                         else (sg.SecurityGroupInfo(), {}))
        filters = list(others)
        for port_id, device in devices.items():
            known = unanswered.pop(port_id, None) or self._ports.get(port_id)
            network_id = device.get('network_id') or (known.network_id if known else None)
            bridge = known.bridge if known and known.bridge else \
                self._bridge_of(port_id, network_id)
            try:
                filters.append(sg.PortFilter.from_rpc(device, bridge, network_id))
            except Exception as exc:  # noqa: BLE001 - one bad port, not all
                LOG.error('Port %s: unusable security group information: %s', port_id, exc)
        for known in unanswered.values():
            # Deleted meanwhile, or trusted now: the closed default (no
            # groups) until the port's own events settle it.
            LOG.info('Port %s: no security group information from the server; '
                     'filtering it with no groups', known.port_id)
            filters.append(dataclasses.replace(known, security_groups=()))
        self._apply(filters, info)
        return filters

    def _apply(self, filters: list[sg.PortFilter], info: sg.SecurityGroupInfo) -> None:
        self.firewall.apply_port_filters(filters, info)
        for port in filters:
            self._ports[port.port_id] = port
        for group in info.groups.values():
            self._remotes[group.id] = frozenset(
                r.remote_id for r in group.rules if r.remote_id)
