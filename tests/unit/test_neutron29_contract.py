"""neutron 29's real answers (tests/fixtures/neutron29/, captured from the server
by tools/capture-neutron-contract.py) against agentkit's parser and the fake server.

Two things are pinned here: the agent understands every part of what the
real server sends (nothing it relies on is missing, no usable rule is
skipped), and the fake server the functional tests talk to answers the same
questions with the same content, so a test that passes against the fake
would pass against the real server.
"""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Any

from agentkit.api import security_group as sg
from tests import base
from tests.functional import fake_neutron

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'fixtures', 'neutron29')


# Port attributes that changed between the REST snapshot and the call.
CHANGING = frozenset({'status', 'updated_at', 'revision_number'})


def load(name: str) -> dict[str, Any]:
    with open(os.path.join(FIXTURES, name)) as f:
        return json.load(f)


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class CapturedReplyTest(base.TestCase):
    """The agent's parser on the real 1.3 reply."""

    def setUp(self) -> None:
        super().setUp()
        self.capture = load('security_group_info_for_devices-1.3.json')
        self.ids = self.capture['_capture']['ids']
        self.ports = self.ids['ports']
        self.groups = self.ids['security_groups']
        call = self.capture['calls']['full port ids: A, B, C, D, dhcp']
        self.info, self.devices = sg.SecurityGroupInfo.from_rpc(call['reply'])

    def test_every_rule_of_the_real_server_is_understood(self) -> None:
        raw = self.capture['calls']['full port ids: A, B, C, D, dhcp']['reply']
        for sg_id, rules in raw['security_groups'].items():
            self.assertEqual(len({canonical(r) for r in rules}), len(self.info.groups[sg_id].rules),
                             f'rules of {sg_id} skipped')
        self.assertNotIn('skipping', self.log.output)
        custom = self.info.groups[self.groups['custom']]
        by_port = {(r.protocol, r.port_min): r for r in custom.rules}
        # Prefixes arrive as given; the parser masks the host bits like the API.
        self.assertEqual(ipaddress.ip_network('10.30.0.0/16'), by_port[(6, 9000)].remote_prefix)
        self.assertEqual((8000, 8080), (by_port[(6, 8000)].port_min, by_port[(6, 8000)].port_max))
        self.assertIsNotNone(by_port[(132, 3868)])
        self.assertEqual(self.groups['default'], by_port[(1, None)].remote_group_id)
        self.assertTrue(any(r.remote_address_group_id for r in custom.rules))

    def test_stateless_groups_and_members(self) -> None:
        self.assertFalse(self.info.groups[self.groups['stateless']].stateful)
        self.assertTrue(self.info.groups[self.groups['default']].stateful)
        members = self.info.members[self.groups['default']]
        self.assertTrue(any(m.prefixlen == 28 for m in members), 'allowed address pair CIDR')
        self.assertTrue(any(m.version == 6 for m in members))
        address_group = next(r.remote_address_group_id for r in
                             self.info.groups[self.groups['custom']].rules
                             if r.remote_address_group_id)
        self.assertEqual({ipaddress.ip_network('192.0.2.0/28'),
                          ipaddress.ip_network('198.51.100.7/32')},
                         self.info.members[address_group])

    def test_ports_of_the_reply(self) -> None:
        # Trusted ports are not in the answer; a port without security is.
        self.assertNotIn(self.ports['dhcp'], self.devices)
        filters = {p: sg.PortFilter.from_rpc(d) for p, d in self.devices.items()}
        self.assertFalse(filters[self.ports['C']].filtered)
        a = filters[self.ports['A']]
        self.assertEqual((self.groups['default'],), a.security_groups)
        self.assertIn(('10.193.186.128/28', 'fa:16:3e:aa:bb:cc'),
                      [(str(n), m) for n, m in a.sources])
        self.assertEqual(self.capture['_capture']['ids']['network_id'], a.network_id)

    def test_tap_names_are_answered_by_full_port_id(self) -> None:
        call = self.capture['calls']['tap<id[:11]> device names: A, B, C, D, dhcp, E_linuxbridge']
        _, devices = sg.SecurityGroupInfo.from_rpc(call['reply'])
        self.assertIn(self.ports['E_linuxbridge'], devices)
        self.assertEqual('tap' + self.ports['A'][:11], devices[self.ports['A']]['device'])

    def test_the_old_shape_parses_to_the_same_members(self) -> None:
        old = load('security_group_info_for_devices-1.2.json')
        reply = next(iter(old['calls'].values()))['reply']
        info, _ = sg.SecurityGroupInfo.from_rpc(reply)
        self.assertEqual(info.members[self.groups['default']],
                         self.info.members[self.groups['default']])


class FakeServerParityTest(base.TestCase):
    """The fake server, fed the captured REST state, answers like the real one."""

    def setUp(self) -> None:
        super().setUp()
        rest = load('scenario.json')['rest']
        self.model = fake_neutron.SecurityGroupModel()
        for name, port in rest['ports'].items():
            if not name.startswith('F'):  # F was deleted before the calls
                self.model.ports[port['id']] = port
        for group in rest['security_groups'].values():
            self.model.rules[group['id']] = group['security_group_rules']
            self.model.stateful[group['id']] = group['stateful']
        ag = rest['address_group']
        self.model.address_groups[ag['id']] = ag['addresses']

    def test_security_group_info_for_devices(self) -> None:
        for version, name in (('1.3', 'security_group_info_for_devices-1.3.json'),
                              ('1.2', 'security_group_info_for_devices-1.2.json')):
            for title, call in load(name)['calls'].items():
                with self.subTest(version=version, call=title):
                    real = call['reply']
                    fake = self.model.info_for_devices(call['request']['kwargs']['devices'],
                                                       version)
                    self.assertEqual(set(real['devices']), set(fake['devices']))
                    for port_id, port in fake['devices'].items():
                        self.assertEqual(set(), set(port) - set(real['devices'][port_id]),
                                         'keys the real server does not send')
                        for key, value in port.items():
                            if key in CHANGING:
                                continue
                            expected = real['devices'][port_id][key]
                            if isinstance(value, list):
                                value, expected = (sorted(map(canonical, v))
                                                   for v in (value, expected))
                            self.assertEqual(expected, value, f'{port_id} {key}')
                    self.assertEqual(
                        {g: sorted(map(canonical, r)) for g, r in real['security_groups'].items()},
                        {g: sorted(map(canonical, r)) for g, r in fake['security_groups'].items()})
                    self.assertEqual(
                        {g: {e: sorted(map(canonical, m)) for e, m in by.items()}
                         for g, by in real['sg_member_ips'].items()},
                        {g: {e: sorted(map(canonical, m)) for e, m in by.items()}
                         for g, by in fake['sg_member_ips'].items()})

    def test_port_details(self) -> None:
        capture = load('get_devices_details_list_and_failed_devices.json')
        for title, call in capture['calls'].items():
            with self.subTest(call=title):
                kwargs = call['request']['kwargs']
                if kwargs.get('host') != capture['_capture']['ids']['hosts']['ovs']:
                    continue  # binding per host is the server's, not the fake's
                endpoint = fake_neutron.PluginEndpoint(self._server())
                fake = endpoint.get_devices_details_list_and_failed_devices(
                    None, kwargs['devices'], kwargs['agent_id'], kwargs['host'])
                self.assertEqual([d['device'] for d in call['reply']['devices']],
                                 [d['device'] for d in fake['devices']])
                for real_entry, fake_entry in zip(call['reply']['devices'], fake['devices']):
                    self.assertEqual(set(), set(fake_entry) - set(real_entry))
                    if 'network_id' not in real_entry:
                        self.assertEqual({'device'}, set(fake_entry) & {'device', 'network_id'})

    def _server(self) -> Any:
        server = fake_neutron.FakeNeutron.__new__(fake_neutron.FakeNeutron)
        import threading
        server.lock = threading.Lock()
        server.changed = threading.Condition(server.lock)
        server.calls = []
        server.security_groups = self.model
        return server
