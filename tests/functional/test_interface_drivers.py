"""Both interface drivers plug real service ports that pass traffic."""

import subprocess

from agentkit import loader
from agentkit.api import interface as interface_api
from agentkit.conf import dhcp as dhcp_conf
from agentkit.lib import ip_lib
from agentkit.lib import timing
from agentkit.lib.ovs import connection as ovs_connection
from tests.functional import base


class InterfaceDriverTestMixin:
    driver_name = ''

    def setUp(self):
        super().setUp()
        self.bridge_name = self.short_name('akibr')
        self.configure(dhcp_conf.register_dhcp_opts, {
            'ovs': {'integration_bridge': self.bridge_name,
                    'datapath_type': 'netdev'}})
        self.driver = loader.load_driver(
            loader.INTERFACE_DRIVERS, self.driver_name,
            interface_api.InterfaceDriver, conf=self.conf, host=self.conf.host)
        self.driver.initialize()
        self.addCleanup(self.driver.stop)
        self.network_id = self.unique_id()

    def make_namespace(self):
        ns = self.short_name('akins')
        ip_lib.IPWrapper(ns).ensure_namespace()
        self.addCleanup(ip_lib.IPWrapper(ns).delete_namespace)
        return ns

    def plug(self, cidr, mac):
        ns = self.make_namespace()
        port_id = self.unique_id()
        device = self.driver.get_device_name(port_id)
        self.driver.plug(self.network_id, port_id, device, mac, ns, mtu=1450)
        self.addCleanup(self.driver.unplug, device, ns)
        self.driver.set_addresses(device, ns, [cidr])
        return ns, port_id, device

    def test_plug_configures_device_and_passes_traffic(self):
        ns1, port1, dev1 = self.plug('10.251.0.2/24', 'fa:16:3e:aa:00:01')
        ns2, _, _ = self.plug('10.251.0.3/24', 'fa:16:3e:aa:00:02')
        link = ip_lib.IPDevice(dev1, ns1).link.attributes
        self.assertEqual('fa:16:3e:aa:00:01', link['address'])
        self.assertEqual(1450, link['mtu'])
        self.assertEqual('up', link['state'])
        self.assertEqual(['10.251.0.2/24'],
                         [a['cidr'] for a in
                          ip_lib.IPDevice(dev1, ns1).addr.list(scope='global')])
        ping = subprocess.run(['ip', 'netns', 'exec', ns2, 'ping', '-c', '2',
                               '-W', '2', '-i', '0.2', '10.251.0.2'],
                              capture_output=True, text=True)
        self.assertEqual(0, ping.returncode, ping.stdout + ping.stderr)
        # Idempotent: plugging again changes nothing and keeps addresses.
        self.driver.plug(self.network_id, port1, dev1, 'fa:16:3e:aa:00:01', ns1,
                         mtu=1450)
        self.driver.set_addresses(dev1, ns1, ['10.251.0.2/24', '169.254.169.254/16'])
        self.assertEqual({'10.251.0.2/24', '169.254.169.254/16'},
                         {a['cidr'] for a in
                          ip_lib.IPDevice(dev1, ns1).addr.list(scope='global')})
        self.driver.set_addresses(dev1, ns1, ['10.251.0.4/24'])
        self.assertEqual(['10.251.0.4/24'],
                         [a['cidr'] for a in
                          ip_lib.IPDevice(dev1, ns1).addr.list(scope='global')])

    def privileged_calls(self) -> int:
        privsep = timing.LEDGER.snapshot().get(timing.PRIVSEP, {})
        return sum(int(entry['calls']) for entry in privsep.values())

    def test_replug_from_one_read_checks_without_writing(self):
        # What a restarted DHCP agent does per network: one read of the
        # namespace side, then plug and addresses checked against it.
        ns, port_id, dev = self.plug('10.251.4.2/24', 'fa:16:3e:aa:04:01')
        before = self.privileged_calls()
        state = self.driver.read_state(self.network_id, dev, ns)
        self.driver.plug(self.network_id, port_id, dev, 'fa:16:3e:aa:04:01', ns,
                         mtu=1450, current=state)
        self.driver.set_addresses(dev, ns, ['10.251.4.2/24'], current=state)
        # The one read (namespace side, and the bridge and tap for
        # linuxbridge): no write, and no device read twice.
        self.assertLessEqual(self.privileged_calls() - before, 1)
        # What the read shows out of place is put back: the device down
        # with another MAC, and its address gone.
        device = ip_lib.IPDevice(dev, ns)
        device.link.set_down()
        device.link.set_address('fa:16:3e:aa:04:99')
        device.addr.delete('10.251.4.2/24')
        state = self.driver.read_state(self.network_id, dev, ns)
        self.driver.plug(self.network_id, port_id, dev, 'fa:16:3e:aa:04:01', ns,
                         mtu=1450, current=state)
        self.driver.set_addresses(dev, ns, ['10.251.4.2/24'], current=state)
        link = device.link.attributes
        self.assertEqual(('fa:16:3e:aa:04:01', 1450, 'up'),
                         (link['address'], link['mtu'], link['state']))
        self.assertEqual(['10.251.4.2/24'],
                         [a['cidr'] for a in device.addr.list(scope='global')])

    def test_unplug_removes_device(self):
        ns, port_id, dev = self.plug('10.251.1.2/24', 'fa:16:3e:aa:01:01')
        self.driver.unplug(dev, ns)
        self.assertFalse(ip_lib.IPDevice(dev, ns).exists())
        self.driver.unplug(dev, ns)  # idempotent
        self.check_unplugged(port_id, dev)


class OVSInterfaceDriverTest(InterfaceDriverTestMixin, base.AgentTestCase):
    driver_name = 'openvswitch'

    def setUp(self):
        super().setUp()
        self.addCleanup(lambda: ovs_connection.get_connection(
            self.conf.ovs.ovsdb_connection).bridge(self.bridge_name).delete())

    def test_port_carries_neutron_external_ids(self):
        ns, port_id, dev = self.plug('10.251.2.2/24', 'fa:16:3e:aa:02:01')
        br = ovs_connection.get_connection(self.conf.ovs.ovsdb_connection).bridge(
            self.bridge_name)
        self.assertEqual('netdev', br.get_datapath_type())
        self.assertIn(dev, br.get_port_names())
        ids = br.get_interface_external_ids(dev)
        self.assertEqual({'iface-id': port_id, 'attached-mac': 'fa:16:3e:aa:02:01',
                          'iface-status': 'active'}, ids)

    def check_unplugged(self, port_id, dev):
        br = ovs_connection.get_connection(self.conf.ovs.ovsdb_connection).bridge(
            self.bridge_name)
        self.assertNotIn(dev, br.get_port_names())

    def test_an_existing_bridge_keeps_its_settings(self):
        # A DHCP/L3 agent whose [ovs] datapath_type differs from the L2
        # agent's (Neutron's files set it for the OVS agent only).
        self.conf.set_override('datapath_type', 'system', 'ovs')
        other = loader.load_driver(
            loader.INTERFACE_DRIVERS, self.driver_name,
            interface_api.InterfaceDriver, conf=self.conf, host=self.conf.host)
        other.initialize()
        self.addCleanup(other.stop)
        br = ovs_connection.get_connection(self.conf.ovs.ovsdb_connection).bridge(
            self.bridge_name)
        self.assertEqual('netdev', br.get_datapath_type())


class BridgeInterfaceDriverTest(InterfaceDriverTestMixin, base.AgentTestCase):
    driver_name = 'linuxbridge'

    def setUp(self):
        super().setUp()
        brq = ip_lib.IPDevice(f'brq{self.network_id[:11]}')
        self.addCleanup(lambda: brq.exists() and brq.delete())

    def test_tap_is_enslaved_to_network_bridge(self):
        ns, port_id, dev = self.plug('10.251.3.2/24', 'fa:16:3e:aa:03:01')
        self.assertTrue(dev.startswith('ns-'))
        tap = ip_lib.IPDevice('tap' + port_id[:11]).link.attributes
        self.assertEqual(f'brq{self.network_id[:11]}', tap['master'])
        self.assertEqual(1450, tap['mtu'])

    def test_replug_after_the_pair_was_deleted_rebuilds_it(self):
        ns, port_id, dev = self.plug('10.251.5.2/24', 'fa:16:3e:aa:05:01')
        ip_lib.IPDevice(dev, ns).delete()  # takes the tap with it
        state = self.driver.read_state(self.network_id, dev, ns)
        self.assertIsNone(state.link)
        self.driver.plug(self.network_id, port_id, dev, 'fa:16:3e:aa:05:01', ns,
                         mtu=1450, current=state)
        tap = ip_lib.IPDevice('tap' + port_id[:11]).link.attributes
        self.assertEqual((f'brq{self.network_id[:11]}', 'up'), (tap['master'], tap['state']))
        self.assertEqual('fa:16:3e:aa:05:01', ip_lib.IPDevice(dev, ns).link.address)

    def check_unplugged(self, port_id, dev):
        self.assertFalse(ip_lib.IPDevice('tap' + port_id[:11]).exists())
