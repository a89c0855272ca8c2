from unittest import mock

from agentkit import exceptions
from agentkit.rpc import consumer
from tests import base


class Endpoint:
    def __init__(self):
        self.on_error = mock.Mock()
        self.seen = []

    @consumer.endpoint_method
    def port_delete(self, context, **kwargs):
        self.seen.append(consumer.require(kwargs, 'port_id', str, 'port_delete'))

    @consumer.endpoint_method
    def explode(self, context, **kwargs):
        raise RuntimeError('bug')


class EndpointMethodTest(base.TestCase):

    def test_valid_payload_is_handled(self):
        ep = Endpoint()
        ep.port_delete({}, port_id='abc')
        self.assertEqual(['abc'], ep.seen)

    def test_malformed_payload_is_logged_not_raised(self):
        ep = Endpoint()
        log = self.useFixture(__import__('fixtures').FakeLogger())
        self.assertIsNone(ep.port_delete({}, port_id=5))
        self.assertIsNone(ep.port_delete({}))
        self.assertEqual([], ep.seen)
        self.assertIn("port_delete['port_id'] must be str, got int", log.output)
        self.assertIn("port_delete has no 'port_id'", log.output)
        ep.on_error.assert_not_called()

    def test_bug_schedules_resync(self):
        ep = Endpoint()
        self.assertIsNone(ep.explode({}))
        ep.on_error.assert_called_once_with('explode')


class RequireTest(base.TestCase):

    def test_bool_is_not_an_int(self):
        self.assertRaises(exceptions.InvalidPayload, consumer.require,
                          {'mtu': True}, 'mtu', int)
        self.assertEqual(1450, consumer.require({'mtu': 1450}, 'mtu', int))

    def test_non_dict(self):
        self.assertRaises(exceptions.InvalidPayload, consumer.require,
                          ['x'], 'id', str)
