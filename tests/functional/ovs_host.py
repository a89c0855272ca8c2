"""A second simulated OVS host: its own ovsdb-server and ovs-vswitchd in a netns.

Why a network namespace: the userspace (netdev) datapath creates a tap
called ``ovs-netdev`` and taps for internal ports; those names are global to
a network namespace, so a second ovs-vswitchd in the root namespace would
break the host's own. Inside its namespace the second switch also gets its
own kernel routing table, which OVS's userspace tunnelling reads to route
encapsulated packets (``ovs-appctl ovs/route/show``).

Everything lives under a temporary directory (database, sockets,
pidfiles, logs) and is stopped and removed by the fixture's cleanups, in
reverse order of creation, also when the test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import IO

import fixtures

from agentkit.lib.ovs import bridge as ovs_bridge
from agentkit.lib.ovs import connection as ovs_connection
from agentkit.lib.ovs import vswitchd as ovs_vswitchd
from tests.functional import base
from tests.functional import vm as fake_vm

SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema'
START_TIMEOUT = 15.0


def run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """A command whose failure is a test setup error (with its stderr)."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f'{" ".join(argv)} failed ({proc.returncode}): '
                           f'{proc.stderr.strip()}')
    return proc


wait_until = base.wait_until


def random_prefix() -> str:
    """``ako`` + 6 hex: the prefix of every object a test creates."""
    return 'ako' + uuid.uuid4().hex[:6]


def add_veth_namespace(add_cleanup: Callable[..., None], namespace: str,
                       host_dev: str, cidr: str | None, mtu: int = 1500) -> None:
    """A namespace with ``eth0``, the peer of ``host_dev`` in the root namespace.

    Checksum offload is off on both ends: veths on a userspace-datapath
    bridge otherwise carry packets with unfilled checksums. Both are removed
    by cleanups registered with ``add_cleanup`` before they are created.
    """
    add_cleanup(delete_namespace, namespace)
    add_cleanup(delete_link, host_dev)
    run('ip', 'netns', 'add', namespace)
    run('ip', 'link', 'add', host_dev, 'mtu', str(mtu), 'type', 'veth',
        'peer', 'name', 'eth0', 'netns', namespace)
    run('ip', 'link', 'set', host_dev, 'up')
    run('ethtool', '-K', host_dev, 'tx', 'off')
    for argv in (('ip', 'link', 'set', 'lo', 'up'), ('ip', 'link', 'set', 'eth0', 'up'),
                 ('ethtool', '-K', 'eth0', 'tx', 'off')):
        run('ip', 'netns', 'exec', namespace, *argv)
    if cidr:
        run('ip', 'netns', 'exec', namespace, 'ip', 'addr', 'add', cidr, 'dev', 'eth0')


def delete_namespace(namespace: str) -> None:
    run('ip', 'netns', 'delete', namespace, check=False)


def delete_link(device: str) -> None:
    run('ip', 'link', 'delete', device, check=False)


class OVSHost(fixtures.Fixture):
    """ovsdb-server + ovs-vswitchd (userspace datapath) in namespace ``netns``.

    :ivar connection: the OVSDB endpoint, for ``[ovs] ovsdb_connection``.
    :ivar ovs: a private :class:`agentkit.lib.ovs.connection.OvsdbConnection` to it.
    """

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.netns = prefix + 'hb'

    def _setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix=f'{self.prefix}-ovs-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.db = os.path.join(self.dir, 'conf.db')
        self.sock = os.path.join(self.dir, 'db.sock')
        self.connection = 'unix:' + self.sock
        self.ctl = os.path.join(self.dir, 'ovs-vswitchd.ctl')
        run('ip', 'netns', 'add', self.netns)
        self.addCleanup(delete_namespace, self.netns)
        self.exec('ip', 'link', 'set', 'lo', 'up')
        run('ovsdb-tool', 'create', self.db, SCHEMA)
        self._spawn('ovsdb-server', self.db, f'--remote=punix:{self.sock}',
                    f'--pidfile={self.dir}/ovsdb-server.pid',
                    f'--unixctl={self.dir}/ovsdb-server.ctl',
                    f'--log-file={self.dir}/ovsdb-server.log', '--no-chdir')
        wait_until(lambda: os.path.exists(self.sock), START_TIMEOUT,
                   'ovsdb-server socket')
        # rundir: where the agent's vswitchd monitor finds the pidfile.
        self.vsctl('--no-wait', 'init', '--', 'set', 'Open_vSwitch', '.',
                   f'external_ids:rundir={self.dir}')
        self._spawn('ovs-vswitchd', self.connection,
                    f'--pidfile={self.dir}/{ovs_vswitchd.VSWITCHD_PIDFILE_NAME}',
                    f'--unixctl={self.ctl}',
                    f'--log-file={self.dir}/ovs-vswitchd.log', '--no-chdir')
        wait_until(lambda: self.appctl('version', check=False).returncode == 0,
                   START_TIMEOUT, 'ovs-vswitchd control socket')
        self.ovs = ovs_connection.OvsdbConnection(self.connection)
        self.addCleanup(self.ovs.close)

    def _spawn(self, *argv: str) -> None:
        # The namespace exists (ip netns add succeeded): the daemon can never
        # land in the root namespace. ``ip netns exec`` execs, so the pid is
        # the daemon's.
        env = dict(os.environ, OVS_RUNDIR=self.dir, OVS_DBDIR=self.dir,
                   OVS_LOGDIR=self.dir)
        log = open(os.path.join(self.dir, f'{argv[0]}.out'), 'wb')
        proc = subprocess.Popen(['ip', 'netns', 'exec', self.netns, *argv],
                                stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        self.addCleanup(self._stop, proc, log)
        time.sleep(0.05)
        if proc.poll() is not None:
            raise RuntimeError(f'{argv[0]} exited at once ({proc.returncode}), '
                               f'see {self.dir}')

    @staticmethod
    def _stop(proc: subprocess.Popen, log: IO[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()

    # -- commands ---------------------------------------------------------
    def exec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside this host's namespace."""
        return run('ip', 'netns', 'exec', self.netns, *argv, check=check)

    def vsctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run('ovs-vsctl', f'--db={self.connection}', '--timeout=10', *args,
                   check=check)

    def appctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run('ovs-appctl', '-t', self.ctl, *args, check=check)

    def bridge(self, name: str) -> ovs_bridge.OVSBridge:
        return self.ovs.bridge(name, 'netdev')

    def move_in(self, device: str) -> None:
        """Move a root-namespace device here, up, with TX checksum offload off."""
        run('ip', 'link', 'set', device, 'netns', self.netns)
        self.exec('ip', 'link', 'set', device, 'up')
        self.exec('ethtool', '-K', device, 'tx', 'off')

    def plug_vm(self, vm: fake_vm.FakeVM, bridge: ovs_bridge.OVSBridge) -> None:
        """Plug a FakeVM (created in the root namespace) here as os-vif would."""
        self.move_in(vm.tap)
        run('ip', 'netns', 'exec', vm.name, 'ethtool', '-K', 'eth0', 'tx', 'off')
        bridge.add_port(vm.tap, external_ids={
            'iface-id': vm.port_id, 'attached-mac': vm.mac,
            'iface-status': 'active', 'vm-uuid': vm.port_id})

    def connect_underlay(self, local_bridge: ovs_bridge.OVSBridge, local_cidr: str,
                         remote_bridge: ovs_bridge.OVSBridge, remote_cidr: str) -> None:
        """A "cable" between the root namespace's switch and this host's.

        Both bridges must exist (netdev). Each gets the tunnel endpoint
        address on its internal port: the userspace datapath sends
        encapsulated packets out of the bridge whose internal port holds the
        route to the peer, and resolves the peer's MAC itself.
        """
        near, far = self.prefix + 'ua', self.prefix + 'ub'
        self.addCleanup(delete_link, near)
        run('ip', 'link', 'add', near, 'type', 'veth', 'peer', 'name', far)
        run('ip', 'link', 'set', near, 'up')
        run('ethtool', '-K', near, 'tx', 'off')
        self.move_in(far)
        local_bridge.add_port(near)
        remote_bridge.add_port(far)
        run('ip', 'addr', 'add', local_cidr, 'dev', local_bridge.name)
        run('ip', 'link', 'set', local_bridge.name, 'up')
        self.exec('ip', 'addr', 'add', remote_cidr, 'dev', remote_bridge.name)
        self.exec('ip', 'link', 'set', remote_bridge.name, 'up')
