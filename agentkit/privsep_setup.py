"""Start-up wiring for oslo.privsep (configuration, not root operations).

The privsep daemons are started with ``<root_helper> privsep-helper``. When
the agent already runs as root there is nothing to escalate, so the helper
from this Python environment is executed directly; this also makes the venv's
``privsep-helper`` the one used even if the venv is not on PATH.
"""

import logging
import os
import shlex
import sys
import threading
from collections.abc import Iterable

from oslo_config import cfg
from oslo_privsep import priv_context

LOG = logging.getLogger(__name__)


def helper_prefix(root_helper: str, euid: int | None = None) -> list[str]:
    """Command prefix that runs ``privsep-helper`` as root.

    ``oslo.privsep`` ignores an empty prefix (it falls back to ``sudo``), so
    for an agent that is already root we use ``env PATH=<venv bin>:...``,
    which execs in place and finds this environment's ``privsep-helper``.
    """
    if euid is None:
        euid = os.geteuid()
    if euid == 0 or not root_helper.strip():
        bindir = os.path.dirname(sys.executable)
        path = os.pathsep.join([bindir, os.environ.get('PATH', '/usr/bin:/bin')])
        return ['env', 'PATH=' + path]
    return shlex.split(root_helper)


def setup_privsep(conf: cfg.ConfigOpts = cfg.CONF) -> None:
    """Initialise oslo.privsep; call after config parsing and logging setup."""
    priv_context.init(root_helper=helper_prefix(conf.agent.root_helper))


def start_daemons(names: Iterable[str]) -> None:
    """Start privsep daemons (``agentkit.privileged.<name>``) in the background.

    Each takes ~0.3-0.5 s to start; started on the first root call they
    would sit on the critical path of the agent's first sync. Idempotent;
    failures are logged and the daemon is started again on first use.
    """
    from agentkit import privileged

    def start(name: str) -> None:
        context = getattr(privileged, name)
        try:
            with context.start_lock:
                if context.channel is not None:
                    return
            context.start()
        except Exception:
            LOG.exception('Starting the %s privsep daemon failed; it will be '
                          'retried on the first privileged call', name)

    for name in names:
        threading.Thread(target=start, args=(name,), name=f'privsep-{name}',
                         daemon=True).start()
