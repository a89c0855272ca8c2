"""IPv6 router advertisements: one ``radvd`` per router namespace.

What is advertised is what Neutron's L3 agent advertises
(``neutron/agent/linux/ra.py``): for each router interface whose IPv6
subnets have an ``ipv6_ra_mode``, unsolicited RAs every
``min_rtr_adv_interval``..``max_rtr_adv_interval`` seconds (and answers to
router solicitations) carrying

* the network's MTU (``AdvLinkMTU``) when it is known;
* the M flag (``AdvManagedFlag``: addresses from DHCPv6) if a subnet is
  ``dhcpv6-stateful``, the O flag (``AdvOtherConfigFlag``: other settings
  from DHCPv6) if one is ``dhcpv6-stateless``;
* every subnet as an on-link prefix, autonomous (hosts form a SLAAC address
  in it) for ``slaac`` and ``dhcpv6-stateless``, not for ``dhcpv6-stateful``;
* the DNS servers the caller gives (``RDNSS``, at most three: radvd's limit
  for one option). Neutron passes those of ``slaac`` subnets only; DHCPv6
  clients get theirs from DHCPv6.

Unlike Neutron no route to ``fe80::a9fe:a9fe`` is advertised: agentkit's
routers serve metadata over IPv4 only.

How radvd is run, and why:

* Like dnsmasq and haproxy (:mod:`agentkit.lib.external_process`): started
  as root in the namespace through the privsep ``daemons`` context, it
  daemonizes and writes ``<state_path>/ra/<router_id>.pid``; its argv
  ``radvd -C <state_path>/ra/<router_id>.conf -p <...>.pid -m syslog -u
  radvd`` contains the router id, so a radvd that outlived the agent is
  recognised and adopted, and the process monitor
  (``check_child_processes_interval``) starts it again if it dies.
* It drops to the ``radvd`` user of the Debian package right after start
  (it keeps a small root helper process for its sysctls). On SIGHUP that
  user re-reads the configuration and radvd *exits* if it cannot, so the
  configuration is 0644 and every directory up to it must be searchable by
  that user; :meth:`RadvdManager.update` checks this and refuses a
  ``state_path`` that would break reloads.
* A changed configuration is written atomically and radvd gets SIGHUP: the
  same pid re-reads it and advertises the new one at once. An unchanged
  configuration leaves a running radvd alone (adopted as is after an agent
  restart); a changed command line (e.g. the ``radvd`` user appeared)
  restarts it.
* radvd logs to syslog as Neutron's does. Errors it finds in its
  configuration before it daemonizes are captured by the spawn and raised
  in the :class:`~agentkit.exceptions.ProcessError`.
* Every token of the configuration comes from the validated
  :class:`RaInterface`/:class:`RaPrefix` (frozen, checked on construction):
  device names radvd's lexer reads as one name, canonical IPv6 networks
  and addresses, integers.

The namespace needs ``net.ipv6.conf.all.forwarding = 1``: radvd 2.19 only
warns without it, but a router that does not forward must not advertise
itself as a default router (RFC 4861). Setting it is the router driver's
job (``drivers/l3/namespace.py`` sets it when a port has IPv6).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import pwd
import re
import stat
import threading
from collections.abc import Sequence
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from agentkit import exceptions
from agentkit.api import driver as driver_api
from agentkit.lib import external_process
from agentkit.lib import fileutils
from agentkit.lib import ip_lib
from agentkit.lib import naming

LOG = logging.getLogger(__name__)

SERVICE = 'radvd'
RADVD_BINARY = 'radvd'
#: The user the Debian package creates; radvd drops to it after start.
RADVD_USER = 'radvd'
#: ``<state_path>/ra``: ``<router_id>.conf`` and ``<router_id>.pid``.
RA_DIR = 'ra'
CONF_SUFFIX = '.conf'
PID_SUFFIX = '.pid'

SLAAC = 'slaac'
DHCPV6_STATEFUL = 'dhcpv6-stateful'
DHCPV6_STATELESS = 'dhcpv6-stateless'
RA_MODES = (SLAAC, DHCPV6_STATEFUL, DHCPV6_STATELESS)
#: Modes whose prefix hosts form addresses in (the A flag): /64 only.
AUTONOMOUS_MODES = frozenset({SLAAC, DHCPV6_STATELESS})
SLAAC_PREFIXLEN = 64
#: radvd refuses more addresses in one RDNSS option.
MAX_RDNSS = 3
IPV6_MIN_MTU = 1280
MAX_MTU = 65535

# Neutron's names and defaults ([DEFAULT] of l3_agent.ini, so operators'
# files keep working); the bounds are radvd's (RFC 4861 section 6.2.1),
# which otherwise logs an error and advertises nothing on the interface.
# Registered by RadvdManager: only this driver reads them.
ra_opts = [
    cfg.IntOpt(
        'min_rtr_adv_interval', default=30, min=3, max=1350,
        help='MinRtrAdvInterval of radvd: least seconds between unsolicited '
             'router advertisements. At most 3/4 of max_rtr_adv_interval.'),
    cfg.IntOpt(
        'max_rtr_adv_interval', default=100, min=4, max=1800,
        help='MaxRtrAdvInterval of radvd: most seconds between unsolicited '
             'router advertisements. Hosts keep the router as default '
             'gateway for three times this long after the last one.'),
]


#: Registered by :class:`RadvdManager` (and by the router driver that owns it).
OPTIONS: driver_api.OptionGroups = ((None, ra_opts),)


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """For oslo-config-generator (``oslo.config.opts`` entry point)."""
    return driver_api.list_options(OPTIONS)


def validate_ra_intervals(conf: cfg.ConfigOpts) -> tuple[int, int]:
    """(min, max) advertisement intervals, if radvd accepts them together.

    :raises InvalidConfiguration: ``min_rtr_adv_interval`` is more than 3/4
        of ``max_rtr_adv_interval`` (radvd would advertise nothing).
    """
    low, high = conf.min_rtr_adv_interval, conf.max_rtr_adv_interval
    if 4 * low > 3 * high:
        raise exceptions.InvalidConfiguration(
            'min_rtr_adv_interval (%d) must be at most 3/4 of max_rtr_adv_interval '
            '(%d), i.e. at most %d: radvd refuses to advertise otherwise'
            % (low, high, 3 * high // 4))
    return low, high


# One token for radvd's lexer: no space, quote, brace, ';', '#' or ':'.
_DEVICE_TOKEN_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.@-]{0,14}')
_LETTER_RE = re.compile(r'[A-Za-z]')
_HEADER = ('# Generated by agentkit (drivers/l3/radvd.py); changes are overwritten.\n'
           '# agentkit router advertisements for router %s\n')


def _invalid(message: str) -> exceptions.InvalidPayload:
    return exceptions.InvalidPayload('router advertisement: ' + message)


def _tuple(value: Any, what: str) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _invalid('%s must be a list or tuple, got %r' % (what, value))
    return tuple(value)


def validate_device(name: Any) -> str:
    """A device name radvd reads as one interface name.

    Besides what the kernel accepts: letters, digits and ``_.@-`` only, and
    both a letter and something else, so the name is never one of radvd's
    keywords (``on``, ``prefix``, ``infinity``...) nor a number.
    """
    try:
        ip_lib.validate_device_name(name)
    except exceptions.InvalidIdentifier as exc:
        raise _invalid(str(exc)) from None
    if (not _DEVICE_TOKEN_RE.fullmatch(name) or not _LETTER_RE.search(name)
            or name.isalpha()):
        raise _invalid('device name %r cannot be written in a radvd configuration: use '
                       'letters, digits and _.@- with at least one letter and one '
                       'other character (e.g. qr-1234abcd-ef)' % (name,))
    return name


def _validate_cidr(cidr: Any, ra_mode: str) -> str:
    if not isinstance(cidr, str):
        raise _invalid('prefix must be a string, got %r' % (cidr,))
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise _invalid('prefix %r is not a network: %s' % (cidr, exc)) from None
    if network.version != 6:
        raise _invalid('prefix %s is not IPv6' % cidr)
    if (network.network_address.is_unspecified or network.is_multicast
            or network.is_link_local or network.is_loopback):
        # radvd reads "::/64" as "every prefix of the interface".
        raise _invalid('prefix %s cannot be advertised (unspecified, multicast, '
                       'link-local or loopback)' % cidr)
    if ra_mode in AUTONOMOUS_MODES and network.prefixlen != SLAAC_PREFIXLEN:
        raise _invalid('prefix %s of a %s subnet must be a /%d: hosts form their '
                       'addresses in it (SLAAC)' % (cidr, ra_mode, SLAAC_PREFIXLEN))
    return str(network)


def _validate_dns(address: Any) -> str:
    if not isinstance(address, str):
        raise _invalid('DNS server must be a string, got %r' % (address,))
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise _invalid('DNS server %r is not an IP address' % (address,)) from None
    if parsed.version != 6:
        raise _invalid('DNS server %s is not IPv6 (RDNSS carries IPv6 addresses only)'
                       % address)
    if parsed.is_unspecified or parsed.is_multicast:
        raise _invalid('DNS server %s is not a unicast address' % address)
    return str(parsed)


# ---------------------------------------------------------------------------
# What to advertise
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class RaPrefix:
    """One IPv6 subnet of a router interface.

    Validated and normalised on construction (canonical ``cidr`` and DNS
    addresses); :class:`~agentkit.exceptions.InvalidPayload` otherwise.
    """

    cidr: str
    ra_mode: str
    dns_servers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.ra_mode not in RA_MODES:
            raise _invalid('ipv6_ra_mode of %r must be one of %s, got %r'
                           % (self.cidr, ', '.join(RA_MODES), self.ra_mode))
        object.__setattr__(self, 'cidr', _validate_cidr(self.cidr, self.ra_mode))
        servers = _tuple(self.dns_servers, 'dns_servers of %s' % self.cidr)
        object.__setattr__(self, 'dns_servers', tuple(_validate_dns(s) for s in servers))

    @property
    def autonomous(self) -> bool:
        return self.ra_mode in AUTONOMOUS_MODES


@dataclasses.dataclass(frozen=True)
class RaInterface:
    """A router interface (``qr-`` device) and the prefixes advertised on it.

    ``mtu``: the network's MTU, None if unknown (then not advertised); it
    must not exceed the device's MTU, which radvd checks (it advertises
    nothing on the interface otherwise). ``prefixes`` are sorted and an
    exact duplicate is dropped; the same prefix with two modes is refused.
    """

    device: str
    prefixes: tuple[RaPrefix, ...]
    mtu: int | None = None

    def __post_init__(self) -> None:
        validate_device(self.device)
        prefixes = _tuple(self.prefixes, 'prefixes of %s' % self.device)
        by_cidr: dict[str, RaPrefix] = {}
        for prefix in prefixes:
            if not isinstance(prefix, RaPrefix):
                raise _invalid('prefixes of %s must be RaPrefix, got %r'
                               % (self.device, prefix))
            known = by_cidr.setdefault(prefix.cidr, prefix)
            if known != prefix:
                raise _invalid('prefix %s is given twice on %s, with different modes '
                               'or DNS servers: %s and %s'
                               % (prefix.cidr, self.device, known, prefix))
        ordered = sorted(by_cidr.values(), key=lambda p: ipaddress.ip_network(p.cidr))
        object.__setattr__(self, 'prefixes', tuple(ordered))
        mtu = self.mtu
        if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool)
                                or not IPV6_MIN_MTU <= mtu <= MAX_MTU):
            raise _invalid('mtu of %s must be None or an integer from %d (the IPv6 '
                           'minimum) to %d, got %r' % (self.device, IPV6_MIN_MTU,
                                                       MAX_MTU, mtu))

    @property
    def ra_modes(self) -> frozenset[str]:
        return frozenset(p.ra_mode for p in self.prefixes)

    @property
    def all_dns_servers(self) -> tuple[str, ...]:
        """The prefixes' DNS servers in order, each once."""
        servers: list[str] = []
        for prefix in self.prefixes:
            servers += [s for s in prefix.dns_servers if s not in servers]
        return tuple(servers)

    @property
    def dns_servers(self) -> tuple[str, ...]:
        """The DNS servers advertised: the first :data:`MAX_RDNSS` (as Neutron)."""
        return self.all_dns_servers[:MAX_RDNSS]


def normalize(interfaces: Any) -> tuple[RaInterface, ...]:
    """The interfaces with something to advertise, sorted by device.

    :raises InvalidPayload: not a sequence of :class:`RaInterface`, or a
        device given twice.
    """
    items = _tuple(interfaces, 'interfaces')
    seen = set()
    result = []
    for item in items:
        if not isinstance(item, RaInterface):
            raise _invalid('interfaces must be RaInterface, got %r' % (item,))
        if item.device in seen:
            raise _invalid('device %s is given twice' % item.device)
        seen.add(item.device)
        if item.prefixes:
            result.append(item)
    return tuple(sorted(result, key=lambda i: i.device))


def render_config(router_id: str, interfaces: Sequence[RaInterface],
                  min_interval: int, max_interval: int) -> str:
    """The radvd configuration; a pure function of its arguments."""
    text = _HEADER % router_id
    for iface in interfaces:
        lines = ['AdvSendAdvert on;',
                 'MinRtrAdvInterval %d;' % min_interval,
                 'MaxRtrAdvInterval %d;' % max_interval]
        if iface.mtu is not None:
            lines.append('AdvLinkMTU %d;' % iface.mtu)
        if DHCPV6_STATEFUL in iface.ra_modes:
            lines.append('AdvManagedFlag on;')
        if DHCPV6_STATELESS in iface.ra_modes:
            lines.append('AdvOtherConfigFlag on;')
        if iface.dns_servers:
            lines += ['RDNSS %s' % ' '.join(iface.dns_servers), '{', '};']
        for prefix in iface.prefixes:
            lines += ['prefix %s' % prefix.cidr, '{',
                      '    AdvOnLink on;',
                      '    AdvAutonomous %s;' % ('on' if prefix.autonomous else 'off'),
                      '};']
        text += 'interface %s\n{\n%s};\n' % (
            iface.device, ''.join('    %s\n' % line for line in lines))
    return text


# ---------------------------------------------------------------------------
# Files and users
# ---------------------------------------------------------------------------

def radvd_user() -> pwd.struct_passwd | None:
    """The ``radvd`` user of the Debian package, None if there is none."""
    try:
        return pwd.getpwnam(RADVD_USER)
    except KeyError:
        return None


def check_readable(directory: str, user: pwd.struct_passwd) -> None:
    """Refuse a ``directory`` the radvd user cannot reach.

    radvd re-reads its configuration on SIGHUP as that user (primary group
    only) and exits if it cannot; every directory up to ``directory``, as
    configured and resolved, must be searchable.

    :raises InvalidConfiguration: naming the first directory that blocks.
    """
    blocked = fileutils.blocking_directory(directory, user.pw_uid, {user.pw_gid})
    if blocked is not None:
        current, st = blocked
        raise exceptions.InvalidConfiguration(
            'state_path is not usable for radvd: %s (mode %04o, uid %d, gid %d) '
            'cannot be traversed by user %s, which re-reads %s on every '
            'change and exits if it cannot. Make %s searchable (chmod o+x) '
            'or use a directory like /var/lib/agentkit.'
            % (current, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
               user.pw_name, directory, current))


def _write_if_changed(path: str, content: str) -> bool:
    """Atomically (radvd may re-read at any moment) and 0644 (never writable
    by others: radvd refuses such a file); True if it was written."""
    try:
        with open(path, encoding='utf-8') as f:
            if f.read() == content and stat.S_IMODE(os.fstat(f.fileno()).st_mode) == 0o644:
                return False
    except FileNotFoundError:
        pass
    fileutils.write_atomic(path, content, mode=0o644)
    return True


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------------
# The manager
# ---------------------------------------------------------------------------

#: What :meth:`RadvdManager.update` did to radvd.
Action = external_process.DaemonAction
decide = external_process.least_disruptive_action


@dataclasses.dataclass
class _Router:
    namespace: str
    manager: external_process.ProcessManager
    argv: list[str]
    # The file changed but radvd was not signalled yet (signal failed):
    # the next update reloads even though the file is then unchanged.
    reload_pending: bool = False


class RadvdManager(external_process.DaemonOwner):
    """One radvd per router namespace: started, adopted, reloaded, watched.

    :param conf: the agent's options: ``state_path`` and
        ``check_child_processes_interval`` (the agent's, read by name) and
        :data:`ra_opts` (registered here).
    :param monitor: a :class:`~agentkit.lib.external_process.ProcessMonitor`
        the caller owns (e.g. shared with the metadata driver; the caller
        starts and stops it). Without one, the manager creates its own at the
        first radvd with ``check_child_processes_interval``, starts it, and
        :meth:`stop` stops it.

    Thread-safe: calls for different routers run in parallel, calls for one
    router are serialised.
    """

    #: Root of the process table; unit tests point it at a fake tree.
    proc_path: str = external_process.PROC_PATH

    def __init__(self, conf: cfg.ConfigOpts,
                 monitor: external_process.ProcessMonitor | None = None) -> None:
        self.conf = conf
        driver_api.register_options(conf, OPTIONS)
        validate_ra_intervals(conf)
        self._routers: dict[str, _Router] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.monitor = monitor
        self._own_monitor = monitor is None
        self.counters = {'starts': 0, 'restarts': 0, 'reloads': 0, 'adopted': 0,
                         'unchanged': 0, 'stops': 0}
        self.last_action: Action | None = None
        self._warned_no_user = False

    # -- public API ----------------------------------------------------------

    def update(self, router_id: str, namespace: str,
               interfaces: Sequence[RaInterface]) -> None:
        """Make the router's radvd advertise ``interfaces``.

        Starts radvd, adopts the one running (same configuration), reloads it
        (SIGHUP, same pid) or restarts it (other command line or namespace);
        with nothing to advertise, stops it as :meth:`disable` does.

        :raises InvalidPayload: bad router id, namespace or interfaces.
        :raises InvalidConfiguration: intervals radvd refuses together, or a
            ``state_path`` the radvd user cannot traverse.
        :raises ProcessError: radvd did not start.
        """
        router_id = self._validate_id(router_id)
        try:
            if ip_lib.validate_namespace(namespace) is None:
                raise exceptions.InvalidIdentifier('a namespace is required')
        except exceptions.InvalidIdentifier as exc:
            raise _invalid('router %s: %s' % (router_id, exc)) from None
        wanted = normalize(interfaces)
        if not wanted:
            LOG.debug('Router %s has no IPv6 subnet to advertise', router_id)
            self.disable(router_id)
            return
        for iface in wanted:
            if len(iface.all_dns_servers) > MAX_RDNSS:
                LOG.warning('Router %s: only the first %d DNS servers of %s are '
                            'advertised (RDNSS), not %s', router_id, MAX_RDNSS,
                            iface.device, ', '.join(iface.all_dns_servers[MAX_RDNSS:]))
        low, high = validate_ra_intervals(self.conf)
        text = render_config(router_id, wanted, low, high)
        with self._resource_lock(router_id):
            self._apply(router_id, namespace, text)

    def disable(self, router_id: str) -> None:
        """Stop the router's radvd (it sends a final RA with lifetime 0) and
        remove its files. Idempotent.

        :raises ProcessError: radvd survived SIGKILL.
        """
        router_id = self._validate_id(router_id)
        with self._resource_lock(router_id):
            with self._lock:
                state = self._routers.pop(router_id, None)
            manager = state.manager if state is not None else self._manager(router_id, None)
            if self.monitor is not None:
                registered = self.monitor.get(SERVICE, router_id)
                if registered is not None and registered is not manager:
                    self.monitor.unregister(registered)
            running = manager.active
            manager.disable()
            _remove(self._conf_path(router_id))
            _remove(self._pid_path(router_id))
            if running:
                self._count('stops')
                self.last_action = Action.STOP
                LOG.info('Router advertisements stopped for router %s', router_id)

    def active_routers(self) -> set[str]:
        """Routers with a live radvd, found from the pid files.

        Covers radvds left by a previous agent run that this instance has
        not updated (yet): the agent disables those it no longer hosts.
        """
        try:
            names = os.listdir(self._ra_dir())
        except (FileNotFoundError, NotADirectoryError):
            names = []
        candidates = {n[:-len(PID_SUFFIX)] for n in names if n.endswith(PID_SUFFIX)}
        with self._lock:
            candidates = {c for c in candidates if naming.is_valid_id(c)} | set(self._routers)
        return {router_id for router_id in candidates
                if self._manager(router_id, None).active}

    def stop(self) -> None:
        """Stop watching (agent shutdown); the radvds keep advertising.

        An own monitor is stopped; from a caller's monitor this manager's
        radvds are unregistered, and the caller stops it.
        """
        monitor = self.monitor
        if monitor is None:
            return
        if self._own_monitor:
            monitor.stop(timeout=5)
            return
        with self._lock:
            managers = [state.manager for state in self._routers.values()]
        for manager in managers:
            monitor.unregister(manager)

    # -- helpers for agents and tests ----------------------------------------

    def pid(self, router_id: str) -> int | None:
        """pid of the router's live radvd, None if there is none."""
        manager = self._manager(self._validate_id(router_id), None)
        return manager.pid if manager.active else None

    def config_path(self, router_id: str) -> str:
        """``<state_path>/ra/<router_id>.conf``."""
        return self._conf_path(self._validate_id(router_id))

    def get_configurations(self) -> dict[str, Any]:
        """Figures for the L3 agent's state report."""
        with self._lock:
            counters = dict(self.counters)
            count = len(self._routers)
        return {'radvd_routers': count,
                'radvd_respawns': sum(
                    m.respawn_count for m in (self.monitor.managers if self.monitor else [])
                    if m.service == SERVICE),
                'radvd_starts': counters['starts'],
                'radvd_reloads': counters['reloads'],
                'radvd_adopted': counters['adopted']}

    # -- internals -----------------------------------------------------------

    @staticmethod
    def _validate_id(router_id: Any) -> str:
        try:
            return naming.validate_id(router_id, 'router')
        except exceptions.InvalidIdentifier as exc:
            raise _invalid(str(exc)) from None

    def _ra_dir(self) -> str:
        return naming.safe_join(self.conf.state_path, RA_DIR)

    def _conf_path(self, router_id: str) -> str:
        return naming.safe_join(self._ra_dir(), router_id + CONF_SUFFIX)

    def _pid_path(self, router_id: str) -> str:
        return naming.safe_join(self._ra_dir(), router_id + PID_SUFFIX)

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def _argv(self, router_id: str) -> list[str]:
        argv = [RADVD_BINARY, '-C', self._conf_path(router_id),
                '-p', self._pid_path(router_id), '-m', 'syslog']
        if radvd_user() is not None:
            argv += ['-u', RADVD_USER]
        return argv

    def _manager(self, router_id: str, state: _Router | None
                 ) -> external_process.ProcessManager:
        def cmd(pid_file: str) -> list[str]:
            if state is None:
                raise exceptions.ProcessError('no configuration known for the radvd of '
                                              'router %s' % router_id)
            return list(state.argv)

        return external_process.ProcessManager(
            router_id, SERVICE, state.namespace if state is not None else None,
            self._ra_dir(), cmd, pid_file=self._pid_path(router_id),
            daemonizes=True, proc_path=self.proc_path)

    def _watch(self, manager: external_process.ProcessManager) -> None:
        if self._own_monitor:
            self._ensure_monitor().register(manager)
        else:
            assert self.monitor is not None
            self.monitor.register(manager)

    def _apply(self, router_id: str, namespace: str, text: str) -> None:
        ra_dir = self._ra_dir()
        fileutils.ensure_shared_dir(ra_dir)
        user = radvd_user()
        if user is None:
            if not self._warned_no_user:
                LOG.warning('There is no %r user (Debian package radvd): radvd keeps '
                            'running as root', RADVD_USER)
                self._warned_no_user = True
        else:
            check_readable(ra_dir, user)
        changed = _write_if_changed(self._conf_path(router_id), text)
        argv = self._argv(router_id)

        with self._lock:
            state = self._routers.get(router_id)
        adopting = state is None
        moved = state is not None and state.namespace != namespace
        if moved:
            assert state is not None
            LOG.info('radvd of router %s moves from namespace %s to %s', router_id,
                     state.namespace, namespace)
            state.manager.disable()
        if state is None or moved:
            new = _Router(namespace, None, argv)  # type: ignore[arg-type]
            new.manager = self._manager(router_id, new)
            if state is not None:
                new.reload_pending = state.reload_pending
            state = new
        state.argv = argv
        state.reload_pending = state.reload_pending or changed
        with self._lock:
            self._routers[router_id] = state

        manager = state.manager
        action = decide(manager.cmdline(), argv, state.reload_pending)
        if action is Action.START:
            manager.enable()
            self._count('starts')
        elif action is Action.RESTART:
            LOG.info('radvd of router %s needs a new command line; restarting', router_id)
            manager.restart()
            self._count('restarts')
        elif action is Action.RELOAD:
            if adopting:
                self._count('adopted')
            if manager.reload():
                self._count('reloads')
            else:  # died since the check: start it with the new file now
                LOG.warning('radvd of router %s vanished during reload; starting it',
                            router_id)
                manager.enable()
                action = Action.START
                self._count('starts')
        elif adopting:
            LOG.info('Adopted the running radvd of router %s (pid %s)', router_id,
                     manager.pid)
            self._count('adopted')
        else:
            self._count('unchanged')
        state.reload_pending = False
        self._watch(manager)
        self.last_action = action
        LOG.debug('radvd of router %s: %s', router_id, action.value)
