#!/usr/bin/env python3
"""The demo's scenario: what a user and Nova ask of neutron-server, and what agentkit builds.

Run by ``tools/demo.sh`` (which installs and starts everything first):

  demo.py up --api URL --host HOST ...    create (or find) the seed scenario's
                                           resources through the REST API, plug
                                           the VMs as Nova/os-vif would, and show
                                           each step on the host
  demo.py down --api URL ...              delete them again
  demo.py nova --port P --secret S ...    a stand-in for Nova's metadata API

Idempotent: every resource is found by its name before it is created, and a
VM whose namespace exists is not plugged again.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import types
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.functional import base as functional_base  # noqa: E402
from tests.functional import fake_nova  # noqa: E402
from tests.functional import neutron_server  # noqa: E402
from tests.functional import traffic  # noqa: E402
from tests.functional import vm as fake_vm  # noqa: E402

TENANT_CIDR = '10.10.0'
PUBLIC_CIDR = '172.24.4'
UPSTREAM = 'demo-upstream'
VMS = ('demo-vm1', 'demo-vm2')
TIMEOUT = 90
BOLD, DIM, GREEN, RED, RESET = '\033[1m', '\033[2m', '\033[32m', '\033[31m', '\033[0m'
if not sys.stdout.isatty():
    BOLD = DIM = GREEN = RED = RESET = ''


# -- printing --------------------------------------------------------------------
def step(title: str) -> None:
    print(f'\n{BOLD}==> {title}{RESET}', flush=True)


def ok(text: str) -> None:
    print(f'    {GREEN}ok{RESET} {text}', flush=True)


def fail(text: str) -> None:
    print(f'    {RED}FAILED{RESET} {text}', flush=True)
    sys.exit(1)


def sh(*argv: str, show: bool = True, check: bool = True, quiet: bool = False) -> str:
    """Run a host command, printed as a user would type it, with its output."""
    if show:
        print(f'    {DIM}${RESET} {shlex.join(argv)}', flush=True)
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        fail(f'{shlex.join(argv)}: {proc.stderr.strip()}')
    if show and not quiet:
        for line in proc.stdout.rstrip().splitlines()[:25]:
            print(f'      {line}')
    return proc.stdout


def wait(predicate, what: str, timeout: float = TIMEOUT):
    try:
        return functional_base.wait_until(predicate, timeout, what, interval=0.5)
    except AssertionError as exc:
        fail(str(exc))


def namespaces() -> set[str]:
    return {line.split()[0] for line in sh('ip', 'netns', 'list', show=False).splitlines()
            if line.strip()}


# -- the REST API, find-or-create ---------------------------------------------------
class Api(neutron_server.Client):

    def find(self, collection: str, **filters) -> dict | None:
        """The first of the demo project's resources that match ``filters``."""
        found = self._list(collection, project_id=self.project_id, **filters)
        return found[0] if found else None

    def ensure(self, collection: str, resource: str, name: str, **attrs) -> dict:
        existing = self.find(collection, name=name)
        if existing:
            print(f'    {DIM}(reusing {resource} {name} {existing["id"]}){RESET}')
            return existing
        created = self._create(collection, resource, name=name, **attrs)
        print(f'    POST /v2.0/{collection} {name} -> {created["id"]}')
        return created


# -- VMs, plugged as os-vif's hybrid plug does -----------------------------------------
def plug_vm(name: str, port: dict, br_int: str, mtu: int) -> None:
    """Namespace ``name`` with eth0; its tap in qbr; qvb/qvo into ``br_int``."""
    pid = port['id'][:11]
    tap, qbr, qvb, qvo = (f'{p}{pid}' for p in ('tap', 'qbr', 'qvb', 'qvo'))
    sh('ip', 'netns', 'add', name)
    sh('ip', 'link', 'add', tap, 'mtu', str(mtu), 'type', 'veth', 'peer', 'name', 'eth0',
       'netns', name)
    sh('ip', 'netns', 'exec', name, 'ip', 'link', 'set', 'eth0', 'address', port['mac_address'])
    sh('ip', 'link', 'add', qbr, 'type', 'bridge')
    sh('ip', 'link', 'add', qvb, 'mtu', str(mtu), 'type', 'veth', 'peer', 'name', qvo)
    # A userspace-datapath bridge needs the veths' checksums filled in.
    for dev in (tap, qvb, qvo):
        sh('ethtool', '-K', dev, 'tx', 'off', show=False)
    sh('ip', 'netns', 'exec', name, 'ethtool', '-K', 'eth0', 'tx', 'off', show=False)
    for dev in (tap, qvb):
        sh('ip', 'link', 'set', dev, 'master', qbr)
    for dev in (qbr, tap, qvb, qvo):
        sh('ip', 'link', 'set', dev, 'up', show=False)
    for dev in ('lo', 'eth0'):
        sh('ip', 'netns', 'exec', name, 'ip', 'link', 'set', dev, 'up', show=False)
    sh('ovs-vsctl', '--may-exist', 'add-port', br_int, qvo, '--', 'set', 'Interface', qvo,
       f'external_ids:iface-id={port["id"]}', f'external_ids:attached-mac={port["mac_address"]}',
       'external_ids:iface-status=active', f'external_ids:vm-uuid={port["device_id"]}')


def unplug_vm(name: str, port_id: str, br_int: str) -> None:
    pid = port_id[:11]
    sh('ovs-vsctl', '--if-exists', 'del-port', br_int, f'qvo{pid}', check=False)
    for dev in (f'qvo{pid}', f'qbr{pid}', f'tap{pid}'):
        sh('ip', 'link', 'del', dev, show=False, check=False)
    sh('ip', 'netns', 'del', name, check=False)


def add_upstream(br_ex: str) -> None:
    """A namespace at <public>.1 on the flat external network: the upstream router."""
    if UPSTREAM in namespaces():
        return
    sh('ip', 'netns', 'add', UPSTREAM)
    sh('ip', 'link', 'add', 'demo-up0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', UPSTREAM)
    sh('ethtool', '-K', 'demo-up0', 'tx', 'off', show=False)
    sh('ip', 'netns', 'exec', UPSTREAM, 'ethtool', '-K', 'eth0', 'tx', 'off', show=False)
    sh('ip', 'link', 'set', 'demo-up0', 'up', show=False)
    sh('ovs-vsctl', '--may-exist', 'add-port', br_ex, 'demo-up0')
    sh('ip', 'netns', 'exec', UPSTREAM, 'ip', 'addr', 'add', f'{PUBLIC_CIDR}.1/24', 'dev', 'eth0')
    for dev in ('lo', 'eth0'):
        sh('ip', 'netns', 'exec', UPSTREAM, 'ip', 'link', 'set', dev, 'up', show=False)


def save_instance(instances_file: str, port: dict) -> None:
    """Tell the stand-in Nova which instance the port belongs to."""
    try:
        with open(instances_file) as f:
            instances = json.load(f)
    except (OSError, ValueError):
        instances = {}
    instances[port['device_id']] = port['project_id']
    with open(instances_file + '.tmp', 'w') as f:
        json.dump(instances, f)
    os.replace(instances_file + '.tmp', instances_file)


# -- up ------------------------------------------------------------------------------
def up(args: argparse.Namespace) -> None:
    api = Api(args.api, args.project)
    step(f'agentkit\'s agents report to neutron-server ({args.api})')

    def agents_alive():
        agents = api.list_agents(host=args.host)
        kinds = {a['agent_type'] for a in agents if a['alive']}
        want = {'Open vSwitch agent', 'DHCP agent', 'L3 agent', 'Metadata agent'}
        return agents if want <= kinds else None
    for agent in sorted(wait(agents_alive, 'the four agents alive'),
                        key=lambda a: a['binary']):
        ok(f'{agent["agent_type"]:<20} {agent["binary"]:<18} host={agent["host"]} alive')

    step('a tenant network and subnet: the DHCP agent starts dnsmasq in qdhcp-')
    net = api.ensure('networks', 'network', 'demo-net')
    subnet = api.ensure('subnets', 'subnet', 'demo-subnet', network_id=net['id'],
                        ip_version=4, cidr=f'{TENANT_CIDR}.0/24', enable_dhcp=True)
    qdhcp = f'qdhcp-{net["id"]}'
    wait(lambda: qdhcp in namespaces(), f'{qdhcp}')
    wait(lambda: subprocess.run(['pgrep', '-f', f'dnsmasq.*{net["id"]}'],
                                capture_output=True).returncode == 0, 'dnsmasq')
    sh('ip', 'netns', 'exec', qdhcp, 'ip', '-o', '-4', 'addr', 'show')
    sh('pgrep', '-a', '-f', f'dnsmasq.*{net["id"]}')

    step('two VMs: Nova creates their ports, os-vif plugs them (hybrid: tap in qbr)')
    ports = {}
    for name in VMS:
        port = api.find('ports', name=name) or api.create_port(
            network_id=net['id'], name=name, device_owner='compute:nova',
            device_id=str(uuid.uuid4()), **{'binding:host_id': args.host})
        ports[name] = port
        save_instance(args.instances, port)
        if name not in namespaces():
            plug_vm(name, port, args.br_int, net['mtu'])
        wait(lambda p=port: api.show_port(p['id'])['status'] == 'ACTIVE',
             f'port {port["id"]} ACTIVE')
        ok(f'{name}: port {port["id"]} ACTIVE (vif_type '
           f'{api.show_port(port["id"])["binding:vif_type"]}, hybrid plug)')
    sh('ovs-vsctl', 'show', quiet=True)
    for name in VMS:
        qvo = 'qvo' + ports[name]['id'][:11]
        sh('ovs-vsctl', 'get', 'Port', qvo, 'tag')
    sh('iptables', '-S', 'neutron-openvswi-i' + ports[VMS[0]]['id'][:10])

    step('DHCP: each VM asks for its lease (through the security-group filter)')
    leases = {}
    for name in VMS:
        vm = types.SimpleNamespace(name=name)
        workdir = os.path.join(args.state, 'dhclient')
        lease = fake_vm.DhcpClient(vm, workdir).request(timeout=25)
        if not lease:
            fail(f'{name} got no DHCP lease')
        leases[name] = lease
        ok(f'{name}: lease {lease["new_ip_address"]} router {lease.get("new_routers")} '
           f'mtu {lease.get("new_interface_mtu")}')
        sh('ip', 'netns', 'exec', name, 'ip', 'addr', 'replace',
           f'{lease["new_ip_address"]}/24', 'dev', 'eth0')
        sh('ip', 'netns', 'exec', name, 'ip', 'route', 'replace', 'default', 'via',
           subnet['gateway_ip'])
    vm1_ip, vm2_ip = (leases[n]['new_ip_address'] for n in VMS)

    step('VM to VM (the default security group lets its members in)')
    wait(lambda: fake_vm.ping(VMS[0], vm2_ip, count=1, wait=1), f'{VMS[0]} -> {vm2_ip}', 30)
    sh('ip', 'netns', 'exec', VMS[0], 'ping', '-c', '2', '-i', '0.2', vm2_ip)

    step('a router: interface on the tenant subnet, gateway on the flat external network')
    public = api.find('networks', name='demo-public') or api.create_network(
        name='demo-public', **{'router:external': True, 'provider:network_type': 'flat',
                               'provider:physical_network': args.physnet})
    api.ensure('subnets', 'subnet', 'demo-public-subnet', network_id=public['id'],
               ip_version=4, cidr=f'{PUBLIC_CIDR}.0/24', enable_dhcp=False,
               gateway_ip=f'{PUBLIC_CIDR}.1',
               allocation_pools=[{'start': f'{PUBLIC_CIDR}.10', 'end': f'{PUBLIC_CIDR}.250'}])
    router = api.ensure('routers', 'router', 'demo-router',
                        external_gateway_info={'network_id': public['id']})
    if not api.find('ports', device_id=router['id'], device_owner='network:router_interface'):
        api.add_router_interface(router['id'], subnet['id'])
    qrouter = f'qrouter-{router["id"]}'
    wait(lambda: qrouter in namespaces(), qrouter)

    def router_addresses():
        return sh('ip', 'netns', 'exec', qrouter, 'ip', '-o', '-4', 'addr', show=False)
    wait(lambda: f'{subnet["gateway_ip"]}/' in router_addresses(), 'the router\'s qr- address')
    sh('ip', 'netns', 'exec', qrouter, 'ip', '-o', '-4', 'addr', 'show')
    gw_ip = api.show_router(router['id'])['external_gateway_info']['external_fixed_ips'][0][
        'ip_address']
    nat = sh('ip', 'netns', 'exec', qrouter, 'iptables', '-t', 'nat', '-S', show=False)
    print(f'    {DIM}${RESET} ip netns exec {qrouter} iptables -t nat -S | grep SNAT')
    for line in nat.splitlines():
        if 'SNAT' in line:
            print(f'      {line}')
    wait(lambda: fake_vm.ping(VMS[0], subnet['gateway_ip'], count=1, wait=1),
         'VM -> router', 30)
    ok(f'{VMS[0]} pings its router {subnet["gateway_ip"]}')

    step(f'SNAT: the upstream side ({PUBLIC_CIDR}.1, a namespace on br-ex) sees the '
         f'router\'s gateway IP {gw_ip}')
    add_upstream(args.br_ex)
    # The upstream side may reach the VMs (the default group keeps it out).
    group = ports[VMS[0]]['security_groups'][0]
    rules = api.request('GET', f'/v2.0/security-group-rules?security_group_id={group}')[
        'security_group_rules']
    if not any(r.get('remote_ip_prefix') == f'{PUBLIC_CIDR}.0/24' for r in rules):
        api.create_security_group_rule(security_group_id=group, direction='ingress',
                                       ethertype='IPv4', remote_ip_prefix=f'{PUBLIC_CIDR}.0/24')
    reporter = traffic.PeerReporter(UPSTREAM, 5005)
    try:
        wait(lambda: fake_vm.ping(VMS[1], f'{PUBLIC_CIDR}.1', count=1, wait=1),
             'VM -> upstream through SNAT', 60)
        seen = traffic.peer_seen(VMS[1], f'{PUBLIC_CIDR}.1', 5005)
    finally:
        reporter.stop()
    if seen != gw_ip:
        fail(f'the upstream side saw {seen}, not the gateway IP {gw_ip}')
    ok(f'{VMS[1]} -> {PUBLIC_CIDR}.1: the upstream side saw {seen}')

    step(f'a floating IP for {VMS[0]}: the upstream side reaches it, the VM sees who')
    fip = api.find('floatingips', port_id=ports[VMS[0]]['id']) or api.create_floatingip(
        floating_network_id=public['id'], port_id=ports[VMS[0]]['id'])
    address = fip['floating_ip_address']
    wait(lambda: fake_vm.ping(UPSTREAM, address, count=1, wait=1), f'{address} from upstream')
    reporter = traffic.PeerReporter(VMS[0], 5006)
    try:
        seen = traffic.peer_seen(UPSTREAM, address, 5006)
    finally:
        reporter.stop()
    if seen != f'{PUBLIC_CIDR}.1':
        fail(f'{VMS[0]} saw {seen}, not the upstream address')
    ok(f'upstream -> {address} (floating IP): {VMS[0]} saw {seen}')
    nat = sh('ip', 'netns', 'exec', qrouter, 'iptables', '-t', 'nat', '-S', show=False)
    print(f'    {DIM}${RESET} ip netns exec {qrouter} iptables -t nat -S | grep {address}')
    for line in nat.splitlines():
        if address in line:
            print(f'      {line}')

    step('metadata: the VM asks 169.254.169.254, the router\'s proxy and agentkit-metadata '
         'answer (signed for Nova)')
    wait(lambda: subprocess.run(['pgrep', '-f', f'haproxy.*{router["id"]}'],
                                capture_output=True).returncode == 0, 'the metadata proxy')
    url = 'http://169.254.169.254/latest/meta-data/instance-id'
    answer = wait(lambda: traffic.http_get(VMS[0], url)[1].strip() or None,
                  'a metadata answer', 60)
    print(f'    {DIM}${RESET} ip netns exec {VMS[0]} curl -s {url}')
    print(f'      {answer}')
    if answer != ports[VMS[0]]['device_id']:
        fail(f'metadata answered {answer!r}, not the instance id')
    ok(f'{VMS[0]} is instance {answer}')

    step('done: it keeps running. Explore:')
    api_hint = f'curl -s {args.api}/v2.0'
    for line in (
            'ip netns                                   # qdhcp-, qrouter-, the VMs, upstream',
            f'ip netns exec {VMS[0]} ping {vm2_ip}',
            f'ip netns exec {UPSTREAM} ping {address}      # the floating IP',
            f'ip netns exec {qrouter} iptables -t nat -S',
            f'ip netns exec {qdhcp} ip addr',
            'ovs-vsctl show',
            f'iptables -S | grep neutron-openvswi-i{ports[VMS[0]]["id"][:10]}',
            f'tail -f {args.state}/log/l2.log           # also dhcp, l3, metadata',
            f'{api_hint}/agents | python3 -m json.tool',
            f'{api_hint}/ports?network_id={net["id"]} | python3 -m json.tool',
            f'curl -s -X POST -H "Content-Type: application/json" {args.api}/v2.0/networks '
            f'-d \'{{"network": {{"name": "mine", "project_id": "{args.project}"}}}}\'',
            'tools/demo.sh status                      # what runs',
            'tools/demo.sh down                        # remove everything the demo made'):
        print(f'    {line}')


# -- down ------------------------------------------------------------------------------
def down(args: argparse.Namespace) -> None:
    api = Api(args.api, args.project)
    step('deleting the demo\'s resources through the REST API')
    for fip in api._list('floatingips', project_id=args.project):
        api.delete('floatingips', fip['id'])
    router = api.find('routers', name='demo-router')
    subnet = api.find('subnets', name='demo-subnet')
    if router:
        if subnet:
            api.remove_router_interface(router['id'], subnet['id'])
        api.delete('routers', router['id'])
        print(f'    DELETE router {router["id"]}')
    for name in VMS:
        port = api.find('ports', name=name)
        unplug_vm(name, port['id'] if port else '', args.br_int)
        if port:
            api.delete('ports', port['id'])
            print(f'    DELETE port {port["id"]} ({name})')
    for name in ('demo-net', 'demo-public'):
        net = api.find('networks', name=name)
        if net:
            api.delete('networks', net['id'])
            print(f'    DELETE network {net["id"]} ({name})')
    sh('ip', 'netns', 'del', UPSTREAM, check=False)
    sh('ip', 'link', 'del', 'demo-up0', show=False, check=False)
    step('waiting for the agents to take it all down')
    wait(lambda: not any(n.startswith(('qdhcp-', 'qrouter-')) for n in namespaces()),
         'qdhcp-/qrouter- namespaces gone', 60)
    ok('no qdhcp-/qrouter- namespace left')


def forget_agents(args: argparse.Namespace) -> None:
    """Delete the stopped agents' records, as an operator does after removing a host."""
    api = Api(args.api, args.project)
    for agent in api.list_agents(host=args.host):
        api.delete('agents', agent['id'])
        print(f'    DELETE agent {agent["id"]} ({agent["binary"]} on {agent["host"]})')


# -- nova ------------------------------------------------------------------------------
class FileNova(fake_nova.FakeNova):
    """The test suite's stand-in Nova, its instances read from a file the demo writes."""

    def __init__(self, secret: str, instances_file: str) -> None:
        super().__init__(secret)
        self.instances_file = instances_file

    def _answer(self, method, path, headers, body):
        try:
            with open(self.instances_file) as f:
                loaded = json.load(f)
            with self.lock:
                self.instances = loaded
        except (OSError, ValueError):
            pass
        return super()._answer(method, path, headers, body)


def nova(args: argparse.Namespace) -> None:
    FileNova(args.secret, args.instances).start(args.port)
    print(f'stand-in Nova metadata API on 127.0.0.1:{args.port}', flush=True)
    while True:
        time.sleep(3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', required=True)
    for name in ('up', 'down', 'forget-agents'):
        p = sub.add_parser(name)
        p.add_argument('--api', required=True)
        p.add_argument('--host', required=True)
        p.add_argument('--state', required=True)
        p.add_argument('--project', default='demo')
        p.add_argument('--br-int', default='br-int')
        p.add_argument('--br-ex', default='br-ex')
        p.add_argument('--physnet', default='physnet1')
        p.add_argument('--instances', required=True)
    p = sub.add_parser('nova')
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--secret', required=True)
    p.add_argument('--instances', required=True)
    args = parser.parse_args()
    {'up': up, 'down': down, 'forget-agents': forget_agents,
     'nova': nova}[args.command](args)


if __name__ == '__main__':
    main()
