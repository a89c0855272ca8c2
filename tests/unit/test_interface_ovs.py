"""openvswitch interface driver: service ports after an ovs-vswitchd restart
on the userspace datapath (the tap re-created in the root namespace)."""

import types
from unittest import mock

from agentkit.conf import ovs as ovs_conf
from agentkit.lib import ip_lib
from agentkit.lib.ovs import connection as ovs_connection
from drivers.interface import openvswitch
from tests import base

DEVICE = 'tap12345678-9a'
NAMESPACE = 'qdhcp-3ec78356-d321-4fa6-920d-7b6866220829'
UP = {'address': 'fa:16:3e:00:00:01', 'mtu': 1450, 'state': 'up'}


def state(root_links):
    return ip_lib.DeviceState(loopback_up=True, link=dict(UP),
                              addresses=({'cidr': '10.0.0.2/24'},),  # type: ignore[typeddict-item]
                              routes=(), root_links=root_links)


class OVSInterfaceRestartTest(base.TestCase):

    def setUp(self):
        super().setUp()
        ovs_conf.register_ovs_opts(self.conf)
        self.driver = openvswitch.OVSInterfaceDriver(conf=self.conf, host='h')
        self.driver.ovs = mock.Mock()
        self.bridge = self.driver.ovs.bridge.return_value
        # The re-plug after a restart runs on a thread of its own: inline here.
        self.threads = []
        thread = mock.patch.object(openvswitch.threading, 'Thread', side_effect=self.inline)
        thread.start()
        self.addCleanup(thread.stop)

    def inline(self, target, args=(), **kwargs):
        self.threads.append(kwargs.get('name'))
        started = mock.Mock()
        started.start.side_effect = lambda: target(*args)
        return started

    def read_state(self, found):
        with mock.patch.object(openvswitch.ip_lib, 'read_device_state',
                               return_value=found) as read:
            result = self.driver.read_state('net', DEVICE, NAMESPACE)
        read.assert_called_once_with(DEVICE, NAMESPACE, root_devices=[DEVICE])
        return result

    def test_device_only_in_the_namespace_is_plugged(self):
        found = state(root_links={})
        self.assertIs(found, self.read_state(found))

    def test_device_back_in_the_root_namespace_means_the_other_is_stale(self):
        stale = self.read_state(state(root_links={DEVICE: dict(UP)}))
        self.assertIsNone(stale.link)
        self.assertEqual((), stale.addresses)  # set_addresses starts afresh
        self.assertIn('re-created its device in the root namespace', self.log.output)

    def plug(self, current, ns_device_exists=True):
        devices = {}

        def device(name, namespace=None):
            dev = devices.setdefault((name, namespace), mock.Mock(name=f'{name}@{namespace}'))
            dev.exists.return_value = ns_device_exists if namespace else True
            return dev

        with mock.patch.object(openvswitch.ip_lib, 'IPDevice', side_effect=device), \
                mock.patch.object(openvswitch.common, 'wait_for_device'), \
                mock.patch.object(openvswitch.common, 'link_or_none',
                                  return_value=dict(UP) if ns_device_exists else None), \
                mock.patch.object(openvswitch.common, 'configure_link') as configure:
            self.driver.plug('net', '12345678-9abc-4def-8123-456789abcdef', DEVICE,
                             UP['address'], NAMESPACE, mtu=1450, current=current)
        self.bridge.add_port.assert_called_once()
        configure.assert_called_once()
        return devices

    def test_plug_replaces_the_stale_device(self):
        current = self.read_state(state(root_links={DEVICE: dict(UP)}))
        devices = self.plug(current)
        devices[(DEVICE, NAMESPACE)].delete.assert_called_once_with()
        devices[(DEVICE, None)].link.set_netns.assert_called_once_with(NAMESPACE)

    def test_plug_of_a_healthy_port_moves_and_deletes_nothing(self):
        devices = self.plug(self.read_state(state(root_links={})))
        devices[(DEVICE, NAMESPACE)].delete.assert_not_called()
        self.assertNotIn((DEVICE, None), devices)

    def test_first_plug_moves_the_new_device_in(self):
        devices = self.plug(None, ns_device_exists=False)
        devices[(DEVICE, NAMESPACE)].delete.assert_not_called()
        devices[(DEVICE, None)].link.set_netns.assert_called_once_with(NAMESPACE)

    def watch(self, datapath, connection='unix:/var/run/openvswitch/db.sock'):
        self.conf.set_override('ovsdb_connection', connection, group='ovs')
        self.bridge.get_datapath_type.return_value = datapath
        calls = []
        self.driver.watch_restarts(calls.append)
        return calls

    def watch_restart(self, datapath, connection='unix:/var/run/openvswitch/db.sock'):
        """(the on_restart calls, the restart callback the driver installed)."""
        calls = self.watch(datapath, connection)
        (callback,), _ = self.driver.ovs.add_resync_callback.call_args
        return calls, callback

    def test_vswitchd_restart_on_the_userspace_datapath_asks_for_a_replug(self):
        self.driver.ovs.list_interfaces_with_iface_id.return_value = []
        calls = self.watch('netdev')
        self.driver.ovs.start_vswitchd_monitor.assert_called_once_with()
        (callback,), _ = self.driver.ovs.add_resync_callback.call_args
        callback(ovs_connection.RESYNC_OVSDB_RECONNECTED)  # ports survive that
        self.assertEqual([], calls)
        callback(ovs_connection.RESYNC_VSWITCHD_RESTARTED)
        self.assertEqual(1, len(calls))
        self.assertIn('ovs-vswitchd restarted', calls[0])

    def test_remote_ovs_is_not_watched(self):
        self.assertEqual([], self.watch('netdev', 'tcp:192.0.2.1:6640'))
        self.driver.ovs.add_resync_callback.assert_not_called()
        self.driver.ovs.start_vswitchd_monitor.assert_not_called()

    def test_neutrons_default_loopback_endpoint_is_watched(self):
        self.driver.ovs.list_interfaces_with_iface_id.return_value = []
        calls, callback = self.watch_restart('netdev', 'tcp:127.0.0.1:6640')
        callback(ovs_connection.RESYNC_VSWITCHD_RESTARTED)
        self.assertEqual(1, len(calls))

    def test_the_datapath_is_read_at_the_restart_not_at_start(self):
        # Started before the L2 agent: the bridge was still 'system' then,
        # the L2 agent (its owner) made it 'netdev' later.
        self.driver.ovs.list_interfaces_with_iface_id.return_value = []
        calls, callback = self.watch_restart('system')
        callback(ovs_connection.RESYNC_VSWITCHD_RESTARTED)
        self.assertEqual([], calls)  # the kernel datapath keeps the devices
        self.bridge.get_datapath_type.return_value = 'netdev'
        callback(ovs_connection.RESYNC_VSWITCHD_RESTARTED)
        self.assertEqual(1, len(calls))

    def interfaces(self, *names_and_types):
        return [types.SimpleNamespace(name=name, type=kind) for name, kind in names_and_types]

    def restart_with_taps_appearing(self, polls_before_all_back):
        """A vswitchd restart whose internal ports' taps show up in the root
        namespace only after ``polls_before_all_back`` netlink reads. This
        agent has DEVICE and a router port; another agent's tap (moved into
        its namespace already) and a VM's veth are on the bridge too."""
        self.read_state(state(root_links={}))          # DEVICE: checked here
        self.bridge.get_datapath_type.return_value = 'netdev'
        with mock.patch.object(openvswitch.ip_lib, 'get_links', return_value={}):
            self.driver.remove_stale_devices('qrouter-x', ['qr-0123456789a'])
        self.driver.ovs.list_interfaces_with_iface_id.return_value = self.interfaces(
            (DEVICE, 'internal'), ('qr-0123456789a', 'internal'),
            ('tapother00-00', 'internal'), ('vm-veth', ''))
        reads = []
        replugs_seen_at = []

        def get_links(names):
            reads.append(list(names))
            back = len(reads) > polls_before_all_back
            return {n: dict(UP) for n in names} if back else {DEVICE: dict(UP)}

        calls, callback = self.watch_restart('netdev')
        with mock.patch.object(openvswitch.ip_lib, 'get_links', side_effect=get_links), \
                mock.patch.object(openvswitch, 'RECREATE_TIMEOUT', 0.3):
            callback(ovs_connection.RESYNC_VSWITCHD_RESTARTED)
            replugs_seen_at.append(len(reads))
        return calls, reads, replugs_seen_at[0]

    def test_replug_waits_for_vswitchd_to_recreate_the_internal_taps(self):
        # Its new pidfile comes before the taps: a resync at once would find
        # nothing stale and leave the service ports dead.
        calls, reads, reads_before_replug = self.restart_with_taps_appearing(3)
        self.assertEqual(1, len(calls))
        self.assertEqual(4, reads_before_replug)
        # This agent's internal ports only: the other agent's tap may be
        # gone from the root namespace again already.
        self.assertEqual(['qr-0123456789a', DEVICE], reads[0])
        self.assertEqual(['vswitchd-restarted'], self.threads)  # not the OVSDB thread

    def test_replug_goes_ahead_when_a_tap_never_comes_back(self):
        with self.assertLogs(openvswitch.LOG, 'WARNING') as logs:
            calls, reads, _ = self.restart_with_taps_appearing(10 ** 6)
        self.assertEqual(1, len(calls))
        self.assertGreater(len(reads), 1)
        self.assertIn('did not re-create all of 2', logs.output[-1])

    def test_replug_goes_ahead_when_the_wait_fails(self):
        self.read_state(state(root_links={}))
        self.driver.ovs.list_interfaces_with_iface_id.side_effect = RuntimeError('ovsdb')
        calls, callback = self.watch_restart('netdev')
        with self.assertLogs(openvswitch.LOG, 'ERROR'):
            callback(ovs_connection.RESYNC_VSWITCHD_RESTARTED)
        self.assertEqual(1, len(calls))

    def test_a_stopped_agent_does_not_resync(self):
        self.driver.ovs.list_interfaces_with_iface_id.return_value = []
        calls, callback = self.watch_restart('netdev')
        self.driver.stop()
        callback(ovs_connection.RESYNC_VSWITCHD_RESTARTED)
        self.assertEqual([], calls)

    def test_an_unplugged_device_is_not_waited_for(self):
        self.read_state(state(root_links={}))
        with mock.patch.object(openvswitch.ip_lib, 'namespace_exists', return_value=False):
            self.driver.unplug(DEVICE, NAMESPACE)
        self.driver.ovs.list_interfaces_with_iface_id.return_value = self.interfaces(
            (DEVICE, 'internal'))
        calls, callback = self.watch_restart('netdev')
        with mock.patch.object(openvswitch.ip_lib, 'get_links') as get_links:
            callback(ovs_connection.RESYNC_VSWITCHD_RESTARTED)
        get_links.assert_not_called()
        self.assertEqual(1, len(calls))

    def test_router_devices_recreated_in_the_root_namespace_are_removed(self):
        self.bridge.get_datapath_type.return_value = 'netdev'
        devices = {}

        def ip_device(name, namespace=None):
            return devices.setdefault((name, namespace), mock.Mock())

        with mock.patch.object(openvswitch.ip_lib, 'get_links',
                               return_value={'qr-0123456789a': dict(UP)}) as get_links, \
                mock.patch.object(openvswitch.ip_lib, 'IPDevice', side_effect=ip_device), \
                self.assertLogs(openvswitch.LOG, 'WARNING'):
            stale = self.driver.remove_stale_devices(NAMESPACE, ['qg-0123456789b',
                                                                 'qr-0123456789a'])
        self.assertEqual({'qr-0123456789a'}, stale)
        get_links.assert_called_once_with(['qg-0123456789b', 'qr-0123456789a'])
        self.assertEqual([('qr-0123456789a', NAMESPACE)], list(devices))
        devices[('qr-0123456789a', NAMESPACE)].delete.assert_called_once_with()

    def test_kernel_datapath_devices_are_never_stale(self):
        self.bridge.get_datapath_type.return_value = 'system'
        with mock.patch.object(openvswitch.ip_lib, 'get_links') as get_links:
            self.assertEqual(set(), self.driver.remove_stale_devices(NAMESPACE, [DEVICE]))
        get_links.assert_not_called()  # no privileged call per router sync
