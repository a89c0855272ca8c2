"""The member sets of remote security groups, as the iptables firewall uses them.

The unprivileged side of :mod:`agentkit.privileged.ipset`. For every remote
security group and ethertype the firewall references in its rules
(``-m set --match-set NIPv4<id> src``) it keeps one ``hash:net`` set of the
group's member addresses. :class:`IpsetManager` names the sets, remembers
what it applied last so an unchanged group costs nothing, and removes the
sets no rule uses any more.

Naming is Neutron's, so a host moving from Neutron's agent keeps working
sets and operators' habits (``ipset list NIPv4...``) still apply:
``prefix + '4'|'6' + group id``, truncated to 29 characters (31, the
kernel's limit, minus the ``-n`` of the temporary set a replacement is
built in). With the default prefix ``NIPv`` a name keeps the first 24
characters of the group's UUID, i.e. ``xxxxxxxx-xxxx-4xxx-yxxx-``: 20 hex
digits of which 74 bits are random in a version-4 UUID. Two groups
sharing a name is then a birthday collision among 2**74 values, about
3e-13 for 100,000 groups on one host. Prefixes are limited to
:data:`MAX_PREFIX_LEN` characters so at least 20 characters of an id
(62 random bits) remain. Since the cost of a collision would be two
groups sharing members, the manager still checks: a second group id
mapping to a name already used by another one raises
:class:`IpsetNameCollision` instead of silently merging them.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Iterable

from agentkit import exceptions
from agentkit.privileged import ipset as priv

LOG = logging.getLogger(__name__)

# Re-exported so drivers never import the privileged module themselves.
IpsetError = priv.IpsetError
IpsetNotFound = priv.IpsetNotFound
IpsetInUse = priv.IpsetInUse
IpsetIncompatible = priv.IpsetIncompatible
InvalidIpsetArgument = priv.InvalidIpsetArgument

DEFAULT_PREFIX = 'NIPv'
MAX_SET_NAME_LEN = priv.MAX_SET_NAME_LEN
MAX_PREFIX_LEN = 8
_PREFIX_RE = re.compile(r'[A-Za-z][A-Za-z0-9_]{0,%d}' % (MAX_PREFIX_LEN - 1))
_GROUP_ID_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]*')


class IpsetNameCollision(exceptions.AgentkitError, ValueError):
    """Two group ids truncate to the same set name."""


class IpsetManager:
    """The remote-group sets of one firewall, named ``<prefix><4|6><group id>``.

    :param prefix: set name prefix; Neutron's ``NIPv`` by default. Tests
        pass a unique one so they never touch other sets. Every set whose
        name starts with it is considered this manager's
        (:meth:`destroy_unused` removes the unknown ones).
    """

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
            raise InvalidIpsetArgument('invalid ipset prefix %r: a letter then at most '
                                       '%d of [A-Za-z0-9_]' % (prefix, MAX_PREFIX_LEN - 1))
        self.prefix = prefix
        # set name -> normalised members last applied (what the kernel holds)
        self._applied: dict[str, frozenset[str]] = {}
        # set name -> (ip_version, group id) it was derived from
        self._owners: dict[str, tuple[int, str]] = {}
        self._lock = threading.Lock()

    def set_name(self, ip_version: int, group_id: str) -> str:
        """The set of ``group_id``'s IPv4 or IPv6 members (Neutron's name).

        :raises InvalidIpsetArgument: invalid version or group id (a ValueError).
        """
        priv.check_ip_version(ip_version)
        if not isinstance(group_id, str) or not _GROUP_ID_RE.fullmatch(group_id):
            raise InvalidIpsetArgument('invalid security group id %r' % (group_id,))
        name = ('%s%d%s' % (self.prefix, ip_version, group_id))[:MAX_SET_NAME_LEN]
        # e.g. an id whose 24th character is '-' followed by 'n': refused by
        # the daemon, whose temporary sets end in '-n'.
        return priv.check_name(name)

    def _claim(self, name: str, ip_version: int, group_id: str) -> None:
        owner = self._owners.setdefault(name, (ip_version, group_id))
        if owner != (ip_version, group_id):
            raise IpsetNameCollision(
                'security groups %s and %s both map to ipset %s; their members '
                'would be merged' % (owner[1], group_id, name))

    def set_members(self, ip_version: int, group_id: str, members: Iterable[str]) -> bool:
        """Make the group's set hold exactly ``members``; True if the kernel changed.

        ``members`` are addresses or CIDRs of ``ip_version``. If the same
        (normalised) members were applied last time, nothing is sent to
        the daemon; otherwise the set is created or atomically replaced.

        :raises InvalidIpsetArgument: invalid members (checked before any root call).
        :raises IpsetNameCollision: another group id already owns the name.
        """
        name = self.set_name(ip_version, group_id)
        normalised = priv.normalise_members(members, ip_version)
        wanted = frozenset(normalised)
        with self._lock:
            self._claim(name, ip_version, group_id)
            if self._applied.get(name) == wanted:
                return False
            self._applied.pop(name, None)  # unknown until the call succeeds
            changed: bool = priv.replace_set(name, ip_version, normalised)
            self._applied[name] = wanted
            return changed

    def members(self, name: str) -> list[str]:
        """What the kernel holds for set ``name`` (CIDRs, hosts as /32 or /128), sorted.

        :raises IpsetNotFound: no such set.
        """
        return list(priv.list_members(name))  # privsep hands back tuples

    def sets(self) -> list[str]:
        """Names of the kernel's sets with this manager's prefix, sorted."""
        return list(priv.list_sets(self.prefix))

    def forget(self, name: str) -> None:
        """Drop what is remembered about set ``name``.

        The next :meth:`set_members` for it goes to the kernel again (e.g.
        after the set was changed or destroyed by someone else).
        """
        with self._lock:
            self._applied.pop(name, None)
            self._owners.pop(name, None)

    def reset(self) -> None:
        """Forget every set: the next update of each goes to the kernel.

        For a full resync, when the kernel state cannot be trusted to match
        what was applied (agent restart, sets flushed by an operator).
        """
        with self._lock:
            self._applied.clear()
            self._owners.clear()

    def destroy_unused(self, keep: Iterable[str]) -> set[str]:
        """Destroy this prefix's sets not in ``keep``; the names destroyed.

        Call it after iptables stopped referencing the sets (after the
        rules were applied): the kernel refuses to destroy a set a rule
        still uses, and such a set is left alone, logged, and tried again
        on the next call. Left-over temporary sets (``<name>-n``) of an
        interrupted replacement are removed too unless their set is kept.
        """
        keep = set(keep)
        destroyed = set()
        with self._lock:
            for name in priv.list_sets(self.prefix):
                base = name[:-len(priv.SWAP_SUFFIX)] if name.endswith(priv.SWAP_SUFFIX) \
                    else name
                if name in keep or base in keep:
                    continue
                try:
                    if priv.destroy_set(name):
                        destroyed.add(name)
                except priv.IpsetInUse:
                    LOG.info('ipset %s is no longer wanted but still referenced by '
                             'an iptables rule; it is left for now', name)
                    continue
                except InvalidIpsetArgument:
                    # Not a name agentkit creates (made by hand?): not ours to remove.
                    LOG.warning('ipset %s carries prefix %s but is not a valid set '
                                'name; it is left alone', name, self.prefix)
                    continue
                self._applied.pop(name, None)
                self._owners.pop(name, None)
        return destroyed
