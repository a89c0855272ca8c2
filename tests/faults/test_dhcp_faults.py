"""Faults under a running agentkit-dhcp: its privsep daemons, dnsmasq and
haproxy killed, its state_path full, its wall clock jumping.

The agent is a real process against the fake neutron-server on RabbitMQ
(linuxbridge interface driver: the test plays the L2 agent with one
``brq`` bridge per network, see tests/functional/test_dhcp_agent.py). A VM
on the first network pings the DHCP port and renews its lease every few
seconds through each fault (:class:`tests.functional.canary.Canary`); each
case ends by checking that no renewal failed or changed address, and
records what it measured.
"""

import datetime
import os
import signal
import subprocess
import time

from agentkit.lib import external_process
from tests import reliability
from tests.functional import base
from tests.functional import canary as canary_lib
from tests.functional import test_dhcp_agent

RENEW_EVERY = 2.0
REPORT_INTERVAL = 2
LIBFAKETIME = '/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1'
TIME_FORMAT = '%Y-%m-%dT%H:%M:%S.%f'


def session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


class DhcpFaultsTest(test_dhcp_agent.LinuxbridgeSwitch, test_dhcp_agent.DhcpAgentFixture,
                     base.AgentTestCase):

    def serve_first_network(self, metadata: bool = False, env: dict[str, str] | None = None
                            ) -> tuple[dict, dict, canary_lib.Canary, str]:
        """Agent up (``env``: its environment), network 1 served, its VM
        leased and pinging the DHCP port: (network, port, running canary,
        DHCP port address)."""
        with open(self.config) as f:
            text = f.read()
        text = text.replace('report_interval = 5', f'report_interval = {REPORT_INTERVAL}')
        if metadata:
            text = text.replace('[DEFAULT]\n', '[DEFAULT]\nenable_isolated_metadata = true\n', 1)
        with open(self.config, 'w') as f:
            f.write(text)
        net, subnet = self.make_network('10.254.40.0/24', '10.254.40.1')
        port, vm, client = self.make_vm(net, subnet, '10.254.40.11')
        self.agent = self.start_agent(env=env)
        self.wait_dhcp_ready(port['id'])
        lease = client.request()
        self.assertIsNotNone(lease, 'no lease before the fault')
        self.assertEqual('10.254.40.11', lease['new_ip_address'])
        vm.set_ip('10.254.40.11/24')
        dhcp_ip = self.dhcp_port_ip(net)
        canary = canary_lib.Canary([(vm.name, dhcp_ip)], dhcp=client,
                                   expected_ip='10.254.40.11', renew_every=RENEW_EVERY)
        self.addCleanup(canary.stop)
        return net, port, canary, dhcp_ip

    def dhcp_port_ip(self, net: dict) -> str:
        dhcp_port = next(p for p in self.neutron.networks[net['id']]['ports']
                         if p['device_owner'] == 'network:dhcp')
        return dhcp_port['fixed_ips'][0]['ip_address']

    def end_canary(self, canary: canary_lib.Canary) -> dict:
        """Let one more renewal run, stop, and check nothing was lost."""
        time.sleep(RENEW_EVERY + 1)
        counts = canary.stop()
        self.assertGreater(counts['dhcp renewals'], 0, counts)  # the canary ran
        self.assertEqual(0, counts['leases lost'], counts)
        self.assertEqual(0, counts['pings lost'], counts)
        return counts

    # -- kill -9 of a privsep daemon --------------------------------------------
    def privsep_daemons(self) -> dict[int, str]:
        """The agent's privsep daemons (its session): pid -> context."""
        found = {}
        for pid in base.pids_with('privsep-helper'):
            if session_of(pid) != self.agent.proc.pid:
                continue
            argv = external_process.read_cmdline(pid) or []
            context = next((a.split('=', 1)[-1] for a in argv
                            if 'agentkit.privileged' in a), '?')
            found[pid] = context
        return found

    def test_privsep_daemons_killed(self) -> None:
        net, _port, canary, _ = self.serve_first_network()
        daemons = base.wait_until(lambda: len(self.privsep_daemons()) >= 2 and
                                  self.privsep_daemons(), 20, 'both privsep daemons')
        self.assertEqual({'agentkit.privileged.network', 'agentkit.privileged.daemons'},
                         set(daemons.values()), daemons)
        killed_at = time.monotonic()
        for pid in daemons:
            os.kill(pid, signal.SIGKILL)
        base.wait_until(lambda: not set(daemons) & set(base.pids_with('privsep-helper')),
                        10, 'the killed daemons gone')

        # Work that needs both: a namespace, a device and a dnsmasq.
        net2, port2, client2, mark = self.add_served_network(41)
        self.wait_dhcp_ready(port2['id'], since=mark)
        served_in = time.monotonic() - killed_at
        lease = client2.request()
        self.assertIsNotNone(lease, 'no lease on the network created after the kill')
        self.assertEqual('10.254.41.11', lease['new_ip_address'])
        # And the first network's dnsmasq is still the agent's to watch:
        # killed, it is respawned by the new daemons context.
        pid = self.dnsmasq_pid(net['id'])
        os.kill(pid, signal.SIGKILL)
        base.wait_until(lambda: self.dnsmasq_pid(net['id']) not in (None, pid), 15,
                        'dnsmasq respawned through the restarted daemon')
        new = self.privsep_daemons()
        self.assertEqual(set(daemons.values()), set(new.values()), new)
        self.assertFalse(set(daemons) & set(new))

        # Killed again in the middle of work: four networks announced at
        # once, the daemons killed while the agent builds them. A call cut
        # off fails ("Premature eof") and the network is retried.
        burst = []
        for octet in range(45, 49):
            net_n, subnet_n = self.make_network(f'10.254.{octet}.0/24', f'10.254.{octet}.1')
            port_n, _vm, client_n = self.make_vm(net_n, subnet_n, f'10.254.{octet}.11')
            burst.append((net_n, port_n, client_n, f'10.254.{octet}.11'))
        mark = self.neutron.mark()
        for net_n, *_ in burst:
            self.neutron.cast_to_agent('dhcp_agent', self.host, 'network_create_end',
                                       payload={'network': {'id': net_n['id']}})
        base.wait_until(lambda: any(method == 'create_dhcp_port'
                                    for method, _ in self.neutron.calls[mark:]),
                        10, 'the agent at work on them')
        for pid in new:
            os.kill(pid, signal.SIGKILL)
        burst_killed = time.monotonic()
        for _net, port_n, _client, _ip in burst:
            self.wait_dhcp_ready(port_n['id'], since=mark)
        burst_in = time.monotonic() - burst_killed
        for _net, _port, client_n, ip in burst:
            lease = client_n.request()
            self.assertIsNotNone(lease, f'no lease for {ip} after the kill in the middle')
            self.assertEqual(ip, lease['new_ip_address'])

        self.assertIsNone(self.agent.proc.poll(), 'the agent exited')
        output = self.agent.output()
        self.assertIn('RESTARTING PrivContext', output)  # oslo.privsep noticed
        self.assertFalse(set(new) & set(self.privsep_daemons()))
        counts = self.end_canary(canary)
        result = {'new network served after s': round(served_in, 2),
                  'killed mid-burst: 4 networks served after s': round(burst_in, 2),
                  'privileged calls cut off': output.count('Premature eof'), **counts}
        reliability.record(
            'privsep-daemon-killed', kind='fault', order=20,
            fault='privsep daemon killed',
            injected='`kill -9` of both privsep daemons (network, daemons) of a '
                     'running agentkit-dhcp: once idle, once while it builds 4 networks',
            checked='the agent restarts each daemon on its next privileged call '
                    '(logged), serves a network created afterwards (namespace, port, '
                    'dnsmasq, lease) and respawns a killed dnsmasq; calls cut off are '
                    'retried and all 4 networks give leases; the first '
                    "network's VM keeps its lease and pings",
            result=result)
        print(f'privsep-daemon-killed: {result}')

    # -- dnsmasq and haproxy killed -----------------------------------------------
    def respawn_time(self, read_pid, what: str) -> float:
        """kill -9 the daemon ``read_pid()`` names; seconds until a new one runs."""
        pid = read_pid()
        self.assertIsNotNone(pid, f'no {what} running')
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        base.wait_until(lambda: read_pid() not in (None, pid), 15, f'{what} respawned',
                        interval=0.02)
        return time.monotonic() - killed_at

    def test_dnsmasq_and_haproxy_killed(self) -> None:
        net, _port, canary, dhcp_ip = self.serve_first_network(metadata=True)
        haproxy_pid_file = os.path.join(self.state_path, 'metadata-proxy',
                                        net['id'] + '.pid')

        def haproxy_pid() -> int | None:
            return external_process.read_pid_file(haproxy_pid_file)

        base.wait_until(haproxy_pid, 15, 'the metadata haproxy of the network')
        # dnsmasq twice, apart: each respawn is timed.
        dnsmasq_s = [self.respawn_time(lambda: self.dnsmasq_pid(net['id']), 'dnsmasq')]
        time.sleep(RENEW_EVERY + 1)  # a renewal against the respawned dnsmasq
        dnsmasq_s.append(self.respawn_time(lambda: self.dnsmasq_pid(net['id']), 'dnsmasq'))
        haproxy_s = self.respawn_time(haproxy_pid, 'haproxy')
        # The respawned haproxy listens where the VMs reach metadata.
        namespace = f'qdhcp-{net["id"]}'
        base.wait_until(lambda: '169.254.169.254:80' in subprocess.run(
            ['ip', 'netns', 'exec', namespace, 'ss', '-ltnH'],
            capture_output=True, text=True).stdout, 10, 'haproxy listening again')
        self.agent.wait_for_output('is not running; respawning', timeout=10)
        counts = self.end_canary(canary)
        result = {'check_child_processes_interval s': 1,
                  'dnsmasq respawned in s': max(round(s, 2) for s in dnsmasq_s),
                  'haproxy respawned in s': round(haproxy_s, 2), **counts}
        reliability.record(
            'dnsmasq-haproxy-killed', kind='fault', order=30,
            fault='dnsmasq / metadata haproxy killed',
            injected='`kill -9` of a network\'s dnsmasq (twice) and of its isolated-'
                     'metadata haproxy under agentkit-dhcp, check_child_processes_interval=1',
            checked='each respawned (new pid) by the process monitor; haproxy listens '
                    'on 169.254.169.254:80 again; the VM renews its lease (same '
                    'address) and pings the DHCP port throughout',
            result=result)
        print(f'dnsmasq-haproxy-killed: {result}')

    # -- state_path full ----------------------------------------------------------
    def test_state_path_full(self) -> None:
        # A 4 MiB tmpfs as the agent's state_path (mounted before it starts).
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m,mode=0755', 'tmpfs',
                        self.state_path], check=True)
        self.addCleanup(subprocess.run, ['umount', '-l', self.state_path])
        self.addCleanup(base.kill_pids_with, self.state_path)  # before the umount
        net, _port, canary, _ = self.serve_first_network()
        filler = os.path.join(self.state_path, 'filler')
        subprocess.run(['dd', 'if=/dev/zero', f'of={filler}', 'bs=64k'],
                       capture_output=True)  # stops at "No space left on device"
        self.assertLess(os.statvfs(self.state_path).f_bavail, 2)

        net2, port2, client2, mark = self.add_served_network(42)
        error = base.wait_until(lambda: [
            line for line in self.agent.output().splitlines()
            if f'Network {net2["id"]}: cannot write its DHCP files' in line
            and 'No space left on device' in line], 20,
            'an error naming the network that cannot be written')
        print(f'state-path-full: the agent logged {error[0]!r}')
        # Meanwhile the first network is served (the canary renews on it).
        time.sleep(3 * RENEW_EVERY)
        self.assertIsNone(client2.request(timeout=4), 'network 2 served with a full disk')
        self.assertFalse([kw for kw in self.neutron.calls_of('dhcp_ready_on_ports')[0:]
                          if port2['id'] in kw['port_ids']])

        # Space is back: the failed network gets served.
        os.unlink(filler)
        freed_at = time.monotonic()
        self.neutron.wait_for_call('dhcp_ready_on_ports',
                                   lambda kw: port2['id'] in kw['port_ids'],
                                   since=mark, timeout=90)
        served_in = time.monotonic() - freed_at
        lease = client2.request()
        self.assertIsNotNone(lease, 'network 2 not served after space returned')
        self.assertEqual('10.254.42.11', lease['new_ip_address'])
        self.assertIsNone(self.agent.proc.poll(), 'the agent exited')
        counts = self.end_canary(canary)
        result = {'failed network served after space returned s': round(served_in, 2),
                  **counts}
        reliability.record(
            'state-path-full', kind='fault', order=40,
            fault='state_path full',
            injected="the DHCP agent's state_path is a 4 MiB tmpfs, filled up with "
                     'dd, while a network is created; then the filler is removed',
            checked='an error naming the network that cannot be written; the '
                    "other network's VM keeps renewing and pinging; the new network "
                    'gets no lease while full and is served once space returns',
            result=result)
        print(f'state-path-full: {result}')

    # -- wall clock jumps -----------------------------------------------------------
    # The agent runs under libfaketime (Debian package faketime, bindep.txt):
    # LD_PRELOAD of its multi-threaded library, the offset re-read from a file
    # at every clock read (FAKETIME_TIMESTAMP_FILE + FAKETIME_NO_CACHE) and
    # DONT_FAKE_MONOTONIC=1: only the wall clock jumps, as when NTP steps it
    # or an operator sets the date. The host's clock is never touched.
    def set_offset(self, offset: str) -> None:
        """libfaketime's offset ("+0", "+1h", "-1h") from the real clock."""
        with open(self.offset_file + '.tmp', 'w') as f:
            f.write(offset + '\n')
        os.replace(self.offset_file + '.tmp', self.offset_file)

    def reports(self, since: int) -> list[tuple[float, float]]:
        """This agent's state reports since ``since``: (when the server got
        it, test monotonic clock; the wall-clock time the agent wrote in it,
        epoch s)."""
        found = []
        for kw in self.neutron.calls_of('report_state')[since:]:
            if kw['agent_state']['agent_state']['host'] == self.host:
                sent = datetime.datetime.strptime(kw['time'], TIME_FORMAT).replace(
                    tzinfo=datetime.timezone.utc).timestamp()
                found.append((kw['_received'], sent))
        return found

    def wait_reports(self, count: int) -> list[tuple[float, float]]:
        since = len(self.neutron.calls_of('report_state'))
        return base.wait_until(lambda: len(self.reports(since)) >= count
                               and self.reports(since), 5 * count * REPORT_INTERVAL,
                               f'{count} state reports')

    def jump(self, offset: str, expected_skew: float, third_octet: int) -> dict[str, float]:
        """Set the offset; the reports carry the jumped clock, keep their
        interval, and a network created afterwards is served."""
        self.set_offset(offset)
        jumped_at = time.monotonic()
        reports = self.wait_reports(4)
        # The agent's wall clock moved (libfaketime took effect) ...
        for received, sent in reports[1:]:
            skew = sent - (time.time() - (time.monotonic() - received))
            self.assertAlmostEqual(expected_skew, skew, delta=60,
                                   msg=f'agent clock skew {skew:.0f} s after {offset}')
        # ... its reports did not (no burst, no stall).
        gaps = [b[0] - a[0] for a, b in zip(reports, reports[1:])]
        for gap in gaps:
            self.assertGreater(gap, REPORT_INTERVAL / 2, gaps)
            self.assertLess(gap, REPORT_INTERVAL * 3, gaps)
        _net, port, client, mark = self.add_served_network(third_octet)
        announced = time.monotonic()
        self.wait_dhcp_ready(port['id'], since=mark)
        served = time.monotonic() - announced
        self.assertIsNotNone(client.request(), f'no lease on a network created after {offset}')
        return {'first report after s': round(reports[0][0] - jumped_at, 2),
                'report gaps s': f'{min(gaps):.2f}-{max(gaps):.2f}',
                'new network served in s': round(served, 2)}

    def test_wall_clock_jumps(self) -> None:
        if not os.path.exists(LIBFAKETIME):
            self.skipTest(f'{LIBFAKETIME} missing (Debian package faketime, see bindep.txt)')
        self.offset_file = self.get_temp_path('faketime')
        self.set_offset('+0')
        env = dict(os.environ, LD_PRELOAD=LIBFAKETIME, DONT_FAKE_MONOTONIC='1',
                   FAKETIME_TIMESTAMP_FILE=self.offset_file, FAKETIME_NO_CACHE='1')
        net, _port, canary, _ = self.serve_first_network(env=env)
        # Control: with no offset the agent's clock is the real one, and a
        # full sync is logged as such (the count must not grow below).
        before = self.wait_reports(2)
        self.assertAlmostEqual(0, before[-1][1] - time.time(), delta=60)
        self.agent.wait_for_output('Full sync (')
        syncs = self.agent.output().count('Full sync (')
        dnsmasq = self.dnsmasq_pid(net['id'])

        forward = self.jump('+1h', 3600, 43)
        backward = self.jump('-1h', -3600, 44)

        output = self.agent.output()
        self.assertEqual(syncs, output.count('Full sync ('), 'a resync after a clock jump')
        self.assertNotIn('resyncing everything', output)
        self.assertEqual(dnsmasq, self.dnsmasq_pid(net['id']))
        self.assertIsNone(self.agent.proc.poll(), 'the agent exited')
        counts = self.end_canary(canary)
        result = {'report_interval s': REPORT_INTERVAL,
                  **{'+1h ' + k: v for k, v in forward.items()},
                  **{'-2h ' + k: v for k, v in backward.items()},
                  'resyncs': 0, **counts}
        reliability.record(
            'clock-jump', kind='fault', order=60,
            fault='wall clock jump (+1 h, then -2 h)',
            injected='agentkit-dhcp under libfaketime (DONT_FAKE_MONOTONIC=1, offset '
                     'file re-read at run time) set to +1 h, then to -1 h',
            checked="the reports' own timestamps show each jump; the server gets them "
                    'at the same interval (no burst, no stall); no resync, dnsmasq '
                    'untouched; a network created after each jump is served; the '
                    "first network's VM keeps renewing and pinging",
            result=result)
        print(f'clock-jump: {result}')
