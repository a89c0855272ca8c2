"""The fullstack suite's base: the real neutron-server 29 drives agentkit's agents.

The server (tools/neutron-server.sh: MariaDB, the WSGI API under uWSGI,
neutron-rpc-server, neutron-periodic-workers) runs ML2 with the openvswitch
and agentkit_linuxbridge mechanism drivers and vxlan tenant networks;
agentkit-l2, agentkit-dhcp, agentkit-l3 and agentkit-metadata run as
processes against its RabbitMQ vhost under a unique host name. Tests drive
everything through the REST API only, as a user and nova would: no fake
server, no hand-written RPC; what they check is on the host and in real
packets. They skip only when MariaDB or the neutron venv cannot be
installed.

One server serves every test of a process (``neutron_server.get_server``),
so the suite runs in one test process (``tox -e fullstack``).
"""

import contextlib
import os
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
from agentkit.lib.ovs import connection as ovs_connection
from tests.functional import agent_process
from tests.functional import base
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

        self.ovs = ovs_connection.get_connection()
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
            if router.get('router', {}).get('routes'):  # they keep interfaces in use
                self.api.update_router(router_id, routes=[])
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
    def add_vm(self, net, name, host=None, host_ns=None, plug=None):
        """A VM port bound to ``host`` (this host), plugged, ACTIVE.

        ``host_ns``: the namespace of a simulated second host, where
        ``plug(vm, port)`` plugs the VM (its unplugging is the caller's).
        """
        port = self.api.create_port(
            network_id=net['id'], name=f'{self.prefix}-{name}',
            device_owner='compute:nova', device_id=str(uuid.uuid4()),
            **{'binding:host_id': host or self.host})
        self.check_binding(port)
        self.assertEqual('DOWN', port['status'])
        # Before the network's cleanup: a port left would keep the network.
        self.addCleanup(self.api.delete, 'ports', port['id'])
        vm = fake_vm.FakeVM(self.prefix + name, port['id'], port['mac_address'],
                            mtu=net['mtu'], host_ns=host_ns)
        self.addCleanup(vm.destroy)
        if host_ns is not None:
            t_plug = time.monotonic()
            plug(vm, port)
            self.timed(f'{name} plug -> port ACTIVE', t_plug,
                       lambda: self.port_status(port['id'], 'ACTIVE'),
                       EVENT_TIMEOUT, f'the {name} port ACTIVE')
            return vm, port
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

    def host_leftovers(self, ids, namespace=None):
        """What the host (or ``namespace``, a simulated host) still holds of ``ids``.

        ``ids`` are network, router, port and security group ids; every object
        agentkit builds for one carries the id or its first 10/11 characters in
        its name (namespaces, devices, OVS ports, iptables chains, ipsets, nft
        rules, dnsmasq/haproxy/radvd command lines, files under state_path).
        """
        tokens = sorted({i[:10] for i in ids})
        where = ('ip', 'netns', 'exec', namespace) if namespace else ()

        def lines(*argv):
            return run(*where, *argv, check=False).stdout.splitlines()
        found = []
        if not namespace:  # (the list is the same in every namespace)
            found += [f'namespace {n}' for n in lines('ip', 'netns', 'list')
                      if any(t in n for t in tokens)]
        found += [f'device {d}' for d in lines('ip', '-o', 'link', 'show')
                  if any(t in d.split(':')[1] for t in tokens if ':' in d)]
        for table in ('filter', 'raw', 'mangle', 'nat'):
            found += [f'iptables -t {table}: {r}' for r in lines('iptables-save', '-t', table)
                      if any(t in r for t in tokens)]
        found += [f'ipset {s}' for s in lines('ipset', 'list', '-n')
                  if any(t in s for t in tokens)]
        found += [f'nft: {r.strip()}' for r in lines('nft', 'list', 'ruleset')
                  if any(t in r for t in tokens)]
        if not namespace:
            for br in run('ovs-vsctl', 'list-br', check=False).stdout.split():
                found += [f'OVS port {p} on {br}'
                          for p in run('ovs-vsctl', 'list-ports', br, check=False).stdout.split()
                          if any(t in p for t in tokens)]
            for pid in os.listdir('/proc'):
                if pid.isdigit():
                    argv = ' '.join(external_process.read_cmdline(int(pid)) or [])
                    if any(t in argv for t in tokens):
                        found.append(f'process {pid}: {argv[:200]}')
            for root, dirs, files in os.walk(self.state_path):
                found += [f'file {os.path.join(root, n)}' for n in dirs + files
                          if any(t in n for t in tokens)]
        return found

    def assert_host_clean(self, ids, namespace=None):
        """Once the resources are deleted through the API, the host lets them go."""
        try:
            wait_until(lambda: not self.host_leftovers(ids, namespace), EVENT_TIMEOUT,
                       'the host to let go of the deleted resources')
        except AssertionError:
            self.assertEqual([], self.host_leftovers(ids, namespace),
                             'left on the host after the teardown')

    def daemon_pids(self, name):
        """Pids of ``name`` processes whose command line names this test's state path."""
        return [pid for pid in base.pids_with(self.state_path)
                if name in ' '.join(external_process.read_cmdline(pid) or [])]

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

    def firewall_chain_name(self, kind, port_id):
        prefix = 'neutron-linuxbri' if self.mechanism == 'linuxbridge' else 'neutron-openvswi'
        return f'{prefix}-{kind}{port_id[:10]}'

    def firewall_chain(self, kind, port_id):
        return run('iptables', '-S', self.firewall_chain_name(kind, port_id)).stdout


class OpenvswitchHost(RealNeutronServerTestBase):
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
        # A second host's agent (two-host tests) has a switch of its own.
        expected = getattr(self, 'integration_bridges', {}).get(
            port['binding:host_id'], self.br_int)
        self.assertEqual(expected, details['bridge_name'])
        # What makes nova put the tap in a qbr, where iptables sees it.
        self.assertIs(True, details['ovs_hybrid_plug'])

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


class LinuxbridgeHost(RealNeutronServerTestBase):
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

    def attach_upstream(self, namespace):
        # The far end of the host's "NIC" veth is the upstream router.
        ip_lib.IPDevice(self.prefix + 'n1').link.set_netns(namespace)
        return self.prefix + 'n1'

    def plug(self, vm, port):
        pass  # the tap exists; the agent puts it in brq (nova's linuxbridge plug)

    def unplug(self, vm):
        if ip_lib.device_exists(vm.tap):
            ip_lib.IPDevice(vm.tap).link.set_nomaster()
