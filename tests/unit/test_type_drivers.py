from agentkit import exceptions
from agentkit.api import type_driver as api
from agentkit.conf import l2 as l2_conf
from drivers.type_drivers import flat
from drivers.type_drivers import tunnel
from drivers.type_drivers import vlan
from tests import base


class TypeDriverTestBase(base.TestCase):

    def setUp(self):
        super().setUp()
        l2_conf.register_l2_opts(self.conf)

    def seg(self, **kw):
        return api.Segment.from_dict(kw)


class SegmentTest(TypeDriverTestBase):

    def test_from_provider_keys(self):
        s = self.seg(**{'provider:network_type': 'vlan',
                        'provider:physical_network': 'physnet1',
                        'provider:segmentation_id': '101'})
        self.assertEqual(api.Segment('vlan', 'physnet1', 101), s)

    def test_rejects_garbage(self):
        for bad in ({}, {'network_type': ''}, {'network_type': 5},
                    {'network_type': 'vlan', 'segmentation_id': 'x'},
                    {'network_type': 'vlan', 'segmentation_id': True},
                    {'network_type': 'flat', 'physical_network': ['a']}):
            self.assertRaises(api.InvalidSegment, api.Segment.from_dict, bad)
        self.assertRaises(api.InvalidSegment, api.Segment.from_dict, 'vlan')


class FlatTest(TypeDriverTestBase):

    def test_any_physnet_by_default(self):
        drv = flat.FlatTypeDriver(self.conf, 'h')
        seg = self.seg(network_type='flat', physical_network='provider')
        drv.validate_segment(seg)
        self.assertEqual(api.SegmentRealisation('flat', 'provider'),
                         drv.realise(seg))

    def test_restricted_physnets(self):
        self.conf.set_override('flat_networks', ['a', 'b'], 'l2')
        drv = flat.FlatTypeDriver(self.conf, 'h')
        drv.validate_segment(self.seg(network_type='flat', physical_network='b'))
        e = self.assertRaises(api.InvalidSegment, drv.validate_segment,
                              self.seg(network_type='flat', physical_network='c'))
        self.assertIn("'c'", str(e))
        self.assertRaises(api.InvalidSegment, drv.validate_segment,
                          self.seg(network_type='flat'))
        self.assertRaises(api.InvalidSegment, drv.validate_segment,
                          self.seg(network_type='flat', physical_network='a',
                                   segmentation_id=3))


class VlanTest(TypeDriverTestBase):

    def test_ranges(self):
        self.conf.set_override('network_vlan_ranges',
                               ['phys1:100:199', 'phys2'], 'l2')
        drv = vlan.VlanTypeDriver(self.conf, 'h')
        ok = self.seg(network_type='vlan', physical_network='phys1',
                      segmentation_id=150)
        drv.validate_segment(ok)
        self.assertEqual(150, drv.realise(ok).vlan_id)
        drv.validate_segment(self.seg(network_type='vlan',
                                      physical_network='phys2',
                                      segmentation_id=4094))
        for bad in (dict(physical_network='phys1', segmentation_id=200),
                    dict(physical_network='phys3', segmentation_id=150),
                    dict(physical_network='phys2', segmentation_id=4095),
                    dict(physical_network='phys2'),
                    dict(segmentation_id=150)):
            self.assertRaises(api.InvalidSegment, drv.validate_segment,
                              self.seg(network_type='vlan', **bad))

    def test_bad_range_config_is_refused(self):
        for bad in (['phys1:200:100'], ['phys1:0:10'], ['phys1:a:b'], [':1:2'],
                    ['phys1:1']):
            self.conf.set_override('network_vlan_ranges', bad, 'l2')
            self.assertRaises(exceptions.InvalidConfiguration,
                              vlan.VlanTypeDriver, self.conf, 'h')


class TunnelTest(TypeDriverTestBase):

    def test_vxlan(self):
        self.conf.set_override('vni_ranges', ['1000:1999'], 'l2')
        drv = tunnel.VxlanTypeDriver(self.conf, 'h')
        seg = self.seg(network_type='vxlan', segmentation_id=1001)
        drv.validate_segment(seg)
        real = drv.realise(seg)
        self.assertTrue(real.is_tunnel)
        self.assertEqual(('vxlan', 1001), (real.tunnel_type, real.tunnel_key))
        self.assertRaises(api.InvalidSegment, drv.validate_segment,
                          self.seg(network_type='vxlan', segmentation_id=999))
        self.assertRaises(api.InvalidSegment, drv.validate_segment,
                          self.seg(network_type='vxlan', segmentation_id=1001,
                                   physical_network='p'))
        self.assertRaises(api.InvalidSegment, drv.validate_segment,
                          self.seg(network_type='gre', segmentation_id=1001))

    def test_gre_keys_are_32_bit(self):
        self.conf.set_override('tunnel_id_ranges', ['1:4294967295'], 'l2')
        drv = tunnel.GreTypeDriver(self.conf, 'h')
        drv.validate_segment(self.seg(network_type='gre',
                                      segmentation_id=2 ** 32 - 1))
        self.conf.set_override('tunnel_id_ranges', ['1:4294967296'], 'l2')
        self.assertRaises(exceptions.InvalidConfiguration,
                          tunnel.GreTypeDriver, self.conf, 'h')
