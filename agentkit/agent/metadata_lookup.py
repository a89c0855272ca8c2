"""Which instance sent a metadata request: (router or network, source) -> port.

The same two questions neutron-metadata-agent's MetadataProxyHandler asks
neutron-server (``get_ports``): for a router, the networks of its interface
ports; then the one port of those networks with the source address. Only
the proxy's own headers feed it (see :mod:`agentkit.agent.metadata_server`).

A booting VM's cloud-init sends dozens of requests within seconds; without
help each would cost one or two RPCs. :class:`LookupCache` remembers answers
for ``metadata_cache_ttl`` seconds and lets concurrent identical lookups
share one RPC in flight, so a burst costs one lookup.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

import oslo_messaging

from agentkit.rpc import metadata_api

LOG = logging.getLogger(__name__)

_MAX_ENTRIES = 65536


class LookupUnavailable(Exception):
    """neutron-server did not answer in time (the VM gets 503 and retries)."""


class LookupFailed(Exception):
    """neutron-server answered with an error (the VM gets 500)."""


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a request came from, as the proxy (never the VM) states it."""

    address: str
    #: for an IPv6 link-local source: the MAC its EUI-64 interface id
    #: encodes; the port is then found by MAC (the address is no fixed IP)
    mac: str | None = None
    router_id: str | None = None
    network_id: str | None = None

    @classmethod
    def parse(cls, forwarded_for: str, router_id: str | None = None,
              network_id: str | None = None) -> Source:
        """``X-Forwarded-For`` as neutron does: an IPv4-mapped IPv6 address
        (haproxy listening on both families) is the IPv4 address; a
        link-local IPv6 address is identified by its MAC. Raises ValueError."""
        if bool(router_id) == bool(network_id):
            raise ValueError('exactly one of router and network id is required')
        ip = ipaddress.ip_address(forwarded_for.strip())
        mac = None
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            elif ip.is_link_local:
                mac = mac_from_eui64(ip)
                if mac is None:
                    raise ValueError(f'{ip} is link-local but carries no EUI-64 MAC')
        return cls(str(ip), mac, router_id or None, network_id or None)


def mac_from_eui64(ip: ipaddress.IPv6Address) -> str | None:
    """The MAC of a modified EUI-64 interface id (``xx:xx:xx:ff:fe:xx:xx:xx``
    with the universal/local bit flipped), or None for any other id."""
    iid = ip.packed[8:]
    if iid[3:5] != b'\xff\xfe':
        return None
    mac = bytes([iid[0] ^ 0x02]) + iid[1:3] + iid[5:8]
    return ':'.join(f'{b:02x}' for b in mac)


@dataclasses.dataclass(frozen=True)
class Instance:
    """What Nova needs to know about the requester."""

    instance_id: str
    project_id: str


class _Flight:
    """One lookup in progress that later identical lookups wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class LookupCache:
    """Answers kept for ``ttl()`` seconds, one load per key at a time.

    ``ttl() == 0`` turns both off, so every request asks neutron-server (the
    operator's "no cache"). Only answers ``keep(value)`` accepts are kept
    (a miss is asked again next time: the port may just have been created).
    """

    def __init__(self, ttl: Callable[[], float],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self._flights: dict[Hashable, _Flight] = {}
        self.hits = 0
        self.loads = 0

    def get(self, key: Hashable, load: Callable[[], Any],
            keep: Callable[[Any], bool] = bool, wait: float = 60.0) -> Any:
        """The cached value of ``key``, or ``load()``'s (shared with every
        concurrent caller; its exception too). ``wait`` bounds how long a
        follower waits for the leader."""
        ttl = self._ttl()
        if ttl <= 0:
            with self._lock:
                self.loads += 1
            return load()
        with self._lock:
            now = self._clock()
            entry = self._entries.get(key)
            if entry is not None and entry[0] > now:
                self.hits += 1
                return entry[1]
            running = self._flights.get(key)
            leader = running is None
            flight = self._flights[key] = _Flight() if running is None else running
        if not leader:
            if not flight.done.wait(wait):
                raise LookupUnavailable('an identical lookup is still running')
            if flight.error is not None:
                raise flight.error
            with self._lock:
                self.hits += 1
            return flight.value
        with self._lock:
            self.loads += 1
        try:
            value = load()
        except BaseException as exc:
            flight.error = exc
            with self._lock:
                del self._flights[key]
            flight.done.set()
            raise
        flight.value = value
        with self._lock:
            # Stored and un-flighted in one step: a caller arriving now
            # finds the value, never an empty slot that would cost an RPC.
            if keep(value):
                if len(self._entries) >= _MAX_ENTRIES:
                    self._prune()
                self._entries[key] = (self._clock() + ttl, value)
            del self._flights[key]
        flight.done.set()
        return value

    def _prune(self) -> None:
        now = self._clock()
        for key in [k for k, (exp, _) in self._entries.items() if exp <= now]:
            del self._entries[key]
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class InstanceLookup:
    """(router or network, source) -> :class:`Instance`, via ``get_ports``."""

    def __init__(self, api: metadata_api.MetadataPluginApi,
                 ttl: Callable[[], float], rpc_timeout: Callable[[], float],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.cache = LookupCache(ttl, clock)
        self._rpc_timeout = rpc_timeout

    def lookup(self, source: Source) -> Instance | None:
        """The instance behind ``source``; None when no single port has it.

        Raises :class:`LookupUnavailable` / :class:`LookupFailed` when
        neutron-server cannot answer.
        """
        router_id = source.router_id
        if router_id:
            networks = self.cache.get(('router', router_id),
                                      lambda: self._router_networks(router_id),
                                      wait=self._wait())
            if not networks:
                # Neutron would then drop the network filter and search every
                # network for the address; no interface means no VM behind it.
                LOG.warning('Router %s has no interfaces: no instance for %s',
                            source.router_id, source.address)
                return None
        else:
            networks = (source.network_id,)
        key = ('port', networks, source.address, source.mac)
        return self.cache.get(key, lambda: self._instance(networks, source),
                              keep=lambda value: value is not None, wait=self._wait())

    def _wait(self) -> float:
        # A follower waits for the leader's RPC, which may take the RPC
        # timeout twice (router, then port) plus a reconnect.
        return 2 * self._rpc_timeout() + 2

    def _router_networks(self, router_id: str) -> tuple[str, ...]:
        ports = self._call(self.api.get_router_interfaces, router_id)
        return tuple(sorted({p['network_id'] for p in ports}))

    def _instance(self, networks: tuple[str, ...], source: Source) -> Instance | None:
        ports = self._call(self.api.get_ports_by_address, list(networks),
                           ip_address=source.address, mac_address=source.mac)
        where = (f'router {source.router_id}' if source.router_id
                 else f'network {source.network_id}')
        if len(ports) != 1:
            LOG.warning('%s port(s) in %s with address %s%s: no instance', len(ports),
                        where, source.address, f' (MAC {source.mac})' if source.mac else '')
            return None
        port = ports[0]
        instance_id = port.get('device_id') or ''
        project_id = port.get('project_id') or port.get('tenant_id') or ''
        if not instance_id:
            LOG.warning('Port %s with address %s in %s has no device_id: no instance',
                        port.get('id'), source.address, where)
            return None
        return Instance(instance_id, project_id)

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, timeout=self._rpc_timeout(), **kwargs)
        except oslo_messaging.RemoteError as exc:
            raise LookupFailed(f'neutron-server failed get_ports: {exc.exc_type}') from exc
        except (oslo_messaging.MessagingTimeout, oslo_messaging.MessageDeliveryFailure,
                oslo_messaging.MessageUndeliverable, oslo_messaging.MessagingException,
                OSError) as exc:
            raise LookupUnavailable(
                f'neutron-server did not answer get_ports: {type(exc).__name__}') from exc
