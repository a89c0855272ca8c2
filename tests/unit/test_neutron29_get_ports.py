"""neutron 29's real get_ports answers (tests/fixtures/neutron29/get_ports.json,
captured by tools/capture-neutron-contract.py) against agentkit's metadata
RPC client, its lookup, and the fake server.

Pinned here: the client sends exactly the requests neutron-metadata-agent
sends (version, method, filters), the lookup picks the instance the real
answers name, and the fake server gives the same answers for the same
requests, so the functional tests' fake behaves like the real server.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
from typing import Any
from unittest import mock

import oslo_messaging

from agentkit.agent import metadata_lookup
from agentkit.rpc import client
from agentkit.rpc import metadata_api
from tests import base
from tests.functional import fake_neutron

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'fixtures', 'neutron29',
                       'get_ports.json')
# Attributes that change between the calls and the REST snapshot after them,
# and the database counter the REST API does not show.
CHANGING = frozenset({'status', 'updated_at', 'revision_number', 'standard_attr_id'})
ROUTER_LOOKUP = 'router interfaces (device_id + ROUTER_INTERFACE_OWNERS)'


def load() -> dict[str, Any]:
    with open(FIXTURE) as f:
        return json.load(f)


class GetPortsContractTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.capture = load()
        self.calls = self.capture['calls']
        self.ids = self.capture['_capture']['ids']
        self.extra = self.ids['get_ports']
        self.addresses = self.extra['addresses']

    def test_every_call_was_answered(self) -> None:
        for title, call in self.calls.items():
            with self.subTest(call=title):
                self.assertNotIn('error', call)
                self.assertEqual(('q-plugin', 'neutron', '1.0', 'get_ports'), tuple(
                    call['request'][k] for k in ('topic', 'exchange', 'version', 'method')))
                self.assertEqual(['filters'], list(call['request']['kwargs']))
                self.assertEqual([], call['server_log'])

    def test_reply_is_the_rest_port_plus_standard_attr_id(self) -> None:
        rest = {p['id']: p for p in self.capture['rest_ports']}
        for title, call in self.calls.items():
            for port in call['reply']:
                with self.subTest(call=title, port=port['id']):
                    self.assertEqual(set(rest[port['id']]) | {'standard_attr_id'}, set(port))
                    self.assertEqual(fake_neutron.REST_PORT_KEYS, set(port))
                    self.assertIsInstance(port['standard_attr_id'], int)

    def _client_requests(self) -> dict[str, dict[str, Any]]:
        """What MetadataPluginApi sends for the captured lookups."""
        router = self.ids['router_id']
        routed = self.calls["router networks + fixed_ips: A's IPv4 address"][
            'request']['kwargs']['filters']['network_id']
        net1 = self.ids['network_id']
        sent = {}
        with mock.patch.object(oslo_messaging, 'get_rpc_client') as get_client:
            api = metadata_api.MetadataPluginApi(mock.Mock(), 'host')
            call = get_client.return_value.prepare.return_value.call
            for title, invoke in (
                    (ROUTER_LOOKUP, lambda: api.get_router_interfaces(router)),
                    ("router networks + fixed_ips: A's IPv4 address",
                     lambda: api.get_ports_by_address(routed, self.addresses['A_v4'])),
                    ("network + fixed_ips: A's IPv4 address",
                     lambda: api.get_ports_by_address([net1], self.addresses['A_v4'])),
                    ("network + mac_address: A's MAC (IPv6 link-local lookup)",
                     lambda: api.get_ports_by_address(
                         [net1], 'fe80::1', mac_address=self.addresses['A_mac']))):
                invoke()
                self.assertEqual('get_ports', call.call_args[0][1])
                sent[title] = call.call_args[1]
                # No timeout given: the client's own (5 s), not prepare's
                # fallback to rpc_response_timeout (60 s).
                get_client.return_value.prepare.assert_called_with(
                    version='1.0', retry=1, transport_options=client.MANDATORY)
        return sent

    def test_the_client_sends_what_neutrons_metadata_agent_sends(self) -> None:
        for title, kwargs in self._client_requests().items():
            with self.subTest(call=title):
                self.assertEqual(self.calls[title]['request']['kwargs'], kwargs)

    def test_lookup_on_the_real_answers(self) -> None:
        """The instance and project of port A, through the router and the
        network, from nothing but the server's recorded answers."""
        a = next(p for p in self.capture['rest_ports'] if p['id'] == self.ids['ports']['A'])
        answers = {json.dumps(c['request']['kwargs']['filters'], sort_keys=True): c['reply']
                   for c in self.calls.values()}
        api = mock.Mock()
        api.get_router_interfaces.side_effect = lambda router, timeout: answers[json.dumps(
            {'device_id': [router],
             'device_owner': list(metadata_api.ROUTER_INTERFACE_OWNERS)}, sort_keys=True)]

        def by_address(networks, ip_address=None, mac_address=None, timeout=None):
            filters: dict[str, Any] = {'network_id': networks}
            if mac_address:
                filters['mac_address'] = [mac_address]
            else:
                filters['fixed_ips'] = {'ip_address': [ip_address]}
            key = json.dumps(filters, sort_keys=True)
            if key not in answers:  # the router's networks in the captured order
                filters['network_id'] = list(reversed(networks))
                key = json.dumps(filters, sort_keys=True)
            return answers[key]
        api.get_ports_by_address.side_effect = by_address
        lookup = metadata_lookup.InstanceLookup(api, lambda: 0, lambda: 5)
        expected = metadata_lookup.Instance(a['device_id'], a['project_id'])
        self.assertEqual(expected, lookup.lookup(metadata_lookup.Source(
            self.addresses['A_v4'], router_id=self.ids['router_id'])))
        self.assertEqual(expected, lookup.lookup(metadata_lookup.Source(
            self.addresses['A_v4'], network_id=self.ids['network_id'])))
        # A's link-local address: the SLAAC address's EUI-64 interface id.
        link_local = ipaddress.IPv6Address(
            int(ipaddress.IPv6Address('fe80::'))
            | int(ipaddress.IPv6Address(self.addresses['A_v6'])) & (2 ** 64 - 1))
        self.assertEqual(expected, lookup.lookup(metadata_lookup.Source.parse(
            str(link_local), network_id=self.ids['network_id'])))
        self.assertIsNone(lookup.lookup(metadata_lookup.Source(
            self.addresses['A_v4'].rsplit('.', 1)[0] + '.251',
            network_id=self.ids['network_id'])))


class FakeServerGetPortsParityTest(base.TestCase):
    """The fake server, fed the captured REST ports, answers like the real one."""

    def _endpoint(self, capture: dict[str, Any]) -> fake_neutron.PluginEndpoint:
        server = fake_neutron.FakeNeutron.__new__(fake_neutron.FakeNeutron)
        server.lock = threading.Lock()
        server.changed = threading.Condition(server.lock)
        server.calls = []
        server.port_details = {p['id']: p for p in capture['rest_ports']}
        server.networks = {}
        return fake_neutron.PluginEndpoint(server)

    def test_get_ports(self) -> None:
        capture = load()
        endpoint = self._endpoint(capture)
        for title, call in capture['calls'].items():
            with self.subTest(call=title):
                real = sorted(call['reply'], key=lambda p: p['id'])
                fake = endpoint.get_ports(None, **call['request']['kwargs'])
                self.assertEqual([p['id'] for p in real], [p['id'] for p in fake])
                for real_port, fake_port in zip(real, fake):
                    self.assertEqual(set(real_port), set(fake_port))
                    self.assertEqual({k: v for k, v in real_port.items() if k not in CHANGING},
                                     {k: v for k, v in fake_port.items() if k not in CHANGING})

    def test_test_written_records_get_the_real_shape(self) -> None:
        capture = load()
        endpoint = self._endpoint(capture)
        endpoint.server.port_details = {'p1': {
            'port_id': 'p1', 'network_id': 'n1', 'device': 'tapp1', 'mtu': 1450,
            'fixed_ips': [{'subnet_id': 's', 'ip_address': '10.0.0.5'}],
            'device_id': 'vm1', 'device_owner': 'compute:nova', 'mac_address': 'fa:16:3e:00:00:01'}}
        endpoint.server.networks = {'n2': {'id': 'n2', 'project_id': 'demo', 'ports': [{
            'id': 'p2', 'network_id': 'n2', 'device_id': 'r1',
            'device_owner': 'network:router_interface', 'mac_address': 'fa:16:3e:00:00:02',
            'fixed_ips': [{'subnet_id': 's2', 'ip_address': '10.0.1.1'}]}]}}
        [p1] = endpoint.get_ports(None, {'network_id': ['n1'],
                                         'fixed_ips': {'ip_address': ['10.0.0.5']}})
        self.assertEqual(fake_neutron.REST_PORT_KEYS, set(p1))
        self.assertEqual(('p1', 'vm1'), (p1['id'], p1['device_id']))
        [p2] = endpoint.get_ports(None, {'device_id': ['r1'], 'device_owner': list(
            metadata_api.ROUTER_INTERFACE_OWNERS)})
        self.assertEqual(('p2', 'demo', 'demo'), (p2['id'], p2['project_id'], p2['tenant_id']))
        self.assertEqual([], endpoint.get_ports(None, {'network_id': [], 'fixed_ips': {
            'ip_address': ['10.0.0.5']}}))
        self.assertEqual(['get_ports'] * 3, [m for m, _ in endpoint.server.calls])
