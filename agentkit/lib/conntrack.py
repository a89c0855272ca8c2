"""Deleting the conntrack entries of connections a firewall change no longer allows.

The unprivileged side of :mod:`agentkit.privileged.conntrack`. When a
security-group rule or a remote-group member is removed, connections it
allowed stay ``ESTABLISHED`` in conntrack and the firewall's
``RELATED,ESTABLISHED`` rule keeps passing them; the firewall describes
what the removed rule allowed as :class:`FlowFilter`\\ s (the port's
conntrack zone, protocol, prefixes, destination ports) and calls
:func:`delete_flows`, which deletes exactly the entries matching one of
them.

:class:`FlowFilter`, :class:`Flow` and :func:`matches` live in the
privileged module, their one home, because the daemon must match with the
very same logic; they are pure (no root, no pyroute2) and re-exported here
so drivers never import the privileged module.
"""

from __future__ import annotations

from typing import Iterable

from agentkit.privileged import conntrack as priv

FlowFilter = priv.FlowFilter
Flow = priv.Flow
matches = priv.matches
ConntrackError = priv.ConntrackError
InvalidFlowFilter = priv.InvalidFlowFilter
PORT_PROTOCOLS = priv.PORT_PROTOCOLS
MAX_FILTERS = priv.MAX_FILTERS
NetworkNamespaceNotFound = priv.namespaces.NetworkNamespaceNotFound


def delete_flows(filters: Iterable[FlowFilter], namespace: str | None = None) -> int:
    """Delete the conntrack entries matching any of ``filters``; how many were deleted.

    One privileged call, in which the daemon dumps each ``(ip_version,
    zone)`` group of filters once and deletes the matching entries by
    original tuple and zone. Entries that vanish meanwhile are not counted.
    Duplicate filters are dropped; no filters means no call.

    :param namespace: network namespace (None: the root one, where the
        iptables firewall runs).
    :raises InvalidFlowFilter: an element is not a :class:`FlowFilter`, or
        more than :data:`MAX_FILTERS` of them.
    :raises ConntrackError: the kernel refused a dump or a deletion (the
        other matching entries were still tried).
    """
    unique: dict[FlowFilter, None] = {}
    for flt in filters:
        if not isinstance(flt, FlowFilter):
            raise InvalidFlowFilter('expected a FlowFilter, got %r' % (flt,))
        unique[flt] = None
    if not unique:
        return 0
    if len(unique) > priv.MAX_FILTERS:
        raise InvalidFlowFilter('too many filters: %d (at most %d)'
                                % (len(unique), MAX_FILTERS))
    deleted: int = priv.delete_entries([f.to_primitive() for f in unique], namespace)
    return deleted
