"""RPC servers for the topics an agent serves, and safe endpoint methods.

For every topic Neutron's agents consume, oslo.messaging's rabbit driver
declares the queues ``T`` and ``T.<host>`` on the ``neutron`` exchange and a
``T_fanout_<uuid>`` queue on the ``T_fanout`` exchange; one RPC server per
topic with ``server=<host>`` gives exactly that layout.
"""

import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import oslo_messaging

from agentkit import exceptions

LOG = logging.getLogger(__name__)


def endpoint_method(func: Callable[..., Any], name: str | None = None
                    ) -> Callable[..., Any]:
    """Make an RPC endpoint method safe against bad payloads and bugs.

    A malformed payload (:class:`~agentkit.exceptions.InvalidPayload`, or an
    id unsafe as a device/file name) is logged in one line with the method
    name and dropped; any other error is logged with a traceback and the
    endpoint's ``on_error`` hook (normally "schedule a full resync") is
    called. Nothing propagates, so one bad message never affects the other
    resources the agent serves. A message whose arguments are named like the
    method's own ``self``/``context`` parameters is refused the same way
    (called with them, Python itself would raise into the RPC layer).

    ``name``: the RPC method name when it differs from ``func``'s (an alias
    such as ``network_update_end``), so the log names what was called; see
    :func:`endpoint_alias`.
    """
    rpc_name = name or func.__name__
    own = frozenset(list(inspect.signature(func).parameters)[:2])

    @functools.wraps(func)
    def wrapper(self: Any, context: Any, /, **kwargs: Any) -> Any:
        try:
            clash = own.intersection(kwargs)
            if clash:
                raise exceptions.InvalidPayload(
                    f'argument(s) {", ".join(sorted(clash))} collide with the '
                    f'endpoint\'s own parameters')
            return func(self, context, **kwargs)
        except (exceptions.InvalidPayload, exceptions.InvalidIdentifier) as exc:
            LOG.error('Rejected %s RPC with malformed payload: %s',
                      rpc_name, exc)
        except Exception:
            LOG.exception('Failed handling %s RPC; scheduling a resync',
                          rpc_name)
            on_error = getattr(self, 'on_error', None)
            if on_error is not None:
                on_error(rpc_name)
        return None

    wrapper.__name__ = rpc_name
    return wrapper


def endpoint_alias(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    """Another RPC name for an :func:`endpoint_method` (Neutron sends, e.g.,
    ``network_update_end`` for what ``network_create_end`` does); its log
    lines name the method that was called."""
    return endpoint_method(getattr(method, '__wrapped__'), name)


def require(payload: Any, key: str, kind: type | tuple[type, ...],
            what: str = 'payload') -> Any:
    """``payload[key]`` if it exists and has type ``kind``, else InvalidPayload."""
    if not isinstance(payload, dict):
        raise exceptions.InvalidPayload(
            f'{what} must be a dict, got {type(payload).__name__}')
    if key not in payload:
        raise exceptions.InvalidPayload(f'{what} has no {key!r}')
    value = payload[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise exceptions.InvalidPayload(
            f'{what}[{key!r}] must be {getattr(kind, "__name__", kind)}, '
            f'got {type(value).__name__}')
    return value


class RpcConsumers:
    """One oslo.messaging RPC server per topic, started and stopped together."""

    def __init__(self, transport: oslo_messaging.Transport, host: str,
                 topics: dict[str, list[object]]) -> None:
        self._servers: list[oslo_messaging.MessageHandlingServer] = []
        for topic, endpoints in topics.items():
            target = oslo_messaging.Target(topic=topic, server=host)
            # No executor argument: oslo.messaging picks 'threading' unless
            # eventlet has patched the thread module (compatibility mode).
            self._servers.append(oslo_messaging.get_rpc_server(
                transport, target, endpoints))
        self.topics = list(topics)

    def start(self) -> None:
        for server in self._servers:
            server.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop all servers in parallel, waiting at most ``timeout`` seconds.

        Each ``server.stop()`` blocks until its listener's poll times out
        (several seconds with the default heartbeat settings); one after the
        other they would eat the whole stop budget of the agent.
        """
        self._on_all('stop', timeout)

    def wait(self, timeout: float = 1.0) -> None:
        """Wait for in-flight messages, bounded like :meth:`stop`."""
        self._on_all('wait', timeout)

    def _on_all(self, method: str, timeout: float) -> None:
        threads = [threading.Thread(target=getattr(server, method), daemon=True,
                                    name=f'rpc-{method}') for server in self._servers]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
