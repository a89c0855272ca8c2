"""ARP and MAC anti-spoofing of VM ports on Linux bridges, as one nftables table.

Why: a VM's ``tap`` crosses a Linux bridge (the per-port ``qbr`` of an Open
vSwitch hybrid plug, or the per-network ``brq`` of linuxbridge), and without
a guard the VM can send frames with any source MAC (poisoning the bridge's
FDB, impersonating other ports) and ARP that claims any IP (poisoning its
neighbours' ARP caches). Security groups (iptables) only see IP, so this
layer-2 check has to happen on the bridge. Neutron did it with ebtables
chains per tap, edited one command at a time; here the wanted state of
every guarded port lives in memory and is written as one nftables table of
the ``bridge`` family, replaced atomically in one ``nft -f`` transaction per
change (the nftables counterpart of one ``iptables-restore`` per change):
no window in which a port is unguarded, and one exec instead of dozens.

What a guarded port may send (see :func:`agentkit.privileged.nftables.
render_bridge_table` for the exact ruleset): frames whose Ethernet source is
one of its MACs; of those only IPv4, IPv6 and ARP (VLAN tags, LLDP, raw
802.3 are dropped); ARP only with one of its MACs as sender MAC and, as
sender IP, an IPv4 prefix allowed for *that* MAC (fixed IPs with the port
MAC; allowed address pairs with their own MAC or, without one, the port
MAC), plus RFC 5227 probes (sender IP 0.0.0.0). IP-level source checks are
left to the firewall driver. Ports that are not guarded are not touched.

When the kernel is touched: :meth:`BridgeAntiSpoof.apply` runs nft only if
the wanted guards differ from those of the last successful apply (the
ruleset is a pure function of them); an unchanged apply costs a tuple
comparison. :meth:`BridgeAntiSpoof.defer_apply` batches a whole sync into
one apply. A failed apply raises
:class:`BridgeFilterError` with nft's stderr; the kernel keeps the previous
table (the transaction is atomic) and the next apply writes everything again.

The table belongs to agentkit alone: anything else in it is lost on the next
apply. Its name defaults to :data:`DEFAULT_TABLE`; tests pass their own
(``agentkit-<something>``) so they can run in parallel on one host.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable

from agentkit import exceptions
from agentkit.lib import batching
from agentkit.privileged import nftables as priv

LOG = logging.getLogger(__name__)

# The production table: one per host, owned by whichever agent guards the
# host's taps (the L2 agent). Fixed rather than configurable so operators
# know where to look (``nft list table bridge agentkit-antispoof``).
DEFAULT_TABLE = 'agentkit-antispoof'

# Re-exported so callers never import the privileged module themselves.
InvalidGuardValue = priv.InvalidGuardValue

# (mac, (ipv4 prefix, ...)): one MAC and the IPv4 prefixes it may claim in ARP.
AllowedPair = tuple[str, tuple[str, ...]]


class BridgeFilterError(exceptions.AgentkitError):
    """nft could not replace or delete the anti-spoofing table; carries its stderr."""


@dataclasses.dataclass(frozen=True)
class PortGuard:
    """What one bridge port (a VM's tap) may send, normalised on creation.

    :param device: the tap as the bridge sees it (e.g. ``tap`` + 11
        characters of the port id), at most 15 characters of [A-Za-z0-9_.-].
    :param allowed: ``(mac, (ipv4 prefix, ...))`` pairs: the MACs the port
        may use as Ethernet and ARP source, each with the IPv4 addresses or
        prefixes it may claim as ARP sender. A MAC with no prefixes (an
        IPv6-only address pair) may send but only ARP probes. Entries with
        the same MAC are merged, prefixes masked and collapsed, everything
        sorted, so equal guards compare and render equal. A guard without
        MACs blocks everything the device sends.
    :raises InvalidGuardValue: a bad device name, MAC or prefix.
    """

    device: str
    allowed: tuple[AllowedPair, ...] = ()

    def __post_init__(self) -> None:
        device, allowed = priv.normalize_port((self.device, self.allowed))
        object.__setattr__(self, 'device', device)
        object.__setattr__(self, 'allowed', allowed)

    @property
    def macs(self) -> tuple[str, ...]:
        """The MACs the port may use as Ethernet source, sorted."""
        return tuple(mac for mac, _ in self.allowed)

    def to_primitive(self) -> list[Any]:
        """``[device, [[mac, [prefix, ...]], ...]]``: what crosses the privsep channel."""
        return [self.device, [[mac, list(prefixes)] for mac, prefixes in self.allowed]]


class BridgeAntiSpoof(batching.DeferredApply):
    """The guards of all ports on this host, kept in one nftables bridge table.

    Changes (:meth:`set_ports`, :meth:`update_port`, :meth:`remove_port`)
    only edit the in-memory model; :meth:`apply` (or leaving the outermost
    :meth:`defer_apply` block) makes the kernel match it. All methods are
    thread-safe.

    :param table: name of the bridge-family table this instance owns
        (``agentkit`` or ``agentkit-<word>[-<word>...]``). Two instances with
        the same name overwrite each other, so production uses
        :data:`DEFAULT_TABLE` from one place per host and tests a unique one.
    """

    def __init__(self, table: str = DEFAULT_TABLE) -> None:
        self._table = priv.check_table_name(table)
        self._guards: dict[str, PortGuard] = {}
        # Guards of the last successful replace, sorted by device; None:
        # unknown, write on the next apply. The ruleset is a pure function
        # of them, and comparing them is far cheaper than rendering.
        self._applied: tuple[PortGuard, ...] | None = None
        self._init_deferral()

    @property
    def table(self) -> str:
        return self._table

    # -- model -------------------------------------------------------------
    @property
    def ports(self) -> dict[str, PortGuard]:
        """A copy of the wanted guards, by device."""
        with self._lock:
            return dict(self._guards)

    def get_port(self, device: str) -> PortGuard | None:
        with self._lock:
            return self._guards.get(device)

    def set_ports(self, guards: Iterable[PortGuard]) -> None:
        """Replace the whole model (e.g. after a full resync).

        :raises ValueError: a device is listed twice (the model is unchanged).
        """
        new: dict[str, PortGuard] = {}
        for guard in guards:
            if not isinstance(guard, PortGuard):
                raise TypeError('expected PortGuard, got %r' % (guard,))
            if guard.device in new:
                raise InvalidGuardValue('device %s is listed twice' % guard.device)
            new[guard.device] = guard
        with self._lock:
            self._guards = new

    def update_port(self, guard: PortGuard) -> None:
        """Guard ``guard.device`` (adding it, or replacing its previous guard)."""
        if not isinstance(guard, PortGuard):
            raise TypeError('expected PortGuard, got %r' % (guard,))
        with self._lock:
            self._guards[guard.device] = guard

    def remove_port(self, device: str) -> bool:
        """Stop guarding ``device``; False if it was not guarded."""
        with self._lock:
            return self._guards.pop(device, None) is not None

    def render(self) -> str:
        """The ``nft -f`` input the model stands for (what the daemon renders)."""
        with self._lock:
            return priv.render_bridge_table(
                self._table, [guard.to_primitive() for guard in self._state()])

    def _state(self) -> tuple[PortGuard, ...]:
        return tuple(self._guards[device] for device in sorted(self._guards))

    # -- applying ----------------------------------------------------------
    def invalidate(self) -> None:
        """Forget what was applied: the next apply writes the table again
        (e.g. after an operator ran ``nft flush ruleset``)."""
        with self._lock:
            self._applied = None

    def apply(self) -> bool:
        """Make the kernel's table match the model; True if nft ran.

        Inside :meth:`defer_apply` this does nothing (False).

        :raises BridgeFilterError: nft failed; the previous table stays in
            force and the next apply writes the whole table again.
        """
        with self._lock:
            if self.deferring:
                return False
            state = self._state()
            if state == self._applied:
                return False
            self._applied = None
            ports = [guard.to_primitive() for guard in state]
            try:
                priv.replace_bridge_table(self._table, ports)
            except exceptions.ProcessError as exc:
                raise BridgeFilterError('replacing nftables table bridge %s (%d ports) '
                                        'failed: %s' % (self._table, len(ports), exc)) from exc
            self._applied = state
            LOG.debug('nftables table bridge %s replaced: %d guarded ports',
                      self._table, len(ports))
            return True

    def remove_all(self) -> bool:
        """Delete the table from the kernel and empty the model.

        For an owner that stops guarding for good (a test's cleanup, a driver
        being unloaded). A later :meth:`apply` creates the table again.

        :returns: False if the table did not exist.
        :raises BridgeFilterError: nft failed to delete it.
        """
        with self._lock:
            self._guards.clear()
            self._applied = None
            try:
                deleted: bool = priv.delete_bridge_table(self._table)
                return deleted
            except exceptions.ProcessError as exc:
                raise BridgeFilterError('deleting nftables table bridge %s failed: %s'
                                        % (self._table, exc)) from exc

    def get_live_table(self, handles: bool = False) -> str | None:
        """``nft list table bridge <table>`` (for diagnostics and tests); None if absent."""
        try:
            table: str | None = priv.list_bridge_table(self._table, handles)
            return table
        except exceptions.ProcessError as exc:
            raise BridgeFilterError('listing nftables table bridge %s failed: %s'
                                    % (self._table, exc)) from exc
