"""Shared set-up for the benchmark scripts: config, fake server, agent process."""

import os
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


def setup() -> fake_neutron.FakeNeutron:
    """Parse a minimal config, start privsep and a fake neutron-server."""
    setup_privsep()
    return fake_neutron.FakeNeutron().start()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> str:
    return (f'median {statistics.median(values) * 1000:.0f} ms, '
            f'p95 {percentile(values, 95) * 1000:.0f} ms, '
            f'max {max(values) * 1000:.0f} ms')
