"""Pure logic of the openvswitch mechanism driver (no OVS needed)."""

import types
from typing import Any

from agentkit import exceptions
from agentkit.api import type_driver as api
from agentkit.conf import l2 as l2_conf
from agentkit.lib.ovs import errors as ovs_errors
from agentkit.lib.ovs import ports as ovs_ports
from drivers.openvswitch import adoption
from drivers.openvswitch import local_vlans
from drivers.openvswitch import mech_driver
from drivers.openvswitch import provider
from drivers.openvswitch import tunnels
from tests import base
from tests.unit.test_ovs_ports import state

NET = '1b2c3d4e-5f60-4718-9abc-def012345678'
FLAT = api.SegmentRealisation('flat', physical_network='physnet1')
VLAN = api.SegmentRealisation('vlan', physical_network='physnet1', vlan_id=101)
VXLAN = api.SegmentRealisation('vxlan', tunnel_type='vxlan', tunnel_key=1001)
GRE = api.SegmentRealisation('gre', tunnel_type='gre', tunnel_key=77)


class BridgeMappingsTest(base.TestCase):

    def test_parses_pairs(self):
        self.assertEqual({'physnet1': 'br-ex', 'p2': 'br-p2'},
                         provider.parse_bridge_mappings(['physnet1:br-ex', ' p2 : br-p2 ']))
        self.assertEqual({}, provider.parse_bridge_mappings([]))
        # Importable from the driver module as before.
        self.assertIs(provider.parse_bridge_mappings, mech_driver.parse_bridge_mappings)

    def test_rejects_bad_entries(self):
        for bad in (['physnet1'], ['physnet1:'], [':br-ex'],
                    ['a:br-ex', 'a:br-x'],           # physnet twice
                    ['a:br-ex', 'b:br-ex'],          # bridge shared by two physnets
                    ['a:br-name-longer-than-15'], ['a:br ex']):
            self.assertRaises(exceptions.InvalidConfiguration,
                              provider.parse_bridge_mappings, bad)


class ProviderTest(base.TestCase):

    def test_patch_names_fit_and_are_stable(self):
        int_name, phy_name = provider.patch_names(NET)
        self.assertEqual(('int-1b2c3d4e-5f', 'phy-1b2c3d4e-5f'), (int_name, phy_name))
        self.assertLessEqual(max(len(int_name), len(phy_name)), 15)

    def test_provider_tag(self):
        self.assertEqual(0, provider.provider_tag(FLAT))     # untagged
        self.assertEqual(101, provider.provider_tag(VLAN))
        for bad in (0, 4095, True):
            self.assertRaises(ValueError, provider.provider_tag,
                              api.SegmentRealisation('vlan', 'p', vlan_id=bad))

    def test_bridge_for(self):
        self.assertEqual('br-ex', provider.bridge_for(VLAN, {'physnet1': 'br-ex'}))
        e = self.assertRaises(provider.UnmappedPhysicalNetwork, provider.bridge_for,
                              VLAN, {'other': 'br-o'})
        self.assertIn('physnet1', str(e))

    def test_patch_specs_translate_local_to_provider_vlan(self):
        oc = local_vlans.port_other_config(NET, 5, VLAN)
        int_end, phy_end = provider.patch_specs(NET, VLAN, 5, 'br-int', 'br-ex', oc)
        self.assertEqual(('br-int', 5, {'peer': phy_end.name}),
                         (int_end.bridge, int_end.tag, dict(int_end.options)))
        self.assertEqual(('br-ex', 101, {'peer': int_end.name}),
                         (phy_end.bridge, phy_end.tag, dict(phy_end.options)))
        self.assertEqual(provider.ROLE_INT, int_end.other_config[ovs_ports.ROLE_KEY])
        self.assertEqual(provider.ROLE_PHY, phy_end.other_config[ovs_ports.ROLE_KEY])
        self.assertEqual(NET, phy_end.other_config['net_uuid'])
        self.assertFalse(int_end.protected)
        _, flat_phy = provider.patch_specs(NET, FLAT, 5, 'br-int', 'br-ex', oc)
        self.assertEqual(0, flat_phy.tag)


class TunnelsTest(base.TestCase):

    def test_port_name(self):
        name = tunnels.tunnel_port_name('vxlan', 1001, '192.0.2.1')
        self.assertEqual(15, len(name))
        self.assertTrue(name.startswith('vx'))
        self.assertEqual(name, tunnels.tunnel_port_name('vxlan', 1001, ' 192.0.2.1'))
        self.assertTrue(tunnels.tunnel_port_name('gre', 1001, '192.0.2.1').startswith('gr'))
        others = {tunnels.tunnel_port_name('vxlan', 1002, '192.0.2.1'),
                  tunnels.tunnel_port_name('vxlan', 1001, '192.0.2.2'),
                  tunnels.tunnel_port_name('gre', 1001, '192.0.2.1')}
        self.assertEqual(3, len(others))
        self.assertNotIn(name, others)
        # IPv6 in any spelling is one peer.
        self.assertEqual(tunnels.tunnel_port_name('gre', 1, '2001:db8::1'),
                         tunnels.tunnel_port_name('gre', 1, '2001:DB8:0::1'))
        self.assertRaises(ValueError, tunnels.tunnel_port_name, 'geneve', 1, '192.0.2.1')
        self.assertRaises(ValueError, tunnels.tunnel_port_name, 'gre', 1, 'not-an-ip')

    def test_vxlan_spec(self):
        spec = tunnels.tunnel_port_spec('br-tun', 'vxlan', 1001, 7, '192.0.2.1',
                                        '192.0.2.2', 4789, {'net_uuid': NET})
        self.assertEqual(('br-tun', 'vxlan', 7, True),
                         (spec.bridge, spec.type, spec.tag, spec.protected))
        self.assertEqual({'remote_ip': '192.0.2.2', 'local_ip': '192.0.2.1',
                          'key': '1001', 'dst_port': '4789'}, dict(spec.options))
        self.assertEqual({'net_uuid': NET, ovs_ports.ROLE_KEY: tunnels.ROLE_TUNNEL,
                          tunnels.REMOTE_IP_KEY: '192.0.2.2',
                          tunnels.TUNNEL_TYPE_KEY: 'vxlan'}, dict(spec.other_config))

    def test_gre_spec_has_no_udp_port(self):
        spec = tunnels.tunnel_port_spec('br-tun', 'gre', 77, 3, '192.0.2.1',
                                        '192.0.2.9', 4789, {})
        self.assertEqual({'remote_ip': '192.0.2.9', 'local_ip': '192.0.2.1', 'key': '77'},
                         dict(spec.options))
        self.assertRaises(ValueError, tunnels.tunnel_port_spec, 'br-tun', 'vxlan',
                          2 ** 24, 3, '192.0.2.1', '192.0.2.9', 4789, {})

    def test_int_tun_patch_is_a_trunk(self):
        int_end, tun_end = tunnels.int_tun_patch_specs('br-int', 'br-tun',
                                                       'patch-tun', 'patch-int')
        self.assertEqual((None, None), (int_end.tag, tun_end.tag))
        self.assertEqual({'peer': 'patch-int'}, dict(int_end.options))
        self.assertEqual('br-tun', tun_end.bridge)

    def test_peers(self):
        peers = tunnels.TunnelPeers()
        self.assertTrue(peers.add('vxlan', '192.0.2.2'))
        self.assertFalse(peers.add('vxlan', '192.0.2.2'))
        self.assertTrue(peers.add('vxlan', '192.0.2.1'))
        self.assertEqual(['192.0.2.1', '192.0.2.2'], peers.get('vxlan'))
        self.assertEqual([], peers.get('gre'))
        self.assertTrue(peers.remove('vxlan', '192.0.2.2'))
        self.assertFalse(peers.remove('vxlan', '192.0.2.2'))
        self.assertRaises(ValueError, peers.add, 'vxlan', 'x')


class AdoptionTest(base.TestCase):

    def test_recorded_vlans_come_from_wired_vm_ports_only(self):
        ports = [
            # unwired port of a gone network, recording a VLAN now n1's
            state('tap0', type='', tag=4095, iface_id='p0',
                  other_config={'net_uuid': 'old', 'tag': '3'}),
            state('tap1', type='', tag=3, iface_id='p1',
                  other_config={'net_uuid': 'n1', 'tag': '3'}),
            state('tap2', type='', tag=4095, iface_id='p2',
                  other_config={'net_uuid': 'n2', 'tag': '5'}),
            state('tap3', type='', iface_id='p3',
                  other_config={'net_uuid': 'n3', 'tag': 'x'}),       # garbage
            state('int-n4', tag=4, other_config={
                'net_uuid': 'n4', 'tag': '4', ovs_ports.ROLE_KEY: provider.ROLE_INT}),
        ]
        self.assertEqual({'n1': 3}, adoption.recorded_vlans(ports))

    def test_stale_wiring(self):
        live = state('int-a', other_config={'net_uuid': 'a',
                                            ovs_ports.ROLE_KEY: provider.ROLE_INT})
        dead_phy = state('phy-b', bridge='br-ex', other_config={
            'net_uuid': 'b', ovs_ports.ROLE_KEY: provider.ROLE_PHY})
        dead_tun = state('vx1', bridge='br-tun', other_config={
            'net_uuid': 'b', ovs_ports.ROLE_KEY: tunnels.ROLE_TUNNEL})
        trunk = state('patch-tun', other_config={
            ovs_ports.ROLE_KEY: tunnels.ROLE_INT_PATCH})
        nic = state('eth1', bridge='br-ex', type='')
        ports = [live, dead_phy, dead_tun, trunk, nic]
        self.assertEqual([dead_phy, dead_tun], adoption.stale_wiring(ports, {'a'}))
        self.assertEqual([dead_phy, dead_tun], adoption.network_wiring(ports, 'b'))

    def test_live_port_protects_network(self):
        ports = [state('tap1', type='', tag=3, iface_id='p1',
                       other_config={'net_uuid': 'n1', 'tag': '3'})]
        self.assertTrue(adoption.network_has_live_port(ports, 'n1', 3))
        self.assertFalse(adoption.network_has_live_port(ports, 'n1', None))
        ports = [state('tap1', type='', tag=local_vlans.DEAD_VLAN, iface_id='p1',
                       other_config={'net_uuid': 'n1', 'tag': '3'})]
        self.assertFalse(adoption.network_has_live_port(ports, 'n1', 3))


class LocalVlansTest(base.TestCase):

    def test_other_config(self):
        self.assertEqual({'net_uuid': NET, 'tag': '2', 'network_type': 'vlan',
                          'physical_network': 'physnet1', 'segmentation_id': '101'},
                         local_vlans.port_other_config(NET, 2, VLAN))
        self.assertEqual('', local_vlans.port_other_config(NET, 2, FLAT)['segmentation_id'])
        self.assertEqual('1001', local_vlans.port_other_config(NET, 2, VXLAN)['segmentation_id'])

    def test_wired_networks_and_segments(self):
        vlans = local_vlans.LocalVlanManager()
        vlans.restore('restored', 7)
        vlan = vlans.get_or_allocate(NET, VXLAN)
        self.assertNotEqual(7, vlan)
        self.assertEqual([(NET, vlan, VXLAN)], vlans.wired_networks())
        self.assertIsNone(vlans.segment('restored'))
        self.assertEqual(7, vlans.get_or_allocate('restored', FLAT))
        vlans.release(NET)
        self.assertIsNone(vlans.segment(NET))


class DriverTest(base.TestCase):
    """Configuration checks and which ports a segment needs."""

    def setUp(self):
        super().setUp()
        l2_conf.register_l2_opts(self.conf)

    def driver(self, **l2):
        for key, value in l2.items():
            self.conf.set_override(key, value, 'l2')
        drv = mech_driver.OpenvswitchMechanismDriver(self.conf, 'host')
        drv.br_int = types.SimpleNamespace(name='br-int')
        if drv.tunnel_types:
            drv.br_tun = types.SimpleNamespace(name='br-tun')
        return drv

    def test_tunnel_options_have_neutron_defaults(self):
        self.assertEqual('br-tun', self.conf.ovs.tunnel_bridge)
        self.assertEqual('patch-tun', self.conf.ovs.int_peer_patch_port)
        self.assertEqual('patch-int', self.conf.ovs.tun_peer_patch_port)

    def test_config_errors(self):
        self.assertRaises(exceptions.InvalidConfiguration, self.driver,
                          tunnel_types=['geneve'], local_ip='192.0.2.1')
        self.assertRaises(exceptions.InvalidConfiguration, self.driver,
                          bridge_mappings=['physnet1:br-int'])
        self.conf.set_override('tunnel_bridge', 'br-int', 'ovs')
        self.assertRaises(exceptions.InvalidConfiguration, self.driver,
                          tunnel_types=['vxlan'], local_ip='192.0.2.1')
        self.conf.set_override('tunnel_bridge', 'br-tun', 'ovs')
        self.conf.set_override('tun_peer_patch_port', 'patch-tun', 'ovs')
        self.assertRaises(exceptions.InvalidConfiguration, self.driver,
                          tunnel_types=['vxlan'], local_ip='192.0.2.1')

    def test_provider_segments_need_a_patch_pair(self):
        drv = self.driver(bridge_mappings=['physnet1:br-ex'])
        oc = local_vlans.port_other_config(NET, 4, VLAN)
        specs, old = drv._network_wiring(NET, VLAN, 4, oc, True)
        self.assertEqual([('br-int', 'int-1b2c3d4e-5f', 4), ('br-ex', 'phy-1b2c3d4e-5f', 101)],
                         [(s.bridge, s.name, s.tag) for s in specs])
        self.assertEqual([], old)
        # An unmapped physical network is wired on this host only.
        other = api.SegmentRealisation('flat', physical_network='elsewhere')
        self.assertEqual(([], []), drv._network_wiring(NET, other, 4, oc, True))

    def test_tunnel_segments_need_a_port_per_peer(self):
        drv = self.driver(tunnel_types=['vxlan'], local_ip='192.0.2.1')
        oc = local_vlans.port_other_config(NET, 6, VXLAN)
        self.assertEqual(([], []), drv._network_wiring(NET, VXLAN, 6, oc, False))
        drv.peers.add('vxlan', '192.0.2.2')
        drv.peers.add('vxlan', '192.0.2.3')
        drv.peers.add('gre', '192.0.2.4')
        specs, _ = drv._network_wiring(NET, VXLAN, 6, oc, False)
        self.assertEqual({'192.0.2.2', '192.0.2.3'}, {s.options['remote_ip'] for s in specs})
        self.assertEqual({6}, {s.tag for s in specs})
        # gre is not terminated here: local wiring only.
        self.assertEqual(([], []), drv._network_wiring(NET, GRE, 6, oc, False))

    def test_port_name_from_the_monitor_checked_by_name_not_by_scan(self):
        drv = self.driver()
        rows = {'tapa': {'iface-id': 'a'}, 'tapb': {'iface-id': 'b'}}
        scans = []

        def external_ids(name):
            if name not in rows:
                raise ovs_errors.OvsdbNotFound(name)
            return rows[name]

        def listing():
            scans.append(1)
            return [types.SimpleNamespace(iface_id=ids['iface-id'], name=name)
                    for name, ids in rows.items()]
        drv.br_int = types.SimpleNamespace(name='br-int', get_interface_external_ids=external_ids,
                                           list_interfaces_with_iface_id=listing)
        self.assertEqual({'a', 'b'}, set(drv._index_port_names()))
        drv._watcher = object()  # the device monitor runs
        self.assertEqual('tapa', drv._port_name('a'))
        self.assertIsNone(drv._port_name('never-plugged'))
        self.assertEqual(1, len(scans))  # neither answer read the bridge again
        # The row was replugged under another name: the stale name is
        # detected and the bridge read once.
        rows['tapa2'] = rows.pop('tapa')
        self.assertEqual('tapa2', drv._port_name('a'))
        self.assertEqual(2, len(scans))
        del rows['tapb']
        self.assertIsNone(drv._port_name('b'))

    def test_configurations_for_ml2(self):
        drv = self.driver(bridge_mappings=['physnet1:br-ex'])
        conf = drv.get_configurations()
        self.assertEqual({'physnet1': 'br-ex'}, conf['bridge_mappings'])
        self.assertIn('vxlan', conf['ovs_capabilities']['iface_types'])
        self.assertFalse(conf['l2_population'])


class HybridPlugReportTest(base.TestCase):
    """``ovs_hybrid_plug`` follows the firewall the agent will load (no OVS needed)."""

    def configurations(self, firewall_driver: str, enabled: bool) -> dict[str, Any]:
        l2_conf.register_l2_opts(self.conf)
        self.conf.set_override('firewall_driver', firewall_driver, 'securitygroup')
        self.conf.set_override('enable_security_group', enabled, 'securitygroup')
        drv = mech_driver.OpenvswitchMechanismDriver(self.conf, 'h1')
        return drv.get_configurations()

    def test_iptables_hybrid_asks_for_hybrid_plug(self) -> None:
        self.assertIs(True, self.configurations('iptables_hybrid', True)['ovs_hybrid_plug'])

    def test_no_hybrid_plug_without_an_iptables_firewall(self) -> None:
        # Security groups off: the agent loads noop whatever the option says.
        self.assertIs(False, self.configurations('iptables_hybrid', False)['ovs_hybrid_plug'])
        self.assertIs(False, self.configurations('noop', True)['ovs_hybrid_plug'])
