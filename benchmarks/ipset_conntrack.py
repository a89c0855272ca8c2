#!/usr/bin/env python3
"""Benchmark: ipset replacement and conntrack deletion through the privsep daemon.

Prints, as the agent sees them (one privsep round trip each, median of
``--runs``):

* ``replace_set`` with 200 and 2,000 members: creating the set, an
  unchanged set (one list, no write), one member changed, every member
  changed (the last two swap a new set in);
* ``delete_entries`` over 1,000 conntrack entries (UDP flows in one zone of
  a test namespace): a filter matching none of them (dump and match only)
  and one matching all of them (dump and 1,000 deletions).

Sets are named ``akb<hex>...`` in the root namespace and destroyed at the
end; the namespaces are ``akb-<hex>-c``/``-s`` and deleted at the end.

Usage (root): .venv/bin/python benchmarks/ipset_conntrack.py [--runs N]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tests  # noqa: E402,F401  (selects the threading backend first)
from oslo_config import cfg  # noqa: E402

from agentkit import privsep_setup  # noqa: E402
from agentkit.conf import common as common_conf  # noqa: E402
from agentkit.lib import conntrack  # noqa: E402
from agentkit.lib import ip_lib  # noqa: E402
from agentkit.privileged import ipset as priv_ipset  # noqa: E402

FLOWS = 1000
_SEND_FLOWS = '''
import socket, sys
socks = []
for i in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", (sys.argv[1], 9999))
    socks.append(s)
'''


def timed(func, *args) -> float:
    start = time.perf_counter()
    func(*args)
    return time.perf_counter() - start


def ms(values: list[float]) -> str:
    return '%7.1f ms' % (statistics.median(values) * 1000)


def addresses(count: int, offset: int = 0) -> list[str]:
    return ['10.%d.%d.%d' % ((i + offset) >> 16, ((i + offset) >> 8) & 255, (i + offset) & 255)
            for i in range(count)]


def bench_ipset(runs: int) -> None:
    prefix = 'akb' + uuid.uuid4().hex[:5]
    try:
        for count in (200, 2000):
            results: dict[str, list[float]] = {}
            for run in range(runs):
                name = '%s%d_%d' % (prefix, count, run)
                members = addresses(count)
                changed_one = members[1:] + ['11.0.0.1']
                changed_all = addresses(count, offset=count)
                for label, wanted in (('create', members), ('unchanged', members),
                                      ('one member changed', changed_one),
                                      ('all members changed', changed_all)):
                    results.setdefault(label, []).append(
                        timed(priv_ipset.replace_set, name, 4, wanted))
                priv_ipset.destroy_set(name)
            for label, values in results.items():
                print('replace_set %5d members, %-20s %s' % (count, label + ':', ms(values)))
    finally:
        for name in priv_ipset.list_sets(prefix):
            priv_ipset.destroy_set(name)


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def bench_conntrack(runs: int) -> None:
    tag = uuid.uuid4().hex[:8]
    client, server = 'akb-%s-c' % tag, 'akb-%s-s' % tag
    zone = 4242
    try:
        for ns in (client, server):
            ip_lib.create_namespace(ns)
        sh('ip', 'link', 'add', 'akbc' + tag, 'netns', client, 'type', 'veth',
           'peer', 'name', 'akbs' + tag, 'netns', server)
        sh('ip', '-n', client, 'addr', 'add', '192.0.2.1/24', 'dev', 'akbc' + tag)
        sh('ip', '-n', server, 'addr', 'add', '192.0.2.2/24', 'dev', 'akbs' + tag)
        sh('ip', '-n', client, 'link', 'set', 'akbc' + tag, 'up')
        sh('ip', '-n', server, 'link', 'set', 'akbs' + tag, 'up')
        for chain, flag in (('PREROUTING', '-i'), ('OUTPUT', '-o')):
            sh('ip', 'netns', 'exec', server, 'iptables', '-t', 'raw', '-A', chain, flag,
               'akbs' + tag, '-j', 'CT', '--zone', str(zone))
        none = [conntrack.FlowFilter(4, zone=zone, protocol=17, dport_min=1, dport_max=9)]
        every = [conntrack.FlowFilter(4, zone=zone, protocol=17, orig_src='192.0.2.0/24',
                                      dport_min=9999)]
        miss, hit = [], []
        for _ in range(runs):
            sh('ip', 'netns', 'exec', client, sys.executable, '-c', _SEND_FLOWS,
               '192.0.2.2', str(FLOWS))
            start = time.perf_counter()
            assert conntrack.delete_flows(none, namespace=server) == 0
            miss.append(time.perf_counter() - start)
            start = time.perf_counter()
            deleted = conntrack.delete_flows(every, namespace=server)
            hit.append(time.perf_counter() - start)
            assert deleted == FLOWS, deleted
        print('delete_entries over %d entries, none matching: %s' % (FLOWS, ms(miss)))
        print('delete_entries over %d entries, all matching:  %s' % (FLOWS, ms(hit)))
    finally:
        for ns in (client, server):
            ip_lib.delete_namespace(ns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--runs', type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit('run as root')
    common_conf.register_common_opts(cfg.CONF)
    cfg.CONF([], project='agentkit', default_config_files=[])
    privsep_setup.setup_privsep(cfg.CONF)
    priv_ipset.list_sets('akb')  # start the daemon outside the measurements
    bench_ipset(args.runs)
    bench_conntrack(args.runs)


if __name__ == '__main__':
    main()
