"""dnsmasq driver: argv and files against Neutron's, and the start/reload/restart decisions.

The reference shapes below are those of a live Neutron 29 DHCP agent (the
``bd7193ec`` network of the seed scenario: one /24 DHCP subnet, a router
interface, a VM port and the DHCP port). Processes are faked: a fake /proc
tree and stand-ins for the privileged spawn/kill, so no dnsmasq runs here.
"""

import copy
import errno
import ipaddress
import json
import os
import stat
import tempfile
import uuid

import fixtures
from unittest import mock

from agentkit import exceptions
from agentkit.api import dhcp_payload
from agentkit.conf import dhcp as dhcp_conf
from agentkit.lib import external_process
from drivers.dhcp.dnsmasq import driver as dnsmasq_driver
from drivers.dhcp.dnsmasq import files
from drivers.dhcp.dnsmasq import render as dnsmasq_render
from tests import base
from tests.unit import fake_proc

NET_ID = 'bd7193ec-9fb6-4ad4-bdd2-4282a7195a69'
SUBNET_ID = '548da180-0348-443b-b446-4d6a969f9288'
VM_PORT = '33cd7dfd-c912-4fd3-bc8e-0c6ac4e764fc'
ROUTER_PORT = '5f2022b4-0201-4daa-a098-b8ea6f9514cd'
DHCP_PORT = '90212c69-7d26-4cc7-a2af-eef613131dfd'
HOST = 'vm'
NAMESPACE = 'qdhcp-' + NET_ID
INTERFACE = 'tap90212c69-7d'

REFERENCE_ARGV = [
    'dnsmasq', '--no-hosts', '--no-resolv',
    '--pid-file=<state>/state/dhcp/%s/pid' % NET_ID,
    '--dhcp-hostsfile=<state>/state/dhcp/%s/host' % NET_ID,
    '--addn-hosts=<state>/state/dhcp/%s/addn_hosts' % NET_ID,
    '--dhcp-optsfile=<state>/state/dhcp/%s/opts' % NET_ID,
    '--dhcp-leasefile=<state>/state/dhcp/%s/leases' % NET_ID,
    '--dhcp-match=set:ipxe,175', '--dhcp-userclass=set:ipxe6,iPXE',
    '--local-service', '--bind-dynamic',
    '--dhcp-range=set:subnet-%s,192.168.10.0,static,255.255.255.0,86400s' % SUBNET_ID,
    '--dhcp-option-force=option:mtu,1450', '--dhcp-lease-max=256',
    '--conf-file=/dev/null', '--domain=openstacklocal',
]
REFERENCE_HOST = (
    'fa:16:3e:3d:a8:1c,host-192-168-10-1.openstacklocal,192.168.10.1\n'
    'fa:16:3e:70:e7:3b,host-192-168-10-207.openstacklocal,192.168.10.207\n')
REFERENCE_ADDN_HOSTS = (
    '192.168.10.1\thost-192-168-10-1.openstacklocal host-192-168-10-1\n'
    '192.168.10.207\thost-192-168-10-207.openstacklocal host-192-168-10-207\n')
REFERENCE_OPTS = (
    'tag:subnet-{s},option:classless-static-route,169.254.169.254/32,192.168.10.1,'
    '0.0.0.0/0,192.168.10.1\n'
    'tag:subnet-{s},249,169.254.169.254/32,192.168.10.1,0.0.0.0/0,192.168.10.1\n'
    'tag:subnet-{s},option:router,192.168.10.1\n').format(s=SUBNET_ID)


def make_subnet(subnet_id=SUBNET_ID, cidr='192.168.10.0/24', gateway='192.168.10.1',
                **kwargs):
    subnet = {
        'id': subnet_id, 'name': 'nq-private-sub', 'project_id': 'nqdemo',
        'network_id': NET_ID, 'ip_version': 6 if ':' in cidr else 4,
        'subnetpool_id': None, 'enable_dhcp': True, 'ipv6_ra_mode': None,
        'ipv6_address_mode': None, 'gateway_ip': gateway, 'cidr': cidr,
        'allocation_pools': [], 'host_routes': [], 'dns_nameservers': [],
        'shared': False, 'description': '', 'router:external': False,
        'service_types': [], 'tags': [], 'revision_number': 0,
    }
    subnet.update(kwargs)
    return subnet


def make_port(port_id, mac, ips, owner='compute:nova', device_id=None, **kwargs):
    """A port dict as get_network_info returns it; ``ips`` = [(subnet, ip)]."""
    port = {
        'id': port_id, 'name': '', 'network_id': NET_ID, 'project_id': 'nqdemo',
        'mac_address': mac, 'admin_state_up': True, 'status': 'ACTIVE',
        'device_id': device_id or str(uuid.uuid4()), 'device_owner': owner,
        'fixed_ips': [{'subnet_id': s, 'ip_address': ip} for s, ip in ips],
        'allowed_address_pairs': [], 'extra_dhcp_opts': [], 'security_groups': [],
        'binding:vnic_type': 'normal', 'binding:host_id': HOST,
        'binding:vif_type': 'ovs', 'port_security_enabled': True, 'tags': [],
    }
    port.update(kwargs)
    return port


def reference_network():
    """The seed scenario's tenant network, shaped like the wire sample."""
    return {
        'id': NET_ID, 'project_id': 'nqdemo', 'admin_state_up': True, 'mtu': 1450,
        'subnets': [make_subnet()], 'non_local_subnets': [],
        'ports': [
            make_port(VM_PORT, 'fa:16:3e:70:e7:3b', [(SUBNET_ID, '192.168.10.207')],
                      device_id='ccd02101-1a6a-49bf-90ed-87928bd682e3'),
            make_port(ROUTER_PORT, 'fa:16:3e:3d:a8:1c', [(SUBNET_ID, '192.168.10.1')],
                      owner='network:router_interface',
                      device_id='083c141f-408c-4691-aa72-a1c831175723'),
            make_port(DHCP_PORT, 'fa:16:3e:77:d5:54', [(SUBNET_ID, '192.168.10.2')],
                      owner='network:dhcp',
                      device_id='dhcpe5e61fb5-d685-5b50-9ba7-acb6e6962ef3-' + NET_ID),
        ],
    }


def typed(network):
    """The typed network the DHCP agent hands its driver."""
    return dhcp_payload.parse_network(network)


def settings(**kwargs):
    kwargs.setdefault('state_path', '<state>/state')
    return dnsmasq_render.Settings(**kwargs)


def render(network, dhcp_ips=None, **kwargs):
    net = dhcp_payload.parse_network(network)
    s = settings(**kwargs)
    return dnsmasq_render.build_argv(net, s), dnsmasq_render.render_files(net, s, dhcp_ips)


class TestReferenceShapes(base.TestCase):

    def test_argv_is_neutrons(self):
        argv, _ = render(reference_network())
        self.assertEqual(REFERENCE_ARGV, argv)

    def test_files_are_neutrons(self):
        _, files = render(reference_network())
        self.assertEqual(REFERENCE_HOST, files['host'])
        self.assertEqual(REFERENCE_ADDN_HOSTS, files['addn_hosts'])
        self.assertEqual(REFERENCE_OPTS, files['opts'])

    def test_port_order_does_not_change_files(self):
        network = reference_network()
        network['ports'].reverse()
        _, files = render(network)
        self.assertEqual(REFERENCE_HOST, files['host'])

    def test_dhcp_port_and_service_ports_get_no_host_entry(self):
        network = reference_network()
        network['ports'].append(make_port(str(uuid.uuid4()), 'fa:16:3e:00:00:09',
                                          [(SUBNET_ID, '192.168.10.9')],
                                          owner='network:floatingip'))
        _, files = render(network)
        for address in ('192.168.10.2', '192.168.10.9'):
            self.assertNotIn(',%s\n' % address, files['host'])
            self.assertNotIn('%s\t' % address, files['addn_hosts'])
        self.assertEqual(REFERENCE_HOST, files['host'])

    def test_lease_infinite(self):
        argv, _ = render(reference_network(), lease_duration=-1)
        self.assertIn('--dhcp-range=set:subnet-%s,192.168.10.0,static,255.255.255.0,'
                      'infinite' % SUBNET_ID, argv)
        net = dhcp_payload.parse_network(reference_network())
        leases = dnsmasq_render.render_init_leases(net, settings(lease_duration=-1), 1000)
        self.assertEqual('0 fa:16:3e:3d:a8:1c 192.168.10.1 * *\n'
                         '0 fa:16:3e:70:e7:3b 192.168.10.207 * *\n', leases)
        leases = dnsmasq_render.render_init_leases(net, settings(lease_duration=600), 1000.5)
        self.assertTrue(leases.startswith('1600 fa:16:3e:3d:a8:1c 192.168.10.1 * *\n'))

    def test_options_that_shape_argv(self):
        network = reference_network()
        network['mtu'] = None
        argv, _ = render(network, dns_domain='', config_file='/etc/dnsmasq-extra.conf',
                         lease_max=100, lease_duration=120)
        self.assertNotIn('--dhcp-option-force=option:mtu,1450', argv)
        self.assertNotIn('--domain=openstacklocal', argv)
        self.assertIn('--conf-file=/etc/dnsmasq-extra.conf', argv)
        self.assertIn('--dhcp-lease-max=100', argv)
        self.assertTrue(argv[12].endswith(',120s'), argv[12])
        _, files = render(network, dns_domain='')
        self.assertIn('fa:16:3e:70:e7:3b,host-192-168-10-207,192.168.10.207\n', files['host'])

    def test_dhcp_disabled_subnet_has_no_range_and_no_entries(self):
        network = reference_network()
        network['subnets'][0]['enable_dhcp'] = False
        argv, files = render(network)
        self.assertFalse([a for a in argv if a.startswith('--dhcp-range')])
        self.assertIn('--dhcp-lease-max=0', argv)
        self.assertEqual('', files['host'])
        self.assertEqual('', files['opts'])
        # Still resolvable by name.
        self.assertIn('192.168.10.207\t', files['addn_hosts'])
        self.assertFalse(dhcp_payload.parse_network(network).dhcp_enabled)


class TestOptions(base.TestCase):

    def isolated_network(self):
        network = reference_network()
        network['ports'] = [p for p in network['ports'] if p['id'] != ROUTER_PORT]
        return network

    def test_clients_get_subnet_dns_servers_never_the_forwarders(self):
        network = reference_network()
        # No dns_nameservers: no option, so dnsmasq hands out itself.
        argv, files = render(network, dns_forwarders=('9.9.9.9', '2001:db8::53#5353'))
        self.assertNotIn('dns-server', files['opts'])
        self.assertNotIn('9.9.9.9', files['opts'])
        self.assertEqual(['--server=9.9.9.9', '--server=2001:db8::53#5353'],
                         [a for a in argv if a.startswith('--server')])
        network['subnets'][0]['dns_nameservers'] = ['8.8.8.8', '8.8.4.4']
        _, files = render(network, dns_forwarders=('9.9.9.9',))
        self.assertTrue(files['opts'].startswith(
            'tag:subnet-%s,option:dns-server,8.8.8.8,8.8.4.4\n' % SUBNET_ID))
        self.assertNotIn('9.9.9.9', files['opts'])
        network['subnets'][0]['dns_nameservers'] = ['0.0.0.0']
        _, files = render(network)
        self.assertIn('tag:subnet-%s,option:dns-server\n' % SUBNET_ID, files['opts'])

    def test_two_dhcp_ports_are_both_handed_out_as_resolvers(self):
        network = reference_network()
        network['ports'].append(make_port(str(uuid.uuid4()), 'fa:16:3e:77:d5:55',
                                          [(SUBNET_ID, '192.168.10.3')],
                                          owner='network:dhcp'))
        _, files = render(network)
        self.assertIn('tag:subnet-%s,option:dns-server,192.168.10.2,192.168.10.3\n'
                      % SUBNET_ID, files['opts'])
        network['subnets'][0]['dns_nameservers'] = ['8.8.8.8']
        _, files = render(network)
        self.assertIn('option:dns-server,8.8.8.8\n', files['opts'])
        self.assertNotIn('192.168.10.3', files['opts'])

    def test_host_routes_and_default_route_from_host_routes(self):
        network = reference_network()
        network['subnets'][0]['host_routes'] = [
            {'destination': '10.20.0.0/16', 'nexthop': '192.168.10.254'}]
        _, files = render(network)
        routes = '10.20.0.0/16,192.168.10.254,169.254.169.254/32,192.168.10.1,' \
                 '0.0.0.0/0,192.168.10.1'
        self.assertIn('option:classless-static-route,%s\n' % routes, files['opts'])
        self.assertIn(',249,%s\n' % routes, files['opts'])
        # No gateway_ip: a 0.0.0.0/0 host route provides the router.
        network['subnets'][0]['gateway_ip'] = None
        network['subnets'][0]['host_routes'] = [
            {'destination': '0.0.0.0/0', 'nexthop': '192.168.10.254'}]
        network['ports'] = [p for p in network['ports'] if p['id'] != ROUTER_PORT]
        _, files = render(network)
        self.assertIn('option:router,192.168.10.254\n', files['opts'])

    def test_isolated_metadata_route_via_dhcp_port(self):
        dhcp_ips = {SUBNET_ID: dhcp_payload.parse_ip('192.168.10.2', 'x')}
        _, files = render(self.isolated_network(), dhcp_ips, enable_isolated_metadata=True)
        self.assertIn('option:classless-static-route,169.254.169.254/32,192.168.10.2,'
                      '0.0.0.0/0,192.168.10.1\n', files['opts'])
        self.assertTrue(dnsmasq_render.needs_metadata_proxy(
            dhcp_payload.parse_network(self.isolated_network()),
            settings(enable_isolated_metadata=True)))

    def test_isolated_without_isolated_metadata_gets_no_metadata_route(self):
        dhcp_ips = {SUBNET_ID: dhcp_payload.parse_ip('192.168.10.2', 'x')}
        _, files = render(self.isolated_network(), dhcp_ips)
        self.assertNotIn('169.254.169.254', files['opts'])
        self.assertEqual('tag:subnet-%s,option:router,192.168.10.1\n' % SUBNET_ID,
                         files['opts'])
        self.assertFalse(dnsmasq_render.needs_metadata_proxy(
            dhcp_payload.parse_network(self.isolated_network()), settings()))

    def test_routed_subnet_uses_gateway_even_with_isolated_metadata(self):
        dhcp_ips = {SUBNET_ID: dhcp_payload.parse_ip('192.168.10.2', 'x')}
        _, files = render(reference_network(), dhcp_ips, enable_isolated_metadata=True)
        self.assertEqual(REFERENCE_OPTS, files['opts'])
        self.assertFalse(dnsmasq_render.needs_metadata_proxy(
            dhcp_payload.parse_network(reference_network()),
            settings(enable_isolated_metadata=True)))

    def test_router_port_not_on_gateway_leaves_subnet_isolated(self):
        network = reference_network()
        network['ports'][1]['fixed_ips'][0]['ip_address'] = '192.168.10.5'
        net = dhcp_payload.parse_network(network)
        self.assertEqual({SUBNET_ID}, dnsmasq_render.isolated_subnets(net))

    def test_other_ipv4_subnets_are_on_link(self):
        network = reference_network()
        other = str(uuid.uuid4())
        network['subnets'].append(make_subnet(other, '10.30.0.0/24', '10.30.0.1'))
        argv, files = render(network)
        self.assertEqual(2, len([a for a in argv if a.startswith('--dhcp-range')]))
        self.assertIn('--dhcp-lease-max=512', argv)
        self.assertIn('tag:subnet-%s,option:classless-static-route,10.30.0.0/24,0.0.0.0,'
                      % SUBNET_ID, files['opts'])
        self.assertIn('tag:subnet-%s,option:classless-static-route,192.168.10.0/24,0.0.0.0'
                      % other, files['opts'])

    def test_extra_dhcp_opts(self):
        network = reference_network()
        network['ports'][0]['extra_dhcp_opts'] = [
            {'opt_name': 'bootfile-name', 'opt_value': 'pxelinux.0', 'ip_version': 4},
            {'opt_name': '150', 'opt_value': '10.0.0.5', 'ip_version': 4},
            {'opt_name': 'tag:ipxe,bootfile-name', 'opt_value': 'http://x/boot.ipxe',
             'ip_version': 4},
            {'opt_name': 'dns-server', 'opt_value': '[2001:db8::1]', 'ip_version': 6},
            {'opt_name': 'mtu', 'opt_value': None, 'ip_version': 4},
        ]
        _, files = render(network)
        self.assertIn('fa:16:3e:70:e7:3b,host-192-168-10-207.openstacklocal,'
                      '192.168.10.207,set:port-%s\n' % VM_PORT, files['host'])
        self.assertIn('fa:16:3e:3d:a8:1c,host-192-168-10-1.openstacklocal,192.168.10.1\n',
                      files['host'])
        tag = 'tag:port-' + VM_PORT
        self.assertEqual(REFERENCE_OPTS + (
            '{t},option:bootfile-name,pxelinux.0\n'
            '{t},150,10.0.0.5\n'
            '{t},tag:ipxe,option:bootfile-name,http://x/boot.ipxe\n').format(t=tag),
            files['opts'])  # the IPv6 option is dropped: the port has no IPv6 address

    def test_client_id(self):
        network = reference_network()
        network['ports'][0]['extra_dhcp_opts'] = [
            {'opt_name': 'client-id', 'opt_value': '01:fa:16:3e:70:e7:3b', 'ip_version': 4}]
        _, files = render(network)
        self.assertIn('fa:16:3e:70:e7:3b,id:01:fa:16:3e:70:e7:3b,'
                      'host-192-168-10-207.openstacklocal,192.168.10.207\n', files['host'])
        self.assertEqual(REFERENCE_OPTS, files['opts'])

    def test_dns_assignment_names(self):
        network = reference_network()
        network['ports'][0]['dns_assignment'] = [
            {'hostname': 'vm1', 'ip_address': '192.168.10.207', 'fqdn': 'vm1.example.org.'}]
        _, files = render(network)
        self.assertIn('fa:16:3e:70:e7:3b,vm1.example.org,192.168.10.207\n', files['host'])
        self.assertIn('192.168.10.207\tvm1.example.org vm1\n', files['addn_hosts'])


class TestIPv6(base.TestCase):

    V6 = 'aaaaaaaa-0000-4000-8000-000000000006'

    def network(self, address_mode, ra_mode=None, cidr='2001:db8:1::/64', opts=()):
        network = reference_network()
        network['subnets'].append(make_subnet(
            self.V6, cidr, '2001:db8:1::1', ipv6_address_mode=address_mode,
            ipv6_ra_mode=ra_mode))
        vm = network['ports'][0]
        vm['fixed_ips'].append({'subnet_id': self.V6, 'ip_address': '2001:db8:1::5'})
        vm['extra_dhcp_opts'] = list(opts)
        network['ports'][2]['fixed_ips'].append({'subnet_id': self.V6,
                                                 'ip_address': '2001:db8:1::2'})
        return network

    def ranges(self, argv):
        return [a for a in argv if a.startswith('--dhcp-range')]

    def test_stateful(self):
        argv, files = render(self.network('dhcpv6-stateful', 'dhcpv6-stateful'))
        self.assertEqual('--dhcp-range=set:subnet-%s,2001:db8:1::,static,64,86400s' % self.V6,
                         self.ranges(argv)[1])
        self.assertIn('--dhcp-lease-max=%d' % 2 ** 24, argv)
        self.assertIn('fa:16:3e:70:e7:3b,host-2001-db8-1--5.openstacklocal,[2001:db8:1::5]\n',
                      files['host'])
        self.assertIn('2001:db8:1::5\thost-2001-db8-1--5.openstacklocal host-2001-db8-1--5\n',
                      files['addn_hosts'])
        self.assertIn('tag:subnet-%s,option6:domain-search,openstacklocal\n' % self.V6,
                      files['opts'])
        self.assertNotIn('option6:router', files['opts'])
        self.assertNotIn('2001:db8:1::2', files['host'])

    def test_stateful_dns_servers_in_brackets(self):
        network = self.network('dhcpv6-stateful')
        network['subnets'][1]['dns_nameservers'] = ['2001:db8::53', '2001:db8::54']
        _, files = render(network)
        self.assertIn('tag:subnet-%s,option6:dns-server,[2001:db8::53],[2001:db8::54]\n'
                      % self.V6, files['opts'])

    def test_stateless_serves_options_but_no_addresses(self):
        opts = [{'opt_name': 'ntp-server', 'opt_value': '[2001:db8::7b]', 'ip_version': 6}]
        argv, files = render(self.network('dhcpv6-stateless', 'dhcpv6-stateless', opts=opts))
        # Neutron uses "static" for stateless too: dnsmasq then answers
        # information requests without leasing addresses.
        self.assertEqual('--dhcp-range=set:subnet-%s,2001:db8:1::,static,64,86400s' % self.V6,
                         self.ranges(argv)[1])
        self.assertNotIn('[2001:db8:1::5]', files['host'])
        self.assertIn('fa:16:3e:70:e7:3b,set:port-%s\n' % VM_PORT, files['host'])
        self.assertIn('tag:port-%s,option6:ntp-server,[2001:db8::7b]\n' % VM_PORT,
                      files['opts'])
        self.assertIn('tag:subnet-%s,option6:domain-search' % self.V6, files['opts'])

    def test_slaac_gets_nothing_but_names(self):
        argv, files = render(self.network('slaac', 'slaac'))
        self.assertEqual(1, len(self.ranges(argv)))
        self.assertNotIn(self.V6, files['opts'] + files['host'])
        self.assertIn('2001:db8:1::5\t', files['addn_hosts'])

    def test_ra_mode_without_address_mode_and_no_mode_at_all(self):
        argv, _ = render(self.network(None, 'slaac'))
        self.assertEqual(1, len(self.ranges(argv)))
        argv, files = render(self.network(None, None))
        self.assertEqual(2, len(self.ranges(argv)))
        self.assertNotIn(self.V6, files['opts'])  # Neutron: no options without a mode

    def test_prefix_wider_than_64_gets_no_range(self):
        argv, _ = render(self.network('dhcpv6-stateful', cidr='2001:db8::/56'))
        self.assertEqual(1, len(self.ranges(argv)))


class TestValidation(base.TestCase):

    def assertBadNetwork(self, network, fragment):
        exc = self.assertRaises(exceptions.InvalidPayload, dhcp_payload.parse_network, network)
        self.assertIn(fragment, str(exc))

    def test_bad_networks_are_refused(self):
        self.assertBadNetwork(None, 'expected a dict')
        self.assertBadNetwork(dict(reference_network(), id='../../etc'), 'network id')
        self.assertBadNetwork(dict(reference_network(), id=NET_ID.upper()), 'lowercase')
        self.assertBadNetwork(dict(reference_network(), mtu=20), 'MTU')
        self.assertBadNetwork(dict(reference_network(), subnets='x'), 'must be a list')
        cases = [
            ({'cidr': '192.168.10.1/24'}, 'host bits'),
            ({'cidr': '192.168.10.0'}, 'not a CIDR'),
            ({'cidr': '192.168.10.0/24\n--dhcp-range'}, 'does not appear'),
            ({'ip_version': 6}, 'ip_version'),
            ({'enable_dhcp': 'yes'}, 'enable_dhcp'),
            ({'gateway_ip': '192.168.10.1,8.8.8.8'}, 'gateway_ip'),
            ({'gateway_ip': '2001:db8::1'}, 'not IPv4'),
            ({'ipv6_address_mode': 'slaac'}, 'ipv6_address_mode'),
            ({'host_routes': [{'destination': '10.0.0.0/8', 'nexthop': 'x'}]}, 'nexthop'),
            ({'id': 'not-a-uuid'}, 'subnet id'),
            ({'network_id': str(uuid.uuid4())}, 'belongs to network'),
        ]
        for change, fragment in cases:
            network = reference_network()
            network['subnets'][0].update(change)
            self.assertBadNetwork(network, fragment)
        network = reference_network()
        network['subnets'].append(copy.deepcopy(network['subnets'][0]))
        self.assertBadNetwork(network, 'listed twice')

    def test_bad_ports_are_skipped_and_others_served(self):
        bad = [
            ('mac', {'mac_address': 'fa:16:3e:00:00'}),
            ('mac', {'mac_address': '01:00:5e:00:00:01'}),            # multicast
            ('mac', {'mac_address': 'fa:16:3e:00:00:01\nx'}),
            ('id', {'id': 'FA16'}),
            ('outside', {'fixed_ips': [{'subnet_id': SUBNET_ID, 'ip_address': '10.0.0.5'}]}),
            ('ip', {'fixed_ips': [{'subnet_id': SUBNET_ID, 'ip_address': '192.168.10.300'}]}),
            ('ip', {'fixed_ips': [{'subnet_id': SUBNET_ID,
                                   'ip_address': '192.168.10.8,fa:16:3e:00:00:02'}]}),
            ('opt', {'extra_dhcp_opts': [{'opt_name': 'bootfile-name',
                                          'opt_value': 'a\ndhcp-range=x', 'ip_version': 4}]}),
            ('opt', {'extra_dhcp_opts': [{'opt_name': 'option:router,x',
                                          'opt_value': '1', 'ip_version': 4}]}),
            ('opt', {'extra_dhcp_opts': [{'opt_name': 'mtu', 'opt_value': '1',
                                          'ip_version': 5}]}),
            ('name', {'dns_assignment': [{'hostname': 'a,b', 'ip_address': '192.168.10.50',
                                          'fqdn': 'a.b.'}]}),
            ('owner', {'device_owner': 'compute:\nnova'}),
            ('network', {'network_id': str(uuid.uuid4())}),
        ]
        for what, change in bad:
            network = reference_network()
            port = make_port(str(uuid.uuid4()), 'fa:16:3e:00:00:50',
                             [(SUBNET_ID, '192.168.10.50')])
            port.update(change)
            network['ports'].insert(0, port)
            network['ports'].append('not a port')
            net = dhcp_payload.parse_network(network)
            self.assertEqual(3, len(net.ports), what)
            self.assertEqual(2, len(net.skipped_ports), what)
            _, files = render(network)
            self.assertEqual(REFERENCE_HOST, files['host'], what)
        self.assertIn('skipping port', self.log.output)

    def test_duplicate_mac_or_address_skips_the_later_port(self):
        network = reference_network()
        network['ports'].append(make_port(str(uuid.uuid4()), 'fa:16:3e:70:e7:3b',
                                          [(SUBNET_ID, '192.168.10.99')]))
        network['ports'].append(make_port(str(uuid.uuid4()), 'fa:16:3e:00:00:99',
                                          [(SUBNET_ID, '192.168.10.207')]))
        net = dhcp_payload.parse_network(network)
        self.assertEqual(2, len(net.skipped_ports))
        self.assertIn('also used by port %s' % VM_PORT, net.skipped_ports[0][1])
        _, files = render(network)
        self.assertEqual(REFERENCE_HOST, files['host'])

    def test_fixed_ip_on_unknown_subnet_is_ignored(self):
        network = reference_network()
        network['ports'][0]['fixed_ips'].append({'subnet_id': str(uuid.uuid4()),
                                                 'ip_address': '10.99.0.5'})
        net = dhcp_payload.parse_network(network)
        self.assertEqual(3, len(net.ports))
        _, files = render(network)
        self.assertEqual(REFERENCE_HOST, files['host'])

    def test_ipv6_scope_ids_are_refused(self):
        self.assertRaises(ValueError, dhcp_payload.parse_ip, 'fe80::1%eth0', 'x')
        self.assertRaises(ValueError, dhcp_payload.parse_cidr, 'fe80::%a/64', 'x')


class TestDecide(base.TestCase):

    def test_decisions(self):
        argv = list(REFERENCE_ARGV)
        A = external_process.DaemonAction
        self.assertEqual(A.START, external_process.least_disruptive_action(None, argv, False))
        self.assertEqual(A.START, external_process.least_disruptive_action(None, argv, True))
        self.assertEqual(A.NONE, external_process.least_disruptive_action(list(argv), argv, False))
        self.assertEqual(A.RELOAD, external_process.least_disruptive_action(list(argv), argv, True))
        more = argv + ['--dhcp-range=set:subnet-x,10.0.0.0,static,255.255.255.0,86400s']
        self.assertEqual(A.RESTART, external_process.least_disruptive_action(argv, more, False))
        self.assertEqual(A.RESTART, external_process.least_disruptive_action(argv, more, True))

    def test_unchanged_network_gives_no_reload_and_new_subnet_a_restart(self):
        network = reference_network()
        argv, files = render(network)
        again_argv, again_files = render(copy.deepcopy(network))
        self.assertEqual(argv, again_argv)
        self.assertEqual(files, again_files)
        network['subnets'].append(make_subnet(str(uuid.uuid4()), '10.30.0.0/24', None))
        new_argv, _ = render(network)
        self.assertEqual(external_process.DaemonAction.RESTART,
                         external_process.least_disruptive_action(argv, new_argv, False))


class FakeProcesses(fake_proc.FakeDaemons):
    """A spawned dnsmasq writes the pid file its ``--pid-file=`` names."""

    def __init__(self, proc_path):
        super().__init__(proc_path, 4000)

    def pid_file(self, argv):
        return [a for a in argv if a.startswith('--pid-file=')][0].split('=', 1)[1]


class FakeRelease:
    """dhcp_release(6) that makes the driver's lease file forget the lease,
    as dnsmasq does on a DHCPRELEASE."""

    def __init__(self, test):
        self.test = test
        self.calls = []
        self.hups_seen = []  # SIGHUPs dnsmasq had received at each call
        self.drop = True
        self.returncode = 0

    def _forget(self, namespace, address):
        path = self.test.state_file('leases', namespace[len('qdhcp-'):])
        with open(path) as f:
            lines = f.readlines()
        with open(path, 'w') as f:
            f.writelines(line for line in lines if (' %s ' % address) not in line)

    def release_lease(self, namespace, device, ip_address, mac_address, client_id=None):
        self.calls.append((namespace, device, ip_address, mac_address, client_id))
        self.hups_seen.append(len(self.test.procs.hups))
        if self.drop:
            self._forget(namespace, ip_address)
        return self.returncode, '' if self.returncode == 0 else 'boom'

    def release_lease6(self, namespace, device, ip_address, iaid, client_duid,
                       server_duid):
        self.calls.append((namespace, device, ip_address, iaid, client_duid, server_duid))
        if self.drop:
            self._forget(namespace, ip_address)
        return self.returncode, ''


class DriverTestCase(base.TestCase):

    def setUp(self):
        super().setUp()
        dhcp_conf.register_dhcp_opts(self.conf)
        self.release = FakeRelease(self)
        self.which = {'dhcp_release': True, 'dhcp_release6': True}
        patch = fixtures.MockPatchObject
        self.useFixture(patch(dnsmasq_driver.dhcp_release, 'release_lease',
                              side_effect=self.release.release_lease))
        self.useFixture(patch(dnsmasq_driver.dhcp_release, 'release_lease6',
                              side_effect=self.release.release_lease6))
        self.useFixture(patch(dnsmasq_driver.shutil, 'which', side_effect=lambda name, path=None: (
            '/usr/bin/' + name if self.which.get(name, True) else None)))
        self.useFixture(patch(dnsmasq_driver, 'RELEASE_WAIT', 0.05))
        host = self.useFixture(fake_proc.FakeDaemonHost(dnsmasq_driver.DnsmasqDriver,
                                                        FakeProcesses))
        self.state_path = host.state_path
        self.procs = host.procs
        self.conf.set_override('state_path', self.state_path)
        self.conf.set_override('check_child_processes_interval', 0)
        self.hook_calls = []
        self.driver = self.new_driver()

    def new_driver(self):
        driver = dnsmasq_driver.DnsmasqDriver(conf=self.conf, host=HOST,
                                              interface_driver=mock.Mock())
        driver.metadata_hook = lambda net_id, ns, enabled: self.hook_calls.append(
            (net_id, ns, enabled))
        driver.initialize()
        self.addCleanup(driver.stop)
        return driver

    def state_file(self, name, network_id=NET_ID):
        return os.path.join(self.state_path, 'dhcp', network_id, name)

    def read(self, name, network_id=NET_ID):
        with open(self.state_file(name, network_id)) as f:
            return f.read()

    def expected_argv(self):
        return [a.replace('<state>/state', self.state_path) for a in REFERENCE_ARGV]


class TestDriver(DriverTestCase):

    def test_enable_writes_files_and_starts_in_namespace(self):
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        self.assertEqual([(self.expected_argv(), NAMESPACE)], self.procs.spawned)
        self.assertEqual(REFERENCE_HOST, self.read('host'))
        self.assertEqual(REFERENCE_ADDN_HOSTS, self.read('addn_hosts'))
        self.assertEqual(REFERENCE_OPTS, self.read('opts'))
        self.assertEqual(INTERFACE + '\n', self.read('interface'))
        self.assertIn(' fa:16:3e:70:e7:3b 192.168.10.207 * *\n', self.read('leases'))
        for name in ('host', 'addn_hosts', 'opts', 'interface'):
            mode = stat.S_IMODE(os.stat(self.state_file(name)).st_mode)
            self.assertEqual(0o644, mode, name)
        self.assertEqual(0o755, stat.S_IMODE(os.stat(self.state_file('.')).st_mode) & 0o755)
        self.assertEqual([], [n for n in os.listdir(self.state_file('.')) if n.startswith('.')])
        self.assertEqual({NET_ID}, self.driver.active_networks())
        self.assertEqual(4000, self.driver.pid(NET_ID))
        self.assertEqual([(NET_ID, NAMESPACE, False)], self.hook_calls)
        self.assertEqual({'dnsmasq_networks': 1, 'dnsmasq_skipped_ports': 0,
                          'dnsmasq_respawns': 0, 'dnsmasq_starts': 1, 'dnsmasq_restarts': 0,
                          'dnsmasq_reloads': 0, 'dnsmasq_adopted': 0,
                          'dnsmasq_leases_released': 0},
                         self.driver.get_configurations())

    def test_full_state_path_names_the_network_and_keeps_its_files(self):
        """A disk full (ENOSPC on every write): an error naming the network
        and its directory; nothing half-written, no dnsmasq started; once
        space returns the same call serves it."""
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        served_host = self.read('host')
        other_id = str(uuid.uuid4())
        other = json.loads(json.dumps(reference_network()).replace(NET_ID, other_id))
        other['ports'][0]['mac_address'] = 'fa:16:3e:00:00:42'
        full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        with mock.patch.object(files.fileutils, 'write_atomic', side_effect=full):
            exc = self.assertRaises(exceptions.StateWriteError, self.driver.serve,
                                    typed(other), NAMESPACE + 'x', INTERFACE)
            # A change to the served network fails the same way, naming it.
            changed = reference_network()
            changed['ports'][0]['mac_address'] = 'fa:16:3e:00:00:43'
            exc_served = self.assertRaises(exceptions.StateWriteError, self.driver.serve,
                                           typed(changed), NAMESPACE, INTERFACE)
        self.assertEqual(
            f'Network {other["id"]}: cannot write its DHCP files in '
            f'{self.state_path}/dhcp/{other["id"]}: No space left on device', str(exc))
        self.assertIn(NET_ID, str(exc_served))
        self.assertEqual(1, len(self.procs.spawned))  # only the first network's dnsmasq
        self.assertEqual(served_host, self.read('host'))  # the old file, whole
        self.assertEqual([], os.listdir(self.state_file('.', other_id)))
        # Space again: served.
        self.driver.serve(typed(other), NAMESPACE + 'x', INTERFACE)
        self.assertEqual(2, len(self.procs.spawned))
        self.assertIn('fa:16:3e:00:00:42', self.read('host', other['id']))

    def test_service_state_describes_the_server_and_its_entries(self):
        """What agentkit-doctor is shown: the live server and its host entries."""
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        state = self.driver.service_state(NET_ID)
        self.assertTrue(state.running)
        self.assertEqual((self.state_file('pid'), 4000),
                         (state.process.pid_file, state.process.pid))
        self.assertEqual(self.state_file('host'), state.host_file)
        self.assertEqual('fa:16:3e:70:e7:3b', state.hosts['192.168.10.207'])
        self.procs.remove(4000)  # killed: its pid file stays behind
        state = self.driver.service_state(NET_ID)
        self.assertFalse(state.running)
        self.assertEqual((4000, None), (state.process.pid, state.process.argv))
        other = self.driver.service_state(str(uuid.uuid4()))  # never served here
        self.assertEqual((False, None, {}), (other.running, other.process.pid, other.hosts))

    def test_unchanged_network_sends_no_sighup(self):
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        self.driver.reload(typed(reference_network()))
        self.assertEqual(1, len(self.procs.spawned))
        self.assertEqual([], self.procs.hups)
        self.assertEqual(external_process.DaemonAction.NONE, self.driver.last_action)

    def _reload_failing_after_the_host_file(self, driver, network):
        write = files.fileutils.write_atomic

        def only_the_host_file(path, *args, **kwargs):
            if not path.endswith('/host'):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return write(path, *args, **kwargs)

        with mock.patch.object(files.fileutils, 'write_atomic',
                               side_effect=only_the_host_file):
            self.assertRaises(exceptions.StateWriteError, driver.reload, typed(network))

    def _network_with_a_new_port(self):
        network = reference_network()
        network['ports'].append(make_port(str(uuid.uuid4()), 'fa:16:3e:00:00:42',
                                          [(SUBNET_ID, '192.168.10.42')]))
        return network

    def test_files_written_before_a_failed_write_are_still_signalled(self):
        """A write fails after others succeeded: the retry finds those files
        already new, and must still SIGHUP dnsmasq and judge leases against
        the owners from before the first attempt."""
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        pid = self.driver.pid(NET_ID)
        network = self._network_with_a_new_port()
        host_before = self.read('host')
        self._reload_failing_after_the_host_file(self.driver, network)
        self.assertIn('fa:16:3e:00:00:42', self.read('host'))  # new already
        self.assertEqual([], self.procs.hups)
        seen = []
        stale = dnsmasq_driver.leases.stale_leases
        with mock.patch.object(dnsmasq_driver.leases, 'stale_leases',
                               side_effect=lambda net, held, old: seen.append(old) or
                               stale(net, held, old)):
            self.driver.reload(typed(network))
        self.assertEqual([pid], self.procs.hups)
        self.assertEqual(1, len(seen))
        # The owners from before the change, not those of the new host file.
        with open(self.state_file('host.before'), 'w') as f:
            f.write(host_before)
        self.assertEqual(dnsmasq_driver.leases.read_host_macs(self.state_file('host.before')),
                         seen[0])
        self.assertNotIn(ipaddress.ip_address('192.168.10.42'), seen[0])
        self.driver.reload(typed(network))
        self.assertEqual([pid], self.procs.hups)  # done: no more signals

    def test_a_partial_write_on_adopting_after_a_restart_keeps_the_old_owners(self):
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        pid = self.driver.pid(NET_ID)
        restarted = self.new_driver()  # knows nothing of the running dnsmasq yet
        network = self._network_with_a_new_port()
        self._reload_failing_after_the_host_file(restarted, network)
        seen = []
        stale = dnsmasq_driver.leases.stale_leases
        with mock.patch.object(dnsmasq_driver.leases, 'stale_leases',
                               side_effect=lambda net, held, old: seen.append(old) or
                               stale(net, held, old)):
            restarted.serve(typed(network), NAMESPACE, INTERFACE)
        self.assertEqual([pid], self.procs.hups)
        self.assertEqual(1, len(self.procs.spawned))  # adopted, not restarted
        self.assertNotIn(ipaddress.ip_address('192.168.10.42'), seen[0])

    def test_new_port_is_a_sighup_with_the_same_pid(self):
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        pid = self.driver.pid(NET_ID)
        network = reference_network()
        network['ports'].append(make_port(str(uuid.uuid4()), 'fa:16:3e:00:00:42',
                                          [(SUBNET_ID, '192.168.10.42')]))
        self.driver.reload(typed(network))
        self.assertEqual([pid], self.procs.hups)
        self.assertEqual(pid, self.driver.pid(NET_ID))
        self.assertIn('fa:16:3e:00:00:42,host-192-168-10-42.openstacklocal,192.168.10.42\n',
                      self.read('host'))
        self.driver.reload(typed(network))
        self.assertEqual([pid], self.procs.hups)
        self.assertEqual(1, self.driver.get_configurations()['dnsmasq_reloads'])

    def test_new_subnet_restarts(self):
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        old = self.driver.pid(NET_ID)
        network = reference_network()
        network['subnets'].append(make_subnet(str(uuid.uuid4()), '10.30.0.0/24', '10.30.0.1'))
        self.driver.reload(typed(network))
        self.assertEqual([old], self.procs.terms)
        self.assertEqual(2, len(self.procs.spawned))
        new_argv = self.procs.spawned[1][0]
        self.assertEqual(2, len([a for a in new_argv if a.startswith('--dhcp-range')]))
        self.assertNotEqual(old, self.driver.pid(NET_ID))
        self.assertEqual(external_process.DaemonAction.RESTART, self.driver.last_action)

    def test_failed_sighup_is_retried_on_next_reload(self):
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        network = reference_network()
        network['ports'].pop(0)
        self.procs.fail_kill = 1
        self.assertRaises(exceptions.ProcessError, self.driver.reload, typed(network))
        self.assertEqual([], self.procs.hups)
        self.driver.reload(typed(network))  # files already on disk, signal still owed
        self.assertEqual([self.driver.pid(NET_ID)], self.procs.hups)

    def test_new_driver_adopts_running_dnsmasq(self):
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        pid = self.driver.pid(NET_ID)
        self.driver.stop()
        self.assertEqual([], self.procs.terms)
        second = self.new_driver()
        self.assertEqual({NET_ID}, second.active_networks())
        second.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        self.assertEqual(1, len(self.procs.spawned))
        self.assertEqual([], self.procs.hups)
        self.assertEqual(pid, second.pid(NET_ID))
        self.assertEqual(1, second.get_configurations()['dnsmasq_adopted'])

    def test_reload_before_enable_uses_recorded_interface(self):
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        second = self.new_driver()
        network = reference_network()
        network['ports'].pop(0)
        second.reload(typed(network))
        self.assertEqual([self.driver.pid(NET_ID)], self.procs.hups)
        other = reference_network()
        other['id'] = str(uuid.uuid4())
        for item in other['subnets'] + other['ports']:
            item['network_id'] = other['id']
        exc = self.assertRaises(exceptions.ProcessError, self.new_driver().reload,
                                typed(other))
        self.assertIn('never enabled', str(exc))

    def test_monitor_respawns_with_current_argv(self):
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        old = self.driver.pid(NET_ID)
        self.procs.remove(old)
        self.assertEqual(set(), self.driver.active_networks())
        respawned = self.driver.monitor.check_once()
        self.assertEqual(1, len(respawned))
        self.assertEqual(self.procs.spawned[0], self.procs.spawned[1])
        self.assertEqual({NET_ID}, self.driver.active_networks())
        self.assertEqual(1, self.driver.get_configurations()['dnsmasq_respawns'])

    def test_disable(self):
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        pid = self.driver.pid(NET_ID)
        self.driver.stop_serving(NET_ID)
        self.assertEqual([pid], self.procs.terms)
        self.assertFalse(os.path.exists(self.state_file('.')))
        self.assertEqual(set(), self.driver.active_networks())
        self.assertEqual([], self.driver.monitor.managers)
        self.assertEqual((NET_ID, NAMESPACE, False), self.hook_calls[-1])
        self.driver.stop_serving(NET_ID)  # idempotent
        self.assertRaises(exceptions.InvalidPayload, self.driver.disable, '../../etc')
        self.assertEqual(0, self.driver.get_configurations()['dnsmasq_networks'])

    def test_disable_of_network_left_by_previous_agent(self):
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        pid = self.driver.pid(NET_ID)
        second = self.new_driver()
        second.stop_serving(NET_ID)
        self.assertEqual([pid], self.procs.terms)
        self.assertFalse(os.path.exists(self.state_file('.')))

    def test_no_dhcp_subnet_stops_dnsmasq(self):
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        network = reference_network()
        network['subnets'][0]['enable_dhcp'] = False
        self.driver.reload(typed(network))
        self.assertEqual(1, len(self.procs.terms))
        self.assertEqual(set(), self.driver.active_networks())

    def test_active_networks_ignores_stale_and_foreign_entries(self):
        self.driver.serve(typed(reference_network()), NAMESPACE, INTERFACE)
        dhcp_root = os.path.join(self.state_path, 'dhcp')
        stale = str(uuid.uuid4())
        os.makedirs(os.path.join(dhcp_root, stale))
        with open(os.path.join(dhcp_root, stale, 'pid'), 'w') as f:
            f.write('%d\n' % self.driver.pid(NET_ID))  # a live pid, but not its dnsmasq
        os.makedirs(os.path.join(dhcp_root, 'not-a-network'))
        outside = self.useFixture(fixtures.TempDir()).path
        os.symlink(outside, os.path.join(dhcp_root, str(uuid.uuid4())))
        self.assertEqual({NET_ID}, self.driver.active_networks())
        self.assertIn('Ignoring DHCP state entry', self.log.output)

    def test_isolated_network_metadata(self):
        self.conf.set_override('enable_isolated_metadata', True)
        network = reference_network()
        network['ports'] = [p for p in network['ports'] if p['id'] != ROUTER_PORT]
        self.driver.serve(typed(network), NAMESPACE, INTERFACE)
        self.assertIn('169.254.169.254/32,192.168.10.2,', self.read('opts'))
        self.assertEqual([(NET_ID, NAMESPACE, True)], self.hook_calls)
        self.assertTrue(dnsmasq_render.needs_metadata_proxy(
            dhcp_payload.parse_network(network), dnsmasq_render.Settings.from_conf(self.conf)))

    def test_dhcp_port_found_by_interface_name(self):
        self.conf.set_override('enable_isolated_metadata', True)
        network = reference_network()
        network['ports'] = [p for p in network['ports'] if p['id'] != ROUTER_PORT]
        network['ports'][1]['device_id'] = 'dhcp-of-another-host'
        self.driver.serve(typed(network), NAMESPACE, 'ns-90212c69-7d')
        self.assertIn('169.254.169.254/32,192.168.10.2,', self.read('opts'))

    def test_bad_arguments(self):
        self.assertRaises(exceptions.InvalidPayload, self.driver.serve,
                          typed(reference_network()), '../etc', INTERFACE)
        self.assertRaises(exceptions.InvalidPayload, self.driver.serve,
                          typed(reference_network()), NAMESPACE, 'a-very-long-device-name')
        # A bad network is refused at the agent's edge, before any driver.
        self.assertRaises(exceptions.InvalidPayload, dhcp_payload.parse_network,
                          dict(reference_network(), id='x'))
        self.assertEqual([], self.procs.spawned)


class TestStatePath(base.TestCase):

    def setUp(self):
        super().setUp()
        dhcp_conf.register_dhcp_opts(self.conf)
        os.chmod(tempfile.gettempdir(), 0o755)
        self.tmp = self.useFixture(fixtures.TempDir()).path
        os.chmod(self.tmp, 0o755)

    def test_private_directory_is_refused(self):
        private = os.path.join(self.tmp, 'private')
        os.mkdir(private, 0o700)
        os.chmod(private, 0o700)
        self.conf.set_override('state_path', os.path.join(private, 'state'))
        driver = dnsmasq_driver.DnsmasqDriver(conf=self.conf, host=HOST,
                                              interface_driver=mock.Mock())
        exc = self.assertRaises(exceptions.InvalidConfiguration, driver.initialize)
        self.assertIn(private, str(exc))
        self.assertIn('nobody', str(exc))

    def test_symlink_into_private_directory_is_refused(self):
        private = os.path.join(self.tmp, 'private')
        os.makedirs(os.path.join(private, 'state'))
        os.chmod(private, 0o700)
        link = os.path.join(self.tmp, 'link')
        os.symlink(os.path.join(private, 'state'), link)
        self.assertRaises(exceptions.InvalidConfiguration, files.check_traversable, link)

    def test_traversable_directory_is_accepted(self):
        self.conf.set_override('state_path', os.path.join(self.tmp, 'state'))
        driver = dnsmasq_driver.DnsmasqDriver(conf=self.conf, host=HOST,
                                              interface_driver=mock.Mock())
        driver.initialize()
        self.assertTrue(os.path.isdir(os.path.join(self.tmp, 'state', 'dhcp')))

    def test_created_directories_are_traversable_under_strict_umask(self):
        old = os.umask(0o077)
        self.addCleanup(os.umask, old)
        state = os.path.join(self.tmp, 'a', 'b', 'state')
        self.conf.set_override('state_path', state)
        dnsmasq_driver.DnsmasqDriver(conf=self.conf, host=HOST,
                                     interface_driver=mock.Mock()).initialize()
        for path in (os.path.join(self.tmp, 'a'), state, os.path.join(state, 'dhcp')):
            self.assertEqual(0o755, stat.S_IMODE(os.stat(path).st_mode), path)

    def test_dns_forwarders_and_local_resolv_from_options(self):
        self.conf.set_override('dnsmasq_dns_servers', ['8.8.8.8', '2001:DB8::53#53'])
        s = dnsmasq_render.Settings.from_conf(self.conf)
        self.assertEqual(('8.8.8.8', '2001:db8::53#53'), s.dns_forwarders)
        net = dhcp_payload.parse_network(reference_network())
        argv = dnsmasq_render.build_argv(net, s)
        self.assertIn('--no-resolv', argv)
        self.assertEqual(['--conf-file=/dev/null', '--server=8.8.8.8',
                          '--server=2001:db8::53#53', '--domain=openstacklocal'], argv[-4:])
        # dnsmasq_local_resolv: the host's resolvers, unless forwarders are set.
        self.conf.set_override('dnsmasq_local_resolv', True)
        self.assertIn('--no-resolv', dnsmasq_render.build_argv(
            net, dnsmasq_render.Settings.from_conf(self.conf)))
        self.conf.clear_override('dnsmasq_dns_servers')
        argv = dnsmasq_render.build_argv(net, dnsmasq_render.Settings.from_conf(self.conf))
        self.assertNotIn('--no-resolv', argv)
        self.assertEqual([], [a for a in argv if a.startswith('--server')])

    def test_bad_options_are_refused(self):
        for bad in ('dns.example.org', '8.8.8.8#0', '8.8.8.8#x', '/exa mple/8.8.8.8',
                    '8.8.8.8 --x'):
            self.conf.set_override('dnsmasq_dns_servers', ['8.8.8.8', bad])
            self.assertRaises(exceptions.InvalidConfiguration, dnsmasq_render.Settings.from_conf,
                              self.conf)
        self.conf.clear_override('dnsmasq_dns_servers')
        self.conf.set_override('dnsmasq_config_file', 'relative.conf')
        self.assertRaises(exceptions.InvalidConfiguration, dnsmasq_render.Settings.from_conf,
                          self.conf)


class TestWriteFile(base.TestCase):

    def test_write_only_when_changed(self):
        tmp = self.useFixture(fixtures.TempDir()).path
        path = os.path.join(tmp, 'host')
        self.assertTrue(files.write_file_if_changed(path, 'a\n'))
        inode = os.stat(path).st_ino
        self.assertFalse(files.write_file_if_changed(path, 'a\n'))
        self.assertEqual(inode, os.stat(path).st_ino)
        os.chmod(path, 0o600)
        self.assertFalse(files.write_file_if_changed(path, 'a\n'))
        self.assertEqual(0o644, stat.S_IMODE(os.stat(path).st_mode))
        self.assertTrue(files.write_file_if_changed(path, 'b\n'))
        self.assertNotEqual(inode, os.stat(path).st_ino)  # replaced, not rewritten in place
        self.assertEqual(['host'], os.listdir(tmp))
