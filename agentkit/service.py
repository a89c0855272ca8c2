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
import time
from collections.abc import Callable
from typing import Any

from oslo_config import cfg
from oslo_log import log as oslo_log
from oslo_utils import importutils

from agentkit import concurrency
from agentkit import exceptions
from agentkit import gmr
from agentkit import opts
from agentkit import privsep_setup
from agentkit import version
from agentkit.conf import checks
from agentkit.conf import common as common_conf
from agentkit.lib import systemd

LOG = logging.getLogger(__name__)

EXIT_CONFIG_ERROR = 2
EXIT_DRIVER_ERROR = 3
STOP_TIMEOUT = 5.0
#: how often the main loop looks at signals, readiness and liveness
TICK = 0.5
#: an update running longer than this (or than the watchdog timeout, if
#: longer) counts as hung: a slow server or a retried RPC stays well below
STALL_AFTER_MIN = 300.0


class SystemdSupervisor:
    """Tells systemd about the agent, from the process's main loop.

    ``READY=1`` once :meth:`Agent.is_ready`, ``STATUS=`` whenever the
    agent's status line changes, and ``WATCHDOG=1`` every half
    ``WATCHDOG_USEC`` while :meth:`Agent.health` finds nothing wrong. The
    pets come from this loop and not from a thread of their own, so a hung
    main loop, a dead sync or worker thread, or an update stuck in its
    handler (longer than :data:`STALL_AFTER_MIN` or the watchdog timeout)
    all let systemd restart the agent.
    """

    def __init__(self, notifier: systemd.Notifier, agent: Any,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.agent = agent
        self._clock = clock
        self.ready_sent = False
        self._last_status: str | None = None
        self._next_pet = 0.0
        self._problem: str | None = None

    def wait_time(self) -> float:
        interval = self.notifier.watchdog_interval
        return TICK if interval is None else min(TICK, interval / 2)

    def tick(self) -> None:
        ready = self.agent.is_ready()  # also logs readiness without systemd
        if not self.notifier.enabled:
            return
        status = self.agent.status()
        timeout = self.notifier.watchdog_timeout
        problem = None
        if timeout is not None:
            problem = self.agent.health(stall_after=max(timeout, STALL_AFTER_MIN))
            if problem is not None:
                status = f'unhealthy: {problem}'
        if ready and not self.ready_sent:
            self.notifier.ready(status)
            self.ready_sent = True
        elif status != self._last_status:
            self.notifier.status(status)
        self._last_status = status
        if timeout is None:
            return
        if problem is not None:
            if problem != self._problem:
                LOG.error('Not petting the systemd watchdog (it acts after '
                          '%.0fs): %s', timeout, problem)
                self._problem = problem
            return
        if self._problem is not None:
            LOG.warning('Petting the systemd watchdog again: %s is over',
                        self._problem)
            self._problem = None
        now = self._clock()
        if now >= self._next_pet:
            self.notifier.watchdog()
            self._next_pet = now + (self.notifier.watchdog_interval or timeout / 2)

    def stopping(self) -> None:
        self.notifier.stopping()


def validate_options(conf: cfg.ConfigOpts) -> list[str]:
    """Read every agentkit option once so bad values fail at start.

    oslo.config only converts a value when it is first read; without this a
    typo in an option used hours later would only surface then. Free-form
    values (ranges, mappings, interface names) are parsed here too, not
    only when a driver starts.
    """
    errors = []
    seen = set()
    for group, group_opts in opts.list_all_opts():
        for opt in group_opts:
            if (group, opt.dest) in seen:
                continue  # listed for several agents: one line is enough
            seen.add((group, opt.dest))
            try:
                # Its type, and what it means (ranges, mappings, names): conf/checks.py.
                problem = checks.option_problem(conf, group, opt.dest)
            except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
                continue  # not registered for this agent
            if problem is not None:
                errors.append(problem)
    return errors


def load_config(conf: cfg.ConfigOpts, prog: str,
                register_opts: Callable[[cfg.ConfigOpts], None],
                argv: list[str]) -> list[str]:
    """Register an agent's options on ``conf``, parse ``argv`` (its
    ``--config-file``/``--config-dir``) and return what is wrong with the
    values, one line per option: the agent stops with exit code 2 on any."""
    common_conf.register_common_opts(conf)
    register_opts(conf)
    oslo_log.register_options(conf)
    gmr.register_opts(conf)
    conf(argv, project='agentkit', prog=prog,
         version=version.version_info.version_string())
    return validate_options(conf)


def _fail(message: str, code: int) -> int:
    LOG.error('%s', message)
    print(f'ERROR: {message}', file=sys.stderr)
    return code


def run(prog: str, register_opts: Callable[[cfg.ConfigOpts], None],
        agent_class: str, argv: list[str] | None = None) -> int:
    """Start the agent ``agent_class`` (dotted path) and serve until stopped."""
    conf = cfg.CONF
    errors = load_config(conf, prog, register_opts, sys.argv[1:] if argv is None else argv)
    if errors:
        for err in errors:
            print(f'ERROR: invalid configuration: {err}', file=sys.stderr)
        return EXIT_CONFIG_ERROR
    concurrency.select(conf.concurrency_mode)
    oslo_log.setup(conf, 'agentkit')
    LOG.info('%s %s starting (concurrency: %s)', prog,
             version.version_info.version_string(), conf.concurrency_mode)
    privsep_setup.setup_privsep(conf)
    notifier = systemd.Notifier()

    try:
        cls = importutils.import_class(agent_class)
        privsep_setup.start_daemons(cls.privsep_contexts)
        agent = cls(conf)
    except (exceptions.DriverNotFound, exceptions.DriverLoadError,
            exceptions.InvalidConfiguration) as exc:
        notifier.status(f'cannot start: {exc}')
        # A bad value of a driver's own option (checked when the driver
        # registers it) is a configuration error like any other bad value.
        bad_value = isinstance(exc.__cause__ or exc, exceptions.InvalidOptionValue)
        return _fail(f'{prog} cannot start: {exc}',
                     EXIT_CONFIG_ERROR if bad_value else EXIT_DRIVER_ERROR)
    gmr.setup(conf, agent, prog)
    supervisor = SystemdSupervisor(notifier, agent)

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
        notifier.status(f'failed to start: {type(exc).__name__}: {exc}')
        return _fail(f'{prog} failed to start: {type(exc).__name__}: {exc}',
                     EXIT_DRIVER_ERROR)

    while not stop_requested.is_set():
        supervisor.tick()
        stop_requested.wait(supervisor.wait_time())
        if reload_requested.is_set():
            reload_requested.clear()
            try:
                agent.reload()
            except Exception:
                LOG.exception('Reloading the configuration failed; keeping '
                              'the previous values')
    LOG.info('%s received a stop signal; stopping', prog)
    supervisor.stopping()
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
