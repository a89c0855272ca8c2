"""Every agentkit agent started on the configuration files of the Neutron 29
run (tests/fixtures/neutron29/etc/), the way Neutron's agents were started.

Only what must point at this test's world is rewritten: ``<state>``,
``transport_url`` (the fake server's RabbitMQ vhost), ``host`` and the
``nq`` prefix of bridge and patch port names; a check guards that the
option names and groups stay Neutron's. Each agent must come up with the
settings taken from Neutron's names: its state report, and what it built on
the host.
"""

import configparser
import os
import re
import shutil
import signal
import stat
import tempfile
import uuid

from oslo_config import cfg

from agentkit.conf import metadata as metadata_conf
from agentkit.lib import external_process
from agentkit.lib import ip_lib
from agentkit.lib.ovs import connection as ovs_connection
from tests.functional import agent_process
from tests.functional import base
from tests.functional import fake_neutron

FIXTURES = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'neutron29', 'etc')
FILES = ('neutron.conf', 'openvswitch_agent.ini', 'dhcp_agent.ini', 'l3_agent.ini',
         'metadata_agent.ini', 'ml2_conf.ini')
FALLBACK = 'unsupported_firewall_fallback = iptables_hybrid'


def _names(text: str) -> set[tuple[str, str]]:
    """(section, option) pairs of an ini text, as oslo.config reads them."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(text)
    pairs = {('DEFAULT', k) for k in parser.defaults()}
    for section in parser.sections():
        pairs |= {(section, k) for k in parser[section] if k not in parser.defaults()}
    return pairs


class NeutronConfigFilesTest(base.AgentTestCase):

    def setUp(self):
        super().setUp()
        self.configure(metadata_conf.register_metadata_opts, {})
        self.neutron = fake_neutron.FakeNeutron().start()
        self.addCleanup(self.neutron.stop)
        # Replaces the Neutron run's "nq": nqbr-int -> n1a2bbr-int (11 chars),
        # nqpatch-tun -> n1a2bpatch-tun (14, within IFNAMSIZ).
        self.prefix = 'n' + uuid.uuid4().hex[:4]
        self.host = self.short_name('aknc')
        # dnsmasq reads its files as "nobody": the state must be traversable.
        self.state = tempfile.mkdtemp(prefix='agentkit-nc-', dir='/var/tmp')
        os.chmod(self.state, 0o755)
        self.addCleanup(shutil.rmtree, self.state, True)
        os.makedirs(os.path.join(self.state, 'state'), mode=0o755)
        ovs = ovs_connection.get_connection()
        for suffix in ('br-int', 'br-tun', 'br-ex'):
            self.addCleanup(ovs.bridge(self.prefix + suffix).delete)
        self.etc = self.get_temp_path('etc')
        os.makedirs(self.etc, exist_ok=True)
        for name in FILES:
            self.write(name, self.rewrite(self.fixture(name)))

    # -- the files ----------------------------------------------------------
    @staticmethod
    def fixture(name):
        with open(os.path.join(FIXTURES, name)) as f:
            return f.read()

    def rewrite(self, text):
        text = text.replace('<state>', self.state)
        text = re.sub(r'^transport_url = .*$', f'transport_url = {self.neutron.transport_url}',
                      text, flags=re.M)
        text = re.sub(r'^host = .*$', f'host = {self.host}', text, flags=re.M)
        return re.sub(r'\bnq(br|patch)-', rf'{self.prefix}\1-', text)

    def write(self, name, text):
        with open(os.path.join(self.etc, name), 'w') as f:
            f.write(text)

    def without_kernel_datapath(self):
        """neutron.conf's [ovs] with this host's datapath, for the DHCP and
        L3 agents (the Neutron run set it in openvswitch_agent.ini only,
        which they do not read): this host has no OVS kernel module, and
        these tests run the agent without an L2 agent, so the openvswitch
        interface driver creates the integration bridge itself, with its
        own datapath (an existing bridge it leaves as the L2 agent made it)."""
        text = self.rewrite(self.fixture('neutron.conf'))
        self.assertIn('[ovs]\n', text)
        self.write('neutron.conf', text.replace('[ovs]\n', '[ovs]\ndatapath_type = netdev\n'))

    def start(self, command, *files):
        args = []
        for name in files:
            args += ['--config-file', os.path.join(self.etc, name)]
        proc = agent_process.AgentProcess(
            command, *args, log_path=self.get_temp_path(f'{command}.log'))
        self.addCleanup(proc.kill)
        return proc

    def wait_report(self, proc, timeout=60):
        try:
            kw = self.neutron.wait_for_call(
                'report_state',
                lambda kw: kw['agent_state']['agent_state']['host'] == self.host,
                timeout=timeout)
        except AssertionError:
            raise AssertionError(f'no state report; agent output:\n{proc.output()}')
        return kw['agent_state']['agent_state']

    def stop(self, proc):
        proc.signal(signal.SIGTERM)
        self.assertEqual(0, proc.wait(15), proc.output())

    def test_rewrite_keeps_neutron_option_names(self):
        for name in FILES:
            original = self.fixture(name)
            with open(os.path.join(self.etc, name)) as f:
                rewritten = f.read()
            self.assertEqual(_names(original), _names(rewritten), name)
            self.assertNotIn('<state>', rewritten)
            self.assertNotIn('nqbr-', rewritten)
        with open(os.path.join(self.etc, 'openvswitch_agent.ini')) as f:
            self.assertIn('firewall_driver = openvswitch', f.read())

    # -- L2 (openvswitch) ---------------------------------------------------
    def test_l2_openvswitch_agent_ini_as_is_is_refused(self):
        proc = self.start('agentkit-l2', 'neutron.conf', 'openvswitch_agent.ini')
        self.assertEqual(3, proc.wait(60), proc.output())
        out = proc.output()
        self.assertIn("[securitygroup] firewall_driver = openvswitch is Neutron's native "
                      "Open vSwitch firewall", out)
        self.assertIn('which agentkit does not implement', out)
        self.assertIn("agentkit's firewall drivers: iptables_hybrid, noop", out)
        self.assertIn('[securitygroup] unsupported_firewall_fallback', out)
        # Refused before touching the host or reporting to the server.
        self.assertFalse(ovs_connection.get_connection().bridge(self.prefix + 'br-int').exists())
        self.assertEqual([], [kw for kw in self.neutron.calls_of('report_state')
                              if kw['agent_state']['agent_state']['host'] == self.host])

    def test_l2_with_fallback_starts_with_iptables_hybrid(self):
        # iptables_hybrid owns the host's neutron-openvswi-* chains: held
        # until the agent is killed (cleanups run last-in first-out).
        self.useFixture(base.HostFirewallChains(cfg.CONF))
        ini = self.rewrite(self.fixture('openvswitch_agent.ini'))
        self.assertIn('[securitygroup]\n', ini)
        self.write('openvswitch_agent.ini',
                   ini.replace('[securitygroup]\n', f'[securitygroup]\n{FALLBACK}\n'))
        proc = self.start('agentkit-l2', 'neutron.conf', 'openvswitch_agent.ini')
        state = self.wait_report(proc)
        conf = state['configurations']
        self.assertEqual('Open vSwitch agent', state['agent_type'])
        # [ovs] bridge_mappings, [ovs] local_ip, [agent] tunnel_types,
        # [ovs] integration_bridge / datapath_type, all from the files.
        self.assertEqual({'nqext': self.prefix + 'br-ex'}, conf['bridge_mappings'])
        self.assertEqual(['vxlan'], conf['tunnel_types'])
        self.assertEqual('127.0.0.1', conf['tunneling_ip'])
        self.assertEqual(self.prefix + 'br-int', conf['integration_bridge'])
        self.assertEqual('netdev', conf['datapath_type'])
        self.assertFalse(conf['l2_population'])
        # The fallback firewall is what the agent runs: VMs get hybrid-plugged.
        self.assertTrue(conf['ovs_hybrid_plug'])
        out = proc.output()
        self.assertIn("firewall_driver = openvswitch is Neutron's native Open vSwitch "
                      "firewall (OpenFlow rules on br-int), which agentkit does not "
                      "implement; falling back to 'iptables_hybrid'", out)
        self.assertRegex(out, r'WARNING .*falling back')
        self.assertIn('Option "bridge_mappings" from group "ovs" is deprecated', out)
        self.assertIn('Option "tunnel_types" from group "agent" is deprecated', out)
        # The bridges and patch ports named in the file exist.
        ovs = ovs_connection.get_connection()
        br_int = ovs.bridge(self.prefix + 'br-int')
        self.assertTrue(br_int.exists())
        self.assertEqual('netdev', br_int.get_datapath_type())
        self.assertIn(self.prefix + 'patch-tun', br_int.get_port_names())
        self.assertIn(self.prefix + 'patch-int',
                      ovs.bridge(self.prefix + 'br-tun').get_port_names())
        self.assertTrue(ovs.bridge(self.prefix + 'br-ex').exists())
        self.neutron.wait_for_call(
            'tunnel_sync', lambda kw: kw['tunnel_ip'] == '127.0.0.1'
            and kw['tunnel_type'] == 'vxlan')
        self.assertIn("Loaded agentkit.firewall_drivers driver 'iptables_hybrid'", out)
        self.stop(proc)

    # -- L2 (linuxbridge) ---------------------------------------------------
    def test_l2_linuxbridge_agent_ini(self):
        """A linuxbridge_agent.ini as Neutron <= 2024.2 read it (neutron 29 has
        no linuxbridge agent, so the run had none: written here in its
        format), plus the one line agentkit needs to pick the switch."""
        self.useFixture(base.HostFirewallChains(cfg.CONF))
        self.write('linuxbridge_agent.ini', '\n'.join([
            '[linux_bridge]', 'physical_interface_mappings = nqext:lo',
            '[vxlan]', 'enable_vxlan = true', 'local_ip = 127.0.0.1',
            'l2_population = true', 'udp_dstport = 8472',
            '[agent]', 'extensions =',
            '[securitygroup]', 'enable_security_group = true',
            'firewall_driver = neutron.agent.linux.iptables_firewall.IptablesFirewallDriver',
            '']))
        self.write('agentkit-linuxbridge.ini', '[l2]\nmechanism_driver = linuxbridge\n')
        proc = self.start('agentkit-l2', 'neutron.conf', 'linuxbridge_agent.ini',
                          'agentkit-linuxbridge.ini')
        state = self.wait_report(proc)
        conf = state['configurations']
        self.assertEqual('Linux bridge agent', state['agent_type'])
        self.assertEqual({'nqext': 'lo'}, conf['interface_mappings'])
        # enable_vxlan + [vxlan] local_ip; type_drivers unset: the
        # mechanism's types, no "gre" refusal.
        self.assertEqual(['vxlan'], conf['tunnel_types'])
        self.assertEqual('127.0.0.1', conf['tunneling_ip'])
        self.assertEqual(['flat', 'vlan', 'vxlan'], conf['network_types'])
        self.assertFalse(conf['l2_population'])
        out = proc.output()
        self.assertIn("Neutron's L2 population is not implemented", out)
        self.assertIn('firewall_driver = neutron.agent.linux.iptables_firewall.'
                      "IptablesFirewallDriver is Neutron's class path; using "
                      "agentkit's 'iptables_hybrid'", out)
        self.assertIn('Option "udp_dstport" from group "vxlan" is deprecated', out)
        self.neutron.wait_for_call('tunnel_sync', lambda kw: kw['host'] == self.host
                                   and kw['tunnel_type'] == 'vxlan')
        self.stop(proc)

    # -- DHCP ---------------------------------------------------------------
    def test_dhcp_agent_with_neutron_class_path_serves_dnsmasq(self):
        net = self.neutron.add_network()
        self.neutron.add_subnet(net['id'], '10.253.9.0/24', '10.253.9.1')
        self.addCleanup(self.cleanup_network, net['id'])
        self.without_kernel_datapath()
        proc = self.start('agentkit-dhcp', 'neutron.conf', 'dhcp_agent.ini')
        state = self.wait_report(proc)
        self.assertEqual('DHCP agent', state['agent_type'])
        self.assertEqual('openvswitch', state['configurations']['interface_driver'])
        self.assertIn("dhcp_driver = neutron.agent.linux.dhcp.Dnsmasq is Neutron's "
                      "class path; using agentkit's 'dnsmasq'", proc.output())
        state_path = os.path.join(self.state, 'state')  # neutron.conf's state_path
        dnsmasq = base.wait_until(
            lambda: external_process.read_pid_file(
                os.path.join(state_path, 'dhcp', net['id'], 'pid')),
            timeout=30, message=f'dnsmasq for {net["id"]}\n{proc.output()}')
        argv = external_process.read_cmdline(dnsmasq) or []
        self.assertTrue(argv and os.path.basename(argv[0]) == 'dnsmasq', argv)
        self.assertIn(f'qdhcp-{net["id"]}', ip_lib.list_namespaces())
        # The DHCP port is on neutron.conf's [ovs] integration_bridge.
        ports = ovs_connection.get_connection().bridge(self.prefix + 'br-int').get_port_names()
        self.assertTrue(any(p.startswith('tap') for p in ports), ports)
        # enable_isolated_metadata = true: a proxy serves the routerless network.
        proxy = base.wait_until(
            lambda: external_process.read_pid_file(
                os.path.join(state_path, 'metadata-proxy', net['id'] + '.pid')),
            timeout=30, message='isolated metadata proxy')
        self.assertTrue(os.path.exists(f'/proc/{proxy}'))
        self.stop(proc)

    def cleanup_network(self, net_id):
        base.remove_dhcp_of(net_id)

    # -- L3 -----------------------------------------------------------------
    def test_l3_agent(self):
        self.without_kernel_datapath()
        proc = self.start('agentkit-l3', 'neutron.conf', 'l3_agent.ini')
        state = self.wait_report(proc)
        self.assertEqual('L3 agent', state['agent_type'])
        self.assertEqual('legacy', state['configurations']['agent_mode'])
        self.assertEqual('openvswitch', state['configurations']['interface_driver'])
        self.neutron.wait_for_call('get_router_ids', lambda kw: kw['host'] == self.host)
        self.stop(proc)

    # -- metadata -----------------------------------------------------------
    def test_metadata_agent(self):
        proc = self.start('agentkit-metadata', 'neutron.conf', 'metadata_agent.ini')
        state = self.wait_report(proc)
        self.assertEqual('Metadata agent', state['agent_type'])
        socket_path = os.path.join(self.state, 'state', 'metadata_proxy')
        conf = state['configurations']
        self.assertEqual(socket_path, conf['metadata_proxy_socket'])
        self.assertEqual('127.0.0.1', conf['nova_metadata_host'])
        self.assertEqual(42087, conf['nova_metadata_port'])
        base.wait_until(lambda: os.path.exists(socket_path), message='metadata socket')
        self.assertTrue(stat.S_ISSOCK(os.stat(socket_path).st_mode))
        self.stop(proc)
