"""L2 agent: what it refuses (trunk parents, geneve) and which object versions it reports.

The agent is built without its start-up (drivers and server are mocks), so
these tests look only at the decisions: which RPCs go to the server, which
driver calls are made, what is logged.
"""

import threading
import uuid
from unittest import mock

import oslo_messaging

from agentkit.agent import l2
from agentkit.agent import port_cache
from drivers.openvswitch import mech_driver as ovs_mech
from tests import base

NET = str(uuid.uuid4())
TRUNK = str(uuid.uuid4())


def details(port_id, network_type='vxlan', segmentation_id=1001):
    return {'device': port_id, 'port_id': port_id, 'network_id': NET,
            'mac_address': 'fa:16:3e:00:00:01', 'admin_state_up': True,
            'network_type': network_type, 'segmentation_id': segmentation_id,
            'physical_network': None, 'fixed_ips': [], 'device_owner': 'compute:nova'}


def trunk_object(port_id, trunk_id=TRUNK):
    return {'versioned_object.name': 'Trunk', 'versioned_object.version': '1.1',
            'versioned_object.namespace': 'versionedobjects',
            'versioned_object.data': {'id': trunk_id, 'port_id': port_id,
                                      'status': 'DOWN', 'sub_ports': []}}


class AgentTestCase(base.TestCase):

    def make_agent(self, trunks=()):
        agent = l2.L2Agent.__new__(l2.L2Agent)
        agent.binary = 'agentkit-l2'
        agent.host = 'host1'
        agent.conf = self.conf
        agent.mech = mock.Mock(resource_versions=None)
        agent.firewall = mock.Mock(needs_security_group_info=True)
        vxlan = mock.Mock(network_type='vxlan')
        vxlan.realise.side_effect = lambda segment: segment
        agent.type_drivers = {'vxlan': vxlan}
        agent.extensions = []
        agent.security_groups = mock.Mock()
        agent.plugin = mock.Mock()
        agent.plugin.bulk_pull.side_effect = lambda resource, version, filters: [
            trunk_object(p) for p in filters['port_id'] if p in trunks]
        agent._lock = threading.Lock()
        agent.plugged_ports = set()
        agent.wired = {}
        agent.port_ids = {}
        agent._events_at = {}
        agent.trunk_parents = {}
        agent._trunk_lookup_warned = False
        agent.devices_up = 0
        agent.port_cache = port_cache.PortCache(agent.host)
        agent.reported = {}
        agent.reported_at = {}
        agent.wired_details = {}
        agent.security_groups.prepare_ports.return_value = {}
        agent.queue = mock.Mock()
        return agent

    def serve(self, agent, *entries):
        agent.plugin.get_devices_details_list_and_failed_devices.return_value = {
            'devices': list(entries), 'failed_devices': []}


class TestRefusals(AgentTestCase):

    def assertRefused(self, agent, port_id, *words):
        agent.mech.wire_port.assert_not_called()
        agent.mech.unwire_port.assert_called_once_with(port_id)
        agent.plugin.update_device_list.assert_called_once_with([], [port_id],
                                                                'agentkit-l2-host1')
        self.assertNotIn(port_id, agent.wired)
        warnings = [line for line in self.log.output.splitlines() if 'refused' in line]
        self.assertEqual(1, len(warnings), self.log.output)
        for word in words:
            self.assertIn(word, warnings[0])
        self.assertNotIn('ERROR', self.log.output)

    def test_geneve_segment_is_refused_with_its_reason(self):
        agent = self.make_agent()
        port = str(uuid.uuid4())
        self.serve(agent, details(port, 'geneve'))
        agent._wire(port)
        self.assertRefused(agent, port, 'geneve', 'OVN', 'vxlan')

    def test_type_not_enabled_is_refused_naming_the_enabled_ones(self):
        agent = self.make_agent()
        port = str(uuid.uuid4())
        self.serve(agent, details(port, 'vlan', 100))
        agent._wire(port)
        self.assertRefused(agent, port, "'vlan' is not enabled", 'type_drivers: vxlan')

    def test_trunk_parent_is_refused_and_never_wired(self):
        port = str(uuid.uuid4())
        agent = self.make_agent(trunks={port})
        self.serve(agent, details(port))
        agent._wire(port)
        agent.plugin.bulk_pull.assert_called_once_with('Trunk', '1.1', {'port_id': [port]})
        self.assertRefused(agent, port, 'trunk %s' % TRUNK, 'does not implement trunks')
        agent.security_groups.prepare_ports.assert_not_called()

    def test_ordinary_port_is_wired_and_looked_up_once(self):
        agent = self.make_agent()
        port = str(uuid.uuid4())
        self.serve(agent, details(port))
        agent._wire(port)
        agent.mech.wire_port.assert_called_once()
        agent.plugin.update_device_list.assert_called_once_with([port], [],
                                                                'agentkit-l2-host1')
        # Further events about a wired port cost no trunk lookup.
        agent._wire(port)
        self.assertEqual(1, agent.plugin.bulk_pull.call_count)
        self.assertEqual(2, agent.mech.wire_port.call_count)

    def test_server_without_trunk_lookup_refuses_nothing(self):
        agent = self.make_agent()
        agent.plugin.bulk_pull.side_effect = oslo_messaging.RemoteError(
            'InvalidResourceTypeClass', 'no such resource')
        ports = [str(uuid.uuid4()) for _ in range(2)]
        for port in ports:
            self.serve(agent, details(port))
            agent._wire(port)
        self.assertEqual(2, agent.mech.wire_port.call_count)
        self.assertEqual(1, self.log.output.count('Cannot look up trunks'))

    def test_full_sync_looks_up_every_port_in_one_call(self):
        parent, other = str(uuid.uuid4()), str(uuid.uuid4())
        agent = self.make_agent(trunks={parent})
        agent.conf = mock.Mock()
        agent.conf.l2.tunnel_types = []
        agent.mech.list_plugged_ports.return_value = {parent, other}
        self.serve(agent, details(parent), details(other))
        agent.sync_state()
        agent.plugin.bulk_pull.assert_called_once_with(
            'Trunk', '1.1', {'port_id': sorted([parent, other])})
        self.assertEqual({parent: TRUNK}, agent.trunk_parents)
        # The queued wiring uses the sync's details: no second lookup.
        for call in agent.queue.put.call_args_list:
            agent.process_update(call.args[0])
        self.assertEqual(1, agent.plugin.bulk_pull.call_count)
        agent.mech.unwire_port.assert_called_once_with(parent)
        self.assertEqual([other], [c.args[0].port_id
                                   for c in agent.mech.wire_port.call_args_list])

    def test_unplugged_parent_is_forgotten(self):
        port = str(uuid.uuid4())
        agent = self.make_agent(trunks={port})
        self.serve(agent, details(port))
        agent._wire(port)
        agent._unwire(port)
        self.assertEqual({}, agent.trunk_parents)


# Every L2 agent builds port details from Port and Network pushes.
PUSHED = {'Port': '1.11', 'Network': '1.3'}


class TestResourceVersions(AgentTestCase):

    def test_only_consumed_objects_are_reported(self):
        agent = self.make_agent()
        self.assertEqual(dict(PUSHED, AddressGroup='1.2'), agent.resource_versions())
        # The versions of the push topics the agent listens on.
        self.assertEqual('neutron-vo-AddressGroup-1.2', l2.topics.ADDRESS_GROUP_PUSH)
        self.assertEqual('neutron-vo-Port-1.11', l2.topics.PORT_PUSH)
        self.assertEqual('neutron-vo-Network-1.3', l2.topics.NETWORK_PUSH)
        agent.firewall.needs_security_group_info = False
        self.assertEqual(PUSHED, agent.resource_versions())

    def test_openvswitch_reports_no_trunk_or_other_unconsumed_object(self):
        driver = ovs_mech.OpenvswitchMechanismDriver.__new__(
            ovs_mech.OpenvswitchMechanismDriver)
        self.assertIsNone(driver.resource_versions)
        agent = self.make_agent()
        agent.mech = driver
        self.assertEqual(dict(PUSHED, AddressGroup='1.2'), agent.resource_versions())

    def test_a_mechanism_that_consumes_objects_still_reports_them(self):
        agent = self.make_agent()
        agent.mech.resource_versions = {'QosPolicy': '1.10'}
        self.assertEqual(dict(PUSHED, QosPolicy='1.10', AddressGroup='1.2'),
                         agent.resource_versions())
