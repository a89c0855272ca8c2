"""agentkit-dhcp and agentkit-l3 at rest: audits ask, and change nothing.

Both agents run as processes against the fake server on RabbitMQ, which
records every call. 10 DHCP networks with a VM port each (plus the external
network, scheduled to the DHCP agent without a DHCP subnet, as
neutron-server does) and 5 routers with a gateway, an interface and a
floating IP each. Once everything is up and one audit of each agent has
passed, two more audits must send only their queries -- no DHCP port
released, no readiness reported again, no network fetched on its own, no
floating IP status sent -- and leave the host alone: same dnsmasq pids, no
dnsmasq file rewritten, no iptables record rewritten.
"""

import os
import re
import shutil
import uuid

import testtools.content

from agentkit.lib import external_process
from agentkit.lib import ip_lib
from agentkit.lib import naming
from tests.functional import base
from tests.functional import fake_neutron

STATE_ROOT = '/var/lib/agentkit-test'
AUDIT_INTERVAL = 3
AUDIT_DONE = 'Full sync (audit) done'
# What an agent at rest must never send during an audit.
NEVER_AT_REST = ('release_dhcp_port', 'dhcp_ready_on_ports', 'get_network_info',
                 'create_dhcp_port', 'update_dhcp_port', 'update_floatingip_statuses',
                 'update_ha_routers_states')
DHCP_QUERIES = ('get_active_networks_info',)
L3_QUERIES = ('get_router_ids', 'sync_routers')


def _mac():
    return 'fa:16:3e:%02x:%02x:%02x' % tuple(uuid.uuid4().bytes[:3])


def _nat_rules(namespace):
    import subprocess
    out = subprocess.run(['ip', 'netns', 'exec', namespace, 'iptables-save', '-t', 'nat'],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line for line in out.splitlines() if line.startswith('-A '))


class QuietAuditsTest(base.AgentTestCase):

    def setUp(self):
        self.useFixture(base.HostRouters())  # released last, after the kill
        super().setUp()
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        os.makedirs(STATE_ROOT, mode=0o755, exist_ok=True)
        os.chmod(STATE_ROOT, 0o755)  # dnsmasq reads its files as "nobody"
        self.dhcp_state = self._state_dir()
        self.l3_state = self._state_dir()
        self.dhcp_host = self.short_name('akqd')
        self.l3_host = self.short_name('akql')
        self.addCleanup(self.cleanup_host)

    def _state_dir(self):
        path = os.path.join(STATE_ROOT, uuid.uuid4().hex[:12])
        os.makedirs(path, mode=0o755)
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def cleanup_host(self):
        """After the agents were killed: remove what they built."""
        for net_id in list(self.neutron.networks):
            base.remove_dhcp_of(net_id)  # its dnsmasq and haproxy, its namespace
        for router_id in list(self.neutron.routers):
            ns = naming.router_namespace(router_id)
            if ns in ip_lib.list_namespaces():
                ip_lib.delete_namespace(ns)
        for net_id in list(self.neutron.networks):
            bridge = naming.bridge_name(net_id)
            if ip_lib.device_exists(bridge):
                ip_lib.IPDevice(bridge).delete()

    def start(self, command, host, state_path, **default):
        config = base.write_config(self.get_temp_path(f'{command}.ini'), {
            'DEFAULT': {'transport_url': self.neutron.transport_url, 'host': host,
                        'state_path': state_path, 'interface_driver': 'linuxbridge',
                        'check_child_processes_interval': 1, **default},
            'agent': {'report_interval': 5, 'audit_interval': AUDIT_INTERVAL},
        })
        proc = self.run_agent(command, config, host, self.neutron)
        self.addOnException(lambda exc_info: self.addDetail(
            f'{command}.log', testtools.content.text_content(proc.output())))
        return proc

    @staticmethod
    def audits(proc):
        return proc.output().count(AUDIT_DONE)

    def wait_audits(self, proc, count, what):
        start = self.audits(proc)
        base.wait_until(lambda: self.audits(proc) >= start + count,
                        timeout=AUDIT_INTERVAL * (count + 1) + 30,
                        message=f'{count} audit(s) of {what}')

    def host_state(self):
        """What an audit must leave as it is."""
        state = {}
        for net_id in self.dhcp_networks:
            state_dir = os.path.join(self.dhcp_state, 'dhcp', net_id)
            state[('pid', net_id)] = external_process.read_pid_file(
                os.path.join(state_dir, 'pid'))
            for name in ('host', 'addn_hosts', 'opts'):
                state[(name, net_id)] = os.stat(os.path.join(state_dir, name)).st_mtime_ns
        for router_id in self.router_ids:
            record = os.path.join(self.l3_state, 'l3-iptables', router_id + '.json')
            state[('iptables-record', router_id)] = os.stat(record).st_mtime_ns
            state[('nat', router_id)] = _nat_rules(naming.router_namespace(router_id))
        return state

    def calls_since(self, mark):
        with self.neutron.lock:
            return [(m, kw) for m, kw in self.neutron.calls[mark:] if m != 'report_state']

    def test_two_audits_at_rest_send_only_their_queries(self):
        ext = self.neutron.add_network()
        self.neutron.add_subnet(ext['id'], '172.31.240.0/24', '172.31.240.1',
                                enable_dhcp=False)
        self.dhcp_networks, vm_ports, subnets = [], [], []
        for i in range(10):
            net = self.neutron.add_network()
            subnet = self.neutron.add_subnet(net['id'], f'10.240.{i}.0/24', f'10.240.{i}.1')
            vm_ports.append(self.neutron.add_port(net['id'], _mac(),
                                                  [(subnet['id'], f'10.240.{i}.10')]))
            self.dhcp_networks.append(net['id'])
            subnets.append(subnet)
        self.router_ids = []
        for i in range(5):
            router = self.neutron.add_router(gateway_network=ext, interfaces=[subnets[i]],
                                             floating_ips=[vm_ports[i]], host=self.l3_host)
            self.router_ids.append(router['id'])

        dhcp_proc = self.start('agentkit-dhcp', self.dhcp_host, self.dhcp_state,
                               dhcp_driver='dnsmasq')
        l3_proc = self.start('agentkit-l3', self.l3_host, self.l3_state,
                             l3_driver='namespace', enable_metadata_proxy=False)

        # Settled: every VM port reported ready, every floating IP ACTIVE,
        # and one audit of each agent since.
        for port in vm_ports:
            self.neutron.wait_for_call('dhcp_ready_on_ports',
                                       lambda kw, p=port: p['id'] in kw['port_ids'],
                                       timeout=60)
        for router_id in self.router_ids:
            self.neutron.wait_for_call(
                'update_floatingip_statuses',
                lambda kw, r=router_id: (kw['router_id'] == r
                                         and set(kw['fip_statuses'].values()) == {'ACTIVE'}),
                timeout=60)
        self.wait_audits(dhcp_proc, 1, 'agentkit-dhcp')
        self.wait_audits(l3_proc, 1, 'agentkit-l3')
        before = self.host_state()
        mark = self.neutron.mark()
        dhcp_audits, l3_audits = self.audits(dhcp_proc), self.audits(l3_proc)

        self.wait_audits(dhcp_proc, 2, 'agentkit-dhcp')
        self.wait_audits(l3_proc, 2, 'agentkit-l3')
        calls = self.calls_since(mark)
        dhcp_audits = self.audits(dhcp_proc) - dhcp_audits
        l3_audits = self.audits(l3_proc) - l3_audits

        sent = [m for m, _ in calls]
        self.assertEqual([], [m for m in sent if m in NEVER_AT_REST], calls)
        self.assertEqual([], [m for m in sent if m not in DHCP_QUERIES + L3_QUERIES], calls)
        # One query per DHCP audit; get_router_ids and one sync_routers
        # chunk per L3 audit (an audit under way at the mark may add one).
        self.assertLessEqual(sent.count('get_active_networks_info'), dhcp_audits + 1)
        self.assertGreaterEqual(sent.count('get_active_networks_info'), dhcp_audits - 1)
        self.assertLessEqual(sent.count('get_router_ids'), l3_audits + 1)
        self.assertLessEqual(sent.count('sync_routers'), l3_audits + 1)
        self.assertGreaterEqual(sent.count('sync_routers'), l3_audits - 1)
        self.assertTrue(all(set(kw['router_ids']) == set(self.router_ids)
                            for m, kw in calls if m == 'sync_routers'), calls)
        self.assertEqual(before, self.host_state())
        # The dnsmasq processes are the ones that were running before.
        for net_id in self.dhcp_networks:
            self.assertTrue(os.path.exists(f'/proc/{before[("pid", net_id)]}'))
        self.addDetail('figures', testtools.content.text_content(
            f'in {dhcp_audits} DHCP audit(s): '
            f'{sent.count("get_active_networks_info")} get_active_networks_info; '
            f'in {l3_audits} L3 audit(s): {sent.count("get_router_ids")} get_router_ids, '
            f'{sent.count("sync_routers")} sync_routers; other calls: '
            f'{len([m for m in sent if m not in DHCP_QUERIES + L3_QUERIES])}'))
        self.assertNotRegex(dhcp_proc.output(), re.compile('Traceback'))
        self.assertNotRegex(l3_proc.output(), re.compile('Traceback'))
