"""``openvswitch`` interface driver: OVS internal ports on the integration bridge.

The port carries ``external_ids:iface-id/attached-mac/iface-status`` like a
nova-plugged VM port, so the L2 agent wires it the same way; the device is
then moved into the DHCP/router namespace. Internal ports need no checksum
workaround on the userspace datapath (unlike veths).

On the userspace (netdev) datapath an internal port is a tap that
ovs-vswitchd opens by name in its own namespace: when it restarts, it
creates a new tap in the root namespace and the device moved into the
DHCP/router namespace carries nothing any more. The driver then waits until
the new taps of its agent's ports exist (ovs-vswitchd names its new pidfile
before it creates them), asks its agent to plug everything again
(:meth:`watch_restarts`), and a port whose device shows up in the root
namespace again is moved in anew (:meth:`read_state` for a DHCP port,
:meth:`remove_stale_devices` for a router's).
"""

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence

from oslo_config import cfg

from agentkit.api import interface
from agentkit.lib import ip_lib
from agentkit.lib import naming
from agentkit.lib import polling
from agentkit.lib.ovs import bridge as ovs_bridge
from agentkit.lib.ovs import connection as ovs_connection
from agentkit.lib.ovs import vswitchd
from drivers.interface import common

LOG = logging.getLogger(__name__)

# How long a restarted ovs-vswitchd gets to re-create the internal ports'
# taps before the agent plugs its ports anyway (measured: 0.12 s after the
# new pidfile on an idle host; seconds under load).
RECREATE_TIMEOUT = 10.0


def _log_recreated(device_name: str, namespace: str) -> None:
    LOG.warning('Port %s: ovs-vswitchd re-created its device in the root namespace '
                '(it restarted, userspace datapath); replacing the one in %s',
                device_name, namespace)


class OVSInterfaceDriver(interface.InterfaceDriver):

    def __init__(self, conf: cfg.ConfigOpts, host: str) -> None:
        super().__init__(conf, host)
        # The devices of this agent's ports (every name read, plugged or
        # checked here): after an ovs-vswitchd restart only these are waited
        # for, as another agent may already have moved its own new tap away.
        self._own_devices: set[str] = set()
        self._own_lock = threading.Lock()
        self._stopped = threading.Event()  # ends a re-plug wait at agent stop

    def stop(self) -> None:
        self._stopped.set()
        super().stop()

    def _own(self, *names: str) -> None:
        with self._own_lock:
            self._own_devices.update(names)

    def initialize(self) -> None:
        self.ovs = ovs_connection.get_connection(self.conf.ovs.ovsdb_connection,
                                                 timeout=self.conf.ovs.ovsdb_timeout)
        integration = self._bridge(None)
        # The L2 agent owns the bridge and its settings (datapath, fail
        # mode); this one only needs a bridge to put ports on. Neutron keeps
        # datapath_type in openvswitch_agent.ini alone, so a DHCP or L3
        # agent run from Neutron's files must not "correct" an existing
        # netdev bridge to its own default.
        if not integration.exists():
            integration.create()

    def _bridge(self, bridge: str | None) -> ovs_bridge.OVSBridge:
        return self.ovs.bridge(bridge or self.conf.ovs.integration_bridge,
                               self.conf.ovs.datapath_type)

    def watch_restarts(self, on_restart: Callable[[str], None]) -> None:
        """An ovs-vswitchd restart on the userspace datapath when OVS is local.

        The datapath type is read at each restart, not now: an agent that
        started before the L2 agent may have created the bridge with its own
        default (``system``), which the L2 agent (its owner) turns into
        ``netdev`` later.
        """
        if not vswitchd.is_local_endpoint(self.conf.ovs.ovsdb_connection):
            return

        def restarted(reason: str) -> None:
            if reason == ovs_connection.RESYNC_VSWITCHD_RESTARTED:
                # Off the OVSDB event thread: the wait may take seconds.
                threading.Thread(target=self._replug_after_restart, args=(on_restart,),
                                 name='vswitchd-restarted', daemon=True).start()

        self.ovs.add_resync_callback(restarted)
        self.ovs.start_vswitchd_monitor()

    def _replug_after_restart(self, on_restart: Callable[[str], None]) -> None:
        try:
            if self._bridge(None).get_datapath_type() != 'netdev':
                return  # the kernel datapath keeps its ports' devices
            self._wait_for_recreated_taps()
        except Exception:
            if self._stopped.is_set():
                return  # the agent stopped meanwhile (OVSDB, privsep gone)
            LOG.exception('Waiting for the restarted ovs-vswitchd failed; plugging the '
                          'service ports again now')
        if self._stopped.is_set():
            return
        on_restart('ovs-vswitchd restarted (userspace datapath: '
                   'service ports must be plugged again)')

    def _wait_for_recreated_taps(self) -> None:
        """Wait until the restarted ovs-vswitchd has re-created the taps of
        this agent's internal ports in the root namespace.

        Why: it writes its new pidfile (what the monitor sees) before it
        re-creates the ports; a resync run at once finds nothing to replace
        and the service ports stay dead (seen in CI). Bounded: a port it
        cannot create must not stop the resync of the others.
        """
        with self._own_lock:
            own = set(self._own_devices)
        names = sorted(own & {iface.name for iface in self.ovs.list_interfaces_with_iface_id()
                              if iface.type == 'internal'})
        if not names:
            return

        def all_recreated() -> bool:
            return self._stopped.is_set() or len(ip_lib.get_links(names)) == len(names)

        if not polling.wait_until(all_recreated, RECREATE_TIMEOUT, max_delay=0.1):
            LOG.warning('ovs-vswitchd restarted but did not re-create all of %d '
                        'internal port(s) within %.0f s; plugging what is there',
                        len(names), RECREATE_TIMEOUT)

    def read_state(self, network_id: str, device_name: str, namespace: str,
                   bridge: str | None = None) -> ip_lib.DeviceState | None:
        """The namespace side plus a root-namespace device of the same name,
        in the same call. Both present means ovs-vswitchd re-created the
        port's tap after a restart: the one in the namespace is stale, so
        the port is reported as not plugged there (plug() replaces it)."""
        state = ip_lib.read_device_state(device_name, namespace, root_devices=[device_name])
        self._own(device_name)
        if state is None or state.link is None or not state.root_links:
            return state
        _log_recreated(device_name, namespace)
        return dataclasses.replace(state, link=None, addresses=(), routes=())

    def remove_stale_devices(self, namespace: str,
                             device_names: Sequence[str]) -> set[str]:
        """Devices of ``namespace`` whose name ovs-vswitchd re-created in the
        root namespace (restart, userspace datapath; see :meth:`read_state`).

        Read only on the userspace datapath: on the kernel datapath a port
        keeps its device across a restart, and the check would cost every
        router sync a privileged call for nothing.
        """
        self._own(*device_names)
        if not device_names or self._bridge(None).get_datapath_type() != 'netdev':
            return set()
        stale = set(ip_lib.get_links(list(device_names)))
        for name in sorted(stale):
            _log_recreated(name, namespace)
            ip_lib.IPDevice(name, namespace).delete()
        return stale

    def get_device_name(self, port_id: str) -> str:
        return naming.tap_device_name(port_id)

    def get_configurations(self) -> dict:
        return {'interface_driver': 'openvswitch'}

    def plug(self, network_id: str, port_id: str, device_name: str,
             mac_address: str, namespace: str, mtu: int | None = None,
             bridge: str | None = None,
             current: ip_lib.DeviceState | None = None) -> None:
        naming.validate_id(port_id, 'port')
        ns_device = ip_lib.IPDevice(device_name, namespace)
        self._own(device_name)
        br = self._bridge(bridge)
        br.add_port(device_name, type='internal', mtu_request=mtu,
                    external_ids={'iface-id': port_id,
                                  'attached-mac': mac_address,
                                  'iface-status': 'active'})
        ns_link = (current.link if current is not None
                   else common.link_or_none(ns_device))
        if ns_link is None:
            if current is not None and current.root_links and ns_device.exists():
                ns_device.delete()  # stale: see read_state
            root_device = ip_lib.IPDevice(device_name)
            common.wait_for_device(root_device)
            root_device.link.set_netns(namespace)
        common.configure_link(ns_device, mac_address, mtu, ns_link)

    def unplug(self, device_name: str, namespace: str,
               bridge: str | None = None) -> None:
        self._bridge(bridge).delete_port(device_name, if_exists=True)
        with self._own_lock:
            self._own_devices.discard(device_name)
        device = ip_lib.IPDevice(device_name, namespace)
        if ip_lib.namespace_exists(namespace) and device.exists():
            device.delete()

    def set_addresses(self, device_name: str, namespace: str, cidrs: list[str],
                      current: ip_lib.DeviceState | None = None) -> None:
        common.set_addresses(ip_lib.IPDevice(device_name, namespace), cidrs, current)
