#!/usr/bin/env python3
"""Benchmark: ports plugged nova-style -> reported up by agentkit-l2 (openvswitch).

For N = 20 and N = 200 ports (one network, userspace datapath) it plugs each
port the way os-vif does (its own OVSDB transaction: add-port with
iface-id/attached-mac/iface-status) and measures, per port, the time from
the plug to the agent's update_device_list(devices_up) reaching the (fake)
server, plus the overall throughput. Prints figures; asserts nothing.

Reference (neutron-reference.md): Neutron 29's OVS agent here needs 2.7 s
median plug->ACTIVE and 6.4 s for 20 ports.

Usage (as root, after tools/install-deps.sh): .venv/bin/python benchmarks/l2_plug.py [N ...]
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402


def run(neutron, n: int) -> None:
    from agentkit.lib import ovs_lib
    ovs = ovs_lib.get_connection()
    bridge_name = 'akbench' + uuid.uuid4().hex[:6]
    host = 'akbench-' + uuid.uuid4().hex[:6]
    workdir = tempfile.mkdtemp(prefix='agentkit-bench-')
    config = os.path.join(workdir, 'l2.ini')
    with open(config, 'w') as f:
        f.write(f'[DEFAULT]\ntransport_url = {neutron.transport_url}\nhost = {host}\n'
                f'state_path = {workdir}\n'
                f'debug = {os.environ.get("BENCH_DEBUG", "false")}\n'
                f'[agent]\nreport_interval = 30\n'
                f'[ovs]\nintegration_bridge = {bridge_name}\ndatapath_type = netdev\n'
                f'[l2]\nmechanism_driver = openvswitch\ntype_drivers = vxlan\n'
                f'vni_ranges = 1:1000\n')
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
    log = open(os.path.join(workdir, 'l2.log'), 'wb')
    agent = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), 'agentkit-l2'),
                              '--config-file', config], stdout=log, stderr=log,
                             start_new_session=True)
    try:
        mark = neutron.mark()
        neutron.wait_for_call('report_state', timeout=60, since=mark)
        mark = neutron.mark()
        plugged_at = {}
        started = time.monotonic()
        for port_id, mac, name in ports:
            plugged_at[port_id] = time.monotonic()
            bridge.add_port(name, type='internal', external_ids={
                'iface-id': port_id, 'attached-mac': mac, 'iface-status': 'active'})
        plug_done = time.monotonic()
        up_at = {}
        deadline = time.monotonic() + 120
        while len(up_at) < n and time.monotonic() < deadline:
            for kw in neutron.calls_of('update_device_list')[0:]:
                for dev in kw['devices_up']:
                    if dev in plugged_at and dev not in up_at:
                        up_at[dev] = kw['_received']
            time.sleep(0.01)
        if len(up_at) < n:
            print(f'N={n}: only {len(up_at)} of {n} ports came up in time')
            return
        latencies = [up_at[p] - plugged_at[p] for p in plugged_at]
        total = max(up_at.values()) - started
        print(f'N={n}: plug->up {common.summary(latencies)}; '
              f'all {n} up {total:.2f} s after the first plug '
              f'(plugging itself took {plug_done - started:.2f} s); '
              f'{n / total:.1f} ports/s')
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(agent.pid, signal.SIGKILL)
        bridge.delete()
        if os.environ.get('BENCH_DEBUG'):
            print('agent log:', log.name)


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [20, 200]
    neutron = common.setup()
    try:
        for n in sizes:
            run(neutron, n)
    finally:
        neutron.stop()


if __name__ == '__main__':
    main()
