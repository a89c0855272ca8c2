"""RPC servers for the topics an agent serves, and safe endpoint methods.

For every topic Neutron's agents consume, oslo.messaging's rabbit driver
declares the queues ``T`` and ``T.<host>`` on the ``neutron`` exchange and a
``T_fanout_<uuid>`` queue on the ``T_fanout`` exchange; one RPC server per
topic with ``server=<host>`` gives exactly that layout.
"""

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import oslo_messaging

from agentkit import exceptions

LOG = logging.getLogger(__name__)


def endpoint_method(func: Callable[..., Any]) -> Callable[..., Any]:
    """Make an RPC endpoint method safe against bad payloads and bugs.

    A malformed payload (:class:`~agentkit.exceptions.InvalidPayload`, or an
    id unsafe as a device/file name) is logged with the method name and
    dropped; any other error is logged with a traceback and the endpoint's
    ``on_error`` hook (normally "schedule a full resync") is called. Nothing
    propagates, so one bad message never affects the other resources the
    agent serves.
    """

    @functools.wraps(func)
    def wrapper(self: Any, context: Any, **kwargs: Any) -> Any:
        try:
            return func(self, context, **kwargs)
        except (exceptions.InvalidPayload, exceptions.InvalidIdentifier) as exc:
            LOG.error('Rejected %s RPC with malformed payload: %s',
                      func.__name__, exc)
        except Exception:
            LOG.exception('Failed handling %s RPC; scheduling a resync',
                          func.__name__)
            on_error = getattr(self, 'on_error', None)
            if on_error is not None:
                on_error(func.__name__)
        return None

    return wrapper


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
