"""Regressions of what tests/unit/test_rpc_fuzz.py found: each bad payload
is refused at the agent's edge in one log line, and its good twin still
goes through (the positive control of every case)."""

import uuid
from unittest import mock

from oslo_messaging.rpc import dispatcher as rpc_dispatcher
import oslo_messaging

from agentkit.agent import dhcp as dhcp_agent
from agentkit.agent import l2 as l2_agent
from agentkit.agent import l3 as l3_agent
from agentkit.agent import port_cache
from tests import base
from tests import fuzz

NET = str(uuid.uuid4())


def rejections(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith('Rejected ')]


class ReservedArgumentNamesTest(base.TestCase):
    """A cast with an argument called ``context`` (or ``self``) made Python
    raise TypeError inside oslo.messaging's dispatcher, before the endpoint's
    guard could log it."""

    def test_refused_in_one_line_not_raised_into_the_dispatcher(self) -> None:
        agent = mock.Mock()
        dispatcher = rpc_dispatcher.RPCDispatcher([dhcp_agent.DhcpRpcCallbacks(agent)],
                                                  oslo_messaging.NoOpSerializer())
        for args in ({'context': None}, {'self': 1, 'payload': {}}):
            incoming = mock.Mock(ctxt={}, client_timeout=None,
                                 message={'method': 'agent_updated', 'args': args})
            dispatcher.dispatch(incoming)
        self.assertEqual(2, len(rejections(self.log.output)), self.log.output)
        self.assertIn('collide', self.log.output)
        agent.schedule_resync.assert_not_called()
        agent.on_error.assert_not_called()
        # Positive control: the same method with its real argument works.
        dispatcher.dispatch(mock.Mock(ctxt={}, client_timeout=None, message={
            'method': 'agent_updated', 'args': {'payload': {'admin_state_up': True}}}))
        agent.schedule_resync.assert_called_once()


class AliasNamesTest(base.TestCase):
    """An alias (``network_update_end``) logged its refusal under the other
    method's name (``network_create_end``)."""

    def test_the_called_name_is_logged(self) -> None:
        dhcp = dhcp_agent.DhcpRpcCallbacks(mock.Mock())
        dhcp.network_update_end({}, payload=None)
        l3 = l3_agent.L3RpcCallbacks(mock.Mock())
        l3.routers_updated_on_host({}, routers='x')
        lines = rejections(self.log.output)
        self.assertEqual(2, len(lines))
        self.assertIn('Rejected network_update_end RPC', lines[0])
        self.assertIn('Rejected routers_updated_on_host RPC', lines[1])
        dhcp.network_create_end({}, payload=None)
        self.assertIn('Rejected network_create_end RPC', rejections(self.log.output)[2])


class DhcpAgentUpdatedTest(base.TestCase):
    """A junk agent_updated payload was dropped without a word."""

    def test_junk_is_refused_a_real_payload_resyncs(self) -> None:
        agent = mock.Mock()
        endpoint = dhcp_agent.DhcpRpcCallbacks(agent)
        endpoint.agent_updated({}, payload=['admin_state_up'])
        self.assertEqual(1, len(rejections(self.log.output)))
        agent.schedule_resync.assert_not_called()
        endpoint.agent_updated({}, payload={'admin_state_up': True})
        agent.schedule_resync.assert_called_once()


class TunnelPeerTest(base.TestCase):
    """tunnel_delete handed any string (``../x``, a type not enabled) to the
    mechanism driver; tunnel_update now refuses a non-IP the same way."""

    def endpoint(self) -> tuple[l2_agent.L2RpcCallbacks, mock.Mock]:
        agent = mock.Mock()
        agent.conf.l2.tunnel_types = ['vxlan']
        return l2_agent.L2RpcCallbacks(agent), agent

    def test_non_ip_refused_other_types_ignored(self) -> None:
        endpoint, agent = self.endpoint()
        endpoint.tunnel_delete({}, tunnel_ip='../x', tunnel_type='vxlan')
        endpoint.tunnel_update({}, tunnel_ip='a\x00b', tunnel_type='vxlan')
        endpoint.tunnel_delete({}, tunnel_ip='192.0.2.9', tunnel_type='0')
        endpoint.tunnel_update({}, tunnel_ip='192.0.2.9', tunnel_type='gre')
        self.assertEqual(2, len(rejections(self.log.output)), self.log.output)
        self.assertIn('not an IP address', self.log.output)
        agent.mech.tunnel_delete.assert_not_called()
        agent.add_tunnel.assert_not_called()
        endpoint.tunnel_delete({}, tunnel_ip='192.0.2.9', tunnel_type='vxlan')
        endpoint.tunnel_update({}, tunnel_ip='192.0.2.9', tunnel_type='vxlan')
        agent.mech.tunnel_delete.assert_called_once_with('192.0.2.9', 'vxlan')
        agent.add_tunnel.assert_called_once_with('192.0.2.9', 'vxlan')


class PushEntriesTest(base.TestCase):
    """A push whose resource_list held a non-object was half-applied and
    silently short of that entry; then the whole push was refused, losing
    the valid objects of the same message."""

    def test_non_object_entry_is_skipped_and_the_rest_applied(self) -> None:
        agent = mock.Mock()
        agent.port_cache = port_cache.PortCache('h')
        endpoint = l2_agent.PortPushCallbacks(agent)
        endpoint.push({}, event_type='updated',
                      resource_list=['junk', fuzz.network_object(NET), 7])
        [line] = rejections(self.log.output)
        self.assertIn('Rejected 2 of 3 push RPC entries', line)
        self.assertIn('resource_list[0] is a str, resource_list[2] is a int', line)
        # The valid Network of the same message was applied.
        self.assertEqual((5, 1500), agent.port_cache._mtus[NET])
        # Positive control: a clean push logs no rejection.
        other = str(uuid.uuid4())
        endpoint.push({}, event_type='updated', resource_list=[fuzz.network_object(other)])
        self.assertEqual(1, len(rejections(self.log.output)))
        self.assertEqual((5, 1500), agent.port_cache._mtus[other])


class PushedMtuTest(base.TestCase):
    """An MTU out of 68..65535 in a Network push went into the port's
    details and on to the mechanism driver."""

    def test_out_of_range_mtu_is_not_taken(self) -> None:
        host = 'h'
        port = str(uuid.uuid4())
        cache = port_cache.PortCache(host)
        cache.push_ports([fuzz.port_object(port, NET, host)], 'updated')
        for mtu in (-1, 0, 67, 65536, 2 ** 63, True):
            cache.push_networks([fuzz.network_object(NET, mtu=mtu)], 'updated')
            self.assertIsNone(cache.details(port), mtu)
        self.assertEqual(6, self.log.output.count('Ignoring the MTU'))
        cache.push_networks([fuzz.network_object(NET, mtu=1450)], 'updated')
        self.assertEqual(1450, cache.details(port)['mtu'])
        # An older push with a bad MTU changes nothing; a newer one makes
        # the 1450 known before stale.
        cache.push_networks([fuzz.network_object(NET, mtu=0, revision=4)], 'updated')
        self.assertEqual(1450, cache.details(port)['mtu'])
        cache.push_networks([fuzz.network_object(NET, mtu=0, revision=9)], 'updated')
        self.assertIsNone(cache.details(port))
        # A late push of an older revision (another server worker) does not
        # bring an MTU back; a newer valid one does.
        cache.push_networks([fuzz.network_object(NET, mtu=1450, revision=5)], 'updated')
        self.assertIsNone(cache.details(port))
        cache.push_networks([fuzz.network_object(NET, mtu=1400, revision=10)], 'updated')
        self.assertEqual(1400, cache.details(port)['mtu'])
