#!/usr/bin/env python3
"""Benchmark: agentkit-l3 building N routers, resyncing them, adding a floating IP.

For each N (default 20, 100 and 500) the fake neutron-server over RabbitMQ
serves N legacy routers shaped as neutron 29's ``sync_routers`` replies:
each has a gateway on one flat external network, one interface on a
network of its own and two floating IPs to VM ports there. agentkit-l3
(interface driver ``linuxbridge``, metadata proxy off) is started and this
prints:

* bring-up: time from the agent's ``get_router_ids`` until every floating
  IP of every router was reported ACTIVE (the agent reports that only once
  qr-/qg-, their addresses, routes, SNAT and DNAT are in the kernel), per
  router and in total; then one router is checked with real packets: a VM
  namespace pings the upstream host through SNAT and the upstream host
  pings the VM's floating IP;
* no-op resync: SIGTERM, start again; time from its ``get_router_ids`` until
  every router was processed, how many ``iptables-restore`` it ran (from its
  debug log) and whether ``iptables-save`` + ``nft list ruleset``, addresses
  and routes of every router namespace are unchanged;
* floating IP add: a new floating IP on a running router, from the
  ``routers_updated`` cast to the agent's ACTIVE report (DNAT in place),
  median and max of 10.

Reference (the L3 issue, measured on this kind of machine): Neutron 29's L3
agent needs ~1.9 s per router from the API to qg-/qr- + SNAT. Aims: <= 0.2 s
per router at N = 100, a no-op resync of 500 routers in <= 2 s with zero
kernel writes, floating IP -> DNAT <= 50 ms.

Usage (root, after tools/install-deps.sh):
  .venv/bin/python benchmarks/l3_routers.py [N ...]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from agentkit.lib import naming  # noqa: E402

TIMEOUT = 600


def _mac(i: int, j: int) -> str:
    return 'fa:16:3e:%02x:%02x:%02x' % (0xb3, (i * 4 + j) // 256, (i * 4 + j) % 256)


def _namespace_state(namespace: str) -> str:
    """Everything of a router namespace a resync could write, as text."""
    parts = []
    for argv in (['iptables-save'], ['nft', 'list', 'ruleset'],
                 ['ip', '-o', 'addr'], ['ip', 'route'], ['ip', '-6', 'route']):
        out = subprocess.run(['ip', 'netns', 'exec', namespace, *argv],
                             capture_output=True, text=True).stdout
        parts.append(re.sub(r'\[\d+:\d+\]|counter packets \d+ bytes \d+|^#.*$', '',
                            out, flags=re.M))
    return '\n'.join(parts)


class Bench:

    def __init__(self, neutron: Any, n: int) -> None:
        self.neutron = neutron
        self.n = n
        self.tag = uuid.uuid4().hex[:6]
        self.host = f'akbl3-{self.tag}'
        self.state_path = tempfile.mkdtemp(prefix='agentkit-bench-', dir='/var/tmp')
        os.chmod(self.state_path, 0o755)
        self.config = os.path.join(self.state_path, 'l3.ini')
        with open(self.config, 'w') as f:
            f.write(f'[DEFAULT]\ntransport_url = {neutron.transport_url}\n'
                    f'host = {self.host}\nstate_path = {self.state_path}\n'
                    'interface_driver = linuxbridge\nl3_driver = namespace\n'
                    'enable_metadata_proxy = false\n'
                    # INFO, but the iptables manager's restores at DEBUG.
                    'default_log_levels = agentkit.lib.iptables_manager=DEBUG\n'
                    '[agent]\nreport_interval = 30\n'
                    + os.environ.get('BENCH_EXTRA_CONF', ''))
        self.procs: list[subprocess.Popen] = []
        self.routers: list[dict[str, Any]] = []
        self.vm_ports: list[dict[str, Any]] = []
        self.networks: list[dict[str, Any]] = []
        self.namespaces: list[str] = []

    # -- set-up ------------------------------------------------------------------
    def build(self) -> None:
        ext = self.neutron.add_network(mtu=1500)
        self.networks.append(ext)
        self.ext_subnet = self.neutron.add_subnet(ext['id'], '172.20.0.0/16', '172.20.0.1',
                                                  enable_dhcp=False)
        self.ext = ext
        for i in range(self.n):
            net = self.neutron.add_network(mtu=1450)
            self.networks.append(net)
            cidr = f'10.{100 + i // 250}.{i % 250}'
            subnet = self.neutron.add_subnet(net['id'], f'{cidr}.0/24', f'{cidr}.1',
                                             enable_dhcp=False)
            ports = [self.neutron.add_port(net['id'], _mac(i, j),
                                           [(subnet['id'], f'{cidr}.{10 + j}')])
                     for j in range(2)]
            self.vm_ports.append(ports[0])
            router = self.neutron.add_router(gateway_network=ext, interfaces=[subnet],
                                             floating_ips=ports, host=self.host)
            self.routers.append(router)
            self.namespaces.append(naming.router_namespace(router['id']))

    def start_agent(self) -> subprocess.Popen:
        agent_bin = os.path.join(os.path.dirname(sys.executable), 'agentkit-l3')
        log = open(os.path.join(self.state_path, f'agent{len(self.procs)}.log'), 'wb')
        proc = subprocess.Popen([agent_bin, '--config-file', self.config], stdout=log,
                                stderr=log, start_new_session=True)
        self.procs.append(proc)
        return proc

    def log(self, number: int) -> str:
        with open(os.path.join(self.state_path, f'agent{number}.log'), 'rb') as f:
            return f.read().decode(errors='replace')

    def first_call(self, method: str, mark: int) -> float | None:
        with self.neutron.lock:
            calls = [kw for m, kw in self.neutron.calls[mark:] if m == method]
        return calls[0]['_received'] if calls else None

    # -- measurements --------------------------------------------------------------
    def bring_up(self) -> bool:
        wanted = {f['id'] for r in self.routers for f in r['_floatingips']}
        mark = self.neutron.mark()
        started = time.monotonic()
        self.start_agent()
        active: dict[str, float] = {}
        deadline = time.monotonic() + TIMEOUT
        while len(active) < len(wanted) and time.monotonic() < deadline:
            with self.neutron.lock:
                calls = self.neutron.calls[mark:]
            for method, kw in calls:
                if method == 'update_floatingip_statuses':
                    for fip_id, status in kw['fip_statuses'].items():
                        if status == 'ACTIVE':
                            active.setdefault(fip_id, kw['_received'])
            time.sleep(0.05)
        asked = self.first_call('get_router_ids', mark)
        if len(active) < len(wanted) or asked is None:
            print(f'N={self.n} bring-up: only {len(active)} of {len(wanted)} floating IPs '
                  f'ACTIVE within {TIMEOUT} s')
            return False
        done = max(active.values())
        print(f'N={self.n} bring-up: every router with qr-/qg-, SNAT and both floating IPs '
              f'in {done - asked:.2f} s after the agent\'s get_router_ids '
              f'({(done - asked) / self.n:.3f} s per router; '
              f'{done - started:.2f} s from process start)', flush=True)
        return True

    def check_packets(self) -> None:
        """Router 0 forwards: a VM through SNAT, upstream to the floating IP."""
        from agentkit.lib import ip_lib
        from tests.functional import vm as fake_vm
        router, port = self.routers[0], self.vm_ports[0]
        fip = next(f['floating_ip_address'] for f in router['_floatingips']
                   if f['port_id'] == port['id'])
        vm, up = f'akbl3vm{self.tag}', f'akbl3up{self.tag}'
        int_net = router['_interfaces'][0]['network_id']
        plan = ((vm, 'brq' + int_net[:11], port['fixed_ips'][0]['ip_address'] + '/24',
                 router['_interfaces'][0]['fixed_ips'][0]['ip_address'], port['mac_address']),
                (up, 'brq' + self.ext['id'][:11], '172.20.0.1/16', None, None))
        for ns, bridge, cidr, gateway, mac in plan:
            ip_lib.IPWrapper(ns).ensure_namespace()
            fake_vm.attach_host(ns, ns[-10:] + 'o', bridge, cidr, gateway, mac)
        try:
            def ping(ns: str, address: str) -> bool:
                return fake_vm.ping(ns, address, count=3, wait=1)
            print(f'N={self.n} packets through router 0: VM -> upstream (SNAT) '
                  f'{"ok" if ping(vm, "172.20.0.1") else "FAILED"}, upstream -> floating '
                  f'IP {"ok" if ping(up, fip) else "FAILED"}', flush=True)
        finally:
            for ns in (vm, up):
                outside = ns[-10:] + 'o'
                if ip_lib.device_exists(outside):
                    ip_lib.IPDevice(outside).delete()
                ip_lib.delete_namespace(ns)

    def noop_resync(self) -> None:
        before = {ns: _namespace_state(ns) for ns in self.namespaces}
        self.procs[-1].send_signal(signal.SIGTERM)
        self.procs[-1].wait(60)
        mark = self.neutron.mark()
        started = time.monotonic()
        proc = self.start_agent()
        number = len(self.procs) - 1
        done = None
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.log(number).count('Finished router update for') >= self.n:
                done = time.monotonic()
                break
            time.sleep(0.02)
        asked = self.first_call('get_router_ids', mark)
        if done is None or asked is None:
            print(f'N={self.n} no-op resync: not complete within {TIMEOUT} s')
            return
        text = self.log(number)
        restores = text.count('iptables-restore (IPv')
        after = {ns: _namespace_state(ns) for ns in self.namespaces}
        changed = sum(1 for ns in self.namespaces if before[ns] != after[ns])
        statuses = len(self.neutron.calls_of('update_floatingip_statuses')[
            len([c for c in self.neutron.calls[:mark]
                 if c[0] == 'update_floatingip_statuses']):])
        print(f'N={self.n} no-op resync after restart: every router processed '
              f'{done - asked:.2f} s after get_router_ids ({done - started:.2f} s from '
              f'process start); iptables-restore runs: {restores}; router namespaces '
              f'changed (iptables/nft/addresses/routes): {changed} of {self.n}; '
              f'floating IP status reports: {statuses}', flush=True)
        assert proc.poll() is None

    def fip_add(self, count: int = 10) -> None:
        from tests.functional import fake_neutron
        latencies = []
        for i in range(count):
            router = self.routers[i % self.n]
            int_net = router['_interfaces'][0]['network_id']
            subnet_id = router['_interfaces'][0]['fixed_ips'][0]['subnet_id']
            cidr = router['_interfaces'][0]['fixed_ips'][0]['ip_address'].rsplit('.', 1)[0]
            port = self.neutron.add_port(int_net, _mac(i + 1000, 3),
                                         [(subnet_id, f'{cidr}.{100 + i // self.n}')])
            fip = self.neutron.add_floating_ip(router['id'], port)
            mark = self.neutron.mark()
            sent = time.monotonic()
            self.neutron.send_to_agent(
                fake_neutron.L3Notifications.routers_updated(self.host, [router['id']]))
            kw = self.neutron.wait_for_call(
                'update_floatingip_statuses',
                lambda kw, f=fip['id']: kw['fip_statuses'].get(f) == 'ACTIVE',
                since=mark, timeout=30)
            latencies.append(kw['_received'] - sent)
        print(f'N={self.n} floating IP add: routers_updated cast -> DNAT in place and '
              f'reported ACTIVE: median {statistics.median(latencies) * 1000:.0f} ms, '
              f'max {max(latencies) * 1000:.0f} ms (of {count})', flush=True)

    # -- teardown -------------------------------------------------------------------
    def cleanup(self) -> None:
        from agentkit.lib import ip_lib
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        for ns in self.namespaces:
            for link in (ip_lib.list_links(ns) if ip_lib.namespace_exists(ns) else []):
                tap = 'tap' + link['name'][3:]
                if link['name'].startswith(('qr-', 'qg-')) and ip_lib.device_exists(tap):
                    ip_lib.IPDevice(tap).delete()
            if ip_lib.namespace_exists(ns):
                ip_lib.delete_namespace(ns)
        for net in self.networks:
            brq = 'brq' + net['id'][:11]
            if ip_lib.device_exists(brq):
                ip_lib.IPDevice(brq).delete()
        with self.neutron.lock:
            for router in self.routers:
                self.neutron.l3.delete_router(router['id'])
            for net in self.networks:
                self.neutron.networks.pop(net['id'], None)
        if os.environ.get('BENCH_DEBUG'):
            for i in range(len(self.procs)):
                shutil.copy(os.path.join(self.state_path, f'agent{i}.log'),
                            f'/tmp/bench-l3-agent{i}.log')
        shutil.rmtree(self.state_path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('sizes', nargs='*', type=int, default=[20, 100, 500])
    args = parser.parse_args()
    neutron = common.setup()
    try:
        for n in args.sizes:
            bench = Bench(neutron, n)
            try:
                print(f'N={n}: setting up {n} routers in the fake server ...', flush=True)
                bench.build()
                if bench.bring_up():
                    bench.check_packets()
                    bench.noop_resync()
                    bench.fip_add()
            finally:
                bench.cleanup()
    finally:
        neutron.stop()


if __name__ == '__main__':
    main()
