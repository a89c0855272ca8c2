"""ServerApiClient: the versions and timeouts its calls go out with."""

import time
from unittest import mock

from agentkit.rpc import client
from tests import base


class _Api(client.ServerApiClient):
    topic = 'q-test'


class ServerApiClientTest(base.TestCase):

    def setUp(self):
        super().setUp()
        patcher = mock.patch.object(client.oslo_messaging, 'get_rpc_client')
        self.get_rpc_client = patcher.start()
        self.addCleanup(patcher.stop)
        self.rpc = self.get_rpc_client.return_value

    def test_calls_keep_the_clients_timeout(self):
        """prepare(timeout=None) would fall back to rpc_response_timeout (60 s)."""
        api = _Api(mock.sentinel.transport, 'host1', timeout=7)
        self.assertEqual(7, self.get_rpc_client.call_args.kwargs['timeout'])
        api._call('1.9', 'get_router_ids', host='host1')
        self.rpc.prepare.assert_called_once_with(version='1.9',
                                                 transport_options=client.MANDATORY)
        self.rpc.prepare.return_value.call.assert_called_once_with(
            mock.ANY, 'get_router_ids', host='host1')

    def test_a_call_may_set_its_own_timeout(self):
        api = _Api(mock.sentinel.transport, 'host1', timeout=7)
        api._call('1.0', 'sync_routers', timeout=3, host='host1')
        self.rpc.prepare.assert_called_once_with(version='1.0', timeout=3,
                                                 transport_options=client.MANDATORY)

    def test_calls_are_mandatory_casts_are_not(self):
        """An unroutable call fails at once (MessageUndeliverable) rather
        than wait its timeout; casts go out as Neutron's agents send them."""
        self.assertTrue(client.MANDATORY.at_least_once)
        api = _Api(mock.sentinel.transport, 'host1')
        api._cast('1.0', 'report_state')
        self.assertNotIn('transport_options', self.rpc.prepare.call_args.kwargs)

    def undeliverable(self):
        return client.oslo_messaging.MessageUndeliverable(
            Exception('NO_ROUTE'), 'neutron', 'q-test', {})

    def test_an_unroutable_call_is_published_again_until_routed(self):
        """After a broker restart the server's queues come back a little
        later: the call is answered then, not lost for its whole timeout."""
        cctxt = self.rpc.prepare.return_value
        cctxt.call.side_effect = [self.undeliverable(), self.undeliverable(), 'pong']
        self.assertEqual('pong', _Api(mock.sentinel.transport, 'h', timeout=5)._call(
            '1.0', 'ping'))
        self.assertEqual(3, cctxt.call.call_count)

    def test_an_unroutable_call_fails_once_its_timeout_has_passed(self):
        cctxt = self.rpc.prepare.return_value
        cctxt.call.side_effect = lambda *a, **kw: (_ for _ in ()).throw(self.undeliverable())
        started = time.monotonic()
        self.assertRaises(client.oslo_messaging.MessageUndeliverable,
                          _Api(mock.sentinel.transport, 'h', timeout=60)._call, '1.0', 'ping',
                          timeout=0.3)  # the call's own timeout wins
        self.assertLess(time.monotonic() - started, 3)
        self.assertGreater(cctxt.call.call_count, 1)

    def test_other_failures_are_not_published_again(self):
        cctxt = self.rpc.prepare.return_value
        cctxt.call.side_effect = client.oslo_messaging.MessagingTimeout('no reply')
        self.assertRaises(client.oslo_messaging.MessagingTimeout,
                          _Api(mock.sentinel.transport, 'h')._call, '1.0', 'ping')
        self.assertEqual(1, cctxt.call.call_count)

    def test_a_version_argument_goes_to_the_server(self):
        """bulk_pull names the object version it wants: an argument of the call."""
        from agentkit.rpc import plugin_api
        api = plugin_api.L2PluginApi(mock.sentinel.transport, 'host1')
        api.bulk_pull('Trunk', '1.1', {'port_id': ['p1']})
        self.rpc.prepare.assert_called_once_with(version='1.1',
                                                 transport_options=client.MANDATORY)
        self.rpc.prepare.return_value.call.assert_called_once_with(
            mock.ANY, 'bulk_pull', resource_type='Trunk', version='1.1',
            filter_kwargs={'port_id': ['p1']})


class ReportWithBrokerAwayTest(base.TestCase):
    """A state report fails while the broker is unreachable, rather than wait.

    The agent resyncs when its reports answer again after failures (casts
    sent meanwhile went to queues that no longer existed); a report that
    waited for the broker never failed, so after an outage shorter than the
    server's agent_down_time nothing was resynced.
    """

    def _closed_port(self):
        import socket
        sock = socket.socket()
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
        sock.close()  # nothing listens there now
        return port

    def _report_with_broker_away(self, use_call):
        import threading

        import oslo_messaging

        from agentkit.rpc import report_api
        # (oslo.messaging registers some of its options on cfg.CONF only)
        transport = oslo_messaging.get_rpc_transport(
            self.conf, url=f'rabbit://u:p@127.0.0.1:{self._closed_port()}/')
        api = report_api.ReportStateApi(transport, 'host1')
        outcome = []

        def report():
            try:
                api.report_state({'binary': 'agentkit-l2'}, use_call=use_call, timeout=1)
                outcome.append('sent')
            except Exception as exc:  # noqa: BLE001 - what the test looks at
                outcome.append(exc)
        thread = threading.Thread(target=report, daemon=True)
        thread.start()
        thread.join(20)
        # (a report stuck in the driver would keep transport.cleanup waiting)
        self.assertFalse(thread.is_alive(), 'the report waited for the broker')
        transport.cleanup()
        self.assertEqual(1, len(outcome))
        self.assertNotEqual('sent', outcome[0])
        self.assertIsInstance(outcome[0], Exception)  # kombu's OperationalError

    def test_cast_fails(self):
        # (A call's first use opens its reply queue's connection, which
        # oslo.messaging retries forever: a call is shown failing by the
        # fullstack RabbitMQ outage, its retry bound below.)
        self._report_with_broker_away(use_call=False)

    def test_positive_control_other_calls_keep_retrying(self):
        """Only the report bounds its retries: a details call still waits."""
        patcher = mock.patch.object(client.oslo_messaging, 'get_rpc_client')
        rpc = patcher.start().return_value
        self.addCleanup(patcher.stop)
        from agentkit.rpc import report_api
        report_api.ReportStateApi(mock.sentinel.transport, 'host1').report_state(
            {}, use_call=True, timeout=5)
        rpc.prepare.assert_called_once_with(version='1.4', timeout=5,
                                            retry=report_api.REPORT_RETRY,
                                            transport_options=client.MANDATORY)
        rpc.prepare.reset_mock()
        _Api(mock.sentinel.transport, 'host1')._call('1.0', 'get_x')
        rpc.prepare.assert_called_once_with(version='1.0',
                                            transport_options=client.MANDATORY)
