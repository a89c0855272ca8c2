"""One start-up sequence for every agent, and the process's signal handling.

register options -> parse config (``--config-file``/``--config-dir``) ->
validate every option -> select the concurrency mode (before oslo.messaging
is imported) -> logging -> privsep -> load the agent and its drivers -> run
until SIGTERM/SIGINT; SIGHUP reloads mutable options.
"""

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

from oslo_config import cfg
from oslo_log import log as oslo_log
from oslo_utils import importutils

from agentkit import concurrency
from agentkit import exceptions
from agentkit import opts
from agentkit import privsep_setup
from agentkit import version
from agentkit.conf import common as common_conf

LOG = logging.getLogger(__name__)

EXIT_CONFIG_ERROR = 2
EXIT_DRIVER_ERROR = 3
STOP_TIMEOUT = 5.0


def validate_options(conf: cfg.ConfigOpts) -> list[str]:
    """Read every agentkit option once so bad values fail at start.

    oslo.config only converts a value when it is first read; without this a
    typo in an option used hours later would only surface then.
    """
    errors = []
    for group, group_opts in opts.list_all_opts():
        for opt in group_opts:
            try:
                node = conf if group is None else conf[group]
                getattr(node, opt.dest)
            except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
                continue  # not registered for this agent
            except (ValueError, cfg.Error) as exc:
                errors.append(f'[{group or "DEFAULT"}] {opt.name}: {exc}')
    return errors


def _fail(message: str, code: int) -> int:
    LOG.error('%s', message)
    print(f'ERROR: {message}', file=sys.stderr)
    return code


def run(prog: str, register_opts: Callable[[cfg.ConfigOpts], None],
        agent_class: str, argv: list[str] | None = None) -> int:
    """Start the agent ``agent_class`` (dotted path) and serve until stopped."""
    conf = cfg.CONF
    common_conf.register_common_opts(conf)
    register_opts(conf)
    oslo_log.register_options(conf)
    conf(sys.argv[1:] if argv is None else argv, project='agentkit', prog=prog,
         version=version.version_info.version_string())
    errors = validate_options(conf)
    if errors:
        for err in errors:
            print(f'ERROR: invalid configuration: {err}', file=sys.stderr)
        return EXIT_CONFIG_ERROR
    concurrency.select(conf.concurrency_mode)
    oslo_log.setup(conf, 'agentkit')
    LOG.info('%s %s starting (concurrency: %s)', prog,
             version.version_info.version_string(), conf.concurrency_mode)
    privsep_setup.setup_privsep(conf)

    try:
        cls = importutils.import_class(agent_class)
        privsep_setup.start_daemons(cls.privsep_contexts)
        agent = cls(conf)
    except (exceptions.DriverNotFound, exceptions.DriverLoadError,
            exceptions.InvalidConfiguration) as exc:
        return _fail(f'{prog} cannot start: {exc}', EXIT_DRIVER_ERROR)

    stop_requested = threading.Event()
    reload_requested = threading.Event()

    def _on_stop(signum: int, frame: object) -> None:
        stop_requested.set()

    def _on_hup(signum: int, frame: object) -> None:
        reload_requested.set()

    signal.signal(signal.SIGTERM, _on_stop)
    signal.signal(signal.SIGINT, _on_stop)
    signal.signal(signal.SIGHUP, _on_hup)

    try:
        agent.start()
    except Exception as exc:
        LOG.exception('%s failed to start', prog)
        try:
            agent.stop(timeout=STOP_TIMEOUT)
        except Exception:
            LOG.exception('cleanup after failed start failed')
        return _fail(f'{prog} failed to start: {type(exc).__name__}: {exc}',
                     EXIT_DRIVER_ERROR)

    while not stop_requested.is_set():
        stop_requested.wait(0.5)
        if reload_requested.is_set():
            reload_requested.clear()
            try:
                agent.reload()
            except Exception:
                LOG.exception('Reloading the configuration failed; keeping '
                              'the previous values')
    LOG.info('%s received a stop signal; stopping', prog)
    # Bounded: a stop that hangs (a driver call stuck on a dead daemon, a
    # broker that does not answer) must not keep the process alive; the host
    # state is left as it is either way.
    stopper = threading.Thread(target=agent.stop, kwargs={'timeout': STOP_TIMEOUT},
                               name='stop', daemon=True)
    stopper.start()
    stopper.join(STOP_TIMEOUT + 2)
    if stopper.is_alive():
        LOG.warning('%s did not stop cleanly within %ss; exiting anyway',
                    prog, STOP_TIMEOUT + 2)
    return 0


def exit_process(code: int) -> None:
    """Leave now: library threads (RPC executors, OVSDB, privsep readers)
    must not keep a stopped agent alive, as they did Neutron's OVS agent."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
