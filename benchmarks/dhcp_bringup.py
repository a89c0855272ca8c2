#!/usr/bin/env python3
"""Benchmark: agentkit-dhcp bringing up N networks, and resyncing them.

For N = 20 and N = 100 networks (one /24 DHCP subnet and one VM port each,
served by a fake neutron-server over RabbitMQ through
get_active_networks_info) it prints:
  * bring-up: time from starting agentkit-dhcp until every network's
    dnsmasq has answered a DHCP DISCOVER from that network's VM. Each
    network's probe backs off from 20 ms to 0.5 s between DISCOVERs and
    returns to 20 ms once that network's dnsmasq has started, so the answer
    is timed to ~20 ms without flooding the host (the old probe, every
    network every 20 ms, is ``--probe fixed``: 5,000 broadcasts a second
    at N = 100, which a userspace-datapath OVS could not carry);
  * resync: SIGTERM the agent, start it again, time until its full sync
    has re-applied every network (dhcp_ready_on_ports for all ports), how
    many dnsmasq processes were respawned (pid changed), and whether every
    network still answers DHCP.
With ``openvswitch`` each VM port and (as the L2 agent would, which this
benchmark does not run) each DHCP port gets a VLAN of its network, so a
DISCOVER reaches one dnsmasq, not all of them (``--no-isolate``: one
broadcast domain, the old set-up).
Reference (neutron-reference.md): Neutron 29 needs 12.7 s for 20 networks
and 6.1 s to resync them, respawning every dnsmasq.

Usage (root, after tools/install-deps.sh):
  .venv/bin/python benchmarks/dhcp_bringup.py [--interface-driver openvswitch|linuxbridge]
      [--probe backoff|fixed] [--no-isolate] [N ...]
"""

import argparse
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from benchmarks import dhcp_probe  # noqa: E402
from benchmarks import idle_rpc  # noqa: E402


FAST = 0.02     # first resend interval of a probe, and again once its dnsmasq runs
SLOW_CAP = 0.5  # back-off limit: at most 2 DISCOVERs a second per waiting network


def wait_all_answer(probes: dict, timeout: float, mode: str = 'backoff',
                    started=lambda net_id: False) -> tuple[dict, int]:
    """({net_id: monotonic time its dnsmasq first answered}, DISCOVERs sent).

    ``fixed``: every pending probe resends every 20 ms (the old probe: 100
    networks are 5,000 broadcasts a second). ``backoff``: each network's
    probe doubles its interval from 20 ms up to 0.5 s, and drops back to
    20 ms once that network's dnsmasq has started (``started``), so the
    answer is still timed to ~20 ms while networks that cannot answer yet
    cost at most 2 packets a second each.
    """
    answered: dict = {}
    deadline = time.monotonic() + timeout
    pending = dict(probes)
    next_send = dict.fromkeys(pending, 0.0)
    interval = dict.fromkeys(pending, FAST)
    running: set = set()
    sent = 0
    while pending and time.monotonic() < deadline:
        now = time.monotonic()
        for net_id, probe in pending.items():
            if mode == 'backoff' and net_id not in running and started(net_id):
                running.add(net_id)
                interval[net_id] = FAST
                next_send[net_id] = now
            if now >= next_send[net_id]:
                probe.send()
                sent += 1
                next_send[net_id] = now + interval[net_id]
                if mode == 'backoff':
                    interval[net_id] = min(SLOW_CAP, interval[net_id] * 2)
        socks = {p.sock: n for n, p in pending.items()}
        wake = min(next_send[n] for n in pending) - time.monotonic()
        ready, _, _ = select.select(list(socks), [], [], min(0.01, max(0.0, wake)))
        for sock in ready:
            net_id = socks[sock]
            if pending[net_id].answered():
                answered[net_id] = time.monotonic()
                del pending[net_id]
    return answered, sent


def tag_dhcp_ports(neutron, bridge, vlans: dict, stop: threading.Event) -> None:
    """Put each DHCP port agentkit-dhcp plugs into its network's VLAN.

    That is the L2 agent's job, and this benchmark runs none: untagged, all
    networks' ports share one broadcast domain on the bridge and every
    DISCOVER floods to every VM and every dnsmasq of the host.
    """
    done: set = set()
    while not stop.is_set():
        with neutron.lock:
            dhcp_ports = {p['id']: vlans[n['id']] for n in neutron.networks.values()
                          if n['id'] in vlans for p in n['ports']
                          if p['device_owner'] == 'network:dhcp'}
        for info in bridge.list_interfaces_with_iface_id():
            if info.iface_id in dhcp_ports and info.name not in done:
                bridge.add_port(info.name, tag=dhcp_ports[info.iface_id])
                done.add(info.name)
        stop.wait(0.05)


def run(neutron, n: int, interface_driver: str, probe_mode: str = 'backoff',
        isolate: bool = True) -> None:
    from agentkit.lib import ip_lib
    from agentkit.lib.ovs import connection as ovs_connection
    tag = uuid.uuid4().hex[:6]
    host = f'akbd-{tag}'
    bridge_name = f'akbdbr{tag}'
    state_path = tempfile.mkdtemp(prefix='agentkit-bench-', dir='/var/tmp')
    os.chmod(state_path, 0o755)
    os.makedirs(os.path.join(state_path, 'gmr'))
    config = os.path.join(state_path, 'dhcp.ini')
    with open(config, 'w') as f:
        f.write(f'[DEFAULT]\ntransport_url = {neutron.transport_url}\nhost = {host}\n'
                f'state_path = {state_path}\ninterface_driver = {interface_driver}\n'
                f'dhcp_driver = dnsmasq\n'
                f'debug = {os.environ.get("BENCH_DEBUG", "false")}\n'
                f'[agent]\nreport_interval = 30\n'
                f'[oslo_reports]\nlog_dir = {state_path}/gmr\n'
                f'[ovs]\nintegration_bridge = {bridge_name}\n'
                f'datapath_type = netdev\n')
    ovs = ovs_connection.get_connection()
    bridge = ovs.bridge(bridge_name, 'netdev')
    isolate = isolate and interface_driver == 'openvswitch'
    if interface_driver == 'openvswitch':
        bridge.create()
    vlans: dict = {}
    vms = []
    probes = {}
    nets = []
    print(f'N={n} ({interface_driver}, probe {probe_mode}'
          f'{", one VLAN per network" if isolate else ""}): '
          f'setting up {n} networks and VMs ...', flush=True)
    setup_started = time.monotonic()
    for i in range(n):
        net = neutron.add_network(mtu=1450)
        cidr = f'10.{200 + i // 250}.{i % 250}.0/24'
        base = cidr.rsplit('.', 1)[0]
        subnet = neutron.add_subnet(net['id'], cidr, f'{base}.1')
        mac = 'fa:16:3e:%02x:%02x:%02x' % (0xbd, i // 256, i % 256)
        port = neutron.add_port(net['id'], mac, [(subnet['id'], f'{base}.10')])
        ns = f'akbdvm{tag}{i:03d}'
        tap = 'tap' + port['id'][:11]
        ip_lib.IPWrapper(ns).ensure_namespace()
        ip_lib.IPWrapper().add_veth(tap, 'eth0', peer_namespace=ns, mtu=1450,
                                    peer_mac=mac)
        ip_lib.IPDevice(tap).link.set_up()
        ip_lib.IPDevice('eth0', ns).link.set_up()
        if interface_driver == 'openvswitch':
            subprocess.run(['ethtool', '-K', tap, 'tx', 'off'], capture_output=True)
            subprocess.run(['ip', 'netns', 'exec', ns, 'ethtool', '-K', 'eth0',
                            'tx', 'off'], capture_output=True)
            bridge.add_port(tap)
            if isolate:
                vlans[net['id']] = 100 + i
                bridge.add_port(tap, tag=vlans[net['id']])
        else:
            brq = 'brq' + net['id'][:11]
            ip_lib.IPWrapper().add_bridge(brq, exist_ok=True).link.set_up()
            ip_lib.IPDevice(tap).link.set_master(brq)
        vms.append((ns, tap))
        nets.append(net)
        probes[net['id']] = dhcp_probe.Probe(ns, 'eth0', mac)

    agent_bin = os.path.join(os.path.dirname(sys.executable), 'agentkit-dhcp')
    procs = []
    # 120 s, or more for a size where the goal itself is longer (1,000: 60 s).
    answer_timeout = max(120.0, n * 0.3)
    print(f'N={n}: set up in {time.monotonic() - setup_started:.0f} s', flush=True)

    def start_agent():
        log = open(os.path.join(state_path, f'agent{len(procs)}.log'), 'wb')
        proc = subprocess.Popen([agent_bin, '--config-file', config], stdout=log,
                                stderr=log, start_new_session=True)
        procs.append(proc)
        return proc

    def dnsmasq_pids():
        pids = {}
        for net in nets:
            try:
                with open(os.path.join(state_path, 'dhcp', net['id'], 'pid')) as f:
                    pids[net['id']] = int(f.read().strip())
            except (OSError, ValueError):
                pids[net['id']] = None
        return pids

    def sync_call_after(mark):
        calls = [kw for m, kw in neutron.calls[mark:]
                 if m == 'get_active_networks_info']
        return calls[0]['_received'] if calls else None

    def dnsmasq_started(net_id: str) -> bool:
        return os.path.exists(os.path.join(state_path, 'dhcp', net_id, 'pid'))

    stop_tagging = threading.Event()
    if isolate:
        threading.Thread(target=tag_dhcp_ports, args=(neutron, bridge, vlans, stop_tagging),
                         daemon=True).start()
    try:
        mark0 = neutron.mark()
        started = time.monotonic()
        proc = start_agent()
        answered, sent = wait_all_answer(probes, answer_timeout, probe_mode,
                                         dnsmasq_started)
        if len(answered) < n:
            print(f'N={n}: only {len(answered)} of {n} networks answered DHCP within '
                  f'{answer_timeout:.0f} s ({sent} DISCOVERs sent)')
            return
        synced = sync_call_after(mark0)
        print(f'N={n} bring-up: all {n} dnsmasq answered DHCP '
              f'{max(answered.values()) - started:.2f} s after agent start '
              f'(agent process up and asking get_active_networks_info at '
              f'{synced - started:.2f} s; all answered '
              f'{max(answered.values()) - synced:.2f} s after that; {sent} DISCOVERs '
              f'sent)', flush=True)
        agent_kib, privsep_kib, daemons = idle_rpc.agent_rss(proc.pid, config)
        print(f'N={n} memory: agentkit-dhcp RSS {agent_kib / 1024:.0f} MiB + its '
              f'{daemons} privsep daemons {privsep_kib / 1024:.0f} MiB = '
              f'{(agent_kib + privsep_kib) / 1024:.0f} MiB (dnsmasq not counted)',
              flush=True)
        before = dnsmasq_pids()

        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        mark = neutron.mark()
        port_ids = {p['id'] for net in nets for p in net['ports']
                    if p['device_owner'] != 'network:dhcp'}
        restarted = time.monotonic()
        proc = start_agent()
        reported: set = set()
        done_at = None
        deadline = time.monotonic() + answer_timeout
        while time.monotonic() < deadline:
            with neutron.lock:
                calls = neutron.calls[mark:]
            for method, kw in calls:
                if method == 'dhcp_ready_on_ports':
                    reported.update(kw['port_ids'])
                    if port_ids <= reported and done_at is None:
                        done_at = kw['_received']
            if done_at is not None:
                break
            time.sleep(0.01)
        spent = common.AgentLedger('dhcp', proc.pid, os.path.join(state_path, 'gmr'))
        ledger, cpu = spent.ledger(), spent.cpu_seconds()
        after = dnsmasq_pids()
        respawned = sum(1 for k in before if before[k] != after[k])
        for probe in probes.values():
            probe.xid = (probe.xid + 1) & 0xffffffff
            probe.packet = dhcp_probe.discover_packet(probe.mac, probe.xid)
        still, _ = wait_all_answer(probes, 30, probe_mode, lambda net_id: True)
        if done_at is None:
            print(f'N={n} resync: not complete within {answer_timeout:.0f} s')
        else:
            synced = sync_call_after(mark)
            print(f'N={n} resync after restart: every network re-applied '
                  f'{done_at - restarted:.2f} s after agent start '
                  f'({done_at - synced:.2f} s after its get_active_networks_info); '
                  f'{respawned} of {n} dnsmasq respawned; '
                  f'{len(still)} of {n} networks answer DHCP afterwards', flush=True)
            print(f'  the restarted agent, start -> now: CPU {cpu:.1f} s; waiting on '
                  + ', '.join(f'{cat} {name} {calls} calls {seconds:.1f} s'
                              for (cat, name), (calls, seconds) in sorted(ledger.items())),
                  flush=True)
    finally:
        stop_tagging.set()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        for probe in probes.values():
            probe.close()
        for pid in dnsmasq_pids().values():
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for net in nets:
            for name in (f'qdhcp-{net["id"]}',):
                if ip_lib.namespace_exists(name):
                    ip_lib.delete_namespace(name)
            brq = 'brq' + net['id'][:11]
            if ip_lib.device_exists(brq):
                ip_lib.IPDevice(brq).delete()
            neutron.networks.pop(net['id'], None)
        for ns, tap in vms:
            if ip_lib.device_exists(tap):
                ip_lib.IPDevice(tap).delete()
            ip_lib.delete_namespace(ns)
        if interface_driver == 'openvswitch':
            bridge.delete()
        if os.environ.get('BENCH_DEBUG'):
            shutil.copy(os.path.join(state_path, 'agent1.log'), '/tmp/bench-agent1.log')
        shutil.rmtree(state_path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--interface-driver', default='openvswitch',
                        choices=['openvswitch', 'linuxbridge'])
    parser.add_argument('--probe', default='backoff', choices=['backoff', 'fixed'],
                        help='backoff (default) or fixed: the old probe, every pending '
                             'network resends every 20 ms')
    parser.add_argument('--no-isolate', action='store_true',
                        help='openvswitch: leave all ports untagged, one broadcast '
                             'domain (the old set-up)')
    parser.add_argument('sizes', nargs='*', type=int, default=[20, 100])
    args = parser.parse_args()
    # A probe socket per network: 1,000 networks need more than 1,024 fds.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    neutron = common.setup()
    try:
        for n in args.sizes:
            waited = common.wait_for_quiet_kernel()
            print(f'N={n}: waited {waited:.0f} s for the kernel to finish destroying '
                  f'earlier namespaces', flush=True)
            run(neutron, n, args.interface_driver, args.probe, not args.no_isolate)
    finally:
        neutron.stop()


if __name__ == '__main__':
    main()
