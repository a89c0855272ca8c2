"""Shared set-up for the benchmark scripts: config, fake server, agent process."""

import glob
import os
import re
import signal
import time
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tests  # noqa: E402,F401  (selects the threading backend first)
from oslo_config import cfg  # noqa: E402

from agentkit import privsep_setup  # noqa: E402
from agentkit.conf import common as common_conf  # noqa: E402
from tests.functional import amqp  # noqa: E402
from tests.functional import fake_neutron  # noqa: E402


def setup_privsep() -> None:
    """Parse a minimal config and start privsep (for root work in this process)."""
    common_conf.register_common_opts(cfg.CONF)
    path = os.path.join(tempfile.mkdtemp(prefix='agentkit-bench-'), 'bench.ini')
    with open(path, 'w') as f:
        f.write(f'[DEFAULT]\ntransport_url = {amqp.RABBIT_URL}\n')
    cfg.CONF(['--config-file', path], project='agentkit', default_config_files=[])
    privsep_setup.setup_privsep(cfg.CONF)


def exit_on_sigterm() -> None:
    """SIGTERM (``timeout``, ``kill``) unwinds like Ctrl-C, so a benchmark's
    ``finally`` stops the agents, daemons and bridges it started instead of
    leaving them running."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _namespaces_in_kernel() -> int | None:
    """Network namespaces the kernel still holds (net_namespace slab objects)."""
    try:
        with open('/proc/slabinfo') as f:
            for line in f:
                if line.startswith('net_namespace '):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def wait_for_quiet_kernel(settle: float = 5.0, timeout: float = 600.0) -> float:
    """Wait until the kernel has finished destroying namespaces; seconds waited.

    The kernel tears deleted namespaces down in a worker, minutes after a
    run of 1,000 networks has exited, holding the rtnl lock that every
    netlink call needs: a run started meanwhile measured its predecessor's
    clean-up too (restart 15-17 s instead of ~10 s).
    """
    started = time.monotonic()
    last, stable_since = _namespaces_in_kernel(), time.monotonic()
    while last is not None and time.monotonic() - started < timeout:
        time.sleep(1.0)
        now = _namespaces_in_kernel()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= settle:
            break
    return time.monotonic() - started


def setup() -> fake_neutron.FakeNeutron:
    """Parse a minimal config, start privsep and a fake neutron-server."""
    exit_on_sigterm()
    setup_privsep()
    return fake_neutron.FakeNeutron().start()


def write_agent_config(path: str, transport_url: str, host: str, state_path: str,
                       sections: dict[str, dict[str, object]]) -> str:
    """An agent's config file: [DEFAULT] for this benchmark's server and host
    (``BENCH_DEBUG`` turns debug logs on), [agent] reports every 30 s, then
    ``sections``. Returns ``path``."""
    everything: dict[str, dict[str, object]] = {
        'DEFAULT': {'transport_url': transport_url, 'host': host,
                    'state_path': state_path,
                    'debug': os.environ.get('BENCH_DEBUG', 'false')},
        'agent': {'report_interval': 30}}
    for name, options in sections.items():
        everything.setdefault(name, {}).update(options)
    with open(path, 'w') as f:
        for name, options in everything.items():
            f.write(f'[{name}]\n')
            f.writelines(f'{k} = {v}\n' for k, v in options.items())
    return path


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> str:
    return (f'median {statistics.median(values) * 1000:.0f} ms, '
            f'p95 {percentile(values, 95) * 1000:.0f} ms, '
            f'max {max(values) * 1000:.0f} ms')


# -- an agent's time ledger (its Guru Meditation Report's Time Spent) -------------
SECTION = re.compile(r'=+\n=+\s+Time Spent\s+=+\n=+\n(.*?)(?:\n=====|\Z)', re.S)


def parse_time_spent(report: str) -> dict[tuple[str, str], tuple[int, float]]:
    """{(category, name): (calls, seconds)} from a report's Time Spent section."""
    match = SECTION.search(report)
    result: dict[tuple[str, str], tuple[int, float]] = {}
    if not match:
        return result
    category = name = None
    calls = 0
    for line in match.group(1).splitlines():
        stripped = line.strip()
        depth = len(line) - len(line.lstrip())
        key, _, value = stripped.partition(' = ')
        key = key.rstrip(' =')
        if depth == 0 and stripped:
            category = key
        elif depth == 2:
            name = key
        elif depth == 4 and key == 'calls':
            calls = int(value)
        elif depth == 4 and key == 'seconds' and category and name:
            result[(category, name)] = (calls, float(value))
    return result


class AgentLedger:
    """An agent's time ledger (agentkit.lib.timing), read from its GMR."""

    def __init__(self, name: str, pid: int, gmr_dir: str) -> None:
        self.name, self.pid, self.gmr_dir = name, pid, gmr_dir

    def cpu_seconds(self) -> float:
        with open(f'/proc/{self.pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')

    def ledger(self) -> dict[tuple[str, str], tuple[int, float]]:
        before = set(glob.glob(os.path.join(self.gmr_dir, '*')))
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            new = set(glob.glob(os.path.join(self.gmr_dir, '*'))) - before
            for path in new:
                with open(path) as f:
                    text = f.read()
                if 'Time Spent' in text:
                    os.unlink(path)
                    return parse_time_spent(text)
            time.sleep(0.05)
        raise RuntimeError(f'agentkit-{self.name} (pid {self.pid}) wrote no report in '
                           f'{self.gmr_dir}: is [oslo_reports] log_dir set (tools/demo.sh)?')
