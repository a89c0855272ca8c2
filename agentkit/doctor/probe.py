"""``--probe``: the doctor's active checks, and the removal of what they create.

The only thing a probe creates is a probe port (:mod:`agentkit.privileged.probe`):
a namespace and a veth pair, whose host end is attached where a VM's port
would be (br-int with the network's local VLAN, or the network's ``brq``).
It is removed however the probe ends, with SIGINT/SIGTERM/SIGHUP ignored, so an
error or Ctrl-C still removes it (its namespace and veth even when OVSDB refuses
to delete its port; what became of it is :meth:`Prober.outcome`, which the CLI
prints when interrupted); a doctor killed outright leaves one behind, which
the next ``--probe`` run removes (the probe's id is its doctor's pid, so a
probe of a doctor still running is left alone).
"""

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from agentkit.doctor import hosts_ovs
from agentkit.lib import external_process
from agentkit.lib import ip_lib
from agentkit.lib import naming
from agentkit.privileged import probe as priv_probe

LOG = logging.getLogger(__name__)
PROG = 'agentkit-doctor'
#: How long a probe waits for OFFERs, a gateway's replies, a TCP handshake.
DHCP_TIMEOUT = 3.0
GATEWAY_TIMEOUT = 1.0
CONNECT_TIMEOUT = 3.0
#: What ends the doctor early: Ctrl-C, kill, a closed terminal.
_INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ProbeError(Exception):
    """A probe could not be run (not: it ran and found nothing)."""


def probe_id(pid: int | None = None) -> str:
    return '%08x' % (os.getpid() if pid is None else pid)


def doctor_alive(probe: str) -> bool:
    """Whether the doctor that made probe ``probe`` (its pid, in hex) still runs."""
    try:
        pid = int(priv_probe.check_probe_id(probe), 16)
    except ValueError:
        return False
    argv = external_process.read_cmdline(pid) or []
    return any(PROG in arg for arg in argv[:2])


def _stale_id(name: str, prefix: str) -> str | None:
    """The probe id in ``name`` (``<prefix><id>``) if its doctor is gone."""
    if not name.startswith(prefix):
        return None
    try:
        probe = priv_probe.check_probe_id(name[len(prefix):])
    except ValueError:
        return None     # not a name a doctor makes
    return None if doctor_alive(probe) else probe


def leftovers(namespaces: list[str]) -> list[str]:
    """The probe namespaces among ``namespaces`` whose doctor is gone."""
    return [ns for ns in namespaces if _stale_id(ns, priv_probe.PROBE_NS_PREFIX)]


def leftover_ports(probe_ports: list[str]) -> list[str]:
    """The probe ports (OVS ports with the probe mark, :meth:`.OvsView.probe_ports`)
    among ``probe_ports`` whose doctor is gone."""
    return [p for p in probe_ports if _stale_id(p, priv_probe.PROBE_HOST_PREFIX)]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C/SIGTERM/SIGHUP while the doctor examined, with what became of
    its probe port (:meth:`Prober.outcome`)."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class Prober:
    def __init__(self, ovs: hosts_ovs.OvsView | None, integration_bridge: str) -> None:
        self.ovs = ovs
        self.integration_bridge = integration_bridge
        self.id = probe_id()
        #: whether a probe port was (being) made, and why its removal failed
        self.made = False
        self.removal_error: str | None = None

    def outcome(self) -> str:
        """What became of this doctor's probe port, as a person is told it."""
        device = priv_probe.probe_host_device(self.id)
        if not self.made:
            return 'no probe port had been created'
        if self.removal_error is not None:
            return (f'the probe port {device} could not be removed ({self.removal_error}); '
                    f'the next --probe run removes it')
        return f'the probe port {device} was removed'

    # -- the probe port -----------------------------------------------------
    @staticmethod
    def _doctor_alive(probe: str) -> bool:
        return doctor_alive(probe)

    def remove_stale(self) -> list[str]:
        """Remove the probe ports of doctors that are gone; their ids.

        Found by their namespaces (only the privileged layer makes
        ``akprobe-`` ones) and by the mark on their OVS ports: a port merely
        named like a probe port is not touched.
        """
        prefix = priv_probe.PROBE_NS_PREFIX
        namespaced = {ns[len(prefix):] for ns in ip_lib.list_namespaces()
                      if ns.startswith(prefix)}
        marked: set[str] = set()
        if self.ovs is not None:
            prefix = priv_probe.PROBE_HOST_PREFIX
            marked = {p[len(prefix):] for p in self.ovs.probe_ports(self.integration_bridge)
                      if p.startswith(prefix)}
        removed = []
        for probe in sorted(namespaced | marked):
            try:
                priv_probe.check_probe_id(probe)
            except ValueError:
                continue
            if probe != self.id and not self._doctor_alive(probe):
                self._remove(probe, ovs_port=probe in marked)
                removed.append(probe)
        return removed

    def _remove(self, probe: str, ovs_port: bool = True) -> None:
        """Its OVS port (``ovs_port``: one with the probe mark is there), then
        its namespace and veth (even if OVSDB failed)."""
        try:
            if self.ovs is not None and ovs_port:
                self.ovs.delete_port(self.integration_bridge,
                                     priv_probe.probe_host_device(probe))
        finally:
            priv_probe.remove_probe(probe)

    def _remove_own(self) -> None:
        """Remove this doctor's probe port, noting a failure (and raising it)."""
        with interrupts_ignored():   # a second Ctrl-C must not stop the removal
            try:
                self._remove(self.id)
            except Exception as exc:
                self.removal_error = str(exc) or type(exc).__name__
                raise

    @contextlib.contextmanager
    def port(self, network_id: str, vlan: int | None) -> Iterator[str]:
        """A probe port on the network for the ``with`` block; yields where it is."""
        for probe in self.remove_stale():
            LOG.warning('Removed the probe port %s a killed %s left behind', probe, PROG)
        host_device = priv_probe.probe_host_device(self.id)
        self.made, self.removal_error = True, None
        try:
            priv_probe.create_probe(self.id)
            if self.ovs is not None:
                if vlan is None:
                    raise ProbeError('no local VLAN of the network to attach it to')
                self.ovs.add_probe_port(self.integration_bridge, host_device, vlan)
                yield f'{host_device} on {self.integration_bridge} VLAN {vlan}'
            else:
                bridge = naming.bridge_name(network_id)
                if not ip_lib.device_exists(bridge):
                    raise ProbeError(f'no bridge {bridge}')
                ip_lib.IPDevice(host_device).link.set_master(bridge)
                yield f'{host_device} in {bridge}'
        except BaseException:
            # What ended the probe (an error, Ctrl-C) is what the caller sees;
            # a failed removal is only noted (outcome(), the log).
            try:
                self._remove_own()
            except Exception:
                LOG.exception('Could not remove the probe port %s', host_device)
            raise
        else:
            self._remove_own()

    # -- the checks ---------------------------------------------------------
    def dhcp_offers(self, network_id: str, vlan: int | None,
                    mac: str) -> tuple[str, list[dict[str, str]]]:
        """(where the probe was, the OFFERs for ``mac``)."""
        with self.port(network_id, vlan) as where:
            return where, priv_probe.dhcp_discover(self.id, mac, DHCP_TIMEOUT)

    @staticmethod
    def gateway(namespace: str, device: str, gateway: str) -> dict[str, Any]:
        return priv_probe.probe_gateway(namespace, device, gateway, GATEWAY_TIMEOUT)

    @staticmethod
    def connect(namespace: str, address: str, port: int) -> str | None:
        return priv_probe.tcp_connect(namespace, address, port, CONNECT_TIMEOUT)


@contextlib.contextmanager
def interrupts_ignored() -> Iterator[None]:
    """SIG_IGN for the interrupts in the block (main thread only: Python's
    handlers run there whichever thread the signal reached)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {signum: signal.signal(signum, signal.SIG_IGN) for signum in _INTERRUPTS}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def prepare_interrupts() -> None:
    """Make Ctrl-C, SIGTERM and SIGHUP end the doctor through ``finally``,
    with the privsep daemon still there to remove the probe port.

    A terminal's Ctrl-C (or hang-up) signals the whole process group,
    including the privsep daemon, which would die first. So the daemon is
    started now with those signals ignored (an ignored disposition survives
    exec, and Python then installs no KeyboardInterrupt handler); then the
    doctor's own handlers are set: each raises KeyboardInterrupt.
    """
    from agentkit import privileged
    with interrupts_ignored():
        privileged.network.start()    # a no-op if it runs already

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)
    for signum in _INTERRUPTS:
        signal.signal(signum, interrupt)
