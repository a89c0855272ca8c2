#!/usr/bin/env python3
"""Benchmark: what agentkit's agents send on the broker while nothing changes.

One host, one fresh RabbitMQ vhost served by the fake neutron-server
(tests/functional/fake_neutron.py). On it: N VM ports (default 200) spread
over M networks with a DHCP subnet each (default 50), and R routers
(default 20), each with a gateway on one external network, an interface on
one of those networks and a floating IP to a VM port there. agentkit-dhcp,
agentkit-l3 and agentkit-metadata start first (interface driver
``openvswitch`` on a userspace-datapath integration bridge); once every
network is served (``dhcp_ready_on_ports`` for every VM port) and every
floating IP is ACTIVE, the fake server is given port details for every
port on the bridge (VM, DHCP and router ports, as the real server binds
them) and agentkit-l2 (``openvswitch``) starts and wires them all
(``update_device_list`` up for each).

What is counted, and how: an exclusive queue of this script is bound to the
vhost's ``neutron`` topic exchange with routing key ``#`` and to every
fanout exchange that exists once everything is built, so the broker hands
it a copy of every message published there. Messages whose routing key is
a server topic (``q-*``) are what the agents send to neutron-server; each
is unpacked (oslo.messaging 2.0 envelope) for its ``method`` and
attributed to an agent by its ``_reply_q`` (learned from the agent's own
``report_state``, which names its binary) or else by the method, which
belongs to one agent. Other topic and fanout messages are the server's
casts to agents, printed as totals. Replies to calls travel through the
broker's default exchange, which no queue can bind to; they are the
server's answers, one per call counted. The idle window starts once the
agents have sent nothing but ``report_state`` for ``--quiet``
seconds (the built state has settled) and lasts ``--idle`` seconds
(default 600). The fake server's own call log over the same window is
printed next to it: a call counted on the broker but not received, or the
other way round, would show there.

Goal (issue 11; Neutron's agents at rest): ``report_state`` only - every
``report_interval`` (30 s here, Neutron's default) per agent - and nothing
else. Also printed: the RSS of each agent together with its privsep
daemons at that size.

Usage (root, after tools/install-deps.sh):
  .venv/bin/python benchmarks/idle_rpc.py [--ports N] [--networks M] [--routers R]
      [--idle SECONDS] [--audit-interval SECONDS] [--quiet SECONDS]
"""

from __future__ import annotations

import argparse
import collections
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from tests.functional import amqp  # noqa: E402

import kombu  # noqa: E402

AGENTS = ('agentkit-l2', 'agentkit-dhcp', 'agentkit-l3', 'agentkit-metadata')
# Which agent a call belongs to when it carries no known reply queue (a cast).
METHOD_AGENT = {
    'get_devices_details_list_and_failed_devices': 'agentkit-l2',
    'get_devices_details_list': 'agentkit-l2',
    'update_device_list': 'agentkit-l2', 'update_device_up': 'agentkit-l2',
    'update_device_down': 'agentkit-l2', 'tunnel_sync': 'agentkit-l2',
    'security_group_info_for_devices': 'agentkit-l2',
    'security_group_rules_for_devices': 'agentkit-l2', 'bulk_pull': 'agentkit-l2',
    'get_active_networks_info': 'agentkit-dhcp', 'get_network_info': 'agentkit-dhcp',
    'create_dhcp_port': 'agentkit-dhcp', 'update_dhcp_port': 'agentkit-dhcp',
    'release_dhcp_port': 'agentkit-dhcp', 'dhcp_ready_on_ports': 'agentkit-dhcp',
    'get_router_ids': 'agentkit-l3', 'sync_routers': 'agentkit-l3',
    'update_floatingip_statuses': 'agentkit-l3',
    'get_host_ha_router_count': 'agentkit-l3', 'get_service_plugin_list': 'agentkit-l3',
    'get_external_network_id': 'agentkit-l3', 'update_ha_routers_states': 'agentkit-l3',
    'get_ports': 'agentkit-metadata',
}
EXT_VNI = 1999


class BrokerCounter(amqp.Capture):
    """A copy of every message on the vhost's exchanges (see the docstring)."""

    def __init__(self, transport_url: str, vhost: str) -> None:
        bindings = [kombu.binding(amqp.topic_exchange(), routing_key='#')]
        out = subprocess.run(['rabbitmqctl', '-q', 'list_exchanges', '-p', vhost,
                              'name', 'type'], capture_output=True, text=True,
                             check=True).stdout
        self.fanouts = 0
        for line in out.splitlines():
            name, _, kind = line.partition('\t')
            if kind == 'fanout':
                self.fanouts += 1
                bindings.append(kombu.binding(kombu.Exchange(
                    name, type='fanout', durable=False, auto_delete=True, passive=True)))
        super().__init__(url=transport_url, bindings=bindings)

    def drain(self) -> list[tuple[str, str, dict[str, Any]]]:
        out = []
        while True:
            try:
                msg = self.messages.get_nowait()
            except queue.Empty:
                return out
            try:
                inner = amqp.unpack(msg['body'])
            except (AssertionError, KeyError, ValueError, TypeError):
                inner = {}
            info = msg['delivery_info']
            out.append((info.get('exchange', ''), info.get('routing_key', ''), inner))


class Tally:
    """Agent -> server messages per agent and method; the rest as totals."""

    def __init__(self) -> None:
        self.by_agent: dict[str, collections.Counter] = collections.defaultdict(
            collections.Counter)
        self.reply_q: dict[str, str] = {}
        self.to_agents = collections.Counter()

    def add(self, exchange: str, key: str, inner: dict[str, Any]) -> tuple[str, str] | None:
        """Count one message; (agent, method) for an agent's call to the server."""
        method = inner.get('method', '?')
        if not (exchange == 'neutron' and key.startswith('q-')
                and not key.startswith('q-agent-notifier')):
            self.to_agents[f'{key} {method}'] += 1
            return None
        reply_q = inner.get('_reply_q')
        agent = None
        if method == 'report_state':
            state = (inner.get('args') or {}).get('agent_state', {}).get('agent_state', {})
            agent = state.get('binary')
            if reply_q and agent:
                self.reply_q[reply_q] = agent
        agent = agent or self.reply_q.get(reply_q) or METHOD_AGENT.get(method, '?')
        self.by_agent[agent][method] += 1
        return agent, method


def wait_until_quiet(counter: BrokerCounter, quiet: float, timeout: float = 600.0) -> Tally:
    """Tally messages until the agents have sent nothing but report_state
    for ``quiet`` seconds (at most ``timeout``); the tally knows their
    reply queues, for the window that follows."""
    tally = Tally()
    quiet_since = time.monotonic()
    deadline = quiet_since + timeout
    while time.monotonic() - quiet_since < quiet:
        if time.monotonic() > deadline:
            print(f'never quiet within {timeout:.0f} s; measuring anyway')
            break
        for exchange, key, inner in counter.drain():
            hit = tally.add(exchange, key, inner)
            if hit and hit[1] != 'report_state':
                quiet_since = time.monotonic()
        time.sleep(0.5)
    return tally


def rss_kib(pid: int) -> int:
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def agent_rss(pid: int, config: str) -> tuple[int, int, int]:
    """(agent KiB, its privsep daemons' KiB, number of privsep daemons).

    privsep-helper daemonises (init adopts it), so its daemons are found by
    the agent's own config file on their command line."""
    from agentkit.lib import external_process
    from tests.functional import base
    privsep = [p for p in base.pids_with(config) if p != pid
               and any('privsep' in a for a in external_process.read_cmdline(p) or [])]
    return rss_kib(pid), sum(rss_kib(p) for p in privsep), len(privsep)


class Bench:

    def __init__(self, neutron: Any, args: argparse.Namespace) -> None:
        self.neutron = neutron
        self.args = args
        self.tag = uuid.uuid4().hex[:6]
        self.host = f'akidle-{self.tag}'
        self.bridge_name = f'akidbr{self.tag}'
        self.state_path = tempfile.mkdtemp(prefix='agentkit-bench-', dir='/var/tmp')
        os.chmod(self.state_path, 0o755)
        self.procs: dict[str, subprocess.Popen] = {}
        self.vni: dict[str, int] = {}
        self.vm_ports: list[dict[str, Any]] = []
        self.fips: set[str] = set()
        from agentkit.lib.ovs import connection as ovs_connection
        self.bridge = ovs_connection.get_connection().bridge(self.bridge_name, 'netdev')

    def config(self, binary: str) -> str:
        path = os.path.join(self.state_path, f'{binary}.ini')
        sections = {
            'DEFAULT': {'transport_url': self.neutron.transport_url, 'host': self.host,
                        'state_path': self.state_path, 'interface_driver': 'openvswitch',
                        'debug': os.environ.get('BENCH_DEBUG', 'false')},
            'agent': {'report_interval': 30, 'audit_interval': self.args.audit_interval},
            'ovs': {'integration_bridge': self.bridge_name, 'datapath_type': 'netdev'},
        }
        if binary == 'agentkit-l2':
            sections['l2'] = {'mechanism_driver': 'openvswitch', 'type_drivers': 'vxlan',
                              'vni_ranges': '1:4000'}
        elif binary == 'agentkit-dhcp':
            sections['DEFAULT']['dhcp_driver'] = 'dnsmasq'
        elif binary == 'agentkit-l3':
            sections['DEFAULT']['l3_driver'] = 'namespace'
        elif binary == 'agentkit-metadata':
            sections['DEFAULT']['metadata_proxy_shared_secret'] = 'idle-bench'
        with open(path, 'w') as f:
            for name, options in sections.items():
                f.write(f'[{name}]\n')
                f.writelines(f'{k} = {v}\n' for k, v in options.items())
        return path

    def start(self, binary: str) -> None:
        log = open(os.path.join(self.state_path, f'{binary}.log'), 'wb')
        self.procs[binary] = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), binary), '--config-file',
             self.config(binary)], stdout=log, stderr=log, start_new_session=True)

    def build_model(self) -> None:
        args, n = self.args, self.neutron
        ext = n.add_network(mtu=1500)
        self.vni[ext['id']] = EXT_VNI
        n.add_subnet(ext['id'], '172.21.0.0/16', '172.21.0.1', enable_dhcp=False)
        subnets = []
        for i in range(args.networks):
            net = n.add_network(mtu=1450)
            self.vni[net['id']] = 2000 + i
            base = f'10.{150 + i // 250}.{i % 250}'
            subnets.append((net, n.add_subnet(net['id'], f'{base}.0/24', f'{base}.1'), base))
        per_net: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for j in range(args.ports):
            net, subnet, base = subnets[j % args.networks]
            host_part = 10 + j // args.networks
            mac = 'fa:16:3e:%02x:%02x:%02x' % (0xa1, j // 256, j % 256)
            port = n.add_port(net['id'], mac, [(subnet['id'], f'{base}.{host_part}')])
            self.vm_ports.append(port)
            per_net[net['id']].append(port)
        for i in range(args.routers):
            net, subnet, _ = subnets[i]
            router = n.add_router(gateway_network=ext, interfaces=[subnet],
                                  floating_ips=per_net[net['id']][:1], host=self.host)
            self.fips.update(f['id'] for f in router['_floatingips'])

    def wait(self, what: str, done, timeout: float) -> float:
        started = time.monotonic()
        while not done():
            if time.monotonic() - started > timeout:
                raise RuntimeError(f'{what}: not done within {timeout:.0f} s')
            for binary, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f'{binary} exited with {proc.returncode}')
            time.sleep(0.5)
        return time.monotonic() - started

    def reported(self, method: str, key: str) -> set[str]:
        found: set[str] = set()
        for kw in self.neutron.calls_of(method):
            value = kw[key]
            if isinstance(value, dict):  # fip_statuses
                found.update(k for k, v in value.items() if v == 'ACTIVE')
            else:
                found.update(value)
        return found

    def bridge_ports(self) -> set[str]:
        """iface-ids of the bridge's interfaces (VM, DHCP and router ports)."""
        from agentkit.lib.ovs import connection as ovs_connection
        return {i.iface_id for i in ovs_connection.get_connection().list_interfaces_with_iface_id(
            self.bridge_name)}

    def build(self) -> None:
        args = self.args
        print(f'building {args.ports} ports, {args.networks} DHCP networks, '
              f'{args.routers} routers ...', flush=True)
        self.build_model()
        self.bridge.create()
        started = time.monotonic()
        for binary in ('agentkit-dhcp', 'agentkit-l3', 'agentkit-metadata'):
            self.start(binary)
        vm_ids = {p['id'] for p in self.vm_ports}
        self.wait('DHCP for every network and every floating IP ACTIVE',
                  lambda: (vm_ids <= self.reported('dhcp_ready_on_ports', 'port_ids')
                           and self.fips <= self.reported('update_floatingip_statuses',
                                                          'fip_statuses')), 900)
        dhcp_l3 = time.monotonic() - started
        # Bind every port on the host, as the real server does for its agents.
        with self.neutron.lock:
            for net in self.neutron.networks.values():
                for port in net['ports']:
                    self.neutron.port_details[port['id']] = {
                        'device': port['id'], 'port_id': port['id'],
                        'network_id': net['id'], 'mac_address': port['mac_address'],
                        'admin_state_up': True, 'network_type': 'vxlan',
                        'physical_network': None, 'segmentation_id': self.vni[net['id']],
                        'fixed_ips': port['fixed_ips'], 'mtu': net['mtu'],
                        'port_security_enabled': False,
                        'device_owner': port['device_owner']}
        for port in self.vm_ports:
            self.bridge.add_port('tap' + port['id'][:11], type='internal', external_ids={
                'iface-id': port['id'], 'attached-mac': port['mac_address'],
                'iface-status': 'active'})
        l2_started = time.monotonic()
        self.start('agentkit-l2')
        on_bridge = self.bridge_ports()
        self.wait('every port on the bridge reported up',
                  lambda: on_bridge <= self.reported('update_device_list', 'devices_up'),
                  900)
        print(f'built: DHCP + routers {dhcp_l3:.1f} s, then L2 wired all '
              f'{len(on_bridge)} ports on the bridge in {time.monotonic() - l2_started:.1f} s '
              f'({len(on_bridge) - len(vm_ids)} of them DHCP and router ports)', flush=True)

    def measure(self) -> None:
        args = self.args
        counter = BrokerCounter(self.neutron.transport_url, self.neutron.vhost)
        try:
            print(f'counting on the broker: topic exchange "neutron" (#), '
                  f'and {counter.fanouts} fanout exchanges; '
                  f'waiting for {args.quiet:.0f} s with nothing but report_state ...',
                  flush=True)
            with self.neutron.lock:
                self.build_calls = collections.Counter(m for m, _ in self.neutron.calls)
            tally = wait_until_quiet(counter, args.quiet)
            settle = dict(tally.by_agent)
            for exchange, key, inner in counter.drain():
                tally.add(exchange, key, inner)
            window = Tally()
            window.reply_q = tally.reply_q
            mark = self.neutron.mark()
            print(f'idle window: {args.idle:.0f} s (audit_interval '
                  f'{args.audit_interval} s) ...', flush=True)
            end = time.monotonic() + args.idle
            while time.monotonic() < end:
                time.sleep(min(1.0, max(0.0, end - time.monotonic())))
                for exchange, key, inner in counter.drain():
                    window.add(exchange, key, inner)
                for binary, proc in self.procs.items():
                    if proc.poll() is not None:
                        raise RuntimeError(f'{binary} exited with {proc.returncode}')
            time.sleep(1.0)  # messages published in the window's last instant
            for exchange, key, inner in counter.drain():
                window.add(exchange, key, inner)
            with self.neutron.lock:
                received = collections.Counter(m for m, _ in self.neutron.calls[mark:])
        finally:
            counter.close()
        self.report(window, received, settle)

    def report(self, window: Tally, received: collections.Counter,
               settle: dict[str, collections.Counter]) -> None:
        args = self.args
        minutes = args.idle / 60
        print(f'\nSize: {args.ports} ports, {args.networks} DHCP networks, '
              f'{args.routers} routers; idle {args.idle:.0f} s; report_interval 30 s; '
              f'audit_interval {args.audit_interval} s')
        print('Goal: report_state only, like Neutron (every 30 s: 2 messages/minute '
              'per agent); a release_dhcp_port at rest is a bug, not load.\n')
        header = f'{"agent":<18} | {"report_state":>12} | {"other calls (by method)":<60} | msg/min'
        print(header)
        print('-' * len(header))
        total = 0
        for agent in sorted(set(AGENTS) | set(window.by_agent)):
            counts = window.by_agent.get(agent, collections.Counter())
            others = ', '.join(f'{m} {c}' for m, c in sorted(counts.items())
                               if m != 'report_state') or '-'
            n = sum(counts.values())
            total += n
            print(f'{agent:<18} | {counts["report_state"]:>12} | {others:<60} | '
                  f'{n / minutes:.1f}')
        reports = sum(c['report_state'] for c in window.by_agent.values())
        print(f'{"all agents":<18} | {reports:>12} | {"":<60} | {total / minutes:.1f}')
        print(f'\nalso on the broker in the window: {sum(window.to_agents.values())} '
              f'server -> agent casts/fanouts {dict(window.to_agents) or ""}')
        print(f'the fake server received in the window: {dict(sorted(received.items()))}')
        print('calls the fake server received while building: '
              f'{dict(sorted(self.build_calls.items()))}')
        if settle:
            print('after the build, before the window (agent -> server): '
                  + '; '.join(f'{a}: {dict(c)}' for a, c in sorted(settle.items())))
        print('\nRSS at this size (agent + its privsep daemons):')
        total_kib = 0
        for binary in AGENTS:
            agent, privsep, count = agent_rss(
                self.procs[binary].pid, os.path.join(self.state_path, f'{binary}.ini'))
            total_kib += agent + privsep
            print(f'  {binary:<18} {(agent + privsep) / 1024:6.0f} MiB '
                  f'(agent {agent / 1024:.0f} MiB + {count} privsep daemons '
                  f'{privsep / 1024:.0f} MiB)')
        print(f'  {"all four":<18} {total_kib / 1024:6.0f} MiB', flush=True)

    def cleanup(self) -> None:
        from agentkit.lib import ip_lib
        from tests.functional import base
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for pid in base.pids_with(self.state_path):  # dnsmasq, haproxy
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for net_id in list(self.vni):
            if ip_lib.namespace_exists(f'qdhcp-{net_id}'):
                ip_lib.delete_namespace(f'qdhcp-{net_id}')
        for router_id in list(self.neutron.routers):
            if ip_lib.namespace_exists(f'qrouter-{router_id}'):
                ip_lib.delete_namespace(f'qrouter-{router_id}')
        self.bridge.delete()
        if os.environ.get('BENCH_DEBUG'):
            print('agent logs kept in', self.state_path)
        else:
            shutil.rmtree(self.state_path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--ports', type=int, default=200)
    parser.add_argument('--networks', type=int, default=50)
    parser.add_argument('--routers', type=int, default=20)
    parser.add_argument('--idle', type=float, default=600,
                        help='seconds of the idle window')
    parser.add_argument('--audit-interval', type=int, default=600,
                        help="the agents' [agent] audit_interval")
    parser.add_argument('--quiet', type=float, default=20,
                        help='seconds with only report_state before the window')
    args = parser.parse_args()
    if not 0 < args.routers <= args.networks or args.ports < args.networks:
        parser.error('need 0 < routers <= networks <= ports')
    if args.ports // args.networks > 200:
        parser.error('at most 200 ports per network')
    neutron = common.setup()
    bench = Bench(neutron, args)
    try:
        bench.build()
        bench.measure()
    finally:
        bench.cleanup()
        neutron.stop()


if __name__ == '__main__':
    main()
