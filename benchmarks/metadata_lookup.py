#!/usr/bin/env python3
"""Benchmark: agentkit-metadata under a cloud-init burst, with and without the cache.

``agentkit-metadata`` runs as a real process against the fake neutron-server
(RabbitMQ, its get_ports answering like neutron 29's) and a stand-in Nova
metadata API on 127.0.0.1 (tests/functional/fake_nova.py). VMS "VMs" (source
addresses behind one router with two networks) send REQUESTS requests in
total, all at once, to the agent's unix socket as haproxy forwards them
(router id + X-Forwarded-For), each asking a different metadata path as
cloud-init does. Printed per burst (metadata_cache_ttl 5, the default, then
0; a cold burst right after the agent started, then a warm one): latency
percentiles of the requests, wall time, HTTP statuses and the get_ports RPCs
neutron-server answered. Client, fake Nova and fake server share one
process, the agent is another; on 2 cores both are CPU-bound.

Usage (root or not; RabbitMQ running, after tools/install-deps.sh):
  .venv/bin/python benchmarks/metadata_lookup.py [--vms 20] [--requests 200]
      [--nova-delay-ms 0] [--workers N]
"""

import argparse
import collections
import os
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
from tests.functional import fake_nova  # noqa: E402
from tests.functional import metadata_client  # noqa: E402

PATHS = ['/latest/meta-data/instance-id', '/openstack/latest/meta_data.json',
         '/latest/meta-data/', '/', '/openstack/latest/password']


def scenario(neutron, nova, vms: int) -> tuple[str, list[str]]:
    """A router with two networks and ``vms`` VM ports on them."""
    router = str(uuid.uuid4())
    nets = [str(uuid.uuid4()), str(uuid.uuid4())]
    sources = []
    with neutron.lock:
        for n, net in enumerate(nets):
            pid = str(uuid.uuid4())
            neutron.port_details[pid] = {
                'id': pid, 'network_id': net, 'device_id': router, 'project_id': 'bench',
                'device_owner': 'network:router_interface',
                'mac_address': 'fa:16:3e:00:00:%02x' % n,
                'fixed_ips': [{'subnet_id': net, 'ip_address': f'10.9{n}.0.1'}]}
        for i in range(vms):
            pid, instance = str(uuid.uuid4()), str(uuid.uuid4())
            ip = f'10.9{i % 2}.{1 + i // 250}.{2 + i % 250}'
            neutron.port_details[pid] = {
                'id': pid, 'network_id': nets[i % 2], 'device_id': instance,
                'project_id': 'bench', 'device_owner': 'compute:nova',
                'mac_address': 'fa:16:3e:01:%02x:%02x' % (i // 256, i % 256),
                'fixed_ips': [{'subnet_id': nets[i % 2], 'ip_address': ip}]}
            nova.instances[instance] = 'bench'
            sources.append(ip)
    return router, sources


def run(neutron, nova, router: str, sources: list[str], total: int, ttl: int,
        workers: int | None) -> None:
    state = tempfile.mkdtemp(prefix='agentkit-bench-md-', dir='/var/tmp')
    os.chmod(state, 0o755)
    config = os.path.join(state, 'metadata.ini')
    with open(config, 'w') as f:
        f.write(f'[DEFAULT]\ntransport_url = {neutron.transport_url}\n'
                f'host = akbench-{uuid.uuid4().hex[:6]}\nstate_path = {state}\n'
                f'nova_metadata_port = {nova.port}\n'
                f'metadata_proxy_shared_secret = {nova.secret}\n'
                f'metadata_cache_ttl = {ttl}\n'
                + (f'metadata_workers = {workers}\n' if workers is not None else '')
                + '[agent]\nreport_interval = 30\n')
    socket_path = os.path.join(state, 'metadata_proxy')
    agent = os.path.join(os.path.dirname(sys.executable), 'agentkit-metadata')
    log = open(os.path.join(state, 'agent.log'), 'wb')
    proc = subprocess.Popen([agent, '--config-file', config], stdout=log, stderr=log,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(socket_path):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'agent did not start; see {state}/agent.log')
            time.sleep(0.05)
        time.sleep(0.2)
        # With the cache, a second burst right after the first (within the
        # TTL) shows the warm cost; without it both bursts ask neutron-server.
        for label in ('cold', 'warm'):
            burst(neutron, socket_path, router, sources, total, f'ttl={ttl} {label}')
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(state, ignore_errors=True)


def burst(neutron, socket_path: str, router: str, sources: list[str], total: int,
          label: str) -> None:
    """``total`` requests at once; print latency percentiles and RPCs."""
    mark = neutron.mark()
    latencies: list[float] = []
    statuses: collections.Counter = collections.Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(total + 1)

    def one(i: int) -> None:
        source = sources[i % len(sources)]
        path = PATHS[(i // len(sources)) % len(PATHS)]
        barrier.wait(30)
        started = time.monotonic()
        try:
            status = metadata_client.proxy_request(
                socket_path, path, source, router_id=router, timeout=30).status
        except OSError as exc:
            status = type(exc).__name__
        elapsed = time.monotonic() - started
        with lock:
            latencies.append(elapsed)
            statuses[status] += 1
    threads = [threading.Thread(target=one, args=(i,)) for i in range(total)]
    for t in threads:
        t.start()
    barrier.wait(30)
    started = time.monotonic()
    for t in threads:
        t.join(120)
    wall = time.monotonic() - started
    with neutron.lock:
        rpcs = sum(1 for m, _ in neutron.calls[mark:] if m == 'get_ports')
    pct = {p: common.percentile(latencies, p) * 1000 for p in (50, 90, 99)}
    print(f'{label}: {total} requests from {len(sources)} VMs in {wall:.2f} s '
          f'({total / wall:.0f}/s); latency p50 {pct[50]:.1f} ms, p90 {pct[90]:.1f} ms, '
          f'p99 {pct[99]:.1f} ms, max {max(latencies) * 1000:.1f} ms; get_ports RPCs '
          f'{rpcs}; statuses {dict(statuses)}', flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--vms', type=int, default=20)
    parser.add_argument('--requests', type=int, default=200)
    parser.add_argument('--nova-delay-ms', type=float, default=0.0,
                        help='time the stand-in Nova takes per answer')
    parser.add_argument('--workers', type=int, default=None,
                        help='metadata_workers (default: the agent\'s default)')
    args = parser.parse_args()
    neutron = common.setup()
    nova = fake_nova.FakeNova('bench-secret-' + uuid.uuid4().hex).start()
    nova.delay = args.nova_delay_ms / 1000
    try:
        router, sources = scenario(neutron, nova, args.vms)
        for ttl in (5, 0):
            run(neutron, nova, router, sources, args.requests, ttl, args.workers)
    finally:
        nova.stop()
        neutron.stop()


if __name__ == '__main__':
    main()
