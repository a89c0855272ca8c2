"""The L2 agent's security-group side: who is asked for, when, and for which ports."""

from __future__ import annotations

import copy
import json
import os
from typing import Any
from unittest import mock

from agentkit.agent import l2
from agentkit.agent import security_groups
from agentkit.api import firewall
from agentkit.api import security_group as sg
from tests import base

SG1 = '5a1f0000-0000-4000-8000-000000000001'
SG2 = '5a1f0000-0000-4000-8000-000000000002'
NET = '0e7c0000-0000-4000-8000-000000000001'
P1 = '8cbd0e17-4b44-4b06-a0a4-2ef8e3f0a1b2'
P2 = '1f2e3d4c-0000-4000-8000-00000000abcd'
P3 = '3a3a3a3a-0000-4000-8000-00000000abcd'
DHCP = '9d9d9d9d-0000-4000-8000-00000000abcd'


def device_entry(port_id: str, groups: list[str], ip: str) -> dict[str, Any]:
    """A port of the reply's ``devices`` (neutron 29 shape)."""
    return {'id': port_id, 'device': port_id, 'network_id': NET,
            'mac_address': 'fa:16:3e:00:00:%s' % port_id[:2], 'fixed_ips': [ip],
            'allowed_address_pairs': [], 'port_security_enabled': True,
            'device_owner': 'compute:nova', 'security_groups': groups,
            'security_group_rules': [], 'security_group_source_groups': []}


class FakeServer:
    """security_group_info_for_devices over three ports; SG2's rules name SG1."""

    def __init__(self) -> None:
        self.ports = {P1: device_entry(P1, [SG1], '10.0.0.1'),
                      P2: device_entry(P2, [SG2], '10.0.0.2'),
                      P3: device_entry(P3, [SG1], '10.0.0.3')}
        self.calls: list[list[str]] = []
        self.fail = False

    def fetch(self, devices: list[str]) -> dict[str, Any]:
        self.calls.append(list(devices))
        if self.fail:
            raise RuntimeError('server gone')
        found = {p: copy.deepcopy(self.ports[p]) for p in devices if p in self.ports}
        groups = {g for port in found.values() for g in port['security_groups']}
        rules = {SG1: [{'direction': 'egress', 'ethertype': 'IPv4', 'stateful': True}],
                 SG2: [{'direction': 'ingress', 'ethertype': 'IPv4',
                        'remote_group_id': SG1, 'stateful': True}]}
        members = {SG1: {'IPv4': [['10.0.0.1', None], ['10.0.0.3', None]]}} \
            if SG2 in groups else {}
        return {'devices': found, 'security_groups': {g: rules[g] for g in groups},
                'sg_member_ips': members}


class RecordingFirewall(firewall.FirewallDriver):

    def __init__(self) -> None:
        super().__init__(mock.Mock(), 'host')
        self.applied: list[tuple[list[sg.PortFilter], sg.SecurityGroupInfo]] = []
        self.removed: list[tuple[list[str], list[str]]] = []
        self.shut: list[list[str]] = []

    def apply_port_filters(self, ports, info):  # type: ignore[no-untyped-def]
        self.applied.append((list(ports), info))

    def sync_port_filters(self, ports, info, unknown_devices):  # type: ignore[no-untyped-def]
        self.applied.append((list(ports), info))
        self.shut.append(list(unknown_devices))

    def remove_port_filters(self, port_ids, devices=()):  # type: ignore[no-untyped-def]
        self.removed.append((list(port_ids), list(devices)))


def details(port_id: str, owner: str = 'compute:nova', **extra: Any) -> dict[str, Any]:
    values = {'device': port_id, 'port_id': port_id, 'network_id': NET,
              'mac_address': 'fa:16:3e:00:00:01', 'fixed_ips': [], 'device_owner': owner,
              'port_security_enabled': True, 'allowed_address_pairs': []}
    values.update(extra)
    return values


class SecurityGroupAgentTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.server = FakeServer()
        self.firewall = RecordingFirewall()
        self.agent = security_groups.SecurityGroupAgent(
            self.firewall, self.server.fetch, lambda port, net: 'qbr' + port[:11])
        self.agent.sync_all([], [])  # nothing on the host: the first sync is done

    def test_a_vm_port_is_asked_for_once_and_filtered_with_its_bridge(self) -> None:
        self.agent.prepare_port(details(P1))
        self.assertEqual([[P1]], self.server.calls)
        [(ports, info)] = self.firewall.applied
        self.assertEqual([(P1, (SG1,), 'qbr' + P1[:11], NET)],
                         [(p.port_id, p.security_groups, p.bridge, p.network_id)
                          for p in ports])
        self.assertEqual([SG1], list(info.groups))

    def test_trusted_and_unprotected_ports_need_no_call(self) -> None:
        self.agent.prepare_port(details(DHCP, owner='network:dhcp'))
        self.agent.prepare_port(details(P2, port_security_enabled=False))
        self.assertEqual([], self.server.calls)
        self.assertEqual([False, False],
                         [ports[0].filtered for ports, _ in self.firewall.applied])

    def test_full_sync_applies_trusted_ports_with_the_rest_in_one_go(self) -> None:
        dhcp = details(DHCP, owner='network:dhcp')
        self.agent.sync_all([details(P1), dhcp, {'port_id': '../x'}],
                            [P1, DHCP, 'tap3a3a3a3a-00'])
        self.assertEqual([[P1]], self.server.calls)
        [(ports, _)] = self.firewall.applied
        self.assertEqual({P1: True, DHCP: False}, {p.port_id: p.filtered for p in ports})
        self.assertIn('a port without usable details', self.log.output)
        # A plugged device without usable details is shut, by its tap.
        self.assertEqual(['tap3a3a3a3a-00'], self.firewall.shut[-1])
        # The wiring with the very details of the sync needs no call nor apply.
        self.agent.prepare_port(dhcp)
        self.assertEqual(1, len(self.firewall.applied))

    def test_full_sync_is_one_call_and_the_wiring_that_follows_makes_none(self) -> None:
        self.agent.sync_all([details(P1), details(P2), details(P3)], [P1, P2, P3])
        self.assertEqual([sorted([P1, P2, P3])], self.server.calls)
        self.assertEqual(1, len(self.firewall.applied))

    def test_wiring_with_newer_details_than_the_syncs_asks_again(self) -> None:
        synced = [details(P1), details(P2)]
        self.agent.sync_all(synced, [P1, P2])
        self.agent.prepare_port(synced[0])  # the sync's own: nothing to do
        self.assertEqual(1, len(self.server.calls))
        # A port_update's details (fetched later, maybe changed) are asked again.
        self.agent.prepare_port(details(P2))
        self.assertEqual([P2], self.server.calls[-1])
        self.agent.prepare_port(synced[0])  # used once only
        self.assertEqual([P1], self.server.calls[-1])

    def test_notifications_touch_only_the_affected_ports_with_one_call(self) -> None:
        self.agent.sync_all([details(P1), details(P2), details(P3)], [P1, P2, P3])
        self.assertEqual({P1, P3}, self.agent.ports_in_groups([SG1]))
        self.assertEqual({P2}, self.agent.ports_in_groups([SG2, SG2]))
        # SG2's rule lets SG1's members in: a member change of SG1 concerns P2.
        self.assertEqual({P2}, self.agent.ports_with_remotes([SG1]))
        self.assertEqual(set(), self.agent.ports_with_remotes([SG2]))
        self.assertTrue(self.agent.request_refresh({P1}))
        self.assertFalse(self.agent.request_refresh({P3}))  # coalesced: one run
        self.agent.refresh_pending()
        self.assertEqual(sorted([P1, P3]), self.server.calls[-1])
        self.agent.refresh_pending()  # nothing pending: no call
        self.assertEqual(2, len(self.server.calls))

    def test_a_failed_refresh_keeps_its_ports_for_the_retry(self) -> None:
        self.agent.sync_all([details(P1), details(P2)], [P1, P2])
        self.assertTrue(self.agent.request_refresh({P1, P2}))
        self.server.fail = True
        self.assertRaises(RuntimeError, self.agent.refresh_pending)
        # The retry of the run is coming: nothing more to queue.
        self.assertFalse(self.agent.request_refresh({P1}))
        self.server.fail = False
        self.agent.refresh_pending()
        self.assertEqual(sorted([P1, P2]), self.server.calls[-1])

    def test_refreshes_work_again_after_the_retries_ran_out(self) -> None:
        self.agent.sync_all([details(P1), details(P2)], [P1, P2])
        self.agent.request_refresh({P1})
        self.server.fail = True
        for _ in range(6):
            self.assertRaises(RuntimeError, self.agent.refresh_pending)
        # The queue gave up and scheduled a full sync; it covers the ports.
        self.server.fail = False
        self.agent.sync_all([details(P1), details(P2)], [P1, P2])
        self.assertTrue(self.agent.request_refresh({P2}))

    def test_wiring_waits_for_the_first_full_sync(self) -> None:
        agent = security_groups.SecurityGroupAgent(
            self.firewall, self.server.fetch, lambda port, net: None)
        with mock.patch.object(security_groups, 'FIRST_SYNC_WAIT', 0.01):
            self.assertRaises(security_groups.FirewallNotSynced,
                              agent.prepare_port, details(P1))
            self.server.fail = True
            self.assertRaises(RuntimeError, agent.sync_all, [details(P1)], [P1])
            self.assertRaises(security_groups.FirewallNotSynced,
                              agent.prepare_port, details(P1))
            self.server.fail = False
            agent.sync_all([details(P1)], [P1])
            agent.prepare_port(details(P1))

    def test_a_port_the_server_no_longer_answers_for_is_closed(self) -> None:
        self.agent.sync_all([details(P1)], [P1])
        del self.server.ports[P1]
        self.agent.request_refresh({P1})
        self.agent.refresh_pending()
        [port] = self.firewall.applied[-1][0]
        self.assertEqual((P1, (), True), (port.port_id, port.security_groups, port.filtered))

    def test_removed_ports_are_forgotten(self) -> None:
        self.agent.sync_all([details(P1), details(P2)], [P1, P2])
        self.agent.remove_devices(['tap' + P1[:11], 'not-an-id'])
        self.assertEqual([([P1], ['tap' + P1[:11]])], self.firewall.removed)
        self.assertEqual(set(), self.agent.ports_in_groups([SG1]))

    def test_an_entry_that_does_not_parse_gets_the_closed_default(self) -> None:
        self.agent.sync_all([], [])
        self.server.ports[P1]['network_id'] = '../x'
        self.agent.prepare_port(details(P1))
        [port] = self.firewall.applied[-1][0]
        self.assertEqual((P1, (), True), (port.port_id, port.security_groups, port.filtered))


class ServerDeviceTest(base.TestCase):

    def test_taps_are_asked_for_by_the_id_prefix_they_carry(self) -> None:
        self.assertEqual('8cbd0e17-4b', l2.server_device('tap8cbd0e17-4b'))
        self.assertEqual(P1, l2.server_device(P1))


def _messages(value: Any) -> list[dict[str, Any]]:
    """Every captured message (a dict with a ``method``) anywhere in a fixture."""
    if isinstance(value, dict):
        if 'method' in value and 'args' in value:
            return [value]
        return [m for v in value.values() for m in _messages(v)]
    if isinstance(value, list):
        return [m for v in value for m in _messages(v)]
    return []


class SecurityGroupCallbacksTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.agent = mock.Mock()
        self.agent.security_groups.ports_in_groups.return_value = {P1}
        self.agent.security_groups.ports_with_remotes.return_value = {P2}
        self.callbacks = l2.L2RpcCallbacks(self.agent)

    def test_rule_and_member_updates_refresh_only_affected_ports(self) -> None:
        self.callbacks.security_groups_rule_updated(None, security_groups=[SG1])
        self.agent.security_groups.ports_in_groups.assert_called_once_with([SG1])
        self.agent.refresh_firewall.assert_called_with({P1})
        self.callbacks.security_groups_member_updated(None, security_groups=[SG2])
        self.agent.security_groups.ports_with_remotes.assert_called_once_with([SG2])
        self.agent.refresh_firewall.assert_called_with({P2})

    def test_an_address_group_push_refreshes_the_ports_naming_it(self) -> None:
        """The push exactly as neutron 29 sent it (tests/fixtures/neutron29)."""
        path = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'fixtures',
                            'neutron29', 'casts-ovo-push.json')
        with open(path) as f:
            pushes = [m for m in _messages(json.load(f))
                      if m.get('exchange') == 'neutron-vo-AddressGroup-1.2_fanout']
        self.assertTrue(pushes)
        callbacks = l2.AddressGroupPushCallbacks(self.agent)
        self.agent.security_groups.ports_with_remotes.return_value = {P1}
        callbacks.push(None, **pushes[0]['args'])
        group = pushes[0]['args']['resource_list'][0]['versioned_object.data']['id']
        self.agent.security_groups.ports_with_remotes.assert_called_once_with([group])
        self.agent.refresh_firewall.assert_called_once_with({P1})
        callbacks.push(None, resource_list=[{'versioned_object.data': {'id': '../x'}}])
        self.assertIn('Rejected push', self.log.output)

    def test_bad_group_ids_reject_the_message(self) -> None:
        self.callbacks.security_groups_rule_updated(None, security_groups=['../x'])
        self.callbacks.security_groups_member_updated(None, security_groups='x')
        self.agent.refresh_firewall.assert_not_called()
        self.assertIn('Rejected security_groups_rule_updated', self.log.output)
