"""Raw AMQP helpers: see the bytes on the wire, independent of oslo.messaging.

Tests bind their own exclusive queue to the ``neutron`` exchange with the
routing key under test, so they receive a copy of exactly what an agent
publishes (the real server's queue would get the same copy), and they can
publish messages byte-for-byte as neutron-server does.
"""

import json
import os
import queue
import threading
import time
import uuid
from typing import Any

import kombu

RABBIT_URL = os.environ.get(
    'AGENTKIT_TEST_TRANSPORT_URL',
    'rabbit://agentkit:agentkit@127.0.0.1:5672/agentkit')
CONTROL_EXCHANGE = 'neutron'


def amqp_url(url: str = RABBIT_URL) -> str:
    return url.replace('rabbit://', 'amqp://', 1)


def topic_exchange(name: str = CONTROL_EXCHANGE) -> kombu.Exchange:
    # Same properties oslo.messaging declares the control exchange with.
    return kombu.Exchange(name, type='topic', durable=False, auto_delete=False)


class Capture:
    """An exclusive queue bound to ``exchange`` with ``routing_key``.

    ``bindings`` (kombu bindings) replace that one binding, e.g. to see a
    vhost's topic exchange and its fanout exchanges at once; ``url`` is the
    transport URL of another vhost.
    """

    def __init__(self, routing_key: str = '#', exchange: kombu.Exchange | None = None,
                 *, url: str = RABBIT_URL, bindings: list[Any] | None = None) -> None:
        self.conn = kombu.Connection(amqp_url(url))
        self.messages: 'queue.Queue[dict[str, Any]]' = queue.Queue()
        if bindings is None:
            bindings = [kombu.binding(exchange or topic_exchange(), routing_key=routing_key)]
        self.queue = kombu.Queue(f'agentkit-test-capture-{uuid.uuid4().hex}',
                                 bindings=bindings, exclusive=True, auto_delete=True)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError('capture queue was not declared')

    def _run(self) -> None:
        with self.conn.Consumer(self.queue, callbacks=[self._on_message],
                                accept=['json']):
            self._ready.set()
            while not self._stop.is_set():
                try:
                    self.conn.drain_events(timeout=0.2)
                except TimeoutError:
                    pass
                except OSError:
                    if self._stop.is_set():
                        return
                    raise

    def _on_message(self, body: Any, message: kombu.Message) -> None:
        self.messages.put({'body': body, 'properties': message.properties,
                           'delivery_info': message.delivery_info,
                           'headers': message.headers})
        message.ack()

    def wait_for(self, predicate, timeout: float = 15.0) -> dict[str, Any]:
        """First captured message whose unpacked oslo message matches."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError('no matching message captured in time')
            try:
                msg = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            inner = unpack(msg['body'])
            if predicate(inner):
                msg['inner'] = inner
                return msg

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.conn.release()


def unpack(body: Any) -> dict[str, Any]:
    """The oslo.messaging 2.0 envelope's inner message."""
    if isinstance(body, (bytes, str)):
        body = json.loads(body)
    assert body['oslo.version'] == '2.0', body
    return json.loads(body['oslo.message'])


def publish(routing_key: str, inner: dict[str, Any],
            exchange: kombu.Exchange | None = None) -> None:
    """Publish an oslo.messaging 2.0 envelope as neutron-server does."""
    envelope = {'oslo.version': '2.0', 'oslo.message': json.dumps(inner)}
    with kombu.Connection(amqp_url()) as conn:
        producer = conn.Producer(serializer='json')
        producer.publish(envelope, exchange=exchange or topic_exchange(),
                         routing_key=routing_key, delivery_mode=2,
                         declare=[exchange or topic_exchange()])


def server_context() -> dict[str, Any]:
    """``_context_*`` keys as neutron-server's casts carry them."""
    keys = ['auth_token', 'can_set_project_id', 'domain', 'global_request_id',
            'has_global_access', 'is_admin', 'is_admin_project', 'project',
            'project_domain', 'project_id', 'project_name', 'read_only',
            'request_id', 'resource_uuid', 'roles', 'show_deleted',
            'system_scope', 'timestamp', 'user', 'user_domain', 'user_id',
            'user_identity', 'user_name']
    ctx = {f'_context_{k}': None for k in keys}
    ctx.update({'_context_is_admin': True, '_context_roles': ['admin'],
                '_context_request_id': f'req-{uuid.uuid4()}',
                '_context_timestamp': '2026-11-21 04:58:00.000000'})
    return ctx
