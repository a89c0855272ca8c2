"""Quiet at rest under the real neutron-server 29: audits change nothing and report nothing.

The L2, DHCP and L3 agents run with a short ``[agent] audit_interval``.
Once a network with DHCP, three VMs and a router are built, every port has
been provisioned exactly once: neutron-server logs ``Attempt 1 to provision
port <id>`` each time an agent's report completes a port's provisioning
(ml2 ``_port_provisioned``), and an agent that reports a port again, or
fetches its details again (the server then moves it back to BUILD), shows
up there. Then two audits of every agent pass: no port is provisioned
again, every port stays ACTIVE, dnsmasq keeps its pid and its files, and
the router's iptables and nft rules do not change.
"""

import os
import re
import time

from tests.fullstack import base
from tests.fullstack.base import EVENT_TIMEOUT, namespace_addresses, wait_until
from tests.functional import base as functional_base

AUDIT_INTERVAL = 4
PROVISIONED = re.compile(r'Attempt 1 to provision port ([0-9a-f-]{36})')
PUSHED_DETAILS = re.compile(r'Details of \d+ port\(s\): (\d+) from pushed objects')


class QuietAtRestTest(base.OpenvswitchHost):

    def rpc_log(self):
        path = os.path.join(self.server.state_dir, 'log', 'rpc.log')
        with open(path, errors='replace') as f:
            return f.read()

    def provisioned(self, since):
        """Port id -> how often the server completed its provisioning after ``since``."""
        counts = {}
        for port_id in PROVISIONED.findall(self.rpc_log()[since:]):
            counts[port_id] = counts.get(port_id, 0) + 1
        return counts

    def audits(self, name):
        return self.agents[name].output().count('Full sync (audit) done')

    def test_audits_at_rest_change_and_report_nothing(self):
        log_start = len(self.rpc_log())
        audit = {'agent': {'audit_interval': AUDIT_INTERVAL}}
        self.start_agent('l2', {**self.l2_sections(), **audit,
                                'securitygroup': {'firewall_driver': 'iptables_hybrid'}})
        self.start_agent('dhcp', {**audit, 'DEFAULT': {'interface_driver': 'openvswitch',
                                                       'dhcp_driver': 'dnsmasq'}})
        self.start_agent('l3', {**audit, 'DEFAULT': {'interface_driver': 'openvswitch',
                                                     'l3_driver': 'namespace'}})
        self.wait_agents_alive([self.agent_type, 'DHCP agent', 'L3 agent'])

        net = self.create_network()
        subnet = self.api.create_subnet(network_id=net['id'], cidr='10.78.1.0/24',
                                        enable_dhcp=True, name=f'{self.prefix}-sub')
        wait_until(lambda: self.dnsmasq_pid(net['id']), EVENT_TIMEOUT, 'dnsmasq')
        vms = [self.add_vm(net, f'vm{i}') for i in range(3)]
        for vm, port in vms:
            vm.set_ip(port['fixed_ips'][0]['ip_address'] + '/24')
        router = self.api.create_router(name=f'{self.prefix}-r')
        self.addCleanup(self.cleanup_router, router['id'])
        self.api.add_router_interface(router['id'], subnet['id'])
        rns = f'qrouter-{router["id"]}'
        wait_until(lambda: any(d.startswith('qr-') for d in namespace_addresses(rns)),
                   EVENT_TIMEOUT, 'the router\'s qr- port')
        ports = self.api.list_ports(network_id=net['id'])
        self.assertEqual(5, len(ports), 'three VMs, the DHCP port, the router port')
        wait_until(lambda: all(self.api.show_port(p['id'])['status'] == 'ACTIVE'
                               for p in ports), EVENT_TIMEOUT, 'every port ACTIVE')
        for vm, port in vms:
            self.assertTrue(self.reaches(vm.name, subnet['gateway_ip']))

        # Built: each VM port was provisioned once (reported up once), and
        # the L2 agent wired ports from the objects the server pushed to it
        # rather than asking for their details.
        built = self.provisioned(log_start)
        self.assertEqual({port['id']: 1 for _, port in vms},
                         {port['id']: built.get(port['id'], 0) for _, port in vms})
        pushed = sum(int(n) for n in PUSHED_DETAILS.findall(self.agents['l2'].output()))
        self.assertGreater(pushed, 0, 'no port wired from pushed objects')

        # At rest: two audits of every agent later, nothing moved.
        settled = len(self.rpc_log())
        dnsmasq = self.dnsmasq_pid(net['id'])
        dhcp_dir = os.path.join(self.state_path, 'dhcp', 'dhcp', net['id'])
        files = {name: os.stat(os.path.join(dhcp_dir, name)).st_mtime_ns
                 for name in ('host', 'opts') if os.path.exists(os.path.join(dhcp_dir, name))}
        self.assertTrue(files, f'no dnsmasq files in {dhcp_dir}')
        rules = functional_base.netfilter_snapshot(rns)
        before = {name: self.audits(name) for name in ('l2', 'dhcp', 'l3')}
        t_rest = time.monotonic()
        wait_until(lambda: all(self.audits(n) >= before[n] + 2 for n in before),
                   6 * AUDIT_INTERVAL + EVENT_TIMEOUT, 'two audits of every agent')
        self.timings['two audits of every agent'] = time.monotonic() - t_rest
        self.assertEqual({}, self.provisioned(settled),
                         'ports provisioned again while nothing changed')
        self.assertEqual(['ACTIVE'] * len(ports),
                         [self.api.show_port(p['id'])['status'] for p in ports])
        self.assertEqual(dnsmasq, self.dnsmasq_pid(net['id']))
        self.assertEqual(files, {name: os.stat(os.path.join(dhcp_dir, name)).st_mtime_ns
                                 for name in files}, 'dnsmasq files rewritten')
        self.assertEqual(rules, functional_base.netfilter_snapshot(rns),
                         'the router\'s rules changed')
        for vm, port in vms:
            self.assertTrue(self.reaches(vm.name, subnet['gateway_ip']))
        self.report_timings()
        self.assert_logs_clean()
