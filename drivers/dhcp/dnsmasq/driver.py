"""The dnsmasq driver: one dnsmasq per network, inside its namespace.

dnsmasq re-reads ``host``, ``addn_hosts`` and ``opts`` on SIGHUP with the
same pid, so port changes never restart it; only a change of the command
line does. dnsmasq outlives the agent: a restarted agent adopts a dnsmasq
whose command line is unchanged, and signals it only if a file changed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
from typing import Any, Callable

from oslo_config import cfg
from oslo_log import log as logging

from agentkit import exceptions
from agentkit.api import device_owner
from agentkit.api import dhcp
from agentkit.api import dhcp_payload
from agentkit.api import interface
from agentkit.api.dhcp import IPAddress, Network
from agentkit.lib import dhcp_release
from agentkit.lib import external_process
from agentkit.lib import ip_lib
from agentkit.lib import naming
from agentkit.lib import polling
from drivers.dhcp import namespaced
from drivers.dhcp.dnsmasq import files
from drivers.dhcp.dnsmasq import leases
from drivers.dhcp.dnsmasq import render

LOG = logging.getLogger(__name__)

SERVICE = 'dnsmasq'
#: What the last serve() or reload() did to dnsmasq (``last_action``).
Action = external_process.DaemonAction
#: How long dnsmasq gets to drop released leases from its lease file, per try.
RELEASE_WAIT = 1.0
RELEASE_TRIES = 2


def _wait_for_release(path: str, sent: list[leases.Lease]) -> list[leases.Lease]:
    """The leases of ``sent`` still in the lease file ``path`` once dnsmasq
    dropped them all, or after :data:`RELEASE_WAIT` seconds."""
    def still_held() -> list[leases.Lease]:
        current = set(leases.read_leases(path)[0])
        return [lease for lease in sent if lease in current]
    polling.wait_until(lambda: not still_held(), RELEASE_WAIT)
    return still_held()


#: ``hook(network_id, namespace, enabled)``; see :meth:`DnsmasqDriver.metadata_hook`.
MetadataHook = Callable[[str, str, bool], None]


@dataclasses.dataclass
class _NetworkState:
    namespace: str
    interface_name: str
    manager: external_process.ProcessManager
    argv: list[str]
    skipped_ports: int = 0
    metadata: bool = False


class DnsmasqDriver(external_process.DaemonOwner, namespaced.NamespacedDhcpDriver):
    """One dnsmasq per network, started in the network's namespace.

    Thread-safe: calls for different networks run in parallel; calls for
    one network are serialised.
    """

    #: Root of the process table; unit tests point it at a fake tree.
    proc_path: str = external_process.PROC_PATH

    def __init__(self, conf: cfg.ConfigOpts, host: str,
                 interface_driver: interface.InterfaceDriver) -> None:
        super().__init__(conf, host, interface_driver)
        self._networks: dict[str, _NetworkState] = {}
        # Networks whose files changed but whose dnsmasq was not signalled
        # yet (a write or the signal failed), with the host file's owners
        # from before the change: the retry finds the files already new and
        # must still reload, and release the leases of the owners replaced.
        # Kept apart from _networks: a network adopted after a restart has
        # no state until its first apply succeeds.
        self._unsignalled: dict[str, dict[IPAddress, str]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.monitor: external_process.ProcessMonitor | None = None
        self.counters = {'starts': 0, 'restarts': 0, 'reloads': 0, 'adopted': 0,
                         'released': 0}
        self._release_tools: dict[int, bool] | None = None
        #: seconds the last enable()/reload() took (files + signal/spawn)
        self.last_apply_seconds: float | None = None
        self.last_action: external_process.DaemonAction | None = None

    # -- lifecycle -----------------------------------------------------------

    def initialize(self) -> None:
        """Check options and the state directory, start the respawn watch."""
        settings = render.Settings.from_conf(self.conf)
        dhcp_root = naming.safe_join(settings.state_path, render.DHCP_DIR)
        files.ensure_dir(dhcp_root)
        files.check_traversable(dhcp_root)
        self.release_tools()
        self._ensure_monitor()

    def stop(self) -> None:
        """Stop watching; dnsmasq keeps running so VMs keep their DHCP."""
        if self.monitor is not None:
            self.monitor.stop(timeout=5)

    def get_configurations(self) -> dict[str, Any]:
        """dnsmasq figures only (``dnsmasq_*``): the agent reports the
        network/subnet/port counts itself and merges these over them."""
        with self._lock:
            states = list(self._networks.values())
            counters = dict(self.counters)
        return {
            'dnsmasq_networks': len(states),
            'dnsmasq_skipped_ports': sum(s.skipped_ports for s in states),
            'dnsmasq_respawns': self.monitor.respawn_count if self.monitor else 0,
            'dnsmasq_starts': counters['starts'],
            'dnsmasq_restarts': counters['restarts'],
            'dnsmasq_reloads': counters['reloads'],
            'dnsmasq_adopted': counters['adopted'],
            'dnsmasq_leases_released': counters['released'],
        }

    # -- the DhcpDriver API --------------------------------------------------

    def serve(self, net: Network, namespace: str, interface_name: str) -> None:
        """Write the files and start, adopt, reload or restart dnsmasq.

        :raises InvalidPayload: bad namespace or interface name.
        :raises ProcessError: dnsmasq could not be started.
        """
        try:
            ip_lib.validate_namespace(namespace)
            ip_lib.validate_device_name(interface_name)
        except exceptions.InvalidIdentifier as exc:
            raise dhcp_payload.invalid(net.id, str(exc)) from None
        if namespace is None:
            raise dhcp_payload.invalid(net.id, 'a namespace is required')
        with self._resource_lock(net.id):
            self._apply(net, namespace, interface_name)

    def reload(self, net: Network) -> None:
        """Rewrite the files; SIGHUP only if one changed, restart if argv changed.

        A network this driver instance has not enabled yet (e.g. right after
        an agent restart) is served in ``qdhcp-<id>`` with the interface
        recorded in its state directory.

        :raises ProcessError: the network was never enabled on this host.
        """
        with self._resource_lock(net.id):
            with self._lock:
                state = self._networks.get(net.id)
            if state is not None:
                namespace, interface_name = state.namespace, state.interface_name
            else:
                namespace = naming.dhcp_namespace(net.id)
                recorded = self._recorded_interface(net.id)
                if recorded is None:
                    raise exceptions.ProcessError(
                        'cannot reload DHCP for network %s: it was never enabled on this '
                        'host (no %s file)' % (net.id, render.INTERFACE_FILE))
                interface_name = recorded
            self._apply(net, namespace, interface_name)

    def stop_serving(self, network_id: str) -> None:
        """Stop dnsmasq, forget the network and remove its state directory."""
        try:
            naming.validate_id(network_id, 'network')
        except exceptions.InvalidIdentifier as exc:
            raise exceptions.InvalidPayload(str(exc)) from None
        with self._resource_lock(network_id):
            namespace = self._disable_locked(network_id)
        self.metadata_hook(network_id, namespace, False)

    def active_networks(self) -> set[str]:
        """Networks with a live dnsmasq, found from the state directories.

        Covers daemons left by a previous agent run, which this instance has
        not enabled (yet): the agent disables those it no longer hosts.
        """
        dhcp_root = os.path.join(self.conf.state_path, render.DHCP_DIR)
        try:
            names = os.listdir(dhcp_root)
        except (FileNotFoundError, NotADirectoryError):
            names = []
        with self._lock:
            candidates = {n for n in names if naming.is_valid_id(n)} | set(self._networks)
        active = set()
        for network_id in candidates:
            try:
                if self._manager(network_id, None).active:
                    active.add(network_id)
            except exceptions.InvalidIdentifier as exc:  # e.g. a symlink out of state_path
                LOG.warning('Ignoring DHCP state entry %s: %s', network_id, exc)
        return active

    # -- hooks and helpers for the agent -------------------------------------

    def metadata_hook(self, network_id: str, namespace: str, enabled: bool) -> None:
        """Called after every enable/reload/disable of a network; no-op here.

        ``enabled`` is True when the DHCP namespace must serve metadata
        (``enable_isolated_metadata`` and an isolated IPv4 DHCP subnet; the
        ``opts`` file then routes 169.254.169.254 via the DHCP port). The
        DHCP agent starts/stops its per-network metadata proxy here, either by
        overriding this method or by assigning a callable to
        ``driver.metadata_hook``. Exceptions propagate to the caller, after
        dnsmasq has been handled, so the agent can retry.
        """

    def pid(self, network_id: str) -> int | None:
        """pid of the network's live dnsmasq, None if there is none."""
        manager = self._manager(naming.validate_id(network_id, 'network'), None)
        return manager.pid if manager.active else None

    def release_tools(self) -> dict[int, bool]:
        """Which IP versions' leases can be released; warns once if a tool is missing.

        Looked up in the path the privileged helper searches. Without the
        tool a deleted port's lease simply runs out (``dhcp_lease_duration``).
        """
        if self._release_tools is None:
            found = {4: dhcp_release.installed(dhcp_release.DHCP_RELEASE),
                     6: dhcp_release.installed(dhcp_release.DHCP_RELEASE6)}
            missing = [name for version, name in ((4, dhcp_release.DHCP_RELEASE),
                                                  (6, dhcp_release.DHCP_RELEASE6))
                       if not found[version]]
            if missing:
                LOG.warning('%s not found in %s (Debian package dnsmasq-utils): the '
                            'DHCP leases of deleted ports are kept until they expire, '
                            'and their addresses are refused to new ports until then',
                            ' and '.join(missing), dhcp_release.SEARCH_PATH)
            self._release_tools = found
        return self._release_tools

    def service_state(self, network_id: str) -> dhcp.ServiceState:
        process = self._manager(network_id, None).state()
        host_file = os.path.join(naming.dhcp_state_dir(self.conf.state_path, network_id),
                                 render.HOST_FILE)
        hosts = {str(ip): mac for ip, mac in leases.read_host_macs(host_file).items()}
        return dhcp.ServiceState(process, process.runs(SERVICE), host_file, hosts)

    # -- internals -----------------------------------------------------------

    def _manager(self, network_id: str, namespace: str | None,
                 argv_source: Callable[[], list[str]] | None = None
                 ) -> external_process.ProcessManager:
        state_dir = naming.dhcp_state_dir(self.conf.state_path, network_id)

        def cmd(pid_file: str) -> list[str]:
            if argv_source is None:
                raise exceptions.ProcessError('no command line known for dnsmasq of '
                                              'network %s' % network_id)
            return argv_source()
        return external_process.ProcessManager(
            network_id, SERVICE, namespace, state_dir, cmd,
            pid_file=os.path.join(state_dir, render.PID_FILE), proc_path=self.proc_path)

    def _new_state(self, network_id: str, namespace: str, interface_name: str,
                   argv: list[str]) -> _NetworkState:
        """State whose manager always spawns with the state's current argv."""
        state = _NetworkState(namespace, interface_name, None, argv)  # type: ignore[arg-type]
        state.manager = self._manager(network_id, namespace, lambda: list(state.argv))
        return state

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def _recorded_interface(self, network_id: str) -> str | None:
        path = os.path.join(naming.dhcp_state_dir(self.conf.state_path, network_id),
                            render.INTERFACE_FILE)
        try:
            with open(path, encoding='ascii', errors='replace') as f:
                name = f.read(64).strip()
            return ip_lib.validate_device_name(name)
        except (OSError, exceptions.InvalidIdentifier):
            return None

    def _own_dhcp_ips(self, net: Network, interface_name: str) -> dict[str, IPAddress]:
        """This agent's DHCP port addresses by subnet.

        The port is recognised by Neutron's device_id convention for this
        host, or by the interface drivers' naming (``tap``/``ns-`` + 11
        characters of the port id).
        """
        device_id = dhcp.dhcp_port_device_id(self.host, net.id)
        name_suffix = interface_name[3:] if len(interface_name) == 14 else None
        for port in net.ports:
            if port.device_owner != device_owner.DHCP:
                continue
            if port.device_id == device_id or port.id[:11] == name_suffix:
                return {f.subnet_id: f.address for f in port.fixed_ips}
        return {}

    def _apply(self, net: Network, namespace: str,
               interface_name: str) -> None:
        started = time.monotonic()
        settings = render.Settings.from_conf(self.conf)
        if not net.dhcp_enabled:
            LOG.info('Network %s has no DHCP-enabled subnet; stopping its dnsmasq', net.id)
            self._disable_locked(net.id)
            self.metadata_hook(net.id, namespace, False)
            return
        state_dir = settings.state_dir(net.id)
        with self._lock:
            before = self._unsignalled.get(net.id)
        old_hosts = (before if before is not None
                     else leases.read_host_macs(os.path.join(state_dir, render.HOST_FILE)))
        contents = render.render_files(net, settings, self._own_dhcp_ips(net, interface_name))
        changed: list[str] = []
        try:
            with files.writing_files_of(net.id, state_dir):
                files.ensure_dir(state_dir)
                for name, content in contents.items():
                    if files.write_file_if_changed(os.path.join(state_dir, name), content):
                        changed.append(name)
                files.write_file_if_changed(os.path.join(state_dir, render.INTERFACE_FILE),
                                            interface_name + '\n')
        finally:
            if changed:  # even if a later file failed: these are new already
                with self._lock:
                    self._unsignalled.setdefault(net.id, old_hosts)
        argv = render.build_argv(net, settings)
        metadata = render.needs_metadata_proxy(net, settings)

        with self._lock:
            state = self._networks.get(net.id)
        adopting = state is None
        if state is None or state.namespace != namespace:
            state = self._new_state(net.id, namespace, interface_name, argv)
        state.argv = argv
        state.interface_name = interface_name
        with self._lock:
            self._networks[net.id] = state
            reload_pending = net.id in self._unsignalled

        action = external_process.least_disruptive_action(state.manager.cmdline(), argv,
                                                          reload_pending)
        if action in (Action.START, Action.RESTART):
            with files.writing_files_of(net.id, state_dir):
                files.write_file_if_changed(
                    os.path.join(state_dir, render.LEASES_FILE),
                    render.render_init_leases(net, settings, time.time()))
        if action is Action.START:
            state.manager.enable()
            self._count('starts')
        elif action is Action.RESTART:
            LOG.info('dnsmasq for network %s needs a new command line; restarting', net.id)
            state.manager.restart()
            self._count('restarts')
        else:
            if adopting:
                LOG.info('Adopted the running dnsmasq of network %s (pid %s)', net.id,
                         state.manager.pid)
                self._count('adopted')
            if action is Action.RELOAD:
                if state.manager.reload():
                    self._count('reloads')
                else:  # died since the check: the monitor respawns it with these files
                    LOG.warning('dnsmasq for network %s vanished during reload', net.id)
        with self._lock:
            self._unsignalled.pop(net.id, None)
        if action in (Action.RELOAD, Action.NONE):
            # dnsmasq forgets the old owners' leases, so a reused address is
            # not refused to its new port. After the SIGHUP (Neutron releases
            # before it): the deleted port's VM can then not win its address
            # back in between. A (re)started dnsmasq reads a lease file
            # without them.
            self._release_stale_leases(net, state_dir, namespace, interface_name,
                                       old_hosts)

        state.skipped_ports = len(net.skipped_ports)
        state.metadata = metadata
        self._ensure_monitor().register(state.manager)
        self.last_action = action
        self.last_apply_seconds = time.monotonic() - started
        LOG.debug('DHCP for network %s: %s (changed: %s) in %.1f ms', net.id, action.value,
                  ', '.join(changed) or 'nothing', self.last_apply_seconds * 1000)
        self.metadata_hook(net.id, namespace, metadata)

    def _release_stale_leases(self, net: Network, state_dir: str, namespace: str,
                              interface_name: str,
                              old_hosts: dict[IPAddress, str]) -> None:
        """Release the leases no port holds; never raises (they expire anyway)."""
        path = os.path.join(state_dir, render.LEASES_FILE)
        held, server_duid = leases.read_leases(path)
        tools = self.release_tools()
        pending = [lease for lease in leases.stale_leases(net, held, old_hosts)
                   if tools[lease.address.version]
                   and (lease.address.version == 4
                        or (lease.client_id and server_duid))]
        released = 0
        for _ in range(RELEASE_TRIES):
            if not pending:
                break
            sent = [lease for lease in pending
                    if self._release(net.id, namespace, interface_name, lease,
                                     server_duid)]
            if not sent:
                break
            still = _wait_for_release(path, sent)
            released += len(sent) - len(still)
            pending = still
        if released:
            with self._lock:
                self.counters['released'] += released
            LOG.info('Network %s: released %d DHCP lease(s) no port holds', net.id,
                     released)
        if pending:
            LOG.warning('Network %s: dnsmasq kept the leases of %s after release; they '
                        'expire on their own', net.id,
                        ', '.join(str(lease.address) for lease in pending))

    def _release(self, network_id: str, namespace: str, interface_name: str,
                 lease: leases.Lease, server_duid: str | None) -> bool:
        """One dhcp_release(6) call; False (logged) if it could not be sent."""
        try:
            if lease.address.version == 4:
                if lease.mac is None:
                    raise ValueError('the lease has no MAC address')
                returncode, output = dhcp_release.release_lease(
                    namespace, interface_name, str(lease.address), lease.mac,
                    lease.client_id)
            else:
                if lease.iaid is None or lease.client_id is None or server_duid is None:
                    raise ValueError('releasing an IPv6 lease needs its IAID, the '
                                     'client DUID and the server DUID')
                returncode, output = dhcp_release.release_lease6(
                    namespace, interface_name, str(lease.address), lease.iaid,
                    lease.client_id, server_duid)
        except Exception as exc:  # privsep re-raises the daemon's exceptions
            LOG.warning('Network %s: cannot release the DHCP lease of %s: %s',
                        network_id, lease.address, exc)
            return False
        if returncode != 0:
            LOG.warning('Network %s: releasing the DHCP lease of %s failed (exit %d): %s',
                        network_id, lease.address, returncode, output)
            return False
        LOG.debug('Network %s: released the DHCP lease of %s', network_id, lease.address)
        return True

    def _disable_locked(self, network_id: str) -> str:
        """Stop and forget one network; returns the namespace it ran in."""
        with self._lock:
            state = self._networks.pop(network_id, None)
            self._unsignalled.pop(network_id, None)
        manager = state.manager if state is not None else self._manager(network_id, None)
        manager.disable()
        state_dir = naming.dhcp_state_dir(self.conf.state_path, network_id)
        if os.path.lexists(state_dir):
            shutil.rmtree(state_dir)
        LOG.info('DHCP disabled for network %s', network_id)
        return state.namespace if state is not None else naming.dhcp_namespace(network_id)
