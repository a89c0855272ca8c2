"""Leases of deleted ports: which ones are stale, and their release through privsep.

The release tools are faked here: a fake ``dhcp_release`` does what dnsmasq
does on a DHCPRELEASE (drops the line from its lease file). The real tools
against a real dnsmasq are in tests/functional/test_dnsmasq.py.
"""

import ipaddress
import os
import uuid

import fixtures

from agentkit import exceptions
from agentkit import privileged
from agentkit.api import dhcp_payload
from agentkit.lib import external_process
from agentkit.privileged import dhcp_release
from agentkit.privileged import tool_exec
from drivers.dhcp.dnsmasq import driver as dnsmasq_driver
from drivers.dhcp.dnsmasq import leases as dnsmasq_leases
from tests import base
from tests.unit.test_dnsmasq import DriverTestCase
from tests.unit.test_dnsmasq import INTERFACE
from tests.unit.test_dnsmasq import NAMESPACE
from tests.unit.test_dnsmasq import NET_ID
from tests.unit.test_dnsmasq import VM_PORT
from tests.unit.test_dnsmasq import make_subnet
from tests.unit.test_dnsmasq import reference_network
from tests.unit.test_dnsmasq import typed

V6_SUBNET = 'a7a2a1a6-3a36-4c1b-9a4a-0d1b7f2c9e01'
SERVER_DUID = '00:01:00:01:2d:5e:1c:aa:fa:16:3e:77:d5:54'
VM_MAC = 'fa:16:3e:70:e7:3b'

LEASES = (
    'duid %s\n' % SERVER_DUID
    + '1700000000 fa:16:3e:70:e7:3b 192.168.10.207 vm1 01:fa:16:3e:70:e7:3b\n'
    '1700000000 fa:16:3e:00:00:99 192.168.10.99 * *\n'
    '0 06-fa:16:3e:00:00:98 192.168.10.98 * *\n'           # not Ethernet: skipped
    '1700000000 1234 2001:db8::99 vm9 00:03:00:01:fa:16:3e:00:00:99\n'
    '1700000000 T77 2001:db8::98 * 00:03:00:01:fa:16:3e:00:00:98\n'  # temporary
    'garbage\n')


def ip(value):
    return ipaddress.ip_address(value)


def dual_stack_network():
    network = reference_network()
    network['subnets'].append(make_subnet(V6_SUBNET, '2001:db8::/64', '2001:db8::1',
                                          ipv6_address_mode='dhcpv6-stateful',
                                          ipv6_ra_mode='dhcpv6-stateful'))
    network['ports'][0]['fixed_ips'].append({'subnet_id': V6_SUBNET,
                                             'ip_address': '2001:db8::207'})
    return network


class TestStaleLeases(base.TestCase):

    def test_parse(self):
        leases, server_duid = dnsmasq_leases.parse_leases(LEASES)
        self.assertEqual(SERVER_DUID, server_duid)
        self.assertEqual([
            dnsmasq_leases.Lease(ip('192.168.10.207'), VM_MAC, '01:fa:16:3e:70:e7:3b'),
            dnsmasq_leases.Lease(ip('192.168.10.99'), 'fa:16:3e:00:00:99'),
            dnsmasq_leases.Lease(ip('2001:db8::99'), client_id='00:03:00:01:fa:16:3e:00:00:99',
                                 iaid=1234),
        ], leases)

    def test_only_leases_no_port_holds_are_stale(self):
        net = dhcp_payload.parse_network(reference_network())
        leases, _ = dnsmasq_leases.parse_leases(LEASES)
        # .207 is the VM port's (its client id is not set: any is accepted);
        # .99 and 2001:db8::99 belong to no port.
        self.assertEqual([ip('192.168.10.99'), ip('2001:db8::99')],
                         [lease.address for lease in dnsmasq_leases.stale_leases(net, leases)])

    def test_address_given_to_another_mac_is_stale(self):
        network = reference_network()
        network['ports'][0]['mac_address'] = 'fa:16:3e:00:00:01'
        lease = dnsmasq_leases.Lease(ip('192.168.10.207'), VM_MAC)
        self.assertEqual([lease], dnsmasq_leases.stale_leases(dhcp_payload.parse_network(network),
                                                              [lease]))

    def test_client_id_must_match_when_the_port_sets_one(self):
        network = reference_network()
        lease = dnsmasq_leases.Lease(ip('192.168.10.207'), VM_MAC, '01:fa:16:3e:70:e7:3b')
        for client_id, stale in (('01:FA:16:3E:70:E7:3B', False), ('other', True),
                                 ('*', False)):
            network['ports'][0]['extra_dhcp_opts'] = [
                {'opt_name': 'client-id', 'opt_value': client_id}]
            self.assertEqual([lease] if stale else [], dnsmasq_leases.stale_leases(
                dhcp_payload.parse_network(network), [lease]), client_id)
        # A string client id is compared as the bytes dnsmasq records.
        network['ports'][0]['extra_dhcp_opts'] = [
            {'opt_name': 'client-id', 'opt_value': 'vm'}]
        self.assertEqual([], dnsmasq_leases.stale_leases(
            dhcp_payload.parse_network(network),
            [dnsmasq_leases.Lease(ip('192.168.10.207'), VM_MAC, '76:6d')]))

    def test_ipv6_lease_of_a_moved_address_is_stale(self):
        net = dhcp_payload.parse_network(dual_stack_network())
        own = dnsmasq_leases.Lease(ip('2001:db8::207'), client_id='00:03:00:01:' + VM_MAC,
                                   iaid=1)
        other_mac = dnsmasq_leases.Lease(ip('2001:db8::207'),
                                         client_id='00:03:00:01:fa:16:3e:00:00:01', iaid=1)
        no_mac = dnsmasq_leases.Lease(ip('2001:db8::207'), client_id='00:04:' + ':'.join(
            ['ab'] * 16), iaid=1)
        self.assertEqual([other_mac], dnsmasq_leases.stale_leases(net, [own, other_mac, no_mac]))
        # A DUID without a MAC: the previous host file tells who had it.
        moved = {ip('2001:db8::207'): 'fa:16:3e:00:00:01'}
        self.assertEqual([no_mac], dnsmasq_leases.stale_leases(net, [no_mac], moved))

    def test_read_host_macs(self):
        path = os.path.join(self.useFixture(fixtures.TempDir()).path, 'host')
        with open(path, 'w') as f:
            f.write('fa:16:3e:00:00:01,id:01:02,host-a.openstacklocal,10.0.0.5,set:port-x\n'
                    'fa:16:3e:00:00:02,host-b.openstacklocal,[2001:db8::5]\n'
                    'fa:16:3e:00:00:03,set:port-y\n')
        self.assertEqual({ip('10.0.0.5'): 'fa:16:3e:00:00:01',
                          ip('2001:db8::5'): 'fa:16:3e:00:00:02'},
                         dnsmasq_leases.read_host_macs(path))
        self.assertEqual({}, dnsmasq_leases.read_host_macs(path + '.missing'))


class TestDriverRelease(DriverTestCase):

    def write_leases(self, text):
        with open(self.state_file('leases'), 'w') as f:
            f.write(text)

    def test_deleted_port_is_released_after_the_sighup(self):
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        self.write_leases(LEASES)
        network = reference_network()
        network['ports'] = [p for p in network['ports'] if p['id'] != VM_PORT]
        hups_before = list(self.procs.hups)
        self.driver.reload(typed(network))
        self.assertEqual([
            (NAMESPACE, INTERFACE, '192.168.10.207', VM_MAC, '01:fa:16:3e:70:e7:3b'),
            (NAMESPACE, INTERFACE, '192.168.10.99', 'fa:16:3e:00:00:99', None),
            (NAMESPACE, INTERFACE, '2001:db8::99', 1234,
             '00:03:00:01:fa:16:3e:00:00:99', SERVER_DUID),
        ], self.release.calls)
        self.assertEqual(len(hups_before) + 1, len(self.procs.hups))
        # dnsmasq had re-read its files (no host entry left for the old MAC).
        self.assertEqual([len(hups_before) + 1] * 2, self.release.hups_seen)
        self.assertEqual(3, self.driver.get_configurations()['dnsmasq_leases_released'])
        self.assertNotIn('192.168.10.207', self.read('leases'))
        # Nothing stale any more: nothing released again.
        self.driver.reload(typed(network))
        self.assertEqual(3, len(self.release.calls))

    def test_adopted_dnsmasq_releases_leases_of_ports_deleted_meanwhile(self):
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        self.write_leases(LEASES)
        self.driver.stop()
        second = self.new_driver()
        second.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        self.assertEqual(external_process.DaemonAction.NONE, second.last_action)
        self.assertEqual(['192.168.10.99', '2001:db8::99'],
                         [call[2] for call in self.release.calls])

    def test_no_release_on_start_or_restart(self):
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        self.assertEqual([], self.release.calls)
        network = reference_network()
        network['subnets'].append(make_subnet(str(uuid.uuid4()), '10.30.0.0/24',
                                              '10.30.0.1'))
        network['ports'] = [p for p in network['ports'] if p['id'] != VM_PORT]
        self.driver.reload(typed(network))
        self.assertEqual(external_process.DaemonAction.RESTART, self.driver.last_action)
        self.assertEqual([], self.release.calls)
        # The restarted dnsmasq starts from a lease file without the port.
        self.assertNotIn(VM_MAC, self.read('leases'))

    def test_lease_dnsmasq_keeps_is_retried_then_left_to_expire(self):
        self.release.drop = False
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        network = reference_network()
        network['ports'] = [p for p in network['ports'] if p['id'] != VM_PORT]
        self.driver.reload(typed(network))
        self.assertEqual(dnsmasq_driver.RELEASE_TRIES, len(self.release.calls))
        self.assertIn('dnsmasq kept the leases of 192.168.10.207', self.log.output)
        self.assertEqual(0, self.driver.get_configurations()['dnsmasq_leases_released'])
        self.assertEqual(external_process.DaemonAction.RELOAD, self.driver.last_action)

    def test_failing_tool_is_logged_and_dnsmasq_still_reloaded(self):
        self.release.returncode = 1
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        network = reference_network()
        network['ports'] = [p for p in network['ports'] if p['id'] != VM_PORT]
        self.driver.reload(typed(network))
        self.assertEqual(1, len(self.release.calls))  # not retried: it was not sent
        self.assertIn('releasing the DHCP lease of 192.168.10.207 failed (exit 1): boom',
                      self.log.output)
        self.assertEqual(1, len(self.procs.hups))

    def test_missing_tool_warns_once_and_carries_on(self):
        self.which = {'dhcp_release': False, 'dhcp_release6': True}
        driver = self.new_driver()
        driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        self.write_leases(LEASES)
        network = reference_network()
        network['ports'] = [p for p in network['ports'] if p['id'] != VM_PORT]
        driver.reload(typed(network))
        driver.reload(typed(network))
        self.assertEqual(['2001:db8::99'], [call[2] for call in self.release.calls])
        self.assertEqual(1, self.log.output.count('dhcp_release not found in'))
        self.assertIn('dnsmasq-utils', self.log.output)
        self.assertEqual(1, len(self.procs.hups))


class TestPrivilegedRelease(base.TestCase):
    """The privileged operation builds its one argv from validated values only."""

    def setUp(self):
        super().setUp()
        self.useFixture(fixtures.MockPatchObject(privileged.daemons, 'client_mode', False))
        self.execute = self.useFixture(fixtures.MockPatchObject(
            tool_exec, 'execute', return_value=(0, '', ''))).mock
        self.useFixture(fixtures.MockPatchObject(
            tool_exec, 'find_binary', side_effect=lambda name: '/usr/bin/' + name))

    def test_release_argv(self):
        self.assertEqual((0, ''), dhcp_release.release_lease(
            NAMESPACE, INTERFACE, '192.168.10.207', VM_MAC, '01:fa:16:3e:70:e7:3b'))
        self.execute.assert_called_once_with(
            ['/usr/bin/dhcp_release', INTERFACE, '192.168.10.207', VM_MAC,
             '01:fa:16:3e:70:e7:3b'], NAMESPACE, timeout=dhcp_release.TIMEOUT)
        dhcp_release.release_lease(NAMESPACE, INTERFACE, '192.168.10.207', VM_MAC)
        self.assertEqual(4, len(self.execute.call_args[0][0]))

    def test_release6_argv(self):
        dhcp_release.release_lease6(NAMESPACE, INTERFACE, '2001:db8::99', 1234,
                                    '00:03:00:01:fa:16:3e:00:00:99', SERVER_DUID)
        self.execute.assert_called_once_with(
            ['/usr/bin/dhcp_release6', '--iface', INTERFACE, '--ip', '2001:db8::99',
             '--iaid', '1234', '--client-id', '00:03:00:01:fa:16:3e:00:00:99',
             '--server-id', SERVER_DUID], NAMESPACE, timeout=dhcp_release.TIMEOUT)

    def test_bad_values_are_refused_before_anything_runs(self):
        good = [NAMESPACE, INTERFACE, '192.168.10.207', VM_MAC, None]
        for index, bad in ((0, 'qrouter-' + NET_ID), (0, 'qdhcp-../../etc'), (0, None),
                           (1, 'eth0 --x'), (1, 'a' * 16), (1, '../x'),
                           (2, '2001:db8::1'), (2, '192.168.10.207; reboot'),
                           (2, '224.0.0.1'), (3, 'FA:16:3E:70:E7:3B'), (3, '-x'),
                           (4, 'not hex'), (4, '01:fa:16:3e:70:e7:3b --x')):
            args = list(good)
            args[index] = bad
            self.assertRaises(ValueError, dhcp_release.release_lease, *args)
        good6 = [NAMESPACE, INTERFACE, '2001:db8::99', 1234, '00:03', SERVER_DUID]
        for index, bad in ((2, '192.168.10.1'), (2, 'fe80::1%eth0'), (3, -1),
                           (3, 2 ** 32), (3, '1234'), (3, True), (4, '*'),
                           (5, ':'.join(['ab'] * 131))):
            args = list(good6)
            args[index] = bad
            self.assertRaises(ValueError, dhcp_release.release_lease6, *args)
        self.execute.assert_not_called()

    def test_missing_tool_is_a_process_error(self):
        self.useFixture(fixtures.MockPatchObject(
            tool_exec, 'find_binary', side_effect=exceptions.ProcessError('not found')))
        self.assertRaises(exceptions.ProcessError, dhcp_release.release_lease,
                          NAMESPACE, INTERFACE, '192.168.10.207', VM_MAC)
