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
from typing import Any

from oslo_config import cfg
from oslo_privsep import comm
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
    treat_reset_as_eof()
    priv_context.init(root_helper=helper_prefix(conf.agent.root_helper))


def treat_reset_as_eof() -> None:
    """Make a privsep daemon's reset connection end its channel like an EOF.

    A daemon killed while requests sit unread in its socket resets the
    connection. oslo.privsep (3.12) handles only a clean EOF: its reader
    thread dies on ``ConnectionResetError``, so the calls waiting for an
    answer wait forever and the channel still counts as running, so the
    daemon is never restarted (the agent hangs; tests/faults
    test_privsep_daemons_killed caught it). Ending the read as at EOF lets
    oslo.privsep fail those calls ("Premature eof") and restart the daemon
    on the next one. Idempotent.
    """
    if getattr(comm.Deserializer.__next__, '_agentkit_reset_is_eof', False):
        return
    read_next = comm.Deserializer.__next__

    def next_message(self: comm.Deserializer) -> Any:
        try:
            return read_next(self)
        except ConnectionResetError:
            LOG.warning('A privsep daemon reset its connection (killed?); '
                        'its waiting calls fail and it is restarted on the next')
            raise StopIteration from None

    next_message._agentkit_reset_is_eof = True  # type: ignore[attr-defined]
    comm.Deserializer.__next__ = next_message  # type: ignore[method-assign]


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
