#!/usr/bin/env python3
"""Benchmark: what agentkit's agents send at rest, under the **real**
neutron-server 29.

``benchmarks/idle_rpc.py`` counts the same against the fake server at a
large size; this one is issue 11's own scenario against the real server:
the demo (``tools/demo.sh up`` first: neutron-server 29, agentkit's four
agents, one tenant network with two VMs, a router with a gateway and a
floating IP) plus ``--networks`` more networks (default 9, so 10 in all),
each with a DHCP subnet and one VM port plugged as os-vif's hybrid plug
does, every one ACTIVE before counting starts.

Counted as ``idle_rpc.py`` does: a queue of this script bound to the
vhost's ``neutron`` topic exchange (``#``) and to every fanout exchange
gets a copy of every message; an agent's calls to the server are told
apart by the reply queue its ``report_state`` named. The window starts
once the agents have sent nothing but ``report_state`` for ``--quiet``
seconds and lasts ``--idle`` seconds (default 300, issue 11's five
minutes). The demo reports every 10 s (``report_interval``; Neutron's
default is 30 s), so its agents send three times the reports Neutron's
would; the script prints the interval. Also printed: the CPU seconds
neutron-server's processes used in the window. Issue 11's figures for
this scenario (before its work): Neutron's agents 40 ``report_state`` and
nothing else in five minutes (70 messages, server 7 s CPU); agentkit's 255
calls besides their reports (825 messages, server 31 s CPU).

The extra networks and VMs are removed at the end; the demo stays.

Usage (root, one at a time):
    tools/demo.sh up
    .venv/bin/python benchmarks/idle_real_server.py [--networks 9] [--idle 300]
        [--quiet 20]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
import uuid

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT_DIR)

from benchmarks import common  # noqa: E402
from benchmarks import idle_rpc  # noqa: E402
from benchmarks import time_split  # noqa: E402
from tests.functional import base  # noqa: E402


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (those still alive)."""
    ticks = os.sysconf('SC_CLK_TCK')
    total = 0
    for pid in pids:
        try:
            with open(f'/proc/{pid}/stat') as f:
                fields = f.read().rpartition(')')[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def count(counter: idle_rpc.BrokerCounter, quiet: float, idle: float
          ) -> tuple[idle_rpc.Tally, float]:
    """Wait for ``quiet`` s of report_state only, then tally ``idle`` s."""
    settle = idle_rpc.wait_until_quiet(counter, quiet)
    window = idle_rpc.Tally()
    window.reply_q = settle.reply_q
    end = time.monotonic() + idle
    while time.monotonic() < end:
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        for exchange, key, inner in counter.drain():
            window.add(exchange, key, inner)
    time.sleep(1.0)  # what was published in the window's last instant
    for exchange, key, inner in counter.drain():
        window.add(exchange, key, inner)
    return window, idle


def report(window: idle_rpc.Tally, idle: float, networks: int, server_cpu: float,
           report_interval: str) -> None:
    minutes = idle / 60
    print(f'\nreal neutron-server 29; the demo + {networks} networks with one VM each; '
          f'idle {idle:.0f} s; report_interval {report_interval} s (the demo\'s)')
    header = f'{"agent":<18} | {"report_state":>12} | {"other calls (by method)":<50} | msg/min'
    print(header)
    print('-' * len(header))
    total = 0
    agents = sorted(set(idle_rpc.AGENTS) | set(window.by_agent))
    for agent in agents:
        counts = window.by_agent.get(agent, collections.Counter())
        others = ', '.join(f'{m} {c}' for m, c in sorted(counts.items())
                           if m != 'report_state') or '-'
        n = sum(counts.values())
        total += n
        print(f'{agent:<18} | {counts["report_state"]:>12} | {others:<50} | {n / minutes:.1f}')
    reports = sum(c['report_state'] for c in window.by_agent.values())
    casts = sum(window.to_agents.values())
    print(f'{"all agents":<18} | {reports:>12} | {total - reports:<50} | {total / minutes:.1f}')
    print(f'server -> agent casts/fanouts in the window: {casts} '
          f'{dict(window.to_agents) or ""}')
    print(f'messages in all: {total + casts} (+ one reply per call); '
          f'neutron-server CPU in the window: {server_cpu:.1f} s')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--root', default=os.environ.get('AGENTKIT_DEMO_ROOT',
                                                         '/var/lib/agentkit-demo'))
    parser.add_argument('--networks', type=int, default=9)
    parser.add_argument('--idle', type=float, default=300.0)
    parser.add_argument('--quiet', type=float, default=20.0)
    args = parser.parse_args()
    common.exit_on_sigterm()
    env = time_split.Demo(args.root)
    server, api, host, br_int = env.server, env.api, env.host, env.br_int
    server_pids = [pid for pid in base.pids_with(os.environ['AGENTKIT_NEUTRON_STATE'])
                   if pid != os.getpid()]
    scenarios = []
    try:
        started = time.monotonic()
        for _ in range(args.networks):
            scenario = time_split.Scenario(api, host, br_int, uuid.uuid4().hex[:4])
            scenarios.append(scenario)
            scenario.network()
            scenario.vm_port()
        print(f'built {args.networks} networks with a VM each in '
              f'{time.monotonic() - started:.1f} s (all ACTIVE, dnsmasq running)', flush=True)
        vhost = os.environ['AGENTKIT_NEUTRON_VHOST']
        counter = idle_rpc.BrokerCounter(server.transport_url, vhost)
        try:
            print(f'counting on the broker ({counter.fanouts} fanout exchanges); '
                  f'waiting for {args.quiet:.0f} s of report_state only, then '
                  f'{args.idle:.0f} s ...', flush=True)
            cpu_before = cpu_seconds(server_pids)
            window, idle = count(counter, args.quiet, args.idle)
            server_cpu = cpu_seconds(server_pids) - cpu_before
        finally:
            counter.close()
        report(window, idle, args.networks, server_cpu,
               env.option('report_interval') or '30')
    finally:
        for scenario in scenarios:
            scenario.cleanup()


if __name__ == '__main__':
    main()
