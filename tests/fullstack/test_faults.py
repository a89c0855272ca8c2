"""Server-side faults under the real neutron-server 29 (issue 14).

Each case starts the four agents (openvswitch with ``iptables_hybrid``,
dnsmasq DHCP, namespace L3, metadata) on a host of its own, builds a
network with DHCP and a router, and keeps a canary running through the
fault: two VMs pinging each other every 0.2 s and one renewing its DHCP
lease every 5 s (tests/functional/canary.py). Then:

- RabbitMQ stopped for 30 s while ports are created and plugged: every
  agent reconnects by itself and resyncs (the casts sent meanwhile went to
  queues that were gone), all ports end ACTIVE with their DHCP entries, the
  agents consume casts again.
- neutron-server's processes down for 2 minutes: the host keeps everything
  (OVS ports and tags, namespaces, dnsmasq pids, iptables), the agents keep
  reporting at their interval and no faster, and converge once it is back.
- ``kill -9`` of every agent in the middle of a burst of 100 port creations
  (os-vif hybrid plugs, router interfaces, ports deleted while the agents
  are dead): after the restart every port is ACTIVE with its dnsmasq host
  entry, and nothing of the deleted ports is left.

Each case records what it measured with tests/reliability.record().
Stopping RabbitMQ or the server is always undone in a cleanup: the other
tests of the process, and other users of the broker, share them.
"""

import concurrent.futures
import os
import random
import re
import signal
import threading
import time
import uuid

from agentkit.lib import naming
from tests import reliability
from tests.fullstack import base
from tests.fullstack.base import EVENT_TIMEOUT, wait_until
from tests.functional import base as functional_base
from tests.functional import canary as canary_lib
from tests.functional import fake_nova
from tests.functional import neutron_server
from tests.functional import rabbitmq
from tests.functional import vm as fake_vm

RABBIT_OUTAGE = 30.0
SERVER_OUTAGE = 120.0
BURST = 100
REPORT_INTERVAL = 5
AGENTS = ('l2', 'dhcp', 'l3', 'metadata')
REPORT_FAILED = 'Failed reporting state'
REPORT_STALLED = 'A state report took'
RESYNC = 'Full resync scheduled'
PROBLEM = re.compile(r' (ERROR|CRITICAL) |Traceback')
# oslo.messaging's own reconnection chatter (ERROR "AMQP server ... is
# unreachable ... Trying again") is the library's, not a failure of the agent
RECONNECTING = 'oslo.messaging._drivers.impl_rabbit'


def outage_figures(failed: dict, logged: dict) -> dict[str, str]:
    """Per agent: state reports that failed and log lines written during an outage."""
    return {'failed reports during outage (l2/dhcp/l3/metadata)':
            '/'.join(str(failed[n]) for n in AGENTS),
            'agent log lines during outage (l2/dhcp/l3/metadata)':
            '/'.join(str(len(logged[n])) for n in AGENTS)}


class FaultsTest(base.OpenvswitchHost):
    """The three server-side faults, each on a host of its own."""

    # -- the host every case starts from -------------------------------------------
    def start_agents(self):
        secret = uuid.uuid4().hex
        self.nova = fake_nova.FakeNova(secret).start()
        self.addCleanup(self.nova.stop)
        dhcp_l3 = {'interface_driver': self.interface_driver,
                   'check_child_processes_interval': 1}
        sections = {
            'l2': {**self.l2_sections(),
                   'securitygroup': {'firewall_driver': 'iptables_hybrid'}},
            'dhcp': {'DEFAULT': {**dhcp_l3, 'dhcp_driver': 'dnsmasq'}},
            'l3': {'DEFAULT': {**dhcp_l3, 'l3_driver': 'namespace'}},
            'metadata': {'DEFAULT': {'nova_metadata_host': '127.0.0.1',
                                     'nova_metadata_port': self.nova.port,
                                     'metadata_proxy_shared_secret': secret}},
        }
        for name in AGENTS:
            sections[name].setdefault('agent', {})['report_interval'] = REPORT_INTERVAL
            self.start_agent(name, sections[name])
        self.wait_all_alive()

    def wait_all_alive(self):
        return self.wait_agents_alive([self.agent_type, 'DHCP agent', 'L3 agent',
                                       'Metadata agent'])

    def build_network(self, extra_subnets=0):
        """A network with DHCP, a router on it, two VMs with a lease and the canary.

        ``extra_subnets``: more subnets (no DHCP) for router interfaces.
        """
        net = self.create_network()
        self.cidr = f'10.{random.randint(100, 250)}.{random.randint(0, 255)}'
        subnet = self.api.create_subnet(network_id=net['id'], cidr=f'{self.cidr}.0/24',
                                        enable_dhcp=True, name=f'{self.prefix}-sub')
        router = self.api.create_router(name=f'{self.prefix}-r')
        self.addCleanup(self.cleanup_router, router['id'])
        self.api.add_router_interface(router['id'], subnet['id'])
        wait_until(lambda: self.dnsmasq_pid(net['id']), EVENT_TIMEOUT, 'dnsmasq')
        vms = [self.add_vm(net, f'vm{i}') for i in (1, 2)]
        (vm1, port1), (vm2, port2) = vms
        ips = [port['fixed_ips'][0]['ip_address'] for _, port in vms]
        self.wait_dhcp_entries(net, [port for _, port in vms])
        client = fake_vm.DhcpClient(vm1, self.get_temp_dir())
        lease = client.request(timeout=20)
        self.assertEqual(ips[0], (lease or {}).get('new_ip_address'), 'no lease for VM1')
        for (vm, port), ip in zip(vms, ips):
            vm.set_ip(f'{ip}/24')
            self.nova.instances[port['device_id']] = port['project_id']
        self.route_metadata(vm1, subnet['gateway_ip'])
        for vm, ip in ((vm1, ips[1]), (vm2, ips[0])):
            self.assertTrue(self.reaches(vm.name, ip), f'{vm.name} cannot reach {ip}')
        wait_until(lambda: self.instance_id(vm1, check=False) == port1['device_id'],
                   EVENT_TIMEOUT, 'metadata through the router')
        # Made after the VMs: a port without fixed_ips gets its address from
        # any IPv4 subnet of the network (create_vm_port names the subnet).
        extra = [self.api.create_subnet(
            network_id=net['id'], cidr=f'10.{random.randint(100, 250)}.{i}.0/28',
            enable_dhcp=False, name=f'{self.prefix}-sub{i}') for i in range(extra_subnets)]
        self.subnet = subnet
        self.canary = canary_lib.Canary([(vm1.name, ips[1]), (vm2.name, ips[0])],
                                        dhcp=client, expected_ip=ips[0])
        self.addCleanup(self.canary.stop)
        return net, subnet, extra, router, vms

    # -- what the host holds ----------------------------------------------------------
    def dhcp_hosts(self, net_id):
        """The MACs of dnsmasq's host file for the network."""
        path = os.path.join(self.state_path, 'dhcp', 'dhcp', net_id, 'host')
        try:
            with open(path) as f:
                return {line.split(',')[0].lower() for line in f if line.strip()}
        except FileNotFoundError:
            return set()

    def wait_dhcp_entries(self, net, ports):
        """dnsmasq knows the ports (it answers no MAC it has no host entry for)."""
        macs = {p['mac_address'] for p in ports}
        wait_until(lambda: macs <= self.dhcp_hosts(net['id']), EVENT_TIMEOUT,
                   f'dnsmasq host entries of {len(macs)} port(s)')

    def br_int_ports(self):
        """{OVS port name: (tag, iface-id)} on this test's br-int."""
        out = base.run('ovs-vsctl', '--format=csv', '--data=bare', '--no-headings',
                       '--columns=name,tag', 'list', 'Port').stdout
        names = set(base.run('ovs-vsctl', 'list-ports', self.br_int).stdout.split())
        tags = {}
        for line in out.splitlines():
            name, _, tag = line.partition(',')
            if name in names:
                tags[name] = tag
        ids = {}
        for line in base.run('ovs-vsctl', '--format=csv', '--data=bare', '--no-headings',
                             '--columns=name,external_ids', 'list',
                             'Interface').stdout.splitlines():
            name, _, external = line.partition(',')
            if name in names:
                ids[name] = next((f[len('iface-id='):] for f in external.split()
                                  if f.startswith('iface-id=')), '')
        return {name: (tags.get(name, ''), ids.get(name, '')) for name in names}

    def snapshot(self, net, router):
        """What the agents built: compared before and after a fault."""
        namespaces = {n.split()[0] for n in base.run('ip', 'netns', 'list').stdout.splitlines()}
        ours = {f'qdhcp-{net["id"]}', naming.router_namespace(router['id'])}
        rules = '\n'.join(
            line for table in ('filter', 'raw')
            for line in base.run('iptables-save', '-t', table).stdout.splitlines()
            if line.startswith('-A neutron-openvswi'))
        return {
            'OVS ports and tags': self.br_int_ports(),
            'namespaces': sorted(ours & namespaces),
            'dnsmasq': self.dnsmasq_pid(net['id']),
            'metadata proxy': self.proxy_pid(router['id']),
            'iptables (host, filter+raw)': rules,
            'qrouter rules': functional_base.netfilter_snapshot(
                naming.router_namespace(router['id'])),
            'qdhcp addresses': base.namespace_addresses(f'qdhcp-{net["id"]}'),
        }

    def all_active(self, port_ids):
        status = {p['id']: p['status'] for p in self.api.list_ports(device_owner='compute:nova')
                  if p['id'] in port_ids}
        return len(status) == len(port_ids) and set(status.values()) == {'ACTIVE'}

    def log_offsets(self):
        return {name: len(self.agents[name].output()) for name in AGENTS}

    def log_since(self, offsets, name):
        return self.agents[name].output()[offsets[name]:].splitlines()

    def assert_no_errors(self, offsets, what):
        """No ERROR or traceback in the agents' logs since ``offsets``."""
        problems = [f'{name}: {line}' for name in AGENTS
                    for line in self.log_since(offsets, name)
                    if PROBLEM.search(line) and 'privsep log:' not in line
                    and RECONNECTING not in line]
        self.assertEqual([], problems, f'agents logged errors {what}')

    def create_vm_port(self, net, name):
        port = self.api.create_port(
            network_id=net['id'], name=f'{self.prefix}-{name}', device_owner='compute:nova',
            device_id=str(uuid.uuid4()), fixed_ips=[{'subnet_id': self.subnet['id']}],
            **{'binding:host_id': self.host})
        self.addCleanup(self.api.delete, 'ports', port['id'])
        self.addCleanup(fake_vm.unplug_ovs_hybrid, port['id'], self.bridge)
        return port

    def plug_port(self, port, net):
        fake_vm.plug_ovs_hybrid(port['id'], port['mac_address'], net['mtu'], self.bridge,
                                offload=True)

    @property
    def bridge(self):
        return self.ovs.bridge(self.br_int, 'netdev')

    def new_vm_gets_lease(self, net, name):
        """A port created now goes ACTIVE and its VM gets its address by DHCP."""
        t0 = time.monotonic()
        vm, port = self.add_vm(net, name)
        active = time.monotonic() - t0
        self.wait_dhcp_entries(net, [port])
        lease = fake_vm.DhcpClient(vm, self.get_temp_dir()).request(timeout=20)
        self.assertEqual(port['fixed_ips'][0]['ip_address'],
                         (lease or {}).get('new_ip_address'), f'{name} got no lease')
        return active, time.monotonic() - t0

    # -- 1. RabbitMQ away for 30 s ----------------------------------------------------
    def test_rabbitmq_outage_while_ports_are_created(self):
        self.start_agents()
        net, subnet, _, router, _ = self.build_network()
        early = [self.create_vm_port(net, f'early{i}') for i in range(8)]
        offsets = self.log_offsets()

        self.addCleanup(rabbitmq.start)
        t_stop = time.monotonic()
        rabbitmq.stop()
        # Nova plugs the ports it created before; the API creates more
        # (neutron-server's casts about them go nowhere) and nova plugs them.
        for port in early:
            self.plug_port(port, net)
        late, errors = [], []

        def create_late():
            try:
                for i in range(4):
                    port = self.create_vm_port(net, f'late{i}')
                    self.plug_port(port, net)
                    late.append(port)
            except Exception as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
        creator = threading.Thread(target=create_late, daemon=True)
        creator.start()
        time.sleep(max(0.0, RABBIT_OUTAGE - (time.monotonic() - t_stop)))
        self.assertTrue(all(p.proc.poll() is None for p in self.agents.values()),
                        'an agent exited while RabbitMQ was away')
        logged = {n: self.log_since(offsets, n) for n in AGENTS}
        back = self.log_offsets()
        rabbitmq.start()
        t_back = time.monotonic()
        # No report can have reached the server meanwhile: these are the last
        # ones from before the outage.
        agents_before = {a['id']: a['heartbeat_timestamp']
                         for a in self.api.list_agents(host=self.host)}
        outage = t_back - t_stop
        creator.join(EVENT_TIMEOUT)
        self.assertEqual([], errors, 'creating ports while RabbitMQ was away failed')
        self.assertEqual(4, len(late))
        ports = early + late
        ids = {p['id'] for p in ports}

        # Every agent reconnects by itself: its reports reach the server again.
        def reported_again():
            agents = self.api.list_agents(host=self.host)
            return len(agents) == 4 and all(
                a['alive'] and a['heartbeat_timestamp'] != agents_before.get(a['id'])
                for a in agents)
        wait_until(reported_again, EVENT_TIMEOUT, 'every agent reporting again', 0.5)
        t_reported = time.monotonic() - t_back
        wait_until(lambda: self.all_active(ids), 2 * EVENT_TIMEOUT,
                   'every port created around the outage ACTIVE', 0.5)
        t_active = time.monotonic() - t_back
        self.wait_dhcp_entries(net, ports)
        t_dhcp = time.monotonic() - t_back
        # The casts sent while the broker was away were lost with the queues:
        # the reports failed (rather than waiting for the broker), and the
        # first one answered again made every agent resync.
        # (The server also answers "revived" when the outage outlasted its
        # agent_down_time; the agents must notice by themselves.)
        failed = {n: sum(REPORT_FAILED in line for line in logged[n]) for n in AGENTS}
        for name in ('l2', 'dhcp', 'l3'):
            wait_until(lambda: REPORT_STALLED in '\n'.join(self.log_since(offsets, name))
                       or failed[name], EVENT_TIMEOUT,
                       f'agentkit-{name} noticing the outage (a report failed or stalled)')
            wait_until(lambda: RESYNC in '\n'.join(self.log_since(back, name)),
                       EVENT_TIMEOUT, f'agentkit-{name} resyncing after the outage')
        # They consume again: a cast now (a route on the router, a new port)
        # is acted on, with no resync behind it.
        nexthop = f'{self.cidr}.200'
        self.api.update_router(router['id'], routes=[
            {'destination': '192.0.2.0/24', 'nexthop': nexthop}])
        rns = naming.router_namespace(router['id'])
        wait_until(lambda: nexthop in base.run('ip', 'netns', 'exec', rns, 'ip', 'route').stdout,
                   EVENT_TIMEOUT, 'the extra route in the router (L3 agent consuming)')
        self.api.update_router(router['id'], routes=[])
        new_active, new_lease = self.new_vm_gets_lease(net, 'after')
        figures = self.canary.stop()
        self.assertGreater(figures['pings sent'], 2 * 5 * RABBIT_OUTAGE, figures)
        self.assertEqual(0, figures['pings lost'], figures)
        self.assertGreater(figures['dhcp renewals'], RABBIT_OUTAGE / 5 - 1, figures)
        self.assertEqual(0, figures['leases lost'], figures)
        self.assert_no_errors(back, 'after RabbitMQ was back')
        reliability.record(
            'fullstack-rabbitmq-outage', kind='fault', order=11,
            fault='RabbitMQ stopped for 30 s while ports are created and plugged',
            injected='rabbitmqctl stop_app, 30 s, start_app; real neutron-server 29, the '
                     'four agents; 8 ports plugged and 4 created+plugged during the outage',
            checked='agents report again by themselves, resync, every port ACTIVE with a '
                    'dnsmasq entry, a later route and port are acted on, canary pings and '
                    'DHCP renewals',
            result={'outage s': round(outage, 1),
                    'agents reporting again in s': round(t_reported, 1),
                    'all ports ACTIVE in s': round(t_active, 1),
                    'all DHCP entries in s': round(t_dhcp, 1),
                    'new port ACTIVE / leased in s': f'{new_active:.1f} / {new_lease:.1f}',
                    **outage_figures(failed, logged),
                    **figures})

    # -- 2. neutron-server away for 2 minutes ------------------------------------------
    def test_server_outage_keeps_host_and_converges(self):
        self.start_agents()
        net, subnet, _, router, vms = self.build_network()
        wait_until(lambda: self.all_active({p['id'] for _, p in vms}), EVENT_TIMEOUT,
                   'VM ports ACTIVE')
        before = self.snapshot(net, router)
        self.assertTrue(before['dnsmasq'] and before['metadata proxy'], before)
        self.assertEqual(2, len(before['namespaces']), before)
        self.assertTrue(before['iptables (host, filter+raw)'], 'no firewall rules')
        self.assertIn(vms[0][1]['id'], {i for _, i in before['OVS ports and tags'].values()})
        offsets = self.log_offsets()

        self.addCleanup(neutron_server.restart)
        t_stop = time.monotonic()
        neutron_server.stop_neutron()
        time.sleep(max(0.0, SERVER_OUTAGE - (time.monotonic() - t_stop)))
        during = self.snapshot(net, router)
        self.assertTrue(all(p.proc.poll() is None for p in self.agents.values()),
                        'an agent exited while the server was away')
        logged = {n: self.log_since(offsets, n) for n in AGENTS}
        outage = time.monotonic() - t_stop
        restart_s = neutron_server.restart()
        t_back = time.monotonic()
        self.assertEqual(before, during, 'the host changed while the server was away')

        # Reporting went on at its interval, each failure once, no flood.
        attempts = outage / REPORT_INTERVAL + 1
        failed = {n: sum(REPORT_FAILED in line for line in logged[n]) for n in AGENTS}
        for name in ('l2', 'dhcp', 'l3'):
            self.assertGreater(failed[name], 0, f'agentkit-{name} reported no failure')
            self.assertLessEqual(failed[name], attempts, f'agentkit-{name}: {failed}')
            self.assertLessEqual(len(logged[name]), 3 * attempts,
                                 f'agentkit-{name} flooded its log: {logged[name][-20:]}')

        self.wait_all_alive()
        t_alive = time.monotonic() - t_back
        new_active, new_lease = self.new_vm_gets_lease(net, 'after')
        after = self.snapshot(net, router)
        # The new VM's port is the one addition.
        new_ports = {k: v for k, v in after['OVS ports and tags'].items()
                     if k not in before['OVS ports and tags']}
        self.assertEqual(1, len(new_ports), new_ports)
        after['OVS ports and tags'] = {k: v for k, v in after['OVS ports and tags'].items()
                                       if k not in new_ports}
        for key in ('OVS ports and tags', 'namespaces', 'dnsmasq', 'metadata proxy',
                    'qrouter rules', 'qdhcp addresses'):
            self.assertEqual(before[key], after[key], f'{key} changed after the server returned')
        # The new port adds rules; none of the others went.
        self.assertEqual([], [r for r in before['iptables (host, filter+raw)'].splitlines()
                              if r not in after['iptables (host, filter+raw)'].splitlines()],
                         'firewall rules removed after the server returned')
        self.assertEqual(vms[0][1]['device_id'], self.instance_id(vms[0][0]))
        figures = self.canary.stop()
        self.assertGreater(figures['pings sent'], 2 * 5 * SERVER_OUTAGE, figures)
        self.assertEqual(0, figures['pings lost'], figures)
        self.assertEqual(0, figures['leases lost'], figures)
        reliability.record(
            'fullstack-server-outage', kind='fault', order=12,
            fault='neutron-server down for 2 minutes',
            injected='tools/neutron-server.sh stop-neutron (API, RPC, periodic workers; '
                     'MariaDB and the vhost stay), 120 s, start',
            checked='OVS ports/tags, namespaces, dnsmasq pid, metadata proxy, iptables '
                    'unchanged during and after; report attempts and log lines during the '
                    'outage; agents alive again; a new port ACTIVE with a lease; canary',
            result={'outage s': round(outage, 1), 'server restart s': round(restart_s, 1),
                    'agents alive again in s': round(t_alive, 1),
                    'new port ACTIVE / leased in s': f'{new_active:.1f} / {new_lease:.1f}',
                    **outage_figures(failed, logged),
                    **figures})

    # -- 3. kill -9 of every agent in a burst ------------------------------------------
    def test_kill_agents_during_port_burst(self):
        self.start_agents()
        net, subnet, extra, router, vms = self.build_network(extra_subnets=2)
        lock = threading.Lock()
        created, killed = [], []
        kill_at, t_kill = BURST // 2, [0.0]

        def one(i):
            port = self.create_vm_port(net, f'b{i}')
            self.plug_port(port, net)
            with lock:
                created.append(port)
                if len(created) == BURST // 4:  # a router interface being built
                    self.api.add_router_interface(router['id'], extra[0]['id'])
                if len(created) == kill_at:
                    t_kill[0] = time.monotonic()
                    for name in AGENTS:
                        self.agents[name].signal(signal.SIGKILL)
                    for name in AGENTS:
                        killed.append((name, self.agents[name].wait(10)))
                if len(created) == 3 * BURST // 4:  # and one while the agents are dead
                    self.api.add_router_interface(router['id'], extra[1]['id'])
            return port
        t_burst = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(BURST)))
        burst_s = time.monotonic() - t_burst
        self.assertEqual([(name, -signal.SIGKILL) for name in AGENTS], killed)
        # Nova deletes some VMs while the agents are dead: unplug, then delete.
        before_kill, after_kill = created[:kill_at], created[kill_at:]
        deleted = before_kill[:5] + after_kill[:5]
        for port in deleted:
            fake_vm.unplug_ovs_hybrid(port['id'], self.bridge)
            self.api.delete('ports', port['id'], missing_ok=False)
        kept = [p for p in created if p not in deleted]
        # Every wired port had chains before the kill (the positive control
        # of "their chains are gone" below).
        rules = base.run('iptables-save', '-t', 'filter').stdout
        wired = [p for p in deleted[:5] if self.firewall_chain_name('i', p['id']) in rules]
        t_restart = time.monotonic()
        dead_s = t_restart - t_kill[0]
        offsets = {name: 0 for name in AGENTS}
        for name in AGENTS:
            self.start_agent(name)
        ids = {p['id'] for p in kept}
        wait_until(lambda: self.all_active(ids), 3 * EVENT_TIMEOUT,
                   f'the {len(ids)} kept ports ACTIVE', 0.5)
        t_active = time.monotonic() - t_restart
        self.wait_dhcp_entries(net, kept)
        t_dhcp = time.monotonic() - t_restart
        self.assertEqual(set(), self.dhcp_hosts(net['id']) & {p['mac_address'] for p in deleted},
                         'dnsmasq still has host entries of deleted ports')
        # Every kept port is wired whole: on br-int with the network's tag
        # (that of the VMs plugged before the burst), and filtered.
        ports = self.br_int_ports()
        tag = next(t for name, (t, i) in ports.items() if i == vms[0][1]['id'])
        by_id = {i: (name, t) for name, (t, i) in ports.items()}
        self.assertEqual({p['id']: tag for p in kept},
                         {p['id']: by_id.get(p['id'], ('', None))[1] for p in kept})

        def chains_complete():
            rules = base.run('iptables-save', '-t', 'filter').stdout
            return all(self.firewall_chain_name(k, p['id']) in rules
                       for p in kept for k in ('i', 'o'))
        wait_until(chains_complete, EVENT_TIMEOUT, 'firewall chains of every kept port')
        # Router interfaces, the one added while the L3 agent was dead too.
        rns = naming.router_namespace(router['id'])
        gateways = {f'{s["gateway_ip"]}/{s["cidr"].split("/")[1]}'
                    for s in (subnet, *extra)}
        wait_until(lambda: gateways <= {c for d, cs in base.namespace_addresses(rns).items()
                                        if d.startswith('qr-') for c in cs},
                   EVENT_TIMEOUT, f'qr- ports of every subnet in {rns}')
        router_ports = self.api.list_ports(device_id=router['id'])
        wait_until(lambda: all(self.api.show_port(p['id'])['status'] == 'ACTIVE'
                               for p in router_ports), EVENT_TIMEOUT, 'router ports ACTIVE')
        # Nothing of the deleted ports is left; nothing on br-int the server
        # does not know.
        self.assertEqual(5, len(wired), 'the ports deleted later were not wired before')
        self.assert_host_clean([p['id'] for p in deleted])
        known = {p['id'] for p in self.api.list_ports(network_id=net['id'])}
        self.assertEqual([], [n for n, (t, i) in self.br_int_ports().items()
                              if i and i not in known], 'OVS ports of unknown ports')
        self.assertEqual(vms[0][1]['device_id'], self.instance_id(vms[0][0]))
        self.assert_no_errors(offsets, 'after the restart')
        figures = self.canary.stop()
        self.assertEqual(0, figures['pings lost'], figures)
        self.assertEqual(0, figures['leases lost'], figures)
        reliability.record(
            'fullstack-kill-agents-burst', kind='fault', order=41,
            fault='kill -9 of every agent in a burst of 100 port creations',
            injected=f'{BURST} ports created and os-vif hybrid-plugged by 4 threads, router '
                     f'interfaces added before and during; SIGKILL of l2, dhcp, l3, metadata '
                     f'after {kill_at}; 10 ports unplugged and deleted while dead; restart',
            checked='every kept port ACTIVE, dnsmasq entry, br-int tag, firewall chains; '
                    'router qr- ports; nothing left of deleted ports (OVS, iptables, '
                    'ipsets, dnsmasq, files); metadata served; canary',
            result={'burst s': round(burst_s, 1), 'agents dead s': round(dead_s, 1),
                    'restart -> all ports ACTIVE s': round(t_active, 1),
                    'restart -> all DHCP entries s': round(t_dhcp, 1),
                    **figures})
