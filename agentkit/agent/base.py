"""The lifecycle every agentkit agent shares.

An agent states what it is (``binary``, ``agent_type``, report ``topic``),
which topics it consumes, how to build its ``configurations`` and how to
sync/process resources. This class does the rest: RPC transport, consumers,
state reports, the work queue, full resyncs at start / after failures /
when the server was away, slow audits, SIGHUP reloads and a stop that
leaves the host untouched.
"""

import abc
import logging
import threading
import time
from typing import Any

from oslo_config import cfg

from agentkit import privsep_setup
from agentkit.agent import state_report
from agentkit.agent import work_queue
from agentkit.rpc import consumer
from agentkit.rpc import report_api
from agentkit.rpc import transport as rpc_transport

LOG = logging.getLogger(__name__)

_FULLSYNC_BACKOFF_MAX = 60.0
#: the ``configurations`` entries of the agents' state reports that count
#: what they manage (the others are settings, e.g. dhcp_lease_duration)
RESOURCE_COUNT_KEYS = ('devices', 'networks', 'subnets', 'ports', 'routers',
                       'interfaces', 'floating_ips', 'ex_gw_ports',
                       'unsupported_routers')


class Agent(abc.ABC):
    """Base of the L2, DHCP, L3 and metadata agents."""

    #: console script name, reported as ``binary``
    binary: str = ''
    #: Neutron's agent_type (neutron-server matches on it)
    agent_type: str = ''
    #: the ``topic`` field of report_state
    report_topic: str = 'N/A'
    #: the metadata agent casts its reports after the first one
    report_with_call: bool = True
    #: privsep contexts (names in agentkit.privileged) started at start-up,
    #: in parallel with the rest of it, instead of on the first root call
    privsep_contexts: tuple[str, ...] = ()
    #: ready (systemd's READY=1) once the first full sync and the work it
    #: queued are done; an agent ready on other terms sets this False and
    #: calls :meth:`set_ready` itself (the metadata agent, once it listens)
    ready_after_first_sync: bool = True

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf
        self.host: str = conf.host
        self.transport: Any = None
        self.consumers: consumer.RpcConsumers | None = None
        self.reporter: state_report.StateReporter | None = None
        self.queue = work_queue.WorkQueue(
            self.process_update, workers=conf.agent.worker_threads,
            max_retries=conf.agent.resync_max_retries,
            on_exhausted=lambda update, exc: self.schedule_resync(
                f'{update.action} of {update.resource_id} kept failing'),
            name=self.__class__.__name__)
        self._resync_reason: str | None = 'agent start'
        self._resync_event = threading.Event()
        self._stop_event = threading.Event()
        self._sync_thread: threading.Thread | None = None
        self._fullsync_failures = 0
        self._fullsync_error: str | None = None
        self._first_sync_mark: int | None = None
        self._ready = threading.Event()
        self.fullsyncs_done = 0
        self.load_drivers()

    # -- what concrete agents provide ----------------------------------
    @abc.abstractmethod
    def load_drivers(self) -> None:
        """Load the configured drivers; raise to refuse to start."""

    @abc.abstractmethod
    def rpc_topics(self) -> dict[str, list[object]]:
        """Topic -> endpoints this agent consumes (may be empty)."""

    @abc.abstractmethod
    def get_configurations(self) -> dict[str, Any]:
        """The ``configurations`` dict of the state report."""

    def sync_state(self) -> None:
        """Full sync with the server: enqueue every resource (PRIORITY_SYNC).

        Raise on failure; the runtime retries with back-off.
        """

    def process_update(self, update: work_queue.ResourceUpdate) -> None:
        """Make the host match the server for one resource (idempotent)."""

    def initialize_drivers(self) -> None:
        """Connect drivers to the host (OVSDB, netlink) before the first sync."""

    def setup_rpc_clients(self) -> None:
        """Create the server API clients (``self.transport`` is ready)."""

    def drivers(self) -> list[Any]:
        """The agent's drivers, in the order they are stopped."""
        return []

    def stop_drivers(self) -> None:
        """Release driver connections; never undo host state.

        One failing driver must not keep the others from being stopped.
        """
        for drv in self.drivers():
            try:
                drv.stop()
            except Exception:
                LOG.exception('stopping driver %r failed', drv)

    def reload_config(self) -> None:
        """Hook after SIGHUP re-read mutable options."""

    # -- runtime ----------------------------------------------------------
    @property
    def agent_id(self) -> str:
        return f'{self.binary}-{self.host}'

    def build_state(self) -> dict[str, Any]:
        """The ``agent_state`` neutron-server expects (start_flag added by the reporter)."""
        return {
            'binary': self.binary,
            'host': self.host,
            'topic': self.report_topic,
            'agent_type': self.agent_type,
            'availability_zone': self.conf.agent.availability_zone,
            'configurations': self.get_configurations(),
        }

    def start(self) -> None:
        """Connect RPC, start consumers, reporting, workers and the first sync."""
        privsep_setup.start_daemons(self.privsep_contexts)
        self.initialize_drivers()
        self.transport = rpc_transport.get_transport(cfg.CONF)
        self.setup_rpc_clients()
        topics = self.rpc_topics()
        if topics:
            self.consumers = consumer.RpcConsumers(self.transport, self.host,
                                                   topics)
            self.consumers.start()
        self.queue.start()
        self.reporter = state_report.StateReporter(
            report_api.ReportStateApi(self.transport, self.host),
            self.build_state,
            interval=lambda: self.conf.agent.report_interval,
            on_revived=lambda: self.schedule_resync('server revived agent'),
            use_call=self.report_with_call,
            log_heartbeats=lambda: self.conf.agent.log_agent_heartbeats)
        self.reporter.start()
        self._stop_event.clear()
        self._sync_thread = threading.Thread(target=self._sync_loop,
                                             name='fullsync', daemon=True)
        self._sync_thread.start()
        LOG.info('%s started on host %s (agent_type %r, consuming %s)',
                 self.binary, self.host, self.agent_type,
                 ', '.join(topics) or 'nothing')

    def stop(self, timeout: float = 5.0) -> None:
        """Stop all threads and connections; host state stays as it is.

        Namespaces, bridges, flows and daemons keep serving VMs; the next
        agent adopts them at its first sync. Every step is bounded (an RPC
        call in flight, a broker that does not answer), so the whole stop
        takes at most about ``timeout`` seconds.
        """
        started = time.monotonic()
        self._stop_event.set()
        self._resync_event.set()
        steps: list[tuple[str, Any, float]] = []
        if self.reporter is not None:
            steps.append(('state reports', self.reporter.stop, 0.1))
        if self.consumers is not None:
            steps.append(('RPC servers', self.consumers.stop, 0.25))
        steps.append(('work queue', lambda: self.queue.stop(timeout * 0.2), 0.2))
        if self._sync_thread is not None:
            steps.append(('full sync', lambda: self._sync_thread.join(timeout * 0.1), 0.1))
        steps.append(('drivers', self.stop_drivers, 0.15))
        if self.transport is not None:
            steps.append(('RPC transport', self.transport.cleanup, 0.2))
        for what, step, share in steps:
            _bounded(step, timeout * share, what)
        LOG.info('%s stopped (host state left in place) in %.2fs', self.binary,
                 time.monotonic() - started)

    def reload(self) -> None:
        """SIGHUP: re-read mutable options, then let the agent react."""
        self.conf.mutate_config_files()
        self.reload_config()
        if self.reporter is not None:
            self.reporter.reschedule()
        self._resync_event.set()  # the sync loop re-reads audit_interval
        LOG.info('%s reloaded its configuration', self.binary)

    def schedule_resync(self, reason: str) -> None:
        """Ask for a full sync soon (RPC or driver failure, server revival)."""
        LOG.info('Full resync scheduled: %s', reason)
        self._resync_reason = reason
        self._resync_event.set()

    def on_error(self, method: str) -> None:
        """RPC endpoint hook: a handler failed, so the host may have drifted."""
        self.schedule_resync(f'RPC {method} failed')

    # -- readiness and liveness (systemd, Guru Meditation Reports) ---------
    def is_ready(self) -> bool:
        """True once the host matches the server as of the first full sync.

        The sync only queues the work; ready means the queue has also done
        every update queued up to then (a newer event about a resource
        supersedes, and is not waited for; a failed one counts as done).
        """
        if self._ready.is_set():
            return True
        mark = self._first_sync_mark
        if (self.ready_after_first_sync and mark is not None
                and self.queue.done_through(mark)):
            self.set_ready('first full sync applied')
        return self._ready.is_set()

    def set_ready(self, why: str) -> None:
        if not self._ready.is_set():
            self._ready.set()
            LOG.info('%s is ready: %s', self.binary, why)

    def status(self) -> str:
        """One line for ``systemctl status`` (systemd's STATUS=)."""
        failing = ''
        if self._fullsync_error is not None:
            failing = (f'full sync failed {self._fullsync_failures} time(s), '
                       f'retrying: {self._fullsync_error}')
        if self._ready.is_set():
            return 'ready' + (f'; {failing}' if failing else '')
        if self._first_sync_mark is None:
            return f'starting: {failing}' if failing else 'starting: first full sync'
        snap = self.queue.snapshot(limit=0)
        return (f'first full sync done, applying '
                f'{snap["pending_total"] + snap["running_total"]} queued update(s)')

    def health(self, stall_after: float | None = None) -> str | None:
        """None while the agent's loops are alive, else what is wrong.

        The watchdog is only petted while this is None: the full sync and
        every worker thread running, and (``stall_after`` seconds) no update
        stuck in its handler for longer than that.
        """
        if self._sync_thread is None or not self._sync_thread.is_alive():
            return 'the full sync thread is not running'
        if not self.queue.workers_alive():
            return 'a work queue worker thread is not running'
        if stall_after is not None:
            longest = self.queue.longest_running()
            if longest is not None and longest[2] > stall_after:
                rid, action, seconds = longest
                return f'{action} of {rid} has been running for {seconds:.0f}s'
        return None

    def resource_counts(self) -> dict[str, int]:
        """What the agent manages, counted: the :data:`RESOURCE_COUNT_KEYS`
        of the ``configurations`` it reports to neutron-server, so the
        report and the server's view agree."""
        try:
            configurations = self.get_configurations()
        except Exception as exc:
            LOG.warning('Counting resources failed: %s', exc)
            return {}
        return {key: configurations[key] for key in RESOURCE_COUNT_KEYS
                if isinstance(configurations.get(key), int)}

    def audit_state(self) -> None:
        """The periodic audit: by default a full sync.

        Agents whose full sync already changes only what differs, with a
        bounded number of RPC calls, need nothing else; one that can
        compare more cheaply overrides this.
        """
        self.sync_state()

    def _sync_loop(self) -> None:
        while not self._stop_event.is_set():
            # Cleared before the reason is read: a resync scheduled in
            # between sets the event again and is not slept through.
            self._resync_event.clear()
            reason, self._resync_reason = self._resync_reason, None
            if reason is None:
                # Nothing to resync for: wait for a reason, or audit when
                # audit_interval passes without one (0: never).
                interval = self.conf.agent.audit_interval
                if self._resync_event.wait(interval or None) or self._stop_event.is_set():
                    continue
                reason = 'audit'
            try:
                started = time.monotonic()
                if reason == 'audit':
                    self.audit_state()
                else:
                    self.sync_state()
            except Exception as exc:
                self._fullsync_failures += 1
                self._fullsync_error = f'{type(exc).__name__}: {exc}'
                delay = min(2.0 ** self._fullsync_failures, _FULLSYNC_BACKOFF_MAX)
                LOG.warning('Full sync (%s) failed, retrying in %.0fs: %s: %s',
                            reason, delay, type(exc).__name__, exc)
                self._resync_reason = reason
                self._stop_event.wait(delay)
                continue
            self._fullsync_failures = 0
            self._fullsync_error = None
            if self._first_sync_mark is None:
                self._first_sync_mark = self.queue.mark()
            self.fullsyncs_done += 1
            LOG.info('Full sync (%s) done in %.3fs', reason,
                     time.monotonic() - started)


def _bounded(step: Any, seconds: float, what: str) -> None:
    """Run ``step`` for at most ``seconds``; a stuck step is left behind
    (daemon thread) rather than keeping the agent from stopping."""
    thread = threading.Thread(target=step, name=f'stop-{what}', daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        LOG.info('Stopping the %s did not finish within %.1fs; going on',
                 what, seconds)
