"""linuxbridge mechanism driver against an in-memory host: which devices and
FDB entries it leaves behind, not which calls it makes."""

import uuid
from typing import Any
from unittest import mock

from agentkit.api import driver as driver_api
from agentkit.api import mechanism
from agentkit.api import type_driver
from agentkit.conf import l2 as l2_conf
from agentkit.lib import ip_lib
from drivers.linuxbridge import mech_driver
from tests import base

LOCAL_IP = '192.0.2.1'
ZERO = ip_lib.ZERO_MAC


class FakeHost:
    """Links and VXLAN FDB tables of one host, behind ip_lib's API."""

    def __init__(self, vlan_supported: bool = True) -> None:
        self.links: dict[str, dict[str, Any]] = {}
        self.fdb: dict[str, list[tuple[str, str]]] = {}
        self.vlan_supported = vlan_supported

    def add_link(self, name: str, kind: str | None = None, **attrs: Any) -> None:
        self.links[name] = {'name': name, 'kind': kind, 'master': None,
                            'mtu': 1500, 'state': 'down', **attrs}

    # module-level ip_lib functions
    def device_exists(self, name: str, namespace: str | None = None) -> bool:
        return name in self.links

    def list_links(self, namespace: str | None = None,
                   kind: str | None = None) -> list[dict[str, Any]]:
        return [dict(link) for link in self.links.values()
                if kind is None or link['kind'] == kind]

    def list_fdb_entries(self, device: str, namespace: str | None = None):
        if device not in self.links:
            raise ip_lib.NetworkInterfaceNotFound(device, namespace)
        return [{'mac': mac, 'dst': dst, 'device': device, 'permanent': True,
                 'self': True, 'master': False}
                for mac, dst in self.fdb.get(device, [])]

    def add_fdb_entry(self, device: str, mac: str, dst: str,
                      namespace: str | None = None, append: bool = True) -> None:
        if device not in self.links:
            raise ip_lib.NetworkInterfaceNotFound(device, namespace)
        entries = self.fdb.setdefault(device, [])
        if (mac, dst) not in entries:
            entries.append((mac, dst))

    def delete_fdb_entry(self, device: str, mac: str, dst: str | None = None,
                         namespace: str | None = None) -> bool:
        entries = self.fdb.get(device, [])
        keep = [(m, d) for m, d in entries if not (m == mac and d == dst)]
        self.fdb[device] = keep
        return len(keep) != len(entries)

    # objects
    def wrapper(self, namespace: str | None = None) -> 'FakeWrapper':
        return FakeWrapper(self)

    def device(self, name: str, namespace: str | None = None) -> 'FakeDevice':
        return FakeDevice(self, name)


class FakeWrapper:
    def __init__(self, host: FakeHost) -> None:
        self.host = host

    def add_bridge(self, name: str, exist_ok: bool = False, **kw: Any) -> 'FakeDevice':
        if name not in self.host.links:
            self.host.add_link(name, 'bridge')
        return FakeDevice(self.host, name)

    def add_vxlan(self, name: str, vni: int, local_ip: str | None = None,
                  dstport: int = 4789, mtu: int | None = None,
                  exist_ok: bool = False, **kw: Any) -> 'FakeDevice':
        self.host.add_link(name, 'vxlan', mtu=mtu or 1450,
                           vxlan={'vni': vni, 'local': local_ip, 'group': None,
                                  'port': dstport})
        return FakeDevice(self.host, name)

    def add_vlan(self, name: str, physical_device: str, vlan_id: int,
                 mtu: int | None = None, exist_ok: bool = False) -> 'FakeDevice':
        if not self.host.vlan_supported:
            raise ip_lib.VlanNotSupported(name, None)
        self.host.add_link(name, 'vlan')
        return FakeDevice(self.host, name)


class FakeDevice:
    def __init__(self, host: FakeHost, name: str) -> None:
        self.host = host
        self.name = name
        self.link = self

    @property
    def attributes(self) -> dict[str, Any]:
        return dict(self.host.links[self.name])

    @property
    def mtu(self) -> int:
        return self.host.links[self.name]['mtu']

    def set_mtu(self, mtu: int) -> None:
        self.host.links[self.name]['mtu'] = mtu

    def set_master(self, bridge: str) -> None:
        self.host.links[self.name]['master'] = bridge

    def set_nomaster(self) -> None:
        self.host.links[self.name]['master'] = None

    def set_up(self) -> None:
        self.host.links[self.name]['state'] = 'up'

    def disable_ipv6(self) -> None:
        self.host.links[self.name]['ipv6'] = False

    def exists(self) -> bool:
        return self.name in self.host.links

    def delete(self) -> bool:
        self.host.fdb.pop(self.name, None)
        return self.host.links.pop(self.name, None) is not None


class LinuxbridgeDriverTestBase(base.TestCase):

    def setUp(self):
        super().setUp()
        l2_conf.register_l2_opts(self.conf)
        driver_api.register_options(self.conf, mech_driver.OPTIONS)  # set below
        self.conf.set_override('local_ip', LOCAL_IP, 'l2')
        self.conf.set_override('physical_interface_mappings',
                               ['provider:eth1', 'long:enp0s31f6abcdef'],
                               'linux_bridge')
        self.host = FakeHost()
        self.host.add_link('eth1')
        for name in ('device_exists', 'list_links', 'list_fdb_entries',
                     'add_fdb_entry', 'delete_fdb_entry'):
            self._patch(name, getattr(self.host, name))
        self._patch('IPWrapper', self.host.wrapper)
        self._patch('IPDevice', self.host.device)
        self.driver = mech_driver.LinuxbridgeMechanismDriver(self.conf, 'h1')

    def _patch(self, name, new):
        patcher = mock.patch.object(mech_driver.ip_lib, name, new)
        patcher.start()
        self.addCleanup(patcher.stop)

    def plug(self, network_type, physnet=None, vlan_id=None, vni=None, mtu=None):
        """A tap on the host and the binding the agent would pass for it."""
        port_id = str(uuid.uuid4())
        tap = 'tap' + port_id[:11]
        self.host.add_link(tap, 'veth')
        details = {'mtu': mtu} if mtu is not None else {}
        return mechanism.PortBinding(
            port_id=port_id, network_id=str(uuid.uuid4()),
            mac_address='fa:16:3e:00:00:01', device=tap,
            segment=type_driver.SegmentRealisation(
                network_type, physnet, vlan_id,
                'vxlan' if network_type == 'vxlan' else None, vni),
            details=details)


class VxlanTest(LinuxbridgeDriverTestBase):

    def test_device_created_later_gets_every_known_peer(self):
        self.driver.tunnel_update('192.0.2.2', 'vxlan')
        self.driver.tunnel_update('192.0.2.3', 'vxlan')
        binding = self.plug('vxlan', vni=1001, mtu=1400)
        self.driver.wire_port(binding)
        vx = self.host.links['vxlan-1001']
        self.assertEqual(LOCAL_IP, vx['vxlan']['local'])
        self.assertEqual(1400, vx['mtu'])
        self.assertEqual([(ZERO, '192.0.2.2'), (ZERO, '192.0.2.3')],
                         self.host.fdb['vxlan-1001'])
        brq = 'brq' + binding.network_id[:11]
        self.assertEqual(brq, vx['master'])
        self.assertEqual(brq, self.host.links[binding.device]['master'])
        self.assertEqual(1400, self.host.links[binding.device]['mtu'])
        self.assertEqual('up', self.host.links[brq]['state'])
        # The host itself stays off the tenant network.
        self.assertFalse(self.host.links[brq]['ipv6'])
        self.assertFalse(vx['ipv6'])

    def test_peer_added_to_existing_devices_only_ours(self):
        self.driver.wire_port(self.plug('vxlan', vni=1001))
        # Not ours: another local address, or a multicast device.
        self.host.add_link('vxlan-7', 'vxlan',
                           vxlan={'local': '198.51.100.1', 'group': None})
        self.host.add_link('vxlan-8', 'vxlan',
                           vxlan={'local': LOCAL_IP, 'group': '239.1.1.1'})
        self.driver.tunnel_update('192.0.2.2', 'vxlan')
        self.driver.tunnel_update('192.0.2.2', 'vxlan')  # idempotent
        self.assertEqual([(ZERO, '192.0.2.2')], self.host.fdb['vxlan-1001'])
        self.assertNotIn('vxlan-7', self.host.fdb)
        self.assertNotIn('vxlan-8', self.host.fdb)

    def test_rewire_restores_a_missing_flood_entry(self):
        self.driver.tunnel_update('192.0.2.2', 'vxlan')
        binding = self.plug('vxlan', vni=1001)
        self.driver.wire_port(binding)
        self.host.fdb['vxlan-1001'] = []  # e.g. flushed by hand
        self.driver.wire_port(binding)
        self.assertEqual([(ZERO, '192.0.2.2')], self.host.fdb['vxlan-1001'])

    def test_ignores_own_address_other_types_and_garbage(self):
        self.driver.wire_port(self.plug('vxlan', vni=1001))
        self.driver.tunnel_update(LOCAL_IP, 'vxlan')
        self.driver.tunnel_update('192.0.2.9', 'gre')
        self.driver.tunnel_update('not-an-ip', 'vxlan')
        self.assertEqual(set(), self.driver.vxlan_peers)
        self.assertEqual([], self.host.fdb.get('vxlan-1001', []))

    def test_delete_removes_flood_and_learnt_entries_of_that_peer(self):
        for peer in ('192.0.2.2', '192.0.2.3'):
            self.driver.tunnel_update(peer, 'vxlan')
        self.driver.wire_port(self.plug('vxlan', vni=1001))
        self.host.fdb['vxlan-1001'].append(('fa:16:3e:aa:bb:cc', '192.0.2.2'))
        self.driver.tunnel_delete('192.0.2.2', 'vxlan')
        self.assertEqual([(ZERO, '192.0.2.3')], self.host.fdb['vxlan-1001'])
        self.assertEqual({'192.0.2.3'}, self.driver.vxlan_peers)
        # A device made after the delete does not get the gone peer back.
        self.driver.wire_port(self.plug('vxlan', vni=1002))
        self.assertEqual([(ZERO, '192.0.2.3')], self.host.fdb['vxlan-1002'])

    def test_mtu_follows_the_network(self):
        binding = self.plug('vxlan', vni=1001, mtu=1450)
        self.driver.wire_port(binding)
        self.driver.wire_port(self.plug('vxlan', vni=1001, mtu=1400))
        self.assertEqual(1400, self.host.links['vxlan-1001']['mtu'])

    def test_unusable_mtu_is_ignored(self):
        binding = self.plug('vxlan', vni=1001, mtu=True)
        self.driver.wire_port(binding)
        self.assertEqual(1500, self.host.links[binding.device]['mtu'])


class VlanAndFlatTest(LinuxbridgeDriverTestBase):

    def test_vlan_subinterface_enslaved(self):
        binding = self.plug('vlan', 'provider', 100)
        self.driver.wire_port(binding)
        self.assertEqual('brq' + binding.network_id[:11],
                         self.host.links['eth1.100']['master'])

    def test_vlan_without_8021q_is_a_segment_error_and_builds_nothing(self):
        self.host.vlan_supported = False
        binding = self.plug('vlan', 'provider', 100)
        exc = self.assertRaises(type_driver.InvalidSegment,
                                self.driver.wire_port, binding)
        self.assertIsInstance(exc, mech_driver.SegmentNotRealisable)
        self.assertIn('8021q', str(exc))
        self.assertIn('eth1.100', str(exc))
        self.assertNotIn('brq' + binding.network_id[:11], self.host.links)
        self.assertIsNone(self.host.links[binding.device]['master'])

    def test_unmapped_physnet_is_a_segment_error(self):
        for network_type, vid in (('flat', None), ('vlan', 5)):
            exc = self.assertRaises(
                mech_driver.SegmentNotRealisable, self.driver.wire_port,
                self.plug(network_type, 'elsewhere', vid))
            self.assertIn("'elsewhere'", str(exc))

    def test_flat_uses_the_mapped_nic(self):
        binding = self.plug('flat', 'provider', mtu=1500)
        self.driver.wire_port(binding)
        self.assertEqual('brq' + binding.network_id[:11],
                         self.host.links['eth1']['master'])
        self.assertNotIn('ipv6', self.host.links['eth1'])  # the operator's NIC

    def test_cleanup_deletes_what_it_made_and_releases_the_nic(self):
        flat = self.plug('flat', 'provider')
        self.driver.wire_port(flat)
        vlan = self.plug('vlan', 'provider', 7)
        self.driver.wire_port(vlan)
        for binding in (flat, vlan):
            del self.host.links[binding.device]
            self.driver.cleanup_network(binding.network_id)
            self.assertNotIn('brq' + binding.network_id[:11], self.host.links)
        self.assertIsNone(self.host.links['eth1']['master'])
        self.assertNotIn('eth1.7', self.host.links)

    def test_cleanup_keeps_a_bridge_with_taps(self):
        binding = self.plug('flat', 'provider')
        self.driver.wire_port(binding)
        self.driver.cleanup_network(binding.network_id)
        self.assertIn('brq' + binding.network_id[:11], self.host.links)


class NamingTest(base.TestCase):

    def test_vlan_subinterface_name(self):
        self.assertEqual('eth1.100', mech_driver.vlan_subinterface_name('eth1', 100))
        a = mech_driver.vlan_subinterface_name('enp0s31f6abcdef', 4094)
        b = mech_driver.vlan_subinterface_name('enp0s31f6abcdeg', 4094)
        self.assertEqual(15, len(a))
        self.assertTrue(a.endswith('.4094'))
        self.assertNotEqual(a, b)
        self.assertEqual(a, mech_driver.vlan_subinterface_name('enp0s31f6abcdef', 4094))
        ip_lib.validate_device_name(a)

    def test_bad_mappings_stop_the_agent(self):
        from agentkit import exceptions
        for entries in (['nocolon'], ['a:eth0', 'a:eth1'], [':eth0'],
                        ['a:eth0', 'b:eth0'], ['a:../x'], ['a:' + 'e' * 16]):
            err = self.assertRaises(exceptions.InvalidOptionValue,
                                    mech_driver.parse_interface_mappings, entries)
            # a bad option value: exit 2 naming the option, like the agent's own
            self.assertIn('[linux_bridge] physical_interface_mappings', str(err))
        self.assertEqual({'a': 'eth0', 'b': 'eth1'},
                         mech_driver.parse_interface_mappings(['a:eth0', ' b:eth1 ']))


class MulticastFakeHost(FakeHost):
    """A FakeHost whose VXLAN devices keep group and dev, with a local
    routing table (address -> interface) to find ``[l2] local_ip`` in."""

    def __init__(self) -> None:
        super().__init__()
        self.local_addresses: dict[str, str] = {}
        self.created: list[str] = []

    def list_routes(self, namespace: str | None = None, ip_version: int | None = None,
                    table: str | None = 'main', device: str | None = None):
        assert table == 'local', table
        routes = []
        for address, dev in self.local_addresses.items():
            ip = ip_lib.parse_ip(address)
            if ip_version in (None, ip.version):
                routes.append({'dst': f'{ip}/{ip.max_prefixlen}', 'device': dev,
                               'type': 'local', 'ip_version': ip.version})
                # What the kernel also lists in that table.
                routes.append({'dst': f'{ip}/{ip.max_prefixlen}', 'device': dev,
                               'type': 'broadcast', 'ip_version': ip.version})
        return routes

    def wrapper(self, namespace: str | None = None) -> 'MulticastFakeWrapper':
        return MulticastFakeWrapper(self)


class MulticastFakeWrapper(FakeWrapper):

    def add_vxlan(self, name: str, vni: int, local_ip: str | None = None,
                  group: str | None = None, dev: str | None = None,
                  dstport: int = 4789, mtu: int | None = None,
                  exist_ok: bool = False, **kw: Any) -> FakeDevice:
        if name in self.host.links:
            raise AssertionError(f'{name} exists: the driver must delete it first')
        self.host.created.append(name)
        self.host.add_link(name, 'vxlan', mtu=mtu or 1450,
                           vxlan={'vni': vni, 'local': local_ip, 'group': group,
                                  'dev': dev, 'port': dstport})
        return FakeDevice(self.host, name)


class MulticastVxlanTest(LinuxbridgeDriverTestBase):
    """``[vxlan] vxlan_group``: flooding to a multicast group, not to peers."""

    def setUp(self):
        super().setUp()
        self.host = MulticastFakeHost()
        self.host.add_link('eth1')
        self.host.add_link('underlay0')
        self.host.local_addresses = {'10.0.0.9': 'eth1', LOCAL_IP: 'underlay0'}
        for name in ('device_exists', 'list_links', 'list_fdb_entries',
                     'add_fdb_entry', 'delete_fdb_entry', 'list_routes'):
            self._patch(name, getattr(self.host, name))
        self._patch('IPWrapper', self.host.wrapper)
        self._patch('IPDevice', self.host.device)

    def make_driver(self, group='239.1.1.1'):
        self.conf.set_override('vxlan_group', group, 'vxlan')
        return mech_driver.LinuxbridgeMechanismDriver(self.conf, 'h1')

    def test_device_floods_to_the_group_on_the_local_ip_interface(self):
        driver = self.make_driver()
        driver.tunnel_update('192.0.2.2', 'vxlan')  # known, but not flooded to
        binding = self.plug('vxlan', vni=1001, mtu=1400)
        driver.wire_port(binding)
        vx = self.host.links['vxlan-1001']
        self.assertEqual({'vni': 1001, 'local': LOCAL_IP, 'group': '239.1.1.1',
                          'dev': 'underlay0', 'port': 4789}, vx['vxlan'])
        self.assertEqual(1400, vx['mtu'])
        self.assertEqual('brq' + binding.network_id[:11], vx['master'])
        # No unicast copies: a peer in the group would get every flood twice.
        self.assertEqual([], self.host.fdb.get('vxlan-1001', []))
        driver.tunnel_update('192.0.2.3', 'vxlan')
        self.assertEqual([], self.host.fdb.get('vxlan-1001', []))

    def test_cidr_gives_each_vni_its_own_group(self):
        self.assertEqual('239.0.3.233', mech_driver.vxlan_group_for(
            mech_driver.parse_vxlan_group('239.0.0.0/8', LOCAL_IP), 1001))
        # Only the host bits of the VNI: 70000 = 0x11170 in a /16.
        groups = mech_driver.parse_vxlan_group('239.1.0.0/16', LOCAL_IP)
        self.assertEqual('239.1.17.112', mech_driver.vxlan_group_for(groups, 70000))
        self.assertEqual('ff05::3e9', mech_driver.vxlan_group_for(
            mech_driver.parse_vxlan_group('ff05::/104', '2001:db8::1'), 1001))
        driver = self.make_driver('239.0.0.0/8')
        for vni in (1001, 1002):
            driver.wire_port(self.plug('vxlan', vni=vni))
        self.assertEqual(['239.0.3.233', '239.0.3.234'],
                         [self.host.links[f'vxlan-{v}']['vxlan']['group']
                          for v in (1001, 1002)])

    def test_device_of_other_settings_is_recreated_and_enslaved(self):
        driver = self.make_driver()
        binding = self.plug('vxlan', vni=1001)
        brq = 'brq' + binding.network_id[:11]
        # Left by a unicast run: no group, flood entries, in the bridge.
        self.host.add_link('vxlan-1001', 'vxlan', master=brq,
                           vxlan={'local': LOCAL_IP, 'group': None, 'dev': None})
        self.host.fdb['vxlan-1001'] = [(ZERO, '192.0.2.2')]
        driver.wire_port(binding)
        vx = self.host.links['vxlan-1001']
        self.assertEqual(('239.1.1.1', 'underlay0'),
                         (vx['vxlan']['group'], vx['vxlan']['dev']))
        self.assertEqual(brq, vx['master'])
        self.assertEqual([], self.host.fdb.get('vxlan-1001', []))
        # Another group (the option changed) is replaced the same way.
        driver = self.make_driver('239.2.2.2')
        driver.wire_port(binding)
        self.assertEqual('239.2.2.2', self.host.links['vxlan-1001']['vxlan']['group'])
        self.assertEqual(['vxlan-1001', 'vxlan-1001'], self.host.created)

    def test_matching_device_is_kept(self):
        driver = self.make_driver()
        driver.wire_port(self.plug('vxlan', vni=1001, mtu=1450))
        driver.wire_port(self.plug('vxlan', vni=1001, mtu=1400))
        self.assertEqual(['vxlan-1001'], self.host.created)
        self.assertEqual(1400, self.host.links['vxlan-1001']['mtu'])

    def test_device_follows_the_local_ip_to_another_interface(self):
        driver = self.make_driver()
        binding = self.plug('vxlan', vni=1001)
        driver.wire_port(binding)
        self.host.local_addresses[LOCAL_IP] = 'eth1'
        driver.wire_port(binding)
        self.assertEqual('eth1', self.host.links['vxlan-1001']['vxlan']['dev'])

    def test_missing_local_interface_is_retried_not_a_port_failure(self):
        del self.host.local_addresses[LOCAL_IP]
        driver = self.make_driver()
        driver.initialize()  # only a warning: the address may come later
        binding = self.plug('vxlan', vni=1001)
        exc = self.assertRaises(mech_driver.LocalInterfaceNotFound,
                                driver.wire_port, binding)
        self.assertNotIsInstance(exc, type_driver.InvalidSegment)
        self.assertIn(LOCAL_IP, str(exc))
        self.assertNotIn('vxlan-1001', self.host.links)
        self.assertNotIn('brq' + binding.network_id[:11], self.host.links)

    def test_bad_values_stop_the_agent(self):
        from agentkit import exceptions
        for group, why in (('not-an-address', 'not-an-address'),
                           ('10.0.0.1', 'not a multicast'),
                           ('239.0.0.0/3', 'not a multicast'),
                           ('ff05::1', 'same IP version')):
            exc = self.assertRaises(exceptions.InvalidConfiguration,
                                    self.make_driver, group)
            self.assertIn('[vxlan] vxlan_group', str(exc))
            self.assertIn(why, str(exc))
        self.conf.clear_override('local_ip', 'l2')
        exc = self.assertRaises(exceptions.InvalidConfiguration, self.make_driver)
        self.assertIn('[l2] local_ip', str(exc))

    def test_unset_option_keeps_unicast(self):
        driver = self.make_driver(None)
        driver.tunnel_update('192.0.2.2', 'vxlan')
        driver.wire_port(self.plug('vxlan', vni=1001))
        self.assertIsNone(self.host.links['vxlan-1001']['vxlan']['group'])
        self.assertEqual([(ZERO, '192.0.2.2')], self.host.fdb['vxlan-1001'])
