"""Faults: the host's ovs-vswitchd, then its ovsdb-server, restarted under agentkit-l2.

Two simulated hosts joined by a VXLAN underlay (see
tests/functional/test_l2_ovs_tunnels.py): host A is this machine's Open
vSwitch, restarted as an operator does (``ovs-ctl restart`` as
tools/install-deps.sh starts it, one daemon at a time); host B is a private
switch in a namespace that stays up. VMs on A keep pinging across the tunnel
and on A's own br-int, and one renews its lease from agentkit-dhcp's
dnsmasq on A's br-int, through the restart. Each case checks that every port,
tag, tunnel port and patch port is as before, that traffic resumed, that the
agent still wires a VM plugged after the fault, and records what it measured.

Every other test on this machine loses its switch for the restart: run this
suite under /tmp/ak-functional.lock (tools/run-tests.sh runs it alone, after
the functional suite). OVS is started again in a cleanup whatever happens.
"""

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable

from agentkit.lib import ip_lib
from agentkit.lib import naming
from agentkit.lib.ovs import connection as ovs_connection
from agentkit.lib.ovs import ports as ovs_ports
from drivers.openvswitch import tunnels
from tests import reliability
from tests.functional import base
from tests.functional import canary as canary_lib
from tests.functional import test_dhcp_agent
from tests.functional import test_l2_ovs_tunnels
from tests.functional import vm as fake_vm

OVS_CTL = '/usr/share/openvswitch/scripts/ovs-ctl'
SUBNET = '10.254.0.0/24'  # test_l2_ovs_tunnels' VM addresses
ROUTER_SUFFIX = 254


def ovs_running() -> bool:
    """Both daemons answer (the check tools/install-deps.sh makes)."""
    db = subprocess.run(['ovs-vsctl', '--timeout=2', 'show'], capture_output=True)
    sw = subprocess.run(['ovs-appctl', '-t', 'ovs-vswitchd', 'version'], capture_output=True)
    return db.returncode == 0 and sw.returncode == 0


def ensure_ovs_running() -> None:
    """Cleanup: start whatever daemon a failed restart left stopped."""
    if not ovs_running():
        subprocess.run([OVS_CTL, 'start', '--system-id=random'], capture_output=True,
                       timeout=60)
    base.wait_until(ovs_running, 30, 'the host\'s Open vSwitch to run again', interval=0.2)


def _read_pid(pidfile: str) -> int | None:
    try:
        with open(pidfile) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def restart(daemon: str, stall: float = 0.0,
            while_held: Callable[[], object] | None = None) -> tuple[float, object]:
    """``ovs-ctl restart`` of one daemon (``ovs-vswitchd`` or ``ovsdb-server``),
    as ``systemctl restart`` of its unit does; returns how long it took,
    and what ``while_held()`` returned while the new process was held.

    ``stall``: hold the new process (SIGSTOP) that long as soon as its
    pidfile names it, as a loaded host does. It writes the pidfile before it
    re-creates its ports: an agent that acts on the pidfile alone finds
    nothing to repair yet (the CI failure of 2026-12-07).
    """
    other = 'ovsdb-server' if daemon == 'ovs-vswitchd' else 'ovs-vswitchd'
    pidfile = f'/var/run/openvswitch/{daemon}.pid'
    old_pid = _read_pid(pidfile)
    seen_while_held = None
    started = time.monotonic()
    proc = subprocess.Popen([OVS_CTL, f'--no-{other}', '--system-id=random', 'restart'],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if stall:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            pid = _read_pid(pidfile)
            if pid not in (None, old_pid) and os.path.exists(f'/proc/{pid}'):
                os.kill(pid, signal.SIGSTOP)
                try:
                    if while_held is not None:
                        seen_while_held = while_held()
                    time.sleep(stall)
                finally:
                    os.kill(pid, signal.SIGCONT)
                break
            time.sleep(0.001)
    output, _ = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f'ovs-ctl restart of {daemon} failed: {output}')
    return time.monotonic() - started, seen_while_held


class OvsRestartTest(test_l2_ovs_tunnels.TwoTunnelHosts):

    def setUp(self) -> None:
        super().setUp()
        # Runs first among the cleanups (LIFO): the bridges are deleted from
        # a running switch, and every later test finds OVS up.
        self.addCleanup(ensure_ovs_running)

    def host_a_state(self, names: list[str]) -> dict[str, tuple]:
        """What host A's OVSDB holds for these ports (bridge, tag, type,
        options, protected): all the agent wrote for them."""
        conn = ovs_connection.get_connection()
        state = {}
        for name in names:
            port = ovs_ports.read_port(conn, name)
            state[name] = None if port is None else (
                port.bridge, port.tag, port.type, dict(port.options), port.protected)
        return state

    def serve_dhcp_on_a(self, net: str, subnet: str, vni: int,
                        vm: fake_vm.FakeVM) -> fake_vm.DhcpClient:
        """agentkit-dhcp (openvswitch interface driver) on host A's br-int,
        serving ``net`` where ``vm`` holds ``.1``; returns the VM's DHCP
        client once it got its lease. Host A's L2 agent wires the DHCP port
        like any port: the fake server describes it when it creates it."""
        make_dhcp_port = self.neutron.make_dhcp_port

        def make_and_describe(port: dict, host: str | None = None) -> dict:
            created = make_dhcp_port(port, host)
            self.describe_port(created['id'], net, created['mac_address'], 'vxlan', vni,
                               device_owner='network:dhcp')
            return created

        self.neutron.make_dhcp_port = make_and_describe  # type: ignore[method-assign]
        vm_port = self.neutron.add_port(net, vm.mac, [(subnet, self.ip_of(1))])
        state = os.path.join(test_dhcp_agent.STATE_ROOT, uuid.uuid4().hex[:12])
        os.makedirs(state, mode=0o755)  # dnsmasq reads it as nobody
        self.addCleanup(shutil.rmtree, state, True)
        self.addCleanup(base.kill_pids_with, state)  # after the agent is killed
        self.addCleanup(base.remove_dhcp_of, net)
        config = base.write_config(self.get_temp_path('dhcp-a.ini'), {
            'DEFAULT': {'transport_url': self.neutron.transport_url,
                        'host': self.prefix + 'd', 'state_path': state,
                        'interface_driver': 'openvswitch', 'dhcp_driver': 'dnsmasq'},
            'agent': {'report_interval': 2},
            'ovs': {'integration_bridge': self.br_int_a.name, 'datapath_type': 'netdev'}})
        mark = self.neutron.mark()
        self.dhcp_agent = self.run_agent('agentkit-dhcp', config, self.prefix + 'd',
                                         self.neutron, 'dhcp-a.log')
        self.neutron.wait_for_call('dhcp_ready_on_ports',
                                   lambda kw: vm_port['id'] in kw['port_ids'],
                                   since=mark, timeout=30)
        dhcp_port = next(p for p in self.neutron.networks[net]['ports']
                         if p['device_owner'] == 'network:dhcp')
        self.dhcp_tap = 'tap' + dhcp_port['id'][:11]
        client = fake_vm.DhcpClient(vm, self.get_temp_path('dhclient'))
        lease = base.wait_until(client.request, 30, 'a lease from the DHCP port on br-int')
        self.assertEqual(self.ip_of(1), lease['new_ip_address'])
        return client

    def route_on_a(self, net: str, subnet: str, vni: int) -> str:
        """agentkit-l3 (openvswitch interface driver) on host A's br-int with
        a router whose interface is ``subnet``'s gateway; returns that
        address once a VM on A reaches it. Host A's L2 agent wires the
        router port like any port."""
        self.useFixture(base.HostRouters())
        router = self.neutron.add_router(interfaces=[subnet], host=self.prefix + 'r')
        port = self.neutron.l3.routers[router['id']].interfaces[0]
        self.describe_port(port['id'], net, port['mac_address'], 'vxlan', vni,
                           device_owner='network:router_interface')
        namespace = naming.router_namespace(router['id'])
        self.addCleanup(ip_lib.delete_namespace, namespace)  # after the agent is killed
        state = os.path.join(test_dhcp_agent.STATE_ROOT, uuid.uuid4().hex[:12])
        os.makedirs(state, mode=0o755)
        self.addCleanup(shutil.rmtree, state, True)
        config = base.write_config(self.get_temp_path('l3-a.ini'), {
            'DEFAULT': {'transport_url': self.neutron.transport_url,
                        'host': self.prefix + 'r', 'state_path': state,
                        'interface_driver': 'openvswitch', 'l3_driver': 'namespace',
                        'enable_metadata_proxy': False},
            'agent': {'report_interval': 2},
            'ovs': {'integration_bridge': self.br_int_a.name, 'datapath_type': 'netdev'}})
        self.l3_agent = self.run_agent('agentkit-l3', config, self.prefix + 'r',
                                       self.neutron, 'l3-a.log')
        return self.ip_of(ROUTER_SUFFIX)

    def _case(self, daemon: str, agent_notices: str, case: str, order: int,
              stall: float = 0.0, route: bool = False) -> None:
        self.start_both()
        vni = 1000 + uuid.uuid4().int % 1000
        network = self.neutron.add_network()
        net = network['id']
        # .254: the router interface's address (route_on_a).
        subnet = self.neutron.add_subnet(net, SUBNET, self.ip_of(ROUTER_SUFFIX))['id']
        a1 = self.add_vm('a', net, 'vxlan', vni, 1)
        b1 = self.add_vm('b', net, 'vxlan', vni, 2)
        a2 = self.add_vm('a', net, 'vxlan', vni, 3)
        self.wait_up(a1, b1, a2)
        client = self.serve_dhcp_on_a(net, subnet, vni, a1)
        router_ip = self.route_on_a(net, subnet, vni) if route else None
        if router_ip:
            self.assertTrue(self.ping_ok(a2, router_ip, timeout=30), 'router before the fault')
        self.assertTrue(self.ping_ok(a1, self.ip_of(2)), 'A -> B over VXLAN before the fault')
        self.assertTrue(self.ping_ok(a2, self.ip_of(1)), 'on host A before the fault')
        tunnel = tunnels.tunnel_port_name('vxlan', vni, self.ip_b)
        self.tunnel_port(self.ovs_a, 'vxlan', vni, self.ip_b)
        names = [a1.tap, a2.tap, tunnel, self.prefix + 'pt', self.prefix + 'pi']
        before = self.host_a_state(names)
        self.assertTrue(all(before.values()), before)
        self.assertEqual(before[a1.tap][1], before[tunnel][1])  # same local VLAN
        self.assertEqual({'peer': self.prefix + 'pi'}, before[self.prefix + 'pt'][3])

        canary = canary_lib.Canary([(a1.name, self.ip_of(2)), (a2.name, self.ip_of(1))],
                                   dhcp=client, expected_ip=self.ip_of(1), renew_every=2)
        self.addCleanup(canary.stop)
        time.sleep(1)
        # Whether the daemon was held before it re-created the DHCP port's
        # tap, i.e. the gap the agents must wait through was reproduced.
        took, held_before_taps = restart(
            daemon, stall, lambda: not ip_lib.device_exists(self.dhcp_tap))
        self.agent_a.wait_for_output(agent_notices, timeout=30)
        if daemon == 'ovs-vswitchd':
            # Its DHCP port's tap was re-created in the root namespace: the
            # DHCP agent plugs it into the namespace again.
            self.dhcp_agent.wait_for_output('re-created its device in the root namespace',
                                            timeout=30)
        if router_ip:
            self.l3_agent.wait_for_output('re-created its device in the root namespace',
                                          timeout=30)
        # Traffic back on both paths (bounded waits; the canary measures).
        paths = {'A -> B': self.ping_ok(a1, self.ip_of(2), timeout=30),
                 'on A': self.ping_ok(a2, self.ip_of(1), timeout=5)}
        if router_ip:
            paths['A -> router'] = self.ping_ok(a2, router_ip, timeout=30)
        root_links = subprocess.run(['ip', '-br', 'link'], capture_output=True,
                                    text=True).stdout
        self.assertEqual(dict.fromkeys(paths, True), paths,
                         f'after the fault; DHCP port {self.dhcp_tap}: '
                         f'{[line for line in root_links.splitlines() if self.dhcp_tap in line]}'
                         f' in the root namespace')

        # The agent still works: a VM plugged after the fault is wired.
        mark = self.neutron.mark()
        a3 = self.add_vm('a', net, 'vxlan', vni, 5)  # .4: the DHCP port
        self.neutron.wait_for_call('update_device_list',
                                   lambda kw: a3.port_id in kw['devices_up'], since=mark)
        self.assertTrue(self.ping_ok(a3, self.ip_of(2), timeout=30), 'new VM A -> B')
        time.sleep(3)  # one more renewal
        counts = canary.stop()
        self.assertGreater(counts['dhcp renewals'], 0, counts)
        self.assertEqual(0, counts['leases lost'], counts)
        self.assertEqual(before, self.host_a_state(names))
        if daemon == 'ovsdb-server':  # the datapath never depended on it
            self.assertEqual(0, counts['pings lost'], counts)
        self.assertIsNone(self.agent_a.proc.poll(), 'agentkit-l2 exited')
        self.assertNotIn('Traceback', self.agent_a.output())
        result = {'restart took s': round(took, 2), **counts,
                  **({'held before the taps were back': held_before_taps} if stall else {}),
                  'ports/tags/tunnels/patches lost': 0}
        other = 'ovsdb-server' if daemon == 'ovs-vswitchd' else 'ovs-vswitchd'
        noticed = (' (the DHCP agent re-plugs its port and the L3 agent its router '
                   'port, whose taps ovs-vswitchd re-created in the root namespace)'
                   if daemon == 'ovs-vswitchd' else ' (both agents reconnect to OVSDB)')
        reliability.record(
            case, kind='fault', order=order,
            fault=f'{daemon} restart (host OVS, userspace datapath)',
            injected=f'`ovs-ctl --no-{other} restart` under a running agentkit-l2, '
                     'VXLAN to a second host'
                     + (f'; the new daemon held (SIGSTOP) {stall:g} s once its pidfile '
                        'names it, as on a loaded host' if stall else ''),
            checked=f'the agents log the fault{noticed}; VM ports, '
                    'local VLAN tags, VXLAN and patch ports unchanged; pings across the '
                    + ('tunnel, on br-int and to the router' if route
                       else 'tunnel and on br-int') + ' resume; a VM '
                    "renews its lease from agentkit-dhcp's dnsmasq on the same br-int "
                    'throughout; a VM plugged afterwards is wired and reaches the other host',
            result=result)
        print(f'{case}: {result}')

    def start_both(self) -> None:
        self.agent_a = self.start_agent('a')
        self.start_agent('b')

    def test_vswitchd_restart(self) -> None:
        self._case('ovs-vswitchd', 'ovs-vswitchd restarted', 'ovs-vswitchd-restart', 10,
                   stall=3.0, route=True)

    def test_ovsdb_server_restart(self) -> None:
        self._case('ovsdb-server', 're-established', 'ovsdb-server-restart', 11)
