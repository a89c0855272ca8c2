"""Wire compatibility with neutron-server, checked on the raw AMQP messages.

Ground truth is /work/shared/neutron-observed/wire-samples.jsonl as recorded
from Neutron 29: envelopes, routing keys, versions, argument shapes and the
``_context_*`` keys.
"""

import datetime
import threading
import time

import oslo_messaging
from oslo_config import cfg

from agentkit.agent import metadata as metadata_agent
from agentkit.conf import metadata as metadata_conf
from agentkit.rpc import client
from agentkit.rpc import consumer
from agentkit.rpc import transport as rpc_transport
from tests.functional import amqp
from tests.functional import base

NEUTRON_CONTEXT_KEYS = set(amqp.server_context())


class FakeNeutronReports:
    """Plays neutron-server's q-reports-plugin endpoint."""

    target = oslo_messaging.Target(version='1.4')

    def __init__(self):
        self.reports = []

    def report_state(self, context, agent_state, time):
        self.reports.append(agent_state['agent_state'])
        return 'alive'


class ReportStateWireTest(base.AgentTestCase):

    def setUp(self):
        super().setUp()
        # The agent serves its metadata socket under state_path: not the host's.
        self.configure(metadata_conf.register_metadata_opts,
                       {'DEFAULT': {'state_path': self.get_temp_path('state')},
                        'agent': {'report_interval': 1}})
        self.transport = rpc_transport.get_transport(cfg.CONF)
        self.addCleanup(self.transport.cleanup)
        self.server_endpoint = FakeNeutronReports()
        server = oslo_messaging.get_rpc_server(
            self.transport,
            oslo_messaging.Target(topic='q-reports-plugin', server='fake-neutron'),
            [self.server_endpoint])
        server.start()
        self.addCleanup(server.wait)
        self.addCleanup(server.stop)
        self.capture = amqp.Capture('q-reports-plugin')
        self.addCleanup(self.capture.close)

    def test_report_state_matches_neutron(self):
        host = self.conf.host
        agent = metadata_agent.MetadataAgent(self.conf)
        agent.start()
        self.addCleanup(agent.stop)

        def ours(m):
            return (m.get('method') == 'report_state' and
                    m['args']['agent_state']['agent_state']['host'] == host)

        first = self.capture.wait_for(ours)
        inner = first['inner']
        self.assertEqual('application/json', first['properties']['content_type'])
        self.assertEqual(2, first['properties']['delivery_mode'])
        self.assertEqual('neutron', first['delivery_info']['exchange'])
        self.assertEqual('q-reports-plugin', first['delivery_info']['routing_key'])
        self.assertEqual('1.4', inner['version'])
        self.assertNotIn('namespace', inner)
        for key in ('_msg_id', '_reply_q', '_unique_id'):
            self.assertIn(key, inner)
        self.assertTrue(inner['_reply_q'].startswith('reply_'))
        self.assertEqual(NEUTRON_CONTEXT_KEYS,
                         {k for k in inner if k.startswith('_context_')})
        self.assertTrue(inner['_context_is_admin'])
        self.assertEqual({'agent_state', 'time'}, set(inner['args']))
        datetime.datetime.strptime(inner['args']['time'], '%Y-%m-%dT%H:%M:%S.%f')
        state = inner['args']['agent_state']['agent_state']
        self.assertEqual('agentkit-metadata', state['binary'])
        self.assertEqual('Metadata agent', state['agent_type'])
        self.assertEqual('N/A', state['topic'])
        self.assertIs(True, state['start_flag'])
        self.assertEqual({'metadata_proxy_socket', 'nova_metadata_host',
                          'nova_metadata_port', 'log_agent_heartbeats'},
                         set(state['configurations']))
        self.assertIn('uuid', state)

        # Like Neutron's metadata agent: later reports are casts, no start_flag.
        second = self.capture.wait_for(ours)['inner']
        self.assertNotIn('_msg_id', second)
        self.assertNotIn('start_flag', second['args']['agent_state']['agent_state'])
        self.assertEqual(state['uuid'],
                         second['args']['agent_state']['agent_state']['uuid'])
        # The call got neutron-server's answer back through the reply queue.
        self.assertGreaterEqual(agent.reporter.reports_sent, 1)


class RecordingDhcpEndpoint:
    """Stands in for an agent's dhcp_agent endpoint (Neutron's 1.0 API)."""

    target = oslo_messaging.Target(version='1.0')

    def __init__(self):
        self.calls = []
        self.event = threading.Event()
        self.on_error = lambda method: None

    @consumer.endpoint_method
    def network_create_end(self, context, **kwargs):
        payload = consumer.require(kwargs, 'payload', dict)
        network = consumer.require(payload, 'network', dict, 'payload')
        consumer.require(network, 'id', str, 'network')
        self.calls.append(('network_create_end', context, kwargs))
        self.event.set()

    @consumer.endpoint_method
    def network_delete_end(self, context, **kwargs):
        self.calls.append(('network_delete_end', context, kwargs))
        self.event.set()


class DhcpCastWireTest(base.AgentTestCase):

    def setUp(self):
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        self.transport = rpc_transport.get_transport(cfg.CONF)
        self.addCleanup(self.transport.cleanup)
        self.endpoint = RecordingDhcpEndpoint()
        consumers = consumer.RpcConsumers(self.transport, self.conf.host,
                                          {'dhcp_agent': [self.endpoint]})
        consumers.start()
        self.addCleanup(consumers.wait)
        self.addCleanup(consumers.stop)
        time.sleep(0.5)  # let the consumers declare and bind their queues

    def _wait_calls(self, method, n=1, settle=0.5):
        """Calls of ``method`` (fanouts of concurrent tests may add others)."""
        def matching():
            return [c for c in self.endpoint.calls if c[0] == method]
        deadline = time.monotonic() + 15
        while len(matching()) < n and time.monotonic() < deadline:
            self.endpoint.event.wait(0.2)
            self.endpoint.event.clear()
        time.sleep(settle)  # a wrongly delivered extra message would show now
        return matching()

    def test_host_cast_as_neutron_sends_it(self):
        net_id = self.unique_id()
        bad = dict(amqp.server_context(), method='network_create_end',
                   args={'payload': {'network': {'id': 42}, 'priority': 0}},
                   version='1.0', _unique_id='a' * 32)
        amqp.publish(f'dhcp_agent.{self.conf.host}', bad)
        inner = dict(amqp.server_context(), method='network_create_end',
                     args={'payload': {'network': {'id': net_id},
                                       'priority': 0}},
                     version='1.0', _unique_id='b' * 32)
        amqp.publish(f'dhcp_agent.{self.conf.host}', inner)
        calls = self._wait_calls('network_create_end')
        self.assertEqual(1, len(calls))  # the malformed one was dropped
        method, context, kwargs = calls[0]
        self.assertEqual('network_create_end', method)
        self.assertEqual({'payload': {'network': {'id': net_id}, 'priority': 0}},
                         kwargs)
        self.assertTrue(context['is_admin'])
        self.assertIn("network['id'] must be str, got int", self.log.output)

    def test_fanout_reaches_agent(self):
        net_id = self.unique_id()
        inner = dict(amqp.server_context(), method='network_delete_end',
                     args={'payload': {'network_id': net_id, 'priority': 0}},
                     version='1.0', _unique_id='c' * 32)
        fanout = amqp.kombu.Exchange('dhcp_agent_fanout', type='fanout',
                                     durable=False, auto_delete=True)
        amqp.publish('', inner, exchange=fanout)
        calls = self._wait_calls('network_delete_end', settle=0)
        self.assertIn(net_id,
                      [c[2]['payload']['network_id'] for c in calls])


class Pong:
    target = oslo_messaging.Target(version='1.0')

    def ping(self, context):
        return 'pong'


class MandatoryCallTest(base.AgentTestCase):
    """A call nobody can receive yet is answered as soon as someone can.

    After a broker restart neutron-server declares its queues again only
    when it reconnects; a call published before that was dropped by the
    broker and the agent waited out rpc_response_timeout (60 s, seen in the
    fullstack RabbitMQ outage). Published mandatory, the broker returns it
    and the client publishes it again until the queue is there.
    """

    def setUp(self):
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts,
                       {'DEFAULT': {'state_path': self.get_temp_path('state')}})
        self.transport = rpc_transport.get_transport(cfg.CONF)
        self.addCleanup(self.transport.cleanup)
        topic = 'q-akmandatory-' + self.unique_id()[:8]

        class Api(client.ServerApiClient):
            pass

        Api.topic = topic
        self.api = Api(self.transport, 'host1', timeout=30)
        self.topic = topic

    def serve(self):
        server = oslo_messaging.get_rpc_server(
            self.transport, oslo_messaging.Target(topic=self.topic, server='fake-neutron'),
            [Pong()])
        server.start()
        self.addCleanup(server.wait)
        self.addCleanup(server.stop)

    def test_a_call_is_answered_once_the_servers_queue_appears(self):
        timer = threading.Timer(2.0, self.serve)
        started = time.monotonic()
        timer.start()
        self.addCleanup(timer.cancel)
        self.assertEqual('pong', self.api._call('1.0', 'ping'))
        took = time.monotonic() - started
        self.assertGreater(took, 2.0)
        self.assertLess(took, 10, 'waited like a lost call (timeout 30 s)')

    def test_an_unroutable_call_fails_when_its_timeout_has_passed(self):
        started = time.monotonic()
        self.assertRaises(oslo_messaging.MessageUndeliverable, self.api._call, '1.0', 'ping',
                          timeout=3)
        self.assertLess(time.monotonic() - started, 10)
