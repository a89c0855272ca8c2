"""Base for functional tests: real kernel objects, real daemons, as root.

Every object a test creates carries a short random prefix and is removed by
a cleanup even when the test fails, so tests never touch what else runs on
the host and can run in parallel.
"""

import ipaddress
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import fixtures
from oslo_config import cfg
from testtools import content as testtools_content

from agentkit import privsep_setup
from tests import base

_privsep_initialised = False


class FunctionalTestCase(base.TestCase):
    """Functional test: requires root; privsep daemons run as real helpers."""

    def setUp(self) -> None:
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest('functional tests need root (namespaces, OVS, '
                          'privsep daemons)')
        global _privsep_initialised
        if not _privsep_initialised:
            privsep_setup.setup_privsep(cfg.CONF)
            _privsep_initialised = True

    @staticmethod
    def short_name(prefix: str = 'ak') -> str:
        """A device-safe unique name (IFNAMSIZ is 16 including NUL)."""
        return (prefix + uuid.uuid4().hex)[:14]


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0,
               message: str = 'condition', interval: float = 0.05) -> Any:
    """Poll ``predicate`` until truthy and return its value; fail the test
    with ``message`` after ``timeout`` seconds (never sleep-and-assume)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout:.1f} s waiting for {message}')
        time.sleep(interval)


def pids_with(token: str) -> list[int]:
    """Live processes whose command line contains ``token``."""
    from agentkit.lib import external_process
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            argv = external_process.read_cmdline(int(entry))
            if argv and any(token in arg for arg in argv):
                found.append(int(entry))
    return found


def random_underlay() -> tuple[str, str]:
    """Two addresses of a random /30 in 10.254.0.0/16, one per host.

    Random so that tests running at the same time get distinct routes in
    the root namespace.
    """
    base_ip = ipaddress.ip_address('10.254.0.0') + 4 * (uuid.uuid4().int % 16384)
    return str(base_ip + 1), str(base_ip + 2)


def kill_pids_with(token: str) -> None:
    """SIGKILL every live process whose command line contains ``token``."""
    for pid in pids_with(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def remove_dhcp_of(network_id: str) -> None:
    """Cleanup of a test's network: every process naming it, its qdhcp- namespace."""
    from agentkit.lib import ip_lib
    kill_pids_with(network_id)
    namespace = ip_lib.IPWrapper(f'qdhcp-{network_id}')
    if namespace.namespace_exists():
        namespace.delete_namespace()


_COUNTERS_RE = re.compile(r'\[\d+:\d+\]|counter packets \d+ bytes \d+')


def netfilter_snapshot(namespace: str) -> tuple[str, str]:
    """A namespace's rules as ``iptables-save`` and ``nft list ruleset`` show them.

    Counters and comment lines (timestamps) are left out: two snapshots are
    equal exactly when no rule, chain or table changed in between.
    """
    views = []
    for argv in (['iptables-save'], ['nft', 'list', 'ruleset']):
        out = subprocess.run(['ip', 'netns', 'exec', namespace, *argv],
                             capture_output=True, text=True, check=True).stdout
        views.append('\n'.join(_COUNTERS_RE.sub('', line) for line in out.splitlines()
                               if not line.startswith('#')))
    return views[0], views[1]


def write_config(path: str, sections: dict[str, dict[str, object]]) -> str:
    """Write an ini file from {section: {option: value}}; lists joined by ','."""
    lines = []
    for section, options in sections.items():
        lines.append(f'[{section}]')
        for key, value in options.items():
            if isinstance(value, (list, tuple)):
                value = ','.join(str(v) for v in value)
            lines.append(f'{key} = {value}')
        lines.append('')
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    return path


class AgentTestCase(FunctionalTestCase):
    """Functional test that configures cfg.CONF like an agent would."""

    def configure(self, register, sections: dict[str, dict[str, object]]
                  ) -> str:
        """Register an agent's options and parse a generated config file."""
        from tests.functional import amqp
        sections = {k: dict(v) for k, v in sections.items()}
        default = sections.setdefault('DEFAULT', {})
        default.setdefault('transport_url', amqp.RABBIT_URL)
        default.setdefault('host', self.short_name('akhost'))
        path = write_config(self.get_temp_path('agent.ini'), sections)
        register(self.conf)
        self.conf(['--config-file', path], project='agentkit',
                  default_config_files=[])
        return path

    def run_agent(self, command: str, config: str, host: str, neutron: Any,
                  log_name: str | None = None, env: dict[str, str] | None = None) -> Any:
        """Start ``command`` against ``neutron`` (a FakeNeutron) and return
        once its first state report arrived: by then its drivers are up
        (bridges created, privsep running). Killed at cleanup. ``env``:
        the process's whole environment (default: this one's)."""
        from tests.functional import agent_process
        mark = neutron.mark()
        proc = agent_process.AgentProcess(
            command, '--config-file', config,
            log_path=self.get_temp_path(log_name or f'{command}.log'), env=env)
        self.addCleanup(proc.kill)
        # A failed test shows what the agent said (the log file goes with the
        # temp dir at cleanup).
        self.addOnException(lambda _exc_info: self.addDetail(
            f'{log_name or command} log', testtools_content.text_content(proc.output()[-30000:])))
        try:
            neutron.wait_for_call(
                'report_state',
                lambda kw: kw['agent_state']['agent_state']['host'] == host,
                since=mark)
        except AssertionError as exc:  # what the agent said is the diagnosis
            raise AssertionError(f'{exc}; {command} logged:\n{proc.output()[-4000:]}'
                                 ) from None
        return proc

    def get_temp_path(self, name: str) -> str:
        import tempfile
        d = tempfile.mkdtemp(prefix='agentkit-test-')
        self.addCleanup(__import__('shutil').rmtree, d, True)
        return os.path.join(d, name)


class HostLock(fixtures.Fixture):
    """Exclusive use, among test processes, of something a host has once."""

    LOCK = ''

    def __init__(self, timeout: float = 600.0) -> None:
        super().__init__()
        self.timeout = timeout

    def _setUp(self) -> None:
        import fcntl
        import time
        fd = os.open(self.LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise AssertionError(f'{self.LOCK} still held after '
                                         f'{self.timeout} s') from None
                time.sleep(0.5)
        self.addCleanup(os.close, fd)


class HostRouters(HostLock):
    """Exclusive use of the host's ``qrouter-`` namespaces.

    An L3 agent removes every ``qrouter-`` namespace it is not given by its
    server (stale routers, e.g. after a restart): there is one per host.
    Tests that run an L3 agent or build ``qrouter-`` namespaces hold this
    lock, so no test's agent removes another test's routers.
    """

    LOCK = '/run/lock/agentkit-test-qrouter.lock'


class HostFirewallChains(HostLock):
    """Exclusive use of the host firewall of an L2 agent (iptables_hybrid).

    Such an agent owns every chain with its prefix (``neutron-openvswi``,
    ``neutron-linuxbri``), the ``NIPv*`` ipsets and its nftables bridge
    table on its host (there is one agent per host), so two such agents in
    parallel tests would remove each other's rules. Tests using one hold
    this lock; on release all of it is removed (a stopped agent leaves its
    filters in place on purpose, the test host gets FORWARD back). Use it
    before starting the agent, so its cleanup runs after the agent died.
    """

    LOCK = '/run/lock/agentkit-test-neutron-openvswi.lock'

    def __init__(self, conf: cfg.ConfigOpts, timeout: float = 600.0) -> None:
        super().__init__(timeout)
        self.conf = conf

    def _setUp(self) -> None:
        super()._setUp()
        self.addCleanup(self._remove_chains)

    def _remove_chains(self) -> None:
        from drivers.firewall import iptables_hybrid
        for prefix in (iptables_hybrid.OVS_BINARY_NAME, iptables_hybrid.LINUXBRIDGE_BINARY_NAME):
            iptables_hybrid.IptablesHybridFirewallDriver(
                self.conf, 'cleanup', binary_name=prefix).remove_all()
