#!/usr/bin/env python3
"""Benchmark: what a remote-group member change costs the iptables_hybrid firewall.

Neutron's default group lets in "members of the group": without ipsets
every member is a rule on every port of the group, so rules grow with
members x ports and every member change rewrites them all. Here members
live in one ipset per group and family. This prints, for ``--ports``
filtered ports in one group and each member count:

* the filter rules installed (IPv4 + IPv6), which must not grow with members;
* the first apply of all ports (one iptables-restore per family, sets, guards);
* one member added: the time of the driver call, and what touched the kernel
  (iptables-restore runs, ipset swaps, nft runs) — the target is one swap;
* an unchanged re-apply (nothing may touch the kernel).

Ports need no devices (rules name taps that need not exist), so nothing
here carries traffic; chains, sets and the nft table carry a random
prefix and are removed at the end. Figures for doc/platform-notes.md.

Usage (root): .venv/bin/python benchmarks/sg_members.py [--ports N] [members ...]
"""

import argparse
import os
import sys
import time
import uuid
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tests  # noqa: E402,F401  (selects the threading backend first)
from oslo_config import cfg  # noqa: E402

from agentkit import privsep_setup  # noqa: E402
from agentkit.api import security_group as sg  # noqa: E402
from agentkit.conf import common as common_conf  # noqa: E402
from agentkit.lib import bridge_filter  # noqa: E402
from agentkit.lib import ipset_manager  # noqa: E402
from agentkit.lib import iptables_manager  # noqa: E402
from drivers.firewall import iptables_hybrid  # noqa: E402

GROUP = str(uuid.uuid4())
NETWORK = str(uuid.uuid4())


def reply(ports: list[str], members: list[str]) -> dict:
    """security_group_info_for_devices as neutron 29 shapes it."""
    rules = [{'direction': d, 'ethertype': e, 'stateful': True,
              **({'remote_group_id': GROUP} if d == 'ingress' else {})}
             for d in ('ingress', 'egress') for e in ('IPv4', 'IPv6')]

    def mac(i: int) -> str:
        return 'fa:16:3e:%02x:%02x:%02x' % (i >> 16 & 255, i >> 8 & 255, i & 255)

    devices = {p: {'id': p, 'device': p, 'network_id': NETWORK, 'mac_address': mac(i),
                   'fixed_ips': ['10.%d.%d.%d' % (100 + (i >> 16), i >> 8 & 255, i & 255)],
                   'allowed_address_pairs': [], 'port_security_enabled': True,
                   'device_owner': 'compute:nova', 'security_groups': [GROUP]}
               for i, p in enumerate(ports, 1)}
    return {'devices': devices, 'security_groups': {GROUP: rules},
            'sg_member_ips': {GROUP: {'IPv4': [[m, None] for m in members], 'IPv6': []}}}


def apply(fw: iptables_hybrid.IptablesHybridFirewallDriver, ports: list[str],
          members: list[str]) -> float:
    info, devices = sg.SecurityGroupInfo.from_rpc(reply(ports, members))
    filters = [sg.PortFilter.from_rpc(d, bridge='qbr' + p[:11]) for p, d in devices.items()]
    start = time.perf_counter()
    fw.apply_port_filters(filters, info)
    return time.perf_counter() - start


class Counter:
    """Counts calls into the privileged layer without changing them."""

    def __init__(self, target: object, name: str) -> None:
        self.calls = 0
        self._real = getattr(target, name)
        self._patch = mock.patch.object(target, name, side_effect=self._count)

    def _count(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        return self._real(*args, **kwargs)

    def __enter__(self) -> 'Counter':
        self._patch.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._patch.stop()


def run(n_ports: int, n_members: int) -> None:
    tag = uuid.uuid4().hex[:6]
    fw = iptables_hybrid.IptablesHybridFirewallDriver(
        cfg.CONF, 'bench', binary_name='akb' + tag, set_prefix='B' + tag,
        antispoof_table='agentkit-b' + tag)
    ports = [str(uuid.uuid4()) for _ in range(n_ports)]
    members = ['10.200.%d.%d' % (i // 250, i % 250 + 1) for i in range(n_members)]
    try:
        first = apply(fw, ports, members)
        rules = sum(len([line for line in fw.iptables.get_live_rules(v, 'filter').splitlines()
                         if line.startswith('-A ') and fw.binary_name in line])
                    for v in fw.iptables.versions)
        with Counter(iptables_manager.priv, 'restore') as restores, \
                Counter(ipset_manager.priv, 'replace_set') as swaps, \
                Counter(bridge_filter.priv, 'replace_bridge_table') as nft:
            change = apply(fw, ports, members + ['10.201.0.1'])
            counts = (restores.calls, swaps.calls, nft.calls)
            unchanged = apply(fw, ports, members + ['10.201.0.1'])
            after = (restores.calls, swaps.calls, nft.calls)
        print(f'{n_ports:5d} ports  {n_members:5d} members  {rules:6d} filter rules  '
              f'first apply {first * 1000:7.1f} ms  member added {change * 1000:6.1f} ms '
              f'(iptables-restore {counts[0]}, ipset swaps {counts[1]}, nft {counts[2]})  '
              f'unchanged {unchanged * 1000:5.1f} ms '
              f'(kernel calls {sum(after) - sum(counts)})')
    finally:
        fw.remove_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--ports', type=int, default=20)
    parser.add_argument('members', type=int, nargs='*', default=[10, 200, 2000])
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit('run as root (iptables, ipset, nft through privsep)')
    common_conf.register_common_opts(cfg.CONF)
    cfg.CONF([], project='agentkit', default_config_files=[])
    privsep_setup.setup_privsep(cfg.CONF)
    for n_members in args.members:
        run(args.ports, n_members)


if __name__ == '__main__':
    main()
