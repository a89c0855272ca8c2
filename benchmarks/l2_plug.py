#!/usr/bin/env python3
"""Benchmark: ports plugged nova-style -> reported up by agentkit-l2 (openvswitch).

For N = 20 and N = 200 ports (one network, userspace datapath) it plugs each
port the way os-vif does (its own OVSDB transaction: add-port with
iface-id/attached-mac/iface-status) and measures, per port, the time from
the plug to the agent's update_device_list(devices_up) reaching the (fake)
server, plus the overall throughput. Prints figures; asserts nothing.

``--at-once`` plugs all N ports in one OVSDB transaction (one ``ovs-vsctl``
call) instead, and also prints the RPC calls the fake server received from
the plug until every port was up. ``--restart`` then stops the agent
(SIGTERM) and starts it again with every port in place, and prints the time
from the new start to its first full sync done, to every port reported up
again (if it reports them again) and to its last RPC call, the calls it
made, and what it wrote: Port/Interface/Bridge row changes in the columns
the agent owns (``ovsdb-client monitor`` during the stop and the restart;
a no-op write does not show, as OVSDB does not notify unchanged rows), the
bridge's OpenFlow rules and ``iptables-save`` before and after.

The server here is the fake one (``tests/functional/fake_neutron.py``); the
real server's figure is ``benchmarks/l2_real_server.py``.

Reference (neutron-reference.md): Neutron 29's OVS agent here needs 2.7 s
median plug->ACTIVE and 6.4 s for 20 ports.

Usage (as root, after tools/install-deps.sh):
    .venv/bin/python benchmarks/l2_plug.py [--at-once] [--restart] [N ...]
"""

import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from benchmarks import idle_rpc  # noqa: E402


# Columns of the agent's; other updates (ofport, status, statistics) are ovs-vswitchd's.
OWNED_COLUMNS = {'Port': 'name,tag,other_config,interfaces,trunks,vlan_mode',
                 'Interface': 'name,type,options,external_ids',
                 'Bridge': 'name,ports,fail_mode,datapath_type,protocols,other_config'}
# The agent logs it once the first full sync's work is applied, not just queued.
SYNC_APPLIED = re.compile(rb'is ready: first full sync applied')


class RowMonitor:
    """``ovsdb-client monitor`` of one table's agent-owned columns: what changed."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.out = tempfile.NamedTemporaryFile(prefix='l2bench-mon-', delete=False)
        self.proc = subprocess.Popen(
            ['ovsdb-client', '--format=csv', 'monitor', 'Open_vSwitch', table,
             OWNED_COLUMNS[table]], stdout=self.out, stderr=subprocess.DEVNULL)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(self.out.name, 'rb') as f:
                if b',initial,' in f.read():
                    return
            time.sleep(0.1)
        raise RuntimeError(f'ovsdb-client monitor {self.table}: no initial rows')

    def changes(self, names: set[str]) -> list[str]:
        """Inserted, deleted and modified rows named in ``names``, after the dump."""
        self.proc.terminate()
        self.proc.wait(10)
        with open(self.out.name) as f:
            lines = f.read().splitlines()
        os.unlink(self.out.name)
        by_uuid: dict[str, str] = {}
        found = []
        for line in lines:
            fields = line.split(',')
            if len(fields) < 3 or fields[1] not in ('initial', 'insert', 'delete', 'old'):
                continue
            row, action, name = fields[0], fields[1], fields[2].strip('"')
            if action in ('initial', 'insert'):
                by_uuid[row] = name
            if action == 'initial':
                continue
            name = by_uuid.get(row, name)
            if name in names:
                found.append(f'{self.table} {name}: {"modify" if action == "old" else action}')
        return found


def snapshot(bridge: str) -> tuple[str, str]:
    """The bridge's OpenFlow rules and the host's iptables rules, without counters."""
    flows = subprocess.run(['ovs-ofctl', '--no-stats', 'dump-flows', bridge],
                           capture_output=True, text=True).stdout
    rules = ''
    for table in ('filter', 'raw', 'mangle', 'nat'):
        out = subprocess.run(['iptables-save', '-t', table], capture_output=True,
                             text=True).stdout
        rules += re.sub(r'\[\d+:\d+\]', '', '\n'.join(
            line for line in out.splitlines() if not line.startswith('#')))
    return '\n'.join(sorted(flows.splitlines())), rules


def calls_since(neutron, mark: int) -> collections.Counter:
    with neutron.lock:
        return collections.Counter(m for m, _ in neutron.calls[mark:])


def wait_quiet(neutron, quiet: float = 3.0, timeout: float = 120.0) -> float | None:
    """Wait until no call other than report_state arrived for ``quiet`` s;
    when the last such call arrived (monotonic), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with neutron.lock:
            last = max((kw['_received'] for m, kw in neutron.calls
                        if m != 'report_state'), default=None)
        if last is not None and time.monotonic() - last >= quiet:
            return last
        time.sleep(0.2)
    return None


def describe(calls: collections.Counter) -> str:
    calls = collections.Counter({m: c for m, c in calls.items() if m != 'report_state'})
    return (f'{sum(calls.values())} ('
            + ', '.join(f'{m} {c}' for m, c in sorted(calls.items())) + ')')


def start_agent(config: str, log_path: str) -> subprocess.Popen:
    log = open(log_path, 'ab')
    return subprocess.Popen([os.path.join(os.path.dirname(sys.executable), 'agentkit-l2'),
                             '--config-file', config], stdout=log, stderr=log,
                            start_new_session=True)


def stop_agent(agent: subprocess.Popen) -> None:
    agent.send_signal(signal.SIGTERM)
    try:
        agent.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(agent.pid, signal.SIGKILL)
        agent.wait(5)


def plug_at_once(bridge_name: str, ports: list[tuple[str, str, str]]) -> None:
    """Every port in one OVSDB transaction (one ovs-vsctl call)."""
    argv = ['ovs-vsctl', '--timeout=600']
    for port_id, mac, name in ports:
        argv += ['--', 'add-port', bridge_name, name, '--', 'set', 'Interface', name,
                 'type=internal', f'external_ids:iface-id={port_id}',
                 f'external_ids:attached-mac="{mac}"', 'external_ids:iface-status=active']
    subprocess.run(argv, check=True, capture_output=True, timeout=600)


def run(neutron, n: int, at_once: bool = False, restart: bool = False) -> None:
    from agentkit.lib.ovs import connection as ovs_connection
    ovs = ovs_connection.get_connection()
    bridge_name = 'akbench' + uuid.uuid4().hex[:6]
    host = 'akbench-' + uuid.uuid4().hex[:6]
    workdir = tempfile.mkdtemp(prefix='agentkit-bench-')
    config = common.write_agent_config(
        os.path.join(workdir, 'l2.ini'), neutron.transport_url, host, workdir, {
            'ovs': {'integration_bridge': bridge_name, 'datapath_type': 'netdev'},
            'l2': {'mechanism_driver': 'openvswitch', 'type_drivers': 'vxlan',
                   'vni_ranges': '1:1000'}})
    bridge = ovs.bridge(bridge_name, 'netdev')
    network_id = str(uuid.uuid4())
    ports = []
    for i in range(n):
        port_id = str(uuid.uuid4())
        mac = 'fa:16:3e:%02x:%02x:%02x' % (0xb0, i // 256, i % 256)
        neutron.port_details[port_id] = {
            'device': port_id, 'port_id': port_id, 'network_id': network_id,
            'mac_address': mac, 'admin_state_up': True, 'network_type': 'vxlan',
            'physical_network': None, 'segmentation_id': 100,
            'port_security_enabled': False}
        ports.append((port_id, mac, 'tap' + port_id[:11]))
    log_path = os.path.join(workdir, 'l2.log')
    agent = start_agent(config, log_path)
    how = 'one transaction' if at_once else 'one transaction per port'
    try:
        mark = neutron.mark()
        neutron.wait_for_call('report_state', timeout=60, since=mark)
        time.sleep(2.0)  # the agent's start-up sync is over
        mark = neutron.mark()
        plugged_at = {}
        started = time.monotonic()
        if at_once:
            plug_at_once(bridge_name, ports)
            plugged_at = {port_id: started for port_id, _, _ in ports}
        else:
            for port_id, mac, name in ports:
                plugged_at[port_id] = time.monotonic()
                bridge.add_port(name, type='internal', external_ids={
                    'iface-id': port_id, 'attached-mac': mac, 'iface-status': 'active'})
        plug_done = time.monotonic()
        up_at = {}
        deadline = time.monotonic() + 120 + n * 0.2
        seen = 0
        while len(up_at) < n and time.monotonic() < deadline:
            calls = neutron.calls_of('update_device_list')
            for kw in calls[seen:]:
                for dev in kw['devices_up']:
                    if dev in plugged_at and dev not in up_at:
                        up_at[dev] = kw['_received']
            seen = len(calls)
            time.sleep(0.01)
        if len(up_at) < n:
            print(f'N={n}: only {len(up_at)} of {n} ports came up in time')
            return
        latencies = [up_at[p] - plugged_at[p] for p in plugged_at]
        total = max(up_at.values()) - started
        print(f'N={n} ({how}): plug->up {common.summary(latencies)}; '
              f'all {n} up {total:.2f} s after the first plug '
              f'(plugging itself took {plug_done - started:.2f} s); '
              f'{n / total:.1f} ports/s', flush=True)
        agent_kib, privsep_kib, daemons = idle_rpc.agent_rss(agent.pid, config)
        print(f'  memory with {n} ports: agentkit-l2 RSS {agent_kib / 1024:.0f} MiB + its '
              f'{daemons} privsep daemon(s) {privsep_kib / 1024:.0f} MiB', flush=True)
        if at_once:
            last = wait_quiet(neutron)
            print(f'  RPC calls received by the fake server from the plug until quiet '
                  f'(last {(last or time.monotonic()) - started:.2f} s after the plug): '
                  f'{describe(calls_since(neutron, mark))}', flush=True)
        if restart:
            agent_box = [agent]
            try:
                measure_restart(neutron, agent_box, config, log_path, bridge_name,
                                {p[0] for p in ports})
            finally:
                agent = agent_box[0]
    finally:
        stop_agent(agent)
        # ovsdbapp's 12 s timeout is too short for a bridge with 1,000 ports.
        subprocess.run(['ovs-vsctl', '--timeout=300', '--if-exists', 'del-br', bridge_name],
                       capture_output=True)
        if os.environ.get('BENCH_DEBUG'):
            print('agent log:', log_path)


def measure_restart(neutron, agent_box: list, config: str, log_path: str,
                    bridge_name: str, port_ids: set[str]) -> None:
    """Stop the agent, start it again; time to resynced and what it wrote."""
    n = len(port_ids)
    names = set(subprocess.run(['ovs-vsctl', 'list-ports', bridge_name], capture_output=True,
                               text=True, check=True).stdout.split()) | {bridge_name}
    monitors = [RowMonitor(t) for t in OWNED_COLUMNS]
    for monitor in monitors:
        monitor.wait_ready()
    before = snapshot(bridge_name)
    stop_agent(agent_box[0])
    with open(log_path, 'rb') as f:
        log_offset = len(f.read())
    mark = neutron.mark()
    started = time.monotonic()
    agent_box[0] = start_agent(config, log_path)
    synced_at = None
    up: set[str] = set()
    up_at = None
    seen = 0
    deadline = started + 300
    while time.monotonic() < deadline and (synced_at is None or up_at is None):
        if synced_at is None:
            with open(log_path, 'rb') as f:
                f.seek(log_offset)
                if SYNC_APPLIED.search(f.read()):
                    synced_at = time.monotonic()
        with neutron.lock:
            calls = [kw for m, kw in neutron.calls[mark:] if m == 'update_device_list']
        for kw in calls[seen:]:
            up.update(d for d in kw['devices_up'] if d in port_ids)
            if up_at is None and len(up) == n:
                up_at = kw['_received']
        seen = len(calls)
        if synced_at is not None and up_at is None and time.monotonic() - synced_at > 5:
            break  # it does not report them again
        time.sleep(0.05)
    last = wait_quiet(neutron)
    time.sleep(1.0)
    after = snapshot(bridge_name)
    changes = [c for m in monitors for c in m.changes(names)]

    def since(t: float | None) -> str:
        return f'{t - started:.2f} s' if t is not None else 'never'
    print(f'N={n} restart (SIGTERM, start again): first full sync applied after '
          f'{since(synced_at)}; every port reported up again after {since(up_at)} '
          f'({len(up)} of {n} reported); last RPC call after {since(last)}')
    print(f'  RPC calls received by the fake server from the new start until quiet: '
          f'{describe(calls_since(neutron, mark))}')
    print(f'  OVSDB row changes by the stop and restart (Port/Interface/Bridge, agent-owned '
          f'columns, on this bridge): {len(changes)}'
          + (f': {changes[:10]}' if changes else ''))
    print(f'  OpenFlow rules on the bridge changed: {"yes" if before[0] != after[0] else "no"}'
          f' ({len(before[0].splitlines())} rules); iptables rules changed: '
          f'{"yes" if before[1] != after[1] else "no"}', flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description='agentkit-l2 plug -> up (fake server)')
    parser.add_argument('sizes', nargs='*', type=int, default=[20, 200])
    parser.add_argument('--at-once', action='store_true',
                        help='plug all N ports in one OVSDB transaction')
    parser.add_argument('--restart', action='store_true',
                        help='then restart the agent: time to resynced, writes')
    args = parser.parse_args()
    neutron = common.setup()
    try:
        for n in args.sizes:
            run(neutron, n, args.at_once, args.restart)
    finally:
        neutron.stop()


if __name__ == '__main__':
    main()
