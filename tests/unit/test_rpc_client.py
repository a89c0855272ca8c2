"""ServerApiClient: the versions and timeouts its calls go out with."""

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
        self.rpc.prepare.assert_called_once_with(version='1.9')
        self.rpc.prepare.return_value.call.assert_called_once_with(
            mock.ANY, 'get_router_ids', host='host1')

    def test_a_call_may_set_its_own_timeout(self):
        api = _Api(mock.sentinel.transport, 'host1', timeout=7)
        api._call('1.0', 'sync_routers', timeout=3, host='host1')
        self.rpc.prepare.assert_called_once_with(version='1.0', timeout=3)

    def test_a_version_argument_goes_to_the_server(self):
        """bulk_pull names the object version it wants: an argument of the call."""
        from agentkit.rpc import plugin_api
        api = plugin_api.L2PluginApi(mock.sentinel.transport, 'host1')
        api.bulk_pull('Trunk', '1.1', {'port_id': ['p1']})
        self.rpc.prepare.assert_called_once_with(version='1.1')
        self.rpc.prepare.return_value.call.assert_called_once_with(
            mock.ANY, 'bulk_pull', resource_type='Trunk', version='1.1',
            filter_kwargs={'port_id': ['p1']})
