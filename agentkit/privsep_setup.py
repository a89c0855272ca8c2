"""Start-up wiring for oslo.privsep (configuration, not root operations).

The privsep daemons are started with ``<root_helper> privsep-helper``. When
the agent already runs as root there is nothing to escalate, so the helper
from this Python environment is executed directly; this also makes the venv's
``privsep-helper`` the one used even if the venv is not on PATH.
"""

import os
import shlex
import sys

from oslo_config import cfg
from oslo_privsep import priv_context


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
