#!/usr/bin/env python3
"""Benchmark: N ports plugged at once -> ACTIVE, under the real neutron-server 29.

The fake server of ``benchmarks/l2_plug.py`` answers instantly and does no
provisioning; the real one binds ports, keeps provisioning blocks, writes
the database and answers each report with fanouts, so its figure is the one
that matters (issue 11: 16.6-17.2 s for 20 ports before the batching work,
Neutron's OVS agent 10.0-31.4 s; goal <= 2 s, median port <= 0.5 s).

What it does: starts (or reuses) the real server with
``tests.functional.neutron_server.get_server()`` (a server it started is
stopped again at exit), runs agentkit-l2 (openvswitch, userspace datapath)
under a host name of its own against the server's vhost, creates one vxlan
network and N ports bound to that host (``device_owner compute:nova``)
through the REST API, then plugs all N in **one OVSDB transaction** (one
``ovs-vsctl`` call): internal ports on br-int for the ``noop`` firewall, the
``qvo`` ends of os-vif hybrid plugs for ``iptables_hybrid`` (each port's
``tap``, ``qbr`` and ``qvb``/``qvo`` veth are made before the clock starts, as
os-vif does before it touches OVS). Measured: plug -> every port ACTIVE in the
API (polled every 0.1 s), per port and overall; the RPC calls the agent sent
during the plug phase, counted **on the broker** (a queue of this script
bound to the vhost's ``neutron`` topic exchange, as ``benchmarks/idle_rpc.py``
does; a call is the agent's when its reply queue is the one its
``report_state`` named); and how often the server logged "Attempt 1 to
provision port" for the ports (once each is ideal).

Everything it created is removed at the end: ports, network, the agent's
record, bridges, hybrid-plug devices, firewall chains.

``--agent neutron`` runs Neutron's own ``neutron-openvswitch-agent`` (from
``.venv-neutron``, the server's venv; ``root_helper = env`` and each privsep
context's ``helper_command`` set, as there is no sudo here) through the same
steps, so both figures come from one server in one sitting; repeat
``--agent`` to run both.

Usage (root, one at a time, after tools/install-deps.sh):
    .venv/bin/python benchmarks/l2_real_server.py [--ports 20]
        [--firewall noop] [--firewall iptables_hybrid] [--runs 1]
        [--agent agentkit] [--agent neutron]
"""

from __future__ import annotations

import argparse
import collections
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from benchmarks import idle_rpc  # noqa: E402
from tests.functional import neutron_server  # noqa: E402

AGENT_TIMEOUT = 60.0
ACTIVE_TIMEOUT = 120.0
# The harness's server declares an agent dead after 30 s (agent_down_time,
# tools/neutron-server.sh): reports every 30 s, as at the defaults, lose
# the agent while the server is busy creating 1,000 ports (port 119 was
# bound "binding_failed"). Neutron's advice: at most half of it.
REPORT_INTERVAL = 10
PROVISIONED = re.compile(r'Attempt 1 to provision port ([0-9a-f-]{36})')


def active_timeout(n: int) -> float:
    """Seconds to wait for N ports: the server provisions them one by one."""
    return max(ACTIVE_TIMEOUT, 0.5 * n)


class TimedCounter(idle_rpc.BrokerCounter):
    """The broker counter, with each message's arrival time (monotonic)."""

    def _on_message(self, body: Any, message: Any) -> None:
        info = message.delivery_info
        self.messages.put((info.get('exchange', ''), info.get('routing_key', ''),
                           (time.monotonic(), body)))
        message.ack()

    def drain(self) -> list[tuple[str, str, dict[str, Any]]]:
        out = []
        while True:
            try:
                exchange, key, (received, body) = self.messages.get_nowait()
            except queue.Empty:
                return out
            try:
                inner = idle_rpc.amqp.unpack(body)
            except (AssertionError, KeyError, ValueError, TypeError):
                inner = {}
            inner['_seen'] = received
            out.append((exchange, key, inner))


def sh(*argv: str, check: bool = True, stdin: str | None = None) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, input=stdin,
                          timeout=120)
    if check and proc.returncode != 0:
        raise RuntimeError(f'{" ".join(argv[:4])}...: {proc.stderr.strip()[:500]}')
    return proc.stdout


class Run:
    """One agent, one network, N ports, under one firewall driver."""

    def __init__(self, server: neutron_server.Server, firewall: str, n: int,
                 agent: str = 'agentkit') -> None:
        self.server, self.firewall, self.n = server, firewall, n
        self.which = agent  # 'agentkit' or 'neutron' (neutron-openvswitch-agent)
        self.tag = uuid.uuid4().hex[:6]
        self.host = f'akl2b{self.tag}-host'
        self.br_int, self.br_tun = f'akl2b{self.tag}i', f'akl2b{self.tag}t'
        self.api = neutron_server.Client(server.api_url, uuid.uuid4().hex)
        self.workdir = tempfile.mkdtemp(prefix='agentkit-bench-', dir='/var/tmp')
        os.chmod(self.workdir, 0o755)
        self.agent: subprocess.Popen | None = None
        self.ports: list[dict[str, Any]] = []
        self.network: dict[str, Any] | None = None
        self.hybrid: list[tuple[str, str, str, str]] = []  # tap, qbr, qvb, qvo
        self.failed = False

    # -- set-up ----------------------------------------------------------------
    def config(self) -> str:
        return common.write_agent_config(
            os.path.join(self.workdir, 'l2.ini'), self.server.transport_url, self.host,
            self.workdir, {
                'agent': {'report_interval': REPORT_INTERVAL},
                'ovs': {'integration_bridge': self.br_int, 'datapath_type': 'netdev',
                        'tunnel_bridge': self.br_tun,
                        'int_peer_patch_port': f'akl2b{self.tag}pt',
                        'tun_peer_patch_port': f'akl2b{self.tag}pi'},
                'l2': {'mechanism_driver': 'openvswitch', 'tunnel_types': 'vxlan',
                       'local_ip': '127.0.0.1'},
                'securitygroup': {'firewall_driver': self.firewall}})

    def neutron_config(self) -> str:
        """neutron-openvswitch-agent's own options for the same host and bridges."""
        venv_bin = os.path.join(neutron_server.ROOT, '.venv-neutron', 'bin')
        sections: dict[str, dict[str, object]] = {
            'agent': {'tunnel_types': 'vxlan', 'root_helper': 'env',
                      'root_helper_daemon': '', 'report_interval': REPORT_INTERVAL},
            'ovs': {'integration_bridge': self.br_int, 'tunnel_bridge': self.br_tun,
                    'int_peer_patch_port': f'akl2b{self.tag}pt',
                    'tun_peer_patch_port': f'akl2b{self.tag}pi',
                    'datapath_type': 'netdev', 'local_ip': '127.0.0.1',
                    'of_listen_port': str(6653 + int(self.tag[:2], 16) % 100)},
            'securitygroup': {'firewall_driver': self.firewall},
            'oslo_concurrency': {'lock_path': os.path.join(self.workdir, 'lock')},
        }
        # No sudo here (root already): each privsep context runs the helper itself.
        for section in ('privsep', 'privsep_dhcp_release', 'privsep_ovs_vsctl',
                        'privsep_namespace', 'privsep_conntrack', 'privsep_link'):
            sections[section] = {'helper_command': f'{venv_bin}/privsep-helper'}
        return common.write_agent_config(
            os.path.join(self.workdir, 'neutron-ovs.ini'), self.server.transport_url,
            self.host, self.workdir, sections)

    def start_agent(self) -> None:
        log = open(os.path.join(self.workdir, 'l2.log'), 'wb')
        if self.which == 'neutron':
            venv_bin = os.path.join(neutron_server.ROOT, '.venv-neutron', 'bin')
            env = dict(os.environ, PATH=f'{venv_bin}:{os.environ.get("PATH", "")}')
            argv = [os.path.join(venv_bin, 'neutron-openvswitch-agent'),
                    '--config-file', self.neutron_config()]
        else:
            env = None
            argv = [os.path.join(os.path.dirname(sys.executable), 'agentkit-l2'),
                    '--config-file', self.config()]
        self.agent = subprocess.Popen(argv, stdout=log, stderr=log, env=env,
                                      start_new_session=True)

    def wait_alive(self) -> float:
        started = time.monotonic()
        while time.monotonic() - started < AGENT_TIMEOUT:
            if self.agent is not None and self.agent.poll() is not None:
                raise RuntimeError(f'agentkit-l2 exited ({self.agent.returncode}); '
                                   f'log: {self.workdir}/l2.log')
            agents = self.api.list_agents(host=self.host)
            if any(a['alive'] and a['agent_type'] == 'Open vSwitch agent' for a in agents):
                return time.monotonic() - started
            time.sleep(0.5)
        raise RuntimeError(f'agentkit-l2 not alive within {AGENT_TIMEOUT:.0f} s')

    def create_ports(self) -> None:
        if self.n > 400:  # the project's default quota is 500 ports
            self.api.request('PUT', f'/v2.0/quotas/{self.api.project_id}',
                             {'quota': {'port': -1}})
        self.network = self.api.create_network(name=f'akl2b{self.tag}-net')
        self.api.create_subnet(network_id=self.network['id'], cidr='10.79.0.0/22',
                               enable_dhcp=False, name=f'akl2b{self.tag}-sub')
        for i in range(self.n):
            port = self.api.create_port(
                network_id=self.network['id'], name=f'akl2b{self.tag}-p{i}',
                device_owner='compute:nova', device_id=str(uuid.uuid4()),
                **{'binding:host_id': self.host})
            self.ports.append(port)  # removed at the end even if unbound
            if port['binding:vif_type'] != 'ovs':
                alive = [a['alive'] for a in self.api.list_agents(host=self.host)]
                raise RuntimeError(f'port {i} not bound for OVS: '
                                   f'{port["binding:vif_type"]} (agent alive: {alive})')

    def prepare_hybrid(self) -> None:
        """tap + qbr + qvb/qvo for each port, as os-vif does before OVS."""
        batch = []
        for port in self.ports:
            short = port['id'][:11]
            tap, qbr, qvb, qvo = (f'tap{short}', f'qbr{short}', f'qvb{short}', f'qvo{short}')
            self.hybrid.append((tap, qbr, qvb, qvo))
            batch += [f'tuntap add name {tap} mode tap',
                      f'link add {qbr} type bridge',
                      f'link add {qvb} type veth peer name {qvo}',
                      f'link set {tap} master {qbr}', f'link set {qvb} master {qbr}',
                      f'link set {tap} up', f'link set {qbr} up',
                      f'link set {qvb} up', f'link set {qvo} up']
        sh('ip', '-batch', '-', stdin='\n'.join(batch) + '\n')
        for tap, _, qvb, qvo in self.hybrid:
            for device in (tap, qvb, qvo):
                sh('ethtool', '-K', device, 'tx', 'off', check=False)

    def plug_all(self) -> None:
        """Every port in one ovs-vsctl transaction."""
        argv = ['ovs-vsctl']
        for i, port in enumerate(self.ports):
            ids = (f'external_ids:iface-id={port["id"]} '
                   f'external_ids:attached-mac="{port["mac_address"]}" '
                   f'external_ids:iface-status=active external_ids:vm-uuid={port["device_id"]}')
            if self.firewall == 'iptables_hybrid':
                name = self.hybrid[i][3]
                argv += ['--', 'add-port', self.br_int, name, '--', 'set', 'Interface', name,
                         *ids.split()]
            else:
                name = 'tap' + port['id'][:11]
                argv += ['--', 'add-port', self.br_int, name, '--', 'set', 'Interface', name,
                         'type=internal', *ids.split()]
        sh(*argv)

    # -- measuring -----------------------------------------------------------------
    def wait_active(self, plugged_at: float) -> dict[str, float]:
        wanted = {p['id'] for p in self.ports}
        active: dict[str, float] = {}
        deadline = plugged_at + active_timeout(self.n)
        while len(active) < len(wanted) and time.monotonic() < deadline:
            now = time.monotonic()
            # Only the ids of the ACTIVE ones: at 1,000 ports the full list
            # every 0.1 s would be a load of its own on the server.
            for port in self.api.list_ports(network_id=self.network['id'],
                                            status='ACTIVE', fields='id'):
                if port['id'] in wanted:
                    active.setdefault(port['id'], now)
            if self.agent is not None and self.agent.poll() is not None:
                raise RuntimeError(f'agentkit-l2 exited ({self.agent.returncode})')
            time.sleep(0.1)
        return active

    def rpc_log(self) -> str:
        path = os.path.join(self.server.state_dir, 'log', 'rpc.log')
        with open(path, errors='replace') as f:
            return f.read()

    def measure(self) -> dict[str, Any]:
        vhost = urllib.parse.unquote(
            urllib.parse.urlsplit(self.server.transport_url).path.lstrip('/')) or '/'
        counter = TimedCounter(self.server.transport_url, vhost)
        seen: list[tuple[str, str, dict[str, Any], str]] = []  # ..., phase

        def drain(phase: str) -> None:
            seen.extend((e, k, inner, phase) for e, k, inner in counter.drain())
        try:
            self.start_agent()
            alive = self.wait_alive()
            self.create_ports()
            if self.firewall == 'iptables_hybrid':
                self.prepare_hybrid()
            time.sleep(3.0)  # the agent's start-up calls are over
            drain('start')
            log_start = len(self.rpc_log())
            plugged_at = time.monotonic()
            self.plug_all()
            plug_seconds = time.monotonic() - plugged_at
            active = self.wait_active(plugged_at)
            all_active = max(active.values()) - plugged_at if active else None
            time.sleep(3.0)  # calls that follow the last ACTIVE
            drain('plug')
            provisioned = collections.Counter(PROVISIONED.findall(self.rpc_log()[log_start:]))
        finally:
            counter.close()
        # Which reply queues are this agent's: those its report_state named.
        ours = set()
        for exchange, key, inner, _ in seen:
            if inner.get('method') == 'report_state':
                state = (inner.get('args') or {}).get('agent_state', {}).get('agent_state', {})
                if state.get('host') == self.host and inner.get('_reply_q'):
                    ours.add(inner['_reply_q'])
        calls: dict[str, collections.Counter] = {'start': collections.Counter(),
                                                 'plug': collections.Counter()}
        devices_per_call: dict[str, list[int]] = collections.defaultdict(list)
        sent_at: dict[str, float] = {}  # plug phase: method -> first call, after the plug
        unattributed = collections.Counter()
        for exchange, key, inner, phase in seen:
            if exchange != 'neutron' or not key.startswith('q-') or \
                    key.startswith('q-agent-notifier'):
                continue
            method = inner.get('method', '?')
            if inner.get('_reply_q') in ours:
                calls[phase][method] += 1
                if phase == 'plug':
                    sent_at.setdefault(method, inner['_seen'] - plugged_at)
                    args = inner.get('args') or {}
                    size = len(args.get('devices') or []) or (
                        len(args.get('devices_up') or []) + len(args.get('devices_down') or []))
                    devices_per_call[method].append(size)
            elif phase == 'plug' and method in idle_rpc.METHOD_AGENT:
                unattributed[method] += 1
        ids = [p['id'] for p in self.ports]
        latencies = [active[p] - plugged_at for p in ids if p in active]
        self.failed = len(active) < self.n  # its log is kept for a look
        return {'alive': alive, 'plug_seconds': plug_seconds, 'active': len(active),
                'all_active': all_active, 'latencies': latencies, 'calls': calls,
                'devices_per_call': devices_per_call, 'sent_at': sent_at,
                'unattributed': unattributed,
                'provisioned': [provisioned.get(p, 0) for p in ids]}

    # -- clean-up ------------------------------------------------------------------
    def cleanup(self) -> None:
        for port in self.ports:
            with _suppress():
                self.api.delete('ports', port['id'])
        if self.network:
            with _suppress():
                self.api.delete('networks', self.network['id'])
        if self.agent is not None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.agent.pid, signal.SIGKILL)
                self.agent.wait(5)
        with _suppress():
            for agent in self.api.list_agents(host=self.host):
                self.api.delete('agents', agent['id'])
        for br in (self.br_int, self.br_tun):
            sh('ovs-vsctl', '--if-exists', 'del-br', br, check=False)
        for tap, qbr, _, qvo in self.hybrid:
            for device in (tap, qvo, qbr):  # qvb goes with qvo
                sh('ip', 'link', 'del', device, check=False)
        if os.environ.get('BENCH_DEBUG') or self.failed:
            print('  agent log (kept):', os.path.join(self.workdir, 'l2.log'))
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if exc is not None:
            print(f'  (clean-up: {type(exc).__name__}: {exc})')
        return True


def report(firewall: str, n: int, r: dict[str, Any], agent: str = 'agentkit') -> None:
    who = ('neutron-openvswitch-agent (Neutron 29)' if agent == 'neutron'
           else 'agentkit-l2 openvswitch')
    head = f'real neutron-server 29, {who} (netdev), firewall {firewall}, N={n}'
    if r['active'] < n:
        print(f'{head}: only {r["active"]} of {n} ports ACTIVE within {active_timeout(n):.0f} s')
    else:
        lat = r['latencies']
        print(f'{head}: all {n} ACTIVE {r["all_active"]:.2f} s after the plug '
              f'(one OVSDB transaction, {r["plug_seconds"]:.2f} s); per port: '
              f'median {statistics.median(lat):.2f} s, min {min(lat):.2f} s, '
              f'max {max(lat):.2f} s')
    plug = r['calls']['plug']
    sizes = {m: '+'.join(map(str, s)) for m, s in r['devices_per_call'].items()}
    listing = ', '.join(f'{m} {c}' + (f' (devices {sizes[m]})' if sizes.get(m) else '')
                        for m, c in sorted(plug.items()))
    print(f'  RPC calls by the agent, plug -> all ACTIVE + 3 s (counted on the broker): '
          f'{sum(plug.values())}: {listing or "-"}')
    print('  first call of each method after the plug: ' + ', '.join(
        f'{m} {t:.2f} s' for m, t in sorted(r['sent_at'].items(), key=lambda i: i[1])))
    start = r['calls']['start']
    print(f'  (agent start-up, before the plug: {sum(start.values())} calls: '
          + ', '.join(f'{m} {c}' for m, c in sorted(start.items())) + ')')
    if r['unattributed']:
        print(f'  L2 calls on the vhost not attributed to this agent: {dict(r["unattributed"])}')
    prov = collections.Counter(r['provisioned'])
    print('  server log "Attempt 1 to provision port", times per port: '
          + ', '.join(f'{k}x: {v} ports' for k, v in sorted(prov.items())))
    print(f'  agent alive in the API {r["alive"]:.1f} s after its start', flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--ports', type=int, default=20)
    parser.add_argument('--firewall', action='append', choices=['noop', 'iptables_hybrid'])
    parser.add_argument('--runs', type=int, default=1)
    parser.add_argument('--agent', action='append', choices=['agentkit', 'neutron'],
                        help="whose L2 agent (repeat for both, same server and sitting); "
                             "neutron: neutron-openvswitch-agent from .venv-neutron")
    args = parser.parse_args()
    agents = args.agent or ['agentkit']
    firewalls = args.firewall or ['noop']
    common.exit_on_sigterm()
    try:
        server = neutron_server.get_server()
    except neutron_server.Unavailable as exc:
        sys.exit(f'real neutron-server unavailable: {exc}')
    print(f'real neutron-server 29 at {server.api_url} '
          f'({"started" if server.started else "reused"}, {server.setup_seconds:.1f} s)',
          flush=True)
    for firewall in firewalls:
        chains = None
        if firewall == 'iptables_hybrid':
            # The host's neutron-openvswi chains are one agent's; removed at the end.
            from oslo_config import cfg
            from tests.functional import base
            common.setup_privsep()
            chains = base.HostFirewallChains(cfg.CONF)
            chains.setUp()
        try:
            for _ in range(args.runs):
                for agent in agents:
                    run = Run(server, firewall, args.ports, agent)
                    try:
                        result = run.measure()
                    finally:
                        run.cleanup()
                    report(firewall, args.ports, result, agent)
        finally:
            if chains is not None:
                chains.cleanUp()


if __name__ == '__main__':
    main()
