"""Base of the clients of neutron-server's RPC APIs."""

from typing import Any

import oslo_messaging
import tenacity

from agentkit.lib import timing
from agentkit.rpc import transport as rpc_transport

#: Calls are published "mandatory" (RabbitMQ): when no queue is bound to
#: the topic, as after a broker restart until neutron-server has declared
#: its queues again, the broker returns the message at once
#: (MessageUndeliverable, not a MessagingException). The call is then
#: published again, with back-off, until its timeout has passed: it is
#: answered within a second or two of the server's queues coming back,
#: where an unroutable call used to be lost and wait out its whole timeout
#: (60 s) for a reply that could not come. A stopped server's topic queues
#: outlive it (not auto-delete): a call to it is queued and waits as
#: before. Casts stay fire-and-forget, as Neutron's agents send them.
MANDATORY = oslo_messaging.TransportOptions(at_least_once=True)
#: The longest wait between two publications of an unroutable call.
UNROUTABLE_RETRY_MAX_DELAY = 2.0


class ServerApiClient:
    """Calls one server topic with Neutron's versions and default context.

    Subclasses set :attr:`topic` and :attr:`base_version` and add one method
    per RPC method, each naming the exact version Neutron's agents send so
    neutron-server dispatches it to the same endpoint.
    """

    topic: str = ''
    base_version: str = '1.0'

    def __init__(self, transport: oslo_messaging.Transport, host: str,
                 timeout: float | None = None) -> None:
        self.host = host
        target = oslo_messaging.Target(topic=self.topic,
                                       version=self.base_version)
        self.client = oslo_messaging.get_rpc_client(transport, target,
                                                    timeout=timeout)
        # What a call waits for its reply when it names no timeout (the
        # client's, else oslo.messaging's rpc_response_timeout).
        self.default_timeout: float = timeout if timeout is not None else getattr(
            getattr(transport, 'conf', None), 'rpc_response_timeout', 60)

    def _call(self, version: str, method: str, /, *, timeout: float | None = None,
              context: dict[str, Any] | None = None, retry: int | None = None,
              **kwargs: Any) -> Any:
        # Positional-only: an RPC method may itself take a ``version``
        # argument (bulk_pull's object version), which goes to the server.
        # prepare(timeout=None) would replace the client's own timeout with
        # oslo.messaging's rpc_response_timeout: pass it only when given.
        # ``retry``: connection attempts before giving up (None: forever).
        cctxt = self.client.prepare(version=version, transport_options=MANDATORY,
                                    **_given(timeout=timeout, retry=retry))
        publish_until_routed = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(oslo_messaging.MessageUndeliverable),
            stop=tenacity.stop_after_delay(
                timeout if timeout is not None else self.default_timeout),
            wait=tenacity.wait_exponential(multiplier=0.1, max=UNROUTABLE_RETRY_MAX_DELAY),
            reraise=True)
        with timing.timed(timing.RPC, method):
            return publish_until_routed(cctxt.call, context or rpc_transport.admin_context(),
                                        method, **kwargs)

    def _cast(self, version: str, method: str, /, *,
              context: dict[str, Any] | None = None, retry: int | None = None,
              **kwargs: Any) -> None:
        cctxt = self.client.prepare(version=version, **_given(retry=retry))
        cctxt.cast(context or rpc_transport.admin_context(), method, **kwargs)


def _given(**options: Any) -> dict[str, Any]:
    """The options that were given: prepare() takes None as "use the default"
    for some (timeout) but as a value for others."""
    return {key: value for key, value in options.items() if value is not None}
