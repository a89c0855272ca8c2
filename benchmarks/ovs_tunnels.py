#!/usr/bin/env python3
"""Benchmark: the openvswitch driver's tunnel ports at scale (networks x peers).

agentkit's OVS driver creates one VXLAN port on br-tun per (network, peer):
the port carries the network's VNI as ``options:key`` and its local VLAN as
its tag, so br-tun needs no flows of its own. Neutron's br-tun has one port
per peer (``options:key=flow``) and per-network OpenFlow rules that map VNI
<-> local VLAN. This measures what the per-network design costs: N vxlan
networks with one VM port each on one host, P peers known from
``tunnel_sync``; all N ports plugged in one OVSDB transaction.

Printed: time from the plug to every port reported up (fake server), the
tunnel ports on br-tun (expected N x P), the memory (RSS) of ovs-vswitchd,
ovsdb-server and the agent before and after, then the time to add one more
peer (``tunnel_update``: N more ports) and to forget it (``tunnel_delete``).

The server is the fake one (``tests/functional/fake_neutron.py``) on
RabbitMQ; the peers do not exist (nothing is sent to them): this measures
the control plane and the switch, not tunnel traffic.

Usage (root, one at a time, after tools/install-deps.sh):
    .venv/bin/python benchmarks/ovs_tunnels.py [--networks 200] [--peers 50]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from benchmarks import idle_rpc  # noqa: E402
from benchmarks import l2_plug  # noqa: E402

RUNDIR = '/var/run/openvswitch'


def daemon_rss_mib(name: str) -> float:
    try:
        with open(os.path.join(RUNDIR, f'{name}.pid')) as f:
            return idle_rpc.rss_kib(int(f.read().strip())) / 1024
    except (OSError, ValueError):
        return 0.0


def vsctl(*args: str) -> str:
    return subprocess.run(['ovs-vsctl', '--timeout=900', *args], check=True,
                          capture_output=True, text=True, timeout=900).stdout


def tunnel_ports(bridge: str) -> int:
    out = vsctl('--columns=name', '--format=csv', '--no-headings', 'find', 'Interface',
                'type=vxlan')
    names = set(vsctl('list-ports', bridge).split())
    return sum(1 for line in out.split() if line.strip('"') in names)


def wait_for(predicate, timeout: float, interval: float = 0.5) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    return None


def memory(agent_pid: int | None) -> str:
    parts = [f'ovs-vswitchd {daemon_rss_mib("ovs-vswitchd"):.0f} MiB',
             f'ovsdb-server {daemon_rss_mib("ovsdb-server"):.0f} MiB']
    if agent_pid:
        parts.append(f'agentkit-l2 {idle_rpc.rss_kib(agent_pid) / 1024:.0f} MiB')
    return ', '.join(parts)


def run(neutron, networks: int, peers: int) -> None:
    tag = uuid.uuid4().hex[:5]
    br_int, br_tun = f'aktn{tag}i', f'aktn{tag}t'
    host = f'aktn-{tag}'
    workdir = tempfile.mkdtemp(prefix='agentkit-bench-')
    config = common.write_agent_config(
        os.path.join(workdir, 'l2.ini'), neutron.transport_url, host, workdir, {
            'ovs': {'integration_bridge': br_int, 'tunnel_bridge': br_tun,
                    'int_peer_patch_port': f'aktn{tag}pt',
                    'tun_peer_patch_port': f'aktn{tag}pi', 'datapath_type': 'netdev'},
            'l2': {'mechanism_driver': 'openvswitch', 'type_drivers': 'vxlan',
                   'tunnel_types': 'vxlan', 'local_ip': '127.0.0.1',
                   'vni_ranges': '1:100000'}})
    with neutron.lock:
        neutron.tunnels[:] = [{'ip_address': f'10.251.{i // 250}.{i % 250 + 1}',
                               'udp_port': 4789, 'host': f'peer{i}'} for i in range(peers)]
    ports = []
    for i in range(networks):
        port_id = str(uuid.uuid4())
        mac = 'fa:16:3e:%02x:%02x:%02x' % (0xc0, i // 256, i % 256)
        neutron.port_details[port_id] = {
            'device': port_id, 'port_id': port_id, 'network_id': str(uuid.uuid4()),
            'mac_address': mac, 'admin_state_up': True, 'network_type': 'vxlan',
            'physical_network': None, 'segmentation_id': 5000 + i,
            'port_security_enabled': False}
        ports.append((port_id, mac, 'tap' + port_id[:11]))
    print(f'{networks} networks x {peers} peers: before: {memory(None)}', flush=True)
    log_path = os.path.join(workdir, 'l2.log')
    agent = l2_plug.start_agent(config, log_path)
    try:
        mark = neutron.mark()
        neutron.wait_for_call('report_state', timeout=60, since=mark)
        neutron.wait_for_call('tunnel_sync', timeout=60, since=mark)
        time.sleep(2.0)
        mark = neutron.mark()
        started = time.monotonic()
        l2_plug.plug_at_once(br_int, ports)
        wanted = {p[0] for p in ports}
        up: set[str] = set()

        def all_up() -> bool:
            for kw in neutron.calls_of('update_device_list'):
                up.update(d for d in kw['devices_up'] if d in wanted)
            return up >= wanted
        if wait_for(all_up, 600 + networks * peers * 0.1, 0.1) is None:
            print(f'  only {len(up)} of {networks} ports up in time')
            return
        wired = time.monotonic() - started
        count = tunnel_ports(br_tun)
        print(f'  plug -> all {networks} ports up: {wired:.1f} s; tunnel ports on '
              f'{br_tun}: {count} (expected {networks * peers}); RPC calls: '
              f'{l2_plug.describe(l2_plug.calls_since(neutron, mark))}', flush=True)
        print(f'  after: {memory(agent.pid)}', flush=True)

        new_peer = '10.251.250.1'
        started = time.monotonic()
        neutron.cast_to_agent('q-agent-notifier-tunnel-update', None, 'tunnel_update',
                              tunnel_ip=new_peer, tunnel_type='vxlan')
        took = wait_for(lambda: tunnel_ports(br_tun) >= count + networks, 600, 0.5)
        print(f'  a new peer (tunnel_update): {networks} more tunnel ports after '
              f'{took if took is None else round(took, 1)} s', flush=True)
        started = time.monotonic()
        neutron.cast_to_agent('q-agent-notifier-tunnel-delete', None, 'tunnel_delete',
                              tunnel_ip=new_peer, tunnel_type='vxlan')
        took = wait_for(lambda: tunnel_ports(br_tun) <= count, 600, 0.5)
        print(f'  that peer gone (tunnel_delete): its {networks} ports removed after '
              f'{took if took is None else round(took, 1)} s', flush=True)
    finally:
        l2_plug.stop_agent(agent)
        for bridge in (br_int, br_tun):
            subprocess.run(['ovs-vsctl', '--timeout=900', '--if-exists', 'del-br', bridge],
                           capture_output=True)
        with neutron.lock:
            neutron.tunnels[:] = []
        print(f'  after removing the bridges: {memory(None)}', flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--networks', type=int, default=200)
    parser.add_argument('--peers', type=int, default=50)
    args = parser.parse_args()
    neutron = common.setup()
    try:
        run(neutron, args.networks, args.peers)
    finally:
        neutron.stop()


if __name__ == '__main__':
    main()
