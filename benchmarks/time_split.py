#!/usr/bin/env python3
"""Benchmark: where the time goes for one port, one network, one router,
under the **real** neutron-server 29.

Runs against the demo (``tools/demo.sh up`` first: neutron-server 29 and
agentkit's four agents on this host, the demo's external network). For each
of three phases it asks each agent for its Guru Meditation Report
(``kill -USR2``, written to ``<demo root>/gmr``) before and after, and prints
the difference of the agents' "Time Spent" sections (agentkit.lib.timing):

- network: a network and a DHCP subnet are created -> the DHCP port is
  ACTIVE and dnsmasq runs in its namespace;
- port: a port bound to the host is created and plugged as os-vif's hybrid
  plug does -> ACTIVE;
- router: a router with its gateway on the demo's external network and an
  interface on the phase-1 subnet -> its namespace has the interface's
  address and both router ports are ACTIVE.

Per agent: RPC calls and the time spent waiting for them, split into
RabbitMQ (calls x the broker round trip, measured with an echo RPC server
of this script on the same vhost) and the server's own time (the rest);
OVSDB commits; privsep round trips per module (netlink, iptables...), each
including the work the daemon did; the agent process's CPU time. Waits of
several worker threads overlap, so the rows can add up to more than the
phase's wall time.

Usage (root, one at a time):
    tools/demo.sh up
    .venv/bin/python benchmarks/time_split.py [--root /var/lib/agentkit-demo] [--runs 1]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT_DIR)
sys.path.insert(0, os.path.join(ROOT_DIR, 'tools'))

import demo  # noqa: E402  (tools/demo.py: the demo's names and os-vif plug)
from benchmarks import common  # noqa: E402
from tests.functional import neutron_server  # noqa: E402  (selects the concurrency backend)

import oslo_messaging  # noqa: E402
from oslo_config import cfg  # noqa: E402

AGENTS = ('l2', 'dhcp', 'l3', 'metadata')
TIMEOUT = 90.0


# -- the agents' ledgers -------------------------------------------------------------
def read_agents(root: str) -> list[common.AgentLedger]:
    gmr_dir = os.path.join(root, 'gmr')
    agents = []
    for name in AGENTS:
        try:
            with open(os.path.join(root, 'run', f'{name}.pid')) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            sys.exit(f'agentkit-{name} of the demo is not running: run tools/demo.sh up')
        agents.append(common.AgentLedger(name, pid, gmr_dir))
    return agents


# -- the broker's share -----------------------------------------------------------------
class Echo:
    def echo(self, ctxt: Any, value: Any) -> Any:
        return value


def broker_round_trip(transport_url: str, calls: int = 30) -> float:
    """Median seconds of an RPC call answered at once, on the same broker."""
    transport = oslo_messaging.get_rpc_transport(cfg.CONF, url=transport_url)
    topic = f'akbench-echo-{uuid.uuid4().hex[:6]}'
    server = oslo_messaging.get_rpc_server(
        transport, oslo_messaging.Target(exchange='neutron', topic=topic, server='bench'),
        [Echo()])
    server.start()
    try:
        client = oslo_messaging.get_rpc_client(
            transport, oslo_messaging.Target(exchange='neutron', topic=topic), timeout=10)
        client.call({}, 'echo', value=0)  # queues and reply queue declared
        samples = []
        for i in range(calls):
            started = time.perf_counter()
            client.call({}, 'echo', value=i)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)
    finally:
        server.stop()
        server.wait()
        transport.cleanup()


# -- the phases ----------------------------------------------------------------------------
def wait(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f'timed out waiting for {what}')


def dnsmasq_running(network_id: str) -> bool:
    return subprocess.run(['pgrep', '-f', f'dnsmasq.*{network_id}'],
                          capture_output=True).returncode == 0


def ns_has_address(namespace: str, address: str) -> bool:
    proc = subprocess.run(['ip', 'netns', 'exec', namespace, 'ip', '-o', '-4', 'addr'],
                          capture_output=True, text=True)
    return f' {address}/' in proc.stdout


class Scenario:
    def __init__(self, api: demo.Api, host: str, br_int: str, tag: str) -> None:
        self.api, self.host, self.br_int, self.tag = api, host, br_int, tag
        self.net: dict[str, Any] = {}
        self.subnet: dict[str, Any] = {}
        self.port: dict[str, Any] = {}
        self.router: dict[str, Any] = {}
        self.vm = f'ts-{tag}'

    def network(self) -> None:
        self.net = self.api.create_network(name=f'ts-{self.tag}-net')
        self.subnet = self.api.create_subnet(
            network_id=self.net['id'], ip_version=4, enable_dhcp=True,
            cidr=f'10.{76 + int(self.tag, 16) % 20}.{int(self.tag, 16) % 250}.0/24',
            name=f'ts-{self.tag}-sub')

        def dhcp_ready() -> bool:
            ports = self.api.list_ports(network_id=self.net['id'],
                                        device_owner='network:dhcp')
            return bool(ports) and all(p['status'] == 'ACTIVE' for p in ports) \
                and dnsmasq_running(self.net['id'])
        wait(dhcp_ready, 'the DHCP port ACTIVE and dnsmasq running')

    def vm_port(self) -> None:
        self.port = self.api.create_port(
            network_id=self.net['id'], name=self.vm, device_owner='compute:nova',
            device_id=str(uuid.uuid4()), **{'binding:host_id': self.host})
        with contextlib.redirect_stdout(io.StringIO()):
            demo.plug_vm(self.vm, self.port, self.br_int, self.net['mtu'])
        wait(lambda: self.api.show_port(self.port['id'])['status'] == 'ACTIVE',
             'the VM port ACTIVE')

    def router_up(self) -> None:
        public = self.api.find('networks', name='demo-public')
        if not public:
            raise RuntimeError('the demo\'s external network demo-public is missing: '
                               'run tools/demo.sh up to the end')
        self.router = self.api.create_router(
            name=f'ts-{self.tag}-router', external_gateway_info={'network_id': public['id']})
        self.api.add_router_interface(self.router['id'], self.subnet['id'])
        namespace = f'qrouter-{self.router["id"]}'

        def ready() -> bool:
            ports = self.api.list_ports(device_id=self.router['id'])
            return len(ports) >= 2 and all(p['status'] == 'ACTIVE' for p in ports) \
                and ns_has_address(namespace, self.subnet['gateway_ip'])
        wait(ready, 'the router\'s ports ACTIVE and its qr- address')

    def cleanup(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            if self.port:
                demo.unplug_vm(self.vm, self.port['id'], self.br_int)
                self.api.delete('ports', self.port['id'])
            if self.router:
                with contextlib.suppress(Exception):
                    self.api.remove_router_interface(self.router['id'], self.subnet['id'])
                self.api.delete('routers', self.router['id'])
            if self.net:
                self.api.delete('networks', self.net['id'])


# -- report ----------------------------------------------------------------------------------
def diff(after: dict, before: dict) -> dict[tuple[str, str], tuple[int, float]]:
    out = {}
    for key, (calls, seconds) in after.items():
        c0, s0 = before.get(key, (0, 0.0))
        if calls - c0:
            out[key] = (calls - c0, seconds - s0)
    return out


def report(phase: str, wall: float, rtt: float, agents: list[common.AgentLedger],
           spent: dict[str, dict], cpu: dict[str, float]) -> None:
    print(f'\n{phase}: {wall:.2f} s from the request to ready')
    print(f'  {"agent":<9} {"what":<44} {"calls":>6} {"seconds":>8}')
    for agent in agents:
        rows = spent[agent.name]
        if not rows and cpu[agent.name] < 0.01:
            continue
        rpc_calls = sum(c for (cat, _), (c, _) in rows.items() if cat == 'rpc')
        rpc_seconds = sum(s for (cat, _), (_, s) in rows.items() if cat == 'rpc')
        for (cat, name), (calls, seconds) in sorted(rows.items()):
            print(f'  {agent.name:<9} {cat + ": " + name:<44} {calls:>6} {seconds:>8.3f}')
        if rpc_calls:
            broker = min(rpc_seconds, rpc_calls * rtt)
            print(f'  {agent.name:<9} {"  = RabbitMQ (calls x round trip)":<44} '
                  f'{rpc_calls:>6} {broker:>8.3f}')
            print(f'  {agent.name:<9} {"  = neutron-server (the rest)":<44} '
                  f'{"":>6} {rpc_seconds - broker:>8.3f}')
        print(f'  {agent.name:<9} {"CPU of the agent process":<44} {"":>6} '
              f'{cpu[agent.name]:>8.3f}')


def run_once(scenario: Scenario, agents: list[common.AgentLedger], rtt: float) -> None:
    for phase, action in (('network (DHCP)', scenario.network),
                          ('port (L2, hybrid plug)', scenario.vm_port),
                          ('router (L3: gateway + interface)', scenario.router_up)):
        before = {a.name: a.ledger() for a in agents}
        cpu0 = {a.name: a.cpu_seconds() for a in agents}
        started = time.monotonic()
        action()
        wall = time.monotonic() - started
        time.sleep(1.0)  # reports that follow "ready" (e.g. a last status)
        cpu = {a.name: a.cpu_seconds() - cpu0[a.name] for a in agents}
        spent = {a.name: diff(a.ledger(), before[a.name]) for a in agents}
        report(phase, wall, rtt, agents, spent, cpu)


class Demo:
    """The running demo under ``root`` (``tools/demo.sh up``): its agents'
    ledgers, server, host, integration bridge, config and API client."""

    def __init__(self, root: str) -> None:
        os.environ.setdefault('AGENTKIT_NEUTRON_STATE', os.path.join(root, 'neutron-server'))
        os.environ.setdefault('AGENTKIT_NEUTRON_VHOST', 'agentkit-demo')
        os.environ.setdefault('AGENTKIT_NEUTRON_PHYSNET', 'physnet1')
        self.agents = read_agents(root)  # exits unless the demo's agents run
        self.server = neutron_server.get_server()  # the demo's, already running
        with open(os.path.join(root, 'etc', 'demo.ini')) as f:
            self.config = f.read()
        self.host = self.option('host')
        self.br_int = self.option('integration_bridge')
        self.api = demo.Api(self.server.api_url,
                            os.environ.get('AGENTKIT_DEMO_PROJECT', 'demo'))

    def option(self, name: str) -> str | None:
        found = re.search(rf'^{name} = (\S+)', self.config, re.M)
        return found.group(1) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--root', default=os.environ.get('AGENTKIT_DEMO_ROOT',
                                                         '/var/lib/agentkit-demo'))
    parser.add_argument('--runs', type=int, default=1)
    args = parser.parse_args()
    common.exit_on_sigterm()
    env = Demo(args.root)
    agents, server, api = env.agents, env.server, env.api
    host, br_int = env.host, env.br_int
    rtt = broker_round_trip(server.transport_url)
    print(f'server: real neutron-server 29 ({server.api_url}); host {host}; '
          f'RabbitMQ round trip of an RPC call answered at once: {rtt * 1000:.1f} ms')
    for _ in range(args.runs):
        scenario = Scenario(api, host, br_int, uuid.uuid4().hex[:4])
        try:
            run_once(scenario, agents, rtt)
        finally:
            scenario.cleanup()


if __name__ == '__main__':
    main()
