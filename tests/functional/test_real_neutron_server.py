"""agentkit under the real neutron-server 29 (PyPI neutron), end to end.

The server (tools/neutron-server.sh: MariaDB, the WSGI API under uWSGI,
neutron-rpc-server, neutron-periodic-workers) runs ML2 with the openvswitch
and agentkit_linuxbridge mechanism drivers and vxlan tenant networks;
agentkit-l2, agentkit-dhcp and agentkit-l3 run as processes against its
RabbitMQ vhost under a unique host name, with the ``iptables_hybrid``
firewall and the project's default security group. Everything is driven
through the REST API only, as a user and nova would: no fake server, no
hand-written RPC; what is checked is on the host and in real packets.
Skips only when MariaDB or the neutron venv cannot be installed.

Both mechanisms run the same scenario: two VMs get leases and reach each
other and their router (the default group lets members in), a host outside
the group cannot connect until a rule added through the API opens the port,
and removing the rule cuts the session that rule had let in (conntrack).
"""

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

from oslo_config import cfg
from testtools import content

from agentkit.lib import external_process
from agentkit.lib import ip_lib
from agentkit.lib import naming
from agentkit.lib import ovs_lib
from tests.functional import agent_process
from tests.functional import base
from tests.functional import fake_nova
from tests.functional import neutron_server
from tests.functional import traffic
from tests.functional import vm as fake_vm

STATE_ROOT = '/var/lib/agentkit-test'
PHYSNET = 'aknsext'  # the server's flat/vlan physical network
AGENT_TIMEOUT = 60
# Log lines of known, explained agentkit issues this test tolerates (none
# today); any other WARNING/ERROR from agentkit fails it.
KNOWN_ISSUES: dict[str, re.Pattern] = {}
EVENT_TIMEOUT = 60
METADATA_URL = 'http://169.254.169.254'


def wait_until(predicate, timeout, what, interval=0.1):
    return base.wait_until(predicate, timeout, what, interval)


def run(*argv, check=True):
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f'{" ".join(argv)}: {proc.stderr.strip()}')
    return proc


def namespace_addresses(namespace):
    """{device: [cidr, ...]} of the IPv4 addresses inside ``namespace``."""
    proc = run('ip', 'netns', 'exec', namespace, 'ip', '-o', '-4', 'addr', 'show',
               check=False)
    result = {}
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[2] == 'inet':
            result.setdefault(fields[1], []).append(fields[3])
    return result


class NetfilterSnapshots:
    """Snapshots of a namespace's iptables and nft rules every 0.5 s, in a thread.

    ``changes`` lists the snapshots (by number) that differed from the first.
    """

    def __init__(self, namespace, interval=0.5):
        self.namespace = namespace
        self.first = base.netfilter_snapshot(namespace)
        self.changes, self.taken = [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval):
        while not self._stop.wait(interval):
            self.taken += 1
            if base.netfilter_snapshot(self.namespace) != self.first:
                self.changes.append(self.taken)

    def stop(self):
        """Stop; how many snapshots were taken."""
        self._stop.set()
        self._thread.join(10)
        return self.taken


class RealNeutronServerTestBase(base.FunctionalTestCase):
    """The scenario; subclasses say how the mechanism is configured and VMs plugged."""

    mechanism = ''
    agent_type = ''

    def setUp(self):
        # Taken first, so it is released last: after the agents were killed.
        self.useFixture(base.HostFirewallChains(cfg.CONF))
        self.useFixture(base.HostRouters())
        super().setUp()
        try:  # once per process; the fixture below reuses the result
            neutron_server.get_server()
        except neutron_server.Unavailable as exc:
            self.skipTest(str(exc))
        server = self.useFixture(neutron_server.NeutronServerFixture())
        self.server = server.server
        self.timings = {'server setup (this process)': self.server.setup_seconds}
        self.api = server.client(uuid.uuid4().hex)
        self.prefix = 'aknb' + uuid.uuid4().hex[:6]
        self.host = self.prefix + '-host'
        self.br_int = self.prefix + 'i'
        self.br_tun = self.prefix + 't'
        self.br_ex = self.prefix + 'e'
        self.agents, self.configs, self.all_procs = {}, {}, []
        self.addOnException(self._attach_logs)

        os.makedirs(STATE_ROOT, mode=0o755, exist_ok=True)
        os.chmod(STATE_ROOT, 0o755)  # dnsmasq reads its files as "nobody"
        self.state_path = os.path.join(STATE_ROOT, self.prefix)
        os.makedirs(self.state_path, mode=0o755)
        self.addCleanup(shutil.rmtree, self.state_path, True)
        # Metadata proxies outlive their agents by design; not this test.
        self.addCleanup(self._kill_daemons, 'haproxy')
        self.logdir = self.get_temp_dir()

        self.ovs = ovs_lib.get_connection()
        for br in (self.br_int, self.br_tun, self.br_ex):
            self.addCleanup(run, 'ovs-vsctl', '--if-exists', 'del-br', br, check=False)
        # The provider bridge exists before the agent, as on a real host.
        self.ovs.bridge(self.br_ex, 'netdev').create()
        self._forget_dead_agents()

    # -- helpers ---------------------------------------------------------------
    def get_temp_dir(self):
        import tempfile
        d = tempfile.mkdtemp(prefix=f'{self.prefix}-')
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def _forget_dead_agents(self):
        """Agents and resources of earlier runs must not reach this run's agents.

        The server keeps its database between runs, and it schedules every
        network without a live DHCP agent to the next one that reports:
        networks an interrupted run left behind would land on this run's
        agent, next to their old dnsmasq.
        """
        for agent in self.api.list_agents():
            if agent['host'].startswith('aknb') and not agent['alive']:
                self.api.delete('agents', agent['id'])
        for router in self.api.request('GET', '/v2.0/routers')['routers']:
            if router['name'].startswith('aknb'):
                self.cleanup_router(router['id'])
        for net in self.api.request('GET', '/v2.0/networks')['networks']:
            if net['name'].startswith('aknb'):
                for port in self.api.list_ports(network_id=net['id']):
                    if not port['device_owner'].startswith('network:'):
                        self.api.delete('ports', port['id'])
                self.cleanup_network(net['id'])

    def _kill_daemons(self, name):
        for pid in base.pids_with(self.state_path):
            if name in ' '.join(external_process.read_cmdline(pid) or []):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _attach_logs(self, exc_info):
        for name in os.listdir(self.logdir):
            if name.endswith('.log'):
                with open(os.path.join(self.logdir, name), errors='replace') as f:
                    self.addDetail(name, content.text_content(f.read()[-60000:]))
        for name in ('api', 'rpc', 'periodic'):
            self.addDetail(f'server-{name}.log',
                           content.text_content(self.server.log_tail(name, 150)))

    def write_config(self, name, sections):
        common = {'transport_url': self.server.transport_url, 'host': self.host,
                  'state_path': os.path.join(self.state_path, name), 'debug': False,
                  # The proxies of the DHCP and L3 agents reach the metadata agent.
                  'metadata_proxy_socket': os.path.join(self.state_path, 'metadata_proxy')}
        sections = {k: dict(v) for k, v in sections.items()}
        sections['DEFAULT'] = {**common, **sections.get('DEFAULT', {})}
        sections.setdefault('agent', {}).setdefault('report_interval', 5)
        os.makedirs(sections['DEFAULT']['state_path'], mode=0o755, exist_ok=True)
        ovs = sections.setdefault('ovs', {})
        ovs.update({'integration_bridge': self.br_int, 'datapath_type': 'netdev'})
        return base.write_config(os.path.join(self.logdir, f'{name}.ini'), sections)

    def start_agent(self, name, sections=None):
        """agentkit-<name>; ``sections`` the first time, the same config after."""
        if sections is not None:
            self.configs[name] = self.write_config(name, sections)
        run_no = sum(1 for p in self.all_procs if p.name == name) + 1
        proc = agent_process.AgentProcess(
            f'agentkit-{name}', '--config-file', self.configs[name],
            log_path=os.path.join(self.logdir, f'{name}-{run_no}.log'))
        proc.name = name
        self.addCleanup(self._stop_agent, proc)
        self.agents[name] = proc
        self.all_procs.append(proc)
        return proc

    def _stop_agent(self, proc):
        proc.kill()
        for agent in self.api.list_agents(host=self.host):
            self.api.delete('agents', agent['id'])

    def wait_agents_alive(self, agent_types):
        def alive():
            agents = {a['agent_type']: a for a in self.api.list_agents(host=self.host)}
            if all(t in agents and agents[t]['alive'] for t in agent_types):
                return agents
            for name, proc in self.agents.items():
                if proc.proc.poll() is not None:
                    raise AssertionError(f'agentkit-{name} exited ({proc.proc.returncode})')
            return None
        return wait_until(alive, AGENT_TIMEOUT, f'agents {agent_types} alive on {self.host}',
                          interval=0.5)

    def dnsmasq_pid(self, net_id):
        pid = external_process.read_pid_file(
            os.path.join(self.state_path, 'dhcp', 'dhcp', net_id, 'pid'))
        if pid and os.path.exists(f'/proc/{pid}'):
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                if b'dnsmasq' in f.read():
                    return pid
        return None

    def port_status(self, port_id, status):
        port = self.api.show_port(port_id)
        return port if port['status'] == status else None

    def cleanup_network(self, net_id):
        try:
            self.api.delete('networks', net_id)
        finally:
            # Whatever dnsmasq serves the network (also an earlier run's).
            for pid in base.pids_with(f'qdhcp-{net_id}') + base.pids_with(net_id):
                if 'dnsmasq' in ' '.join(external_process.read_cmdline(pid) or []):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            ns = ip_lib.IPWrapper(f'qdhcp-{net_id}')
            if ns.namespace_exists():
                ns.delete_namespace()

    def cleanup_router(self, router_id):
        router = self.api.request('GET', f'/v2.0/routers/{router_id}', ok=(200, 404))
        if router:
            for fip in self.api.request(
                    'GET', f'/v2.0/floatingips?router_id={router_id}')['floatingips']:
                self.api.delete('floatingips', fip['id'])
            for port in self.api.list_ports(device_id=router_id,
                                            device_owner='network:router_interface'):
                for ip in port['fixed_ips']:
                    self.api.remove_router_interface(router_id, ip['subnet_id'])
            self.api.delete('routers', router_id)
        ns = ip_lib.IPWrapper(naming.router_namespace(router_id))
        if ns.namespace_exists():
            ns.delete_namespace()

    def create_network(self, **attrs):
        net = self.api.create_network(name=f'{self.prefix}-net', **attrs)
        self.addCleanup(self.cleanup_network, net['id'])
        return net

    def timed(self, name, since, predicate, timeout, what):
        value = wait_until(predicate, timeout, what)
        self.timings[name] = time.monotonic() - since
        return value

    def assert_logs_clean(self):
        """Nothing the real server sent was rejected, retried or failed.

        agentkit logs a rejected payload, a failed RPC handler or driver
        operation, a failed state report or sync at ERROR or WARNING; the
        retries and resyncs behind them could otherwise hide a contract
        mismatch behind a passing end result.
        """
        problems, known = [], set()
        for proc in self.all_procs:
            for line in proc.output().splitlines():
                if 'privsep log:' in line:  # a helper's stderr, relayed
                    continue
                if (re.search(r' (ERROR|CRITICAL) ', line) or 'Traceback' in line
                        or re.search(r' WARNING (agentkit|drivers)\.', line)):
                    issue = next((k for k, r in KNOWN_ISSUES.items() if r.search(line)), None)
                    if issue:
                        known.add(issue)
                    else:
                        problems.append(f'{os.path.basename(proc.log_path)}: {line}')
        if known:
            sys.stderr.write(f'known agentkit issues seen: {", ".join(sorted(known))}\n')
            self.addDetail('known-issues', content.text_content('\n'.join(sorted(known))))
        self.assertEqual([], problems, 'agentkit logged problems under the real server')

    def report_timings(self):
        text = '\n'.join(f'  {k}: {v:.2f} s' if isinstance(v, float) else f'  {k}: {v}'
                         for k, v in self.timings.items())
        if self.server.script_log.strip():  # the steps of a server start
            text += '\n  tools/neutron-server.sh:\n' + '\n'.join(
                '    ' + line for line in self.server.script_log.strip().splitlines())
        self.addDetail('timings', content.text_content(text))
        sys.stderr.write(f'\n{self.id()} timings (real neutron-server '
                         f'{self.server.api_url}):\n{text}\n')
        sys.stderr.flush()

    # -- what a mechanism provides ------------------------------------------------
    def l2_sections(self):
        """The agentkit-l2 configuration besides the firewall."""
        raise NotImplementedError

    interface_driver = ''

    def plug(self, vm, port):
        """Plug ``vm`` for ``port`` as nova/os-vif would on this mechanism."""
        raise NotImplementedError

    def unplug(self, vm):
        raise NotImplementedError

    def check_binding(self, port):
        """The server bound the port for this mechanism."""
        raise NotImplementedError

    # -- helpers of the scenario ----------------------------------------------------
    def add_vm(self, net, name):
        port = self.api.create_port(
            network_id=net['id'], name=f'{self.prefix}-{name}',
            device_owner='compute:nova', device_id=str(uuid.uuid4()),
            **{'binding:host_id': self.host})
        self.check_binding(port)
        self.assertEqual('DOWN', port['status'])
        # Before the network's cleanup: a port left would keep the network.
        self.addCleanup(self.api.delete, 'ports', port['id'])
        vm = fake_vm.FakeVM(self.prefix + name, port['id'], port['mac_address'],
                            mtu=net['mtu'])
        self.addCleanup(vm.destroy)
        self.addCleanup(self.unplug, vm)
        t_plug = time.monotonic()
        self.plug(vm, port)
        self.timed(f'{name} plug -> port ACTIVE', t_plug,
                   lambda: self.port_status(port['id'], 'ACTIVE'),
                   EVENT_TIMEOUT, f'the {name} port ACTIVE')
        return vm, port

    def reaches(self, namespace, address, timeout=10.0):
        """One ping gets through within ``timeout`` (rules apply asynchronously)."""
        try:
            wait_until(lambda: fake_vm.ping(namespace, address, count=1, wait=1),
                       timeout, f'{namespace} -> {address}', interval=0.2)
            return True
        except AssertionError:
            return False

    # -- the scenario ---------------------------------------------------------------
    def run_scenario(self):
        t0 = time.monotonic()
        self.start_agent('l2', {
            **self.l2_sections(),
            'securitygroup': {'firewall_driver': 'iptables_hybrid'},
        })
        self.start_agent('dhcp', {
            'DEFAULT': {'interface_driver': self.interface_driver, 'dhcp_driver': 'dnsmasq',
                        'check_child_processes_interval': 1,
                        'enable_isolated_metadata': True},
        })
        self.start_agent('l3', {
            'DEFAULT': {'interface_driver': self.interface_driver, 'l3_driver': 'namespace',
                        'check_child_processes_interval': 1},
        })
        secret = uuid.uuid4().hex
        nova = fake_nova.FakeNova(secret).start()
        self.addCleanup(nova.stop)
        self.start_agent('metadata', {
            'DEFAULT': {'nova_metadata_host': '127.0.0.1', 'nova_metadata_port': nova.port,
                        'metadata_proxy_shared_secret': secret},
        })
        agents = self.wait_agents_alive([self.agent_type, 'DHCP agent', 'L3 agent',
                                         'Metadata agent'])
        self.timings['agent start -> all alive in GET /v2.0/agents'] = time.monotonic() - t0
        self.assertEqual('agentkit-l2', agents[self.agent_type]['binary'])
        self.assertEqual('agentkit-dhcp', agents['DHCP agent']['binary'])
        self.assertEqual('agentkit-l3', agents['L3 agent']['binary'])
        self.assertEqual(['vxlan'], agents[self.agent_type]['configurations']['tunnel_types'])

        # -- a tenant network with DHCP: scheduled to agentkit-dhcp ----------
        net = self.create_network()
        self.assertEqual('vxlan', net['provider:network_type'])
        cidr_net = f'10.{random.randint(100, 250)}.{random.randint(0, 255)}'
        t_subnet = time.monotonic()
        subnet = self.api.create_subnet(network_id=net['id'], cidr=f'{cidr_net}.0/24',
                                        enable_dhcp=True, name=f'{self.prefix}-sub')
        self.timings['subnet POST (API)'] = time.monotonic() - t_subnet
        hosting = wait_until(lambda: self.api.dhcp_agents_hosting(net['id']), 30,
                             'the network scheduled to a DHCP agent')
        self.assertEqual([self.host], [a['host'] for a in hosting])
        ns = f'qdhcp-{net["id"]}'

        def dhcp_served():
            if not self.dnsmasq_pid(net['id']):
                return None
            addrs = namespace_addresses(ns)
            return next((dev for dev, cidrs in addrs.items()
                         if any(c.startswith(cidr_net + '.') for c in cidrs)), None)
        dhcp_dev = self.timed('subnet POST -> dnsmasq up, port with IP in qdhcp-',
                              t_subnet, dhcp_served, EVENT_TIMEOUT, f'dnsmasq and port in {ns}')
        dhcp_ports = self.api.list_ports(network_id=net['id'], device_owner='network:dhcp')
        self.assertEqual(1, len(dhcp_ports))
        dhcp_port = dhcp_ports[0]
        self.assertEqual(dhcp_port['id'][:11], dhcp_dev[-11:])
        self.assertEqual(self.host, dhcp_port['binding:host_id'])
        dhcp_ip = dhcp_port['fixed_ips'][0]['ip_address']
        self.timed('subnet POST -> DHCP port ACTIVE', t_subnet,
                   lambda: self.port_status(dhcp_port['id'], 'ACTIVE'),
                   EVENT_TIMEOUT, 'the DHCP port ACTIVE (wired by agentkit-l2)')

        # -- two VMs in the project's default security group ---------------------
        vm1, port1 = self.add_vm(net, 'vm1')
        vm2, port2 = self.add_vm(net, 'vm2')
        default_sg = port1['security_groups']
        self.assertEqual(1, len(default_sg), 'the port is in the default group')
        vm1_ip = port1['fixed_ips'][0]['ip_address']
        vm2_ip = port2['fixed_ips'][0]['ip_address']
        t_dhcp = time.monotonic()
        lease = fake_vm.DhcpClient(vm1, self.get_temp_dir()).request(timeout=20)
        self.timings['dhclient -> lease (through the firewall)'] = time.monotonic() - t_dhcp
        self.assertIsNotNone(lease, 'the VM got no DHCP lease')
        self.assertEqual(vm1_ip, lease['new_ip_address'])
        self.assertEqual(subnet['gateway_ip'], lease.get('new_routers'))
        self.assertEqual(str(net['mtu']), lease.get('new_interface_mtu'))
        vm1.set_ip(f'{vm1_ip}/24')
        vm2.set_ip(f'{vm2_ip}/24')
        # -- metadata on the isolated network: the DHCP namespace's proxy ------
        for vm, port in ((vm1, port1), (vm2, port2)):
            nova.instances[port['device_id']] = port['project_id']
        self.assertIn(f'169.254.169.254/32,{dhcp_ip}',
                      self.classless_routes(lease), 'no metadata route via the DHCP port')
        self.route_metadata(vm1, dhcp_ip)
        t_md = time.monotonic()
        self.assertEqual(port1['device_id'], self.instance_id(vm1))
        self.timings['metadata GET (isolated network, first)'] = time.monotonic() - t_md
        self.assertTrue(self.proxy_pid(net['id']), 'no metadata proxy for the network')
        # The filter is in force: the port has chains with the group's rules.
        chain = self.firewall_chain('i', port1['id'])
        self.assertIn('--match-set', chain, 'no rule of the default group on the port')
        # The default group lets its members in (and everything out).
        self.assertTrue(self.reaches(vm1.name, vm2_ip), 'VM1 cannot reach VM2')
        self.assertTrue(self.reaches(vm2.name, vm1_ip), 'VM2 cannot reach VM1')
        # The DHCP port is not a member: its namespace stands for a host
        # outside the group, which the closed default keeps out.
        self.assertTrue(fake_vm.ping(vm1.name, dhcp_ip), 'VM cannot reach the DHCP port')
        self.assertFalse(fake_vm.ping(ns, vm1_ip, count=2, wait=1),
                         'a host outside the group pings the VM')
        echo = traffic.EchoServer(vm1.name, 5001)
        self.addCleanup(echo.stop)
        self.assertTrue(traffic.tcp_connects(vm2.name, vm1_ip, 5001), 'member cannot connect')
        self.assertFalse(traffic.tcp_connects(ns, vm1_ip, 5001), 'outsider connects')

        # -- a rule added through the API opens the port ------------------------
        t_rule = time.monotonic()
        rule = self.api.create_security_group_rule(
            security_group_id=default_sg[0], direction='ingress', ethertype='IPv4',
            protocol='tcp', port_range_min=5001, port_range_max=5001,
            remote_ip_prefix='0.0.0.0/0')
        opened = traffic.wait_tcp_connects(ns, vm1_ip, 5001, EVENT_TIMEOUT)
        self.assertIsNotNone(opened, 'the port stayed closed after the rule was added')
        self.timings['rule POST -> TCP port open'] = time.monotonic() - t_rule
        self.assertFalse(fake_vm.ping(ns, vm1_ip, count=1, wait=1), 'ICMP opened too')

        # -- removing it cuts the session it let in --------------------------------
        session = traffic.TcpSession(ns, vm1_ip, 5001)
        self.addCleanup(session.close)
        self.assertTrue(session.connected, session.state)
        self.assertEqual('ok', session.exchange())
        t_rule = time.monotonic()
        self.api.delete('security-group-rules', rule['id'], missing_ok=False)

        def session_cut():
            return session.exchange() != 'ok'
        self.timed('rule DELETE -> established session cut', t_rule, session_cut,
                   EVENT_TIMEOUT, 'the established session to stop')
        self.assertFalse(traffic.tcp_connects(ns, vm1_ip, 5001), 'port still open')
        # Members are not affected by the outsider's rule going.
        self.assertTrue(traffic.tcp_connects(vm2.name, vm1_ip, 5001))

        # -- a router: interface on the tenant subnet, gateway on a flat net --
        ext = self.create_network(**{'router:external': True,
                                     'provider:network_type': 'flat',
                                     'provider:physical_network': PHYSNET})
        self.ext_network_id = ext['id']
        ext_cidr = f'172.31.{random.randint(0, 255)}'
        self.api.create_subnet(network_id=ext['id'], cidr=f'{ext_cidr}.0/24',
                               enable_dhcp=False, gateway_ip=f'{ext_cidr}.1',
                               name=f'{self.prefix}-extsub')
        t_router = time.monotonic()
        router = self.api.create_router(name=f'{self.prefix}-r',
                                        external_gateway_info={'network_id': ext['id']})
        self.addCleanup(self.cleanup_router, router['id'])
        self.api.add_router_interface(router['id'], subnet['id'])
        rns = naming.router_namespace(router['id'])

        def router_ready():
            addrs = namespace_addresses(rns)
            qr = [c for d, cs in addrs.items() if d.startswith('qr-') for c in cs]
            qg = [c for d, cs in addrs.items() if d.startswith('qg-') for c in cs]
            if f'{subnet["gateway_ip"]}/24' in qr and any(
                    c.startswith(ext_cidr + '.') for c in qg):
                return addrs
            return None
        self.timed('router POST -> qrouter- with qr-/qg- addresses', t_router,
                   router_ready, EVENT_TIMEOUT, f'{rns} with qr- and qg-')
        self.assertEqual([self.host],
                         [a['host'] for a in self.api.l3_agents_hosting(router['id'])])
        router_ports = self.api.list_ports(device_id=router['id'])
        self.assertEqual(2, len(router_ports))

        def router_ports_active():
            return all(self.api.show_port(p['id'])['status'] == 'ACTIVE'
                       for p in router_ports)
        self.timed('router POST -> both router ports ACTIVE', t_router,
                   router_ports_active, EVENT_TIMEOUT, 'router ports ACTIVE')
        self.assertTrue(self.reaches(vm1.name, subnet['gateway_ip']),
                        'VM1 cannot reach its router')
        self.assertTrue(self.reaches(vm2.name, subnet['gateway_ip']),
                        'VM2 cannot reach its router')
        # -- metadata through the router's proxy ------------------------------
        router_proxy = self.timed('router POST -> metadata proxy in qrouter-', t_router,
                                  lambda: self.proxy_pid(router['id']), EVENT_TIMEOUT,
                                  'the router\'s metadata proxy')
        # With a router the network is no longer isolated: its proxy goes.
        wait_until(lambda: not self.proxy_pid(net['id']), EVENT_TIMEOUT,
                   'the network\'s metadata proxy removed')
        self.route_metadata(vm2, subnet['gateway_ip'])
        self.assertEqual(port2['device_id'], self.instance_id(vm2))
        signed = nova.requests_for(port2['device_id'])[-1]
        self.assertEqual(vm2_ip, signed['headers'].get('X-Forwarded-For'))
        # A VM claiming to be another instance still gets only its own data.
        forged = {'X-Instance-ID': port1['device_id'], 'X-Tenant-ID': port1['project_id'],
                  'X-Forwarded-For': vm1_ip, 'X-Neutron-Network-ID': net['id']}
        status, body = traffic.http_get(
            vm2.name, METADATA_URL + '/latest/meta-data/instance-id', headers=forged)
        self.assertEqual((200, port2['device_id']), (status, body.strip()))

        # -- the router's data plane: SNAT, floating IP, sessions, GARP ----------
        upstream, fip = self.check_router_data_plane(
            router, subnet, ext_cidr, (vm1, port1), (vm2, port2), default_sg[0])
        # -- IPv6: a SLAAC subnet behind the router (radvd) ----------------------
        v6_subnet = self.check_ipv6_slaac(router, net, vm1, port1)

        # -- restart all agents under traffic through SNAT and the floating IP ---
        chains_before = self.firewall_rules()
        pings = [traffic.ContinuousPing(vm1.name, f'{ext_cidr}.1'),
                 traffic.ContinuousPing(upstream, fip['floating_ip_address'])]
        for ping in pings:
            self.addCleanup(ping.proc.kill)
        snapshots = NetfilterSnapshots(rns)
        self.addCleanup(snapshots.stop)
        t_restart = time.monotonic()
        for name in ('l2', 'dhcp', 'l3', 'metadata'):
            self.agents[name].signal(signal.SIGTERM)
        for name in ('l2', 'dhcp', 'l3', 'metadata'):
            self.assertEqual(0, self.agents[name].wait(20), f'agentkit-{name} exit code')
        self.timings['SIGTERM -> all three agents exited'] = time.monotonic() - t_restart
        # The host kept serving, and filtering, while the agents were down.
        self.assertTrue(fake_vm.ping(vm1.name, subnet['gateway_ip']))
        self.assertFalse(traffic.tcp_connects(ns, vm1_ip, 5001))
        # Metadata requests fail fast while the metadata agent is down.
        t_md = time.monotonic()
        status, _ = traffic.http_get(vm2.name, METADATA_URL, timeout=5)
        self.assertNotEqual(200, status)
        self.assertLess(time.monotonic() - t_md, 3.0, 'a metadata request hung')
        t_restart = time.monotonic()
        for name in ('l2', 'dhcp', 'l3', 'metadata'):
            self.start_agent(name)
        for name in ('l2', 'dhcp', 'l3', 'metadata'):
            self.agents[name].wait_for_output('Full sync (agent start) done', 60)
        self.timings['agents restarted -> all three full syncs done'] = (
            time.monotonic() - t_restart)
        self.assertIsNotNone(wait_until(lambda: self.dnsmasq_pid(net['id']), 10,
                                        'dnsmasq after the DHCP agent restart'))
        self.assertIn(f'{dhcp_ip}/24', namespace_addresses(ns)[dhcp_dev])
        self.assertIsNotNone(router_ready(), f'{rns} after the L3 agent restart')
        # The resync asks for every port's details again (the server marks
        # them BUILD meanwhile, as with Neutron's agents) and reports them up.
        for port_id in [port1['id'], port2['id'], dhcp_port['id']] + [
                p['id'] for p in router_ports]:
            wait_until(lambda p=port_id: self.port_status(p, 'ACTIVE'), EVENT_TIMEOUT,
                       f'port {port_id} ACTIVE again after the restart')
        self.assertEqual(chains_before, self.firewall_rules(),
                         'the restart changed the firewall rules')
        lease = fake_vm.DhcpClient(vm1, self.get_temp_dir()).request(timeout=20)
        self.assertIsNotNone(lease, 'no DHCP lease after the agents restarted')
        self.assertEqual(vm1_ip, lease['new_ip_address'])
        self.assertTrue(fake_vm.ping(vm1.name, subnet['gateway_ip']),
                        'VM cannot reach its router after the agents restarted')
        self.assertTrue(fake_vm.ping(vm1.name, vm2_ip))
        self.assertEqual(router_proxy, self.proxy_pid(router['id']),
                         'the router\'s metadata proxy was restarted')
        t_md = time.monotonic()
        # Within the event bound: the four agents' first full syncs load the
        # server at once, and a busy CI host stretches them.
        self.assertEqual(port2['device_id'], wait_until(
            lambda: self.instance_id(vm2, check=False), EVENT_TIMEOUT,
            'metadata after the restart'))
        self.timings['metadata GET after the restart'] = time.monotonic() - t_md
        time.sleep(2)  # the restarted L3 agent's first updates are in
        taken = snapshots.stop()
        for ping, what in zip(pings, ('VM -> upstream (SNAT)', 'upstream -> floating IP')):
            sent, received = ping.stop()
            self.timings[f'restart: {what} pings sent/lost'] = f'{sent}/{sent - received}'
            self.assertGreater(sent, 20, what)
            self.assertEqual(sent, received, f'{what}: pings lost during the restart')
        self.assertGreater(taken, 10, 'too few snapshots of the router\'s rules')
        self.assertEqual([], snapshots.changes,
                         'the restart changed the router\'s iptables/nft rules')

        # -- teardown through the API: the host follows ------------------------
        self.api.delete('floatingips', fip['id'], missing_ok=False)
        self.api.remove_router_interface(router['id'], v6_subnet['id'])
        t_del = time.monotonic()
        self.api.remove_router_interface(router['id'], subnet['id'])
        self.api.delete('routers', router['id'], missing_ok=False)
        self.timed('router DELETE -> qrouter- gone', t_del,
                   lambda: not ip_lib.IPWrapper(rns).namespace_exists(),
                   EVENT_TIMEOUT, f'{rns} removed')
        self.assertIsNone(self.proxy_pid(router['id']), 'the router\'s proxy is left')
        self.assertEqual([], self.daemon_pids('radvd'), 'radvd is left')
        for vm, port in ((vm1, port1), (vm2, port2)):
            self.unplug(vm)  # nova unplugs, then deletes the port
            vm.destroy()
            self.api.delete('ports', port['id'], missing_ok=False)
        wait_until(lambda: port1['id'][:10] not in self.firewall_rules(), EVENT_TIMEOUT,
                   'the unplugged VM\'s chains removed')
        dnsmasq = self.dnsmasq_pid(net['id'])
        t_del = time.monotonic()
        self.api.delete('networks', net['id'], missing_ok=False)
        self.timed('network DELETE -> qdhcp- and dnsmasq gone', t_del,
                   lambda: (not ip_lib.IPWrapper(ns).namespace_exists()
                            and not os.path.exists(f'/proc/{dnsmasq}')),
                   EVENT_TIMEOUT, f'{ns} and dnsmasq {dnsmasq} removed')
        self.assertFalse(ip_lib.device_exists('tap' + dhcp_port['id'][:11]),
                         'the DHCP port\'s device left on the host')
        for name, proc in self.agents.items():
            self.assertIsNone(proc.proc.poll(), f'agentkit-{name} exited')
        self.wait_agents_alive([self.agent_type, 'DHCP agent', 'L3 agent'])
        self.report_timings()
        self.assert_logs_clean()

    # -- the router's data plane ------------------------------------------------------
    def add_upstream(self, ext_cidr):
        """A namespace standing for the upstream router, at ``<ext_cidr>.1`` on the flat net."""
        name = self.prefix + 'up'
        ip_lib.IPWrapper(name).ensure_namespace()
        self.addCleanup(ip_lib.IPWrapper(name).delete_namespace)
        device = self.attach_upstream(name)
        ip_lib.IPDevice(device, name).addr.add(f'{ext_cidr}.1/24')
        ip_lib.IPDevice(device, name).link.set_up()
        ip_lib.IPDevice('lo', name).link.set_up()
        return name

    def attach_upstream(self, namespace):
        """Connect ``namespace`` to the flat external network; its device name."""
        raise NotImplementedError

    def check_router_data_plane(self, router, subnet, ext_cidr, first, second, group_id):
        """SNAT out, floating IP in, sessions cut on disassociation, GARP on association."""
        (vm1, port1), (vm2, port2) = first, second
        upstream = self.add_upstream(ext_cidr)
        gw_ip = self.api.show_router(router['id'])['external_gateway_info'][
            'external_fixed_ips'][0]['ip_address']
        for vm in (vm1, vm2):
            ip_lib.IPDevice('eth0', vm.name).route.add_gateway(subnet['gateway_ip'])
        # The upstream side may reach the VMs (the default group keeps it out).
        self.api.create_security_group_rule(
            security_group_id=group_id, direction='ingress', ethertype='IPv4',
            remote_ip_prefix=f'{ext_cidr}.0/24')
        t_snat = time.monotonic()
        self.assertTrue(self.reaches(vm1.name, f'{ext_cidr}.1', timeout=EVENT_TIMEOUT),
                        'VM cannot reach the upstream router through SNAT')
        self.timings['VM -> upstream through SNAT (first ping)'] = time.monotonic() - t_snat
        reporter = traffic.PeerReporter(upstream, 5005)
        self.addCleanup(reporter.stop)
        self.assertEqual(gw_ip, traffic.peer_seen(vm1.name, f'{ext_cidr}.1', 5005),
                         'the upstream side did not see the router\'s gateway IP')

        # A floating IP for VM1: reachable from upstream, which it sees as itself.
        echo = traffic.EchoServer(vm1.name, 5002)
        self.addCleanup(echo.stop)
        in_vm = traffic.PeerReporter(vm1.name, 5006)
        self.addCleanup(in_vm.stop)
        t_fip = time.monotonic()
        fip = self.api.create_floatingip(floating_network_id=self.ext_network_id,
                                         port_id=port1['id'])
        self.addCleanup(self.api.delete, 'floatingips', fip['id'])
        address = fip['floating_ip_address']
        self.timed('floating IP POST -> upstream pings it', t_fip,
                   lambda: fake_vm.ping(upstream, address, count=1, wait=1),
                   EVENT_TIMEOUT, f'{address} reachable from upstream')
        self.timed('floating IP POST -> status ACTIVE', t_fip,
                   lambda: self.api.show_floatingip(fip['id'])['status'] == 'ACTIVE',
                   EVENT_TIMEOUT, 'the floating IP ACTIVE')
        self.assertEqual(f'{ext_cidr}.1', traffic.peer_seen(upstream, address, 5006),
                         'the VM did not see the upstream address')
        self.assertEqual(address, traffic.peer_seen(vm1.name, f'{ext_cidr}.1', 5005),
                         'the VM\'s own connections do not leave with its floating IP')

        # Disassociating it cuts the sessions running through it.
        session = traffic.TcpSession(upstream, address, 5002)
        self.addCleanup(session.close)
        self.assertEqual(('connected', 'ok'), (session.state, session.exchange()))
        t_cut = time.monotonic()
        self.api.update_floatingip(fip['id'], port_id=None)
        self.timed('floating IP disassociated -> running session cut', t_cut,
                   lambda: session.exchange() != 'ok', EVENT_TIMEOUT,
                   'the session through the floating IP to stop')
        self.assertFalse(fake_vm.ping(upstream, address, count=1, wait=1))

        # Associated to VM2: announced at once with gratuitous ARPs.
        sniffer = traffic.ArpSniffer(upstream)
        self.addCleanup(sniffer.stop)
        t_garp = time.monotonic()
        self.api.update_floatingip(fip['id'], port_id=port2['id'])
        qg_mac = next(p for p in self.api.list_ports(device_id=router['id'])
                      if p['device_owner'] == 'network:router_gateway')['mac_address']
        self.timed('floating IP moved -> gratuitous ARP upstream', t_garp,
                   lambda: qg_mac in sniffer.gratuitous(address), EVENT_TIMEOUT,
                   f'a gratuitous ARP for {address} from {qg_mac}')
        in_vm2 = traffic.PeerReporter(vm2.name, 5006)
        self.addCleanup(in_vm2.stop)
        self.assertTrue(self.reaches(upstream, address, timeout=EVENT_TIMEOUT))
        self.assertEqual(f'{ext_cidr}.1', traffic.peer_seen(upstream, address, 5006))
        return upstream, self.api.show_floatingip(fip['id'])

    def daemon_pids(self, name):
        """Pids of ``name`` processes whose command line names this test's state path."""
        return [pid for pid in base.pids_with(self.state_path)
                if name in ' '.join(external_process.read_cmdline(pid) or [])]

    def check_ipv6_slaac(self, router, net, vm, port):
        """A SLAAC subnet on the router: the VM autoconfigures and pings the router."""
        prefix = 'fd%02x:%x:%x::' % (
            random.randint(0, 255), random.randint(1, 0xffff), random.randint(1, 0xffff))
        t_v6 = time.monotonic()
        v6 = self.api.create_subnet(network_id=net['id'], ip_version=6, cidr=prefix + '/64',
                                    ipv6_ra_mode='slaac', ipv6_address_mode='slaac',
                                    name=f'{self.prefix}-v6')
        self.api.add_router_interface(router['id'], v6['id'])
        expected = next(ip['ip_address'] for ip in self.api.show_port(port['id'])['fixed_ips']
                        if ip['subnet_id'] == v6['id'])

        def autoconfigured():
            return any(a['cidr'] == f'{expected}/64' for a in
                       ip_lib.IPDevice('eth0', vm.name).addr.list(scope='global'))
        self.timed('IPv6 SLAAC subnet on the router -> VM autoconfigured from the RA', t_v6,
                   autoconfigured, EVENT_TIMEOUT, f'{expected} on the VM (SLAAC)')
        # (radvd forks a privileged helper: two processes with the same argv)
        self.assertTrue(self.daemon_pids('radvd'), 'no radvd for the router')
        self.assertTrue(self.reaches(vm.name, v6['gateway_ip'], timeout=EVENT_TIMEOUT),
                        'the VM cannot ping the router\'s IPv6 address')
        return v6

    # -- metadata ------------------------------------------------------------------
    @staticmethod
    def classless_routes(lease):
        """dhclient's rfc3442 routes as 'prefix/len,gateway' strings."""
        octets = [int(x) for x in lease.get('new_rfc3442_classless_static_routes', '').split()]
        routes = []
        while octets:
            width = octets[0]
            size = (width + 7) // 8
            prefix = octets[1:1 + size] + [0] * (4 - size)
            gateway = octets[1 + size:5 + size]
            routes.append('%s/%d,%s' % ('.'.join(map(str, prefix)), width,
                                        '.'.join(map(str, gateway))))
            octets = octets[5 + size:]
        return routes

    @staticmethod
    def route_metadata(vm, via):
        """What the VM's DHCP client does with the classless route."""
        run('ip', 'netns', 'exec', vm.name, 'ip', 'route', 'replace',
            '169.254.169.254/32', 'via', via)

    @staticmethod
    def instance_id(vm, check=True):
        status, body = traffic.http_get(vm.name, METADATA_URL + '/latest/meta-data/instance-id')
        if check:
            assert status == 200, f'metadata answered {status}: {body[:200]}'
        return body.strip() if status == 200 else None

    def proxy_pid(self, resource_id):
        """The live metadata haproxy of a router or network, if any."""
        pids = [p for p in base.pids_with(resource_id)
                if 'haproxy' in ' '.join(external_process.read_cmdline(p) or [])]
        return pids[0] if len(pids) == 1 else None

    # -- the firewall as iptables shows it -------------------------------------------
    def firewall_rules(self):
        """Every rule and set of the firewall's chains (for before/after comparisons)."""
        out = ''.join(run('iptables-save', '-t', table).stdout for table in ('filter', 'raw'))
        prefix = 'neutron-linuxbri' if self.mechanism == 'linuxbridge' else 'neutron-openvswi'
        return '\n'.join(line for line in out.splitlines()
                         if prefix in line and line.startswith('-A '))

    def firewall_chain(self, kind, port_id):
        prefix = 'neutron-linuxbri' if self.mechanism == 'linuxbridge' else 'neutron-openvswi'
        return run('iptables', '-S', f'{prefix}-{kind}{port_id[:10]}').stdout


class RealNeutronServerOpenvswitchTest(RealNeutronServerTestBase):
    """openvswitch with the hybrid plug: the tap in qbr, qvo on br-int."""

    mechanism = 'openvswitch'
    agent_type = 'Open vSwitch agent'
    interface_driver = 'openvswitch'

    def l2_sections(self):
        return {
            'ovs': {'tunnel_bridge': self.br_tun,
                    'int_peer_patch_port': self.prefix + 'pt',
                    'tun_peer_patch_port': self.prefix + 'pi'},
            'l2': {'mechanism_driver': 'openvswitch', 'tunnel_types': 'vxlan',
                   'local_ip': '127.0.0.1',
                   'bridge_mappings': f'{PHYSNET}:{self.br_ex}'},
        }

    def check_binding(self, port):
        self.assertEqual('ovs', port['binding:vif_type'])
        details = port['binding:vif_details']
        self.assertEqual('netdev', details['datapath_type'])
        self.assertEqual(self.br_int, details['bridge_name'])
        # What makes nova put the tap in a qbr, where iptables sees it.
        self.assertIs(True, details['ovs_hybrid_plug'])

    def test_seed_scenario_with_security_groups(self):
        self.run_scenario()

    def attach_upstream(self, namespace):
        # A veth from br-ex (the physnet's bridge) into the namespace.
        outside = self.prefix + 'u0'
        ip_lib.IPWrapper().add_veth(outside, 'eth0', peer_namespace=namespace)
        self.addCleanup(lambda: ip_lib.device_exists(outside)
                        and ip_lib.IPDevice(outside).delete())
        # Veths on a userspace-datapath bridge need TX checksum offload off.
        run('ethtool', '-K', outside, 'tx', 'off')
        fake_vm.run_in(namespace, 'ethtool', '-K', 'eth0', 'tx', 'off')
        ip_lib.IPDevice(outside).link.set_up()
        self.ovs.bridge(self.br_ex, 'netdev').add_port(outside)
        return 'eth0'

    def plug(self, vm, port):
        vm.plug_ovs_hybrid(self.ovs.bridge(self.br_int, 'netdev'))

    def unplug(self, vm):
        vm.unplug_ovs_hybrid(self.ovs.bridge(self.br_int, 'netdev'))


class RealNeutronServerLinuxbridgeTest(RealNeutronServerTestBase):
    """linuxbridge, bound by agentkit_linuxbridge on the server: taps in brq."""

    mechanism = 'linuxbridge'
    agent_type = 'Linux bridge agent'
    interface_driver = 'linuxbridge'

    def setUp(self):
        super().setUp()
        # The "physical" NIC of the flat external network: one end of a veth.
        self.nic = self.prefix + 'n0'
        ip_lib.IPWrapper().add_veth(self.nic, self.prefix + 'n1')
        self.addCleanup(lambda: ip_lib.device_exists(self.nic)
                        and ip_lib.IPDevice(self.nic).delete())
        for name in (self.nic, self.prefix + 'n1'):
            ip_lib.IPDevice(name).link.set_up()

    def l2_sections(self):
        # Nothing but the mechanism and what any linuxbridge host needs: its
        # NIC for the provider network and its tunnel address.
        return {
            'l2': {'mechanism_driver': 'linuxbridge', 'tunnel_types': 'vxlan',
                   'local_ip': '127.0.0.1'},
            'linux_bridge': {'physical_interface_mappings': f'{PHYSNET}:{self.nic}'},
        }

    def check_binding(self, port):
        self.assertEqual('bridge', port['binding:vif_type'])
        self.assertEqual('brq' + port['network_id'][:11],
                         port['binding:vif_details'].get('bridge_name'))

    def test_seed_scenario_with_security_groups(self):
        self.run_scenario()

    def attach_upstream(self, namespace):
        # The far end of the host's "NIC" veth is the upstream router.
        ip_lib.IPDevice(self.prefix + 'n1').link.set_netns(namespace)
        return self.prefix + 'n1'

    def plug(self, vm, port):
        pass  # the tap exists; the agent puts it in brq (nova's linuxbridge plug)

    def unplug(self, vm):
        if ip_lib.device_exists(vm.tap):
            ip_lib.IPDevice(vm.tap).link.set_nomaster()
