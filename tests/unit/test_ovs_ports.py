"""The declarative port writer's pure part: specs, snapshots, differences."""

from agentkit import exceptions
from agentkit.lib.ovs import ports as ovs_ports
from tests import base

NET = '1b2c3d4e-5f60-4718-9abc-def012345678'


def state(name='p', bridge='br-int', type='patch', options=None, tag=None,
          protected=False, other_config=None, iface_id=None, external_ids=None,
          mtu_request=None):
    ids = {'iface-id': iface_id} if iface_id else {}
    return ovs_ports.PortState(
        name=name, bridge=bridge, type=type, options=options or {}, tag=tag,
        protected=protected, other_config=other_config or {},
        iface_external_ids={**ids, **(external_ids or {})}, mtu_request=mtu_request)


class DiffPortTest(base.TestCase):

    spec = ovs_ports.PortSpec('br-tun', 'vx1', 'vxlan',
                              {'remote_ip': '192.0.2.2', 'key': '5'}, tag=3,
                              protected=True, other_config={'net_uuid': NET})

    def current(self, **kw):
        values = dict(name='vx1', bridge='br-tun', type='vxlan',
                      options={'remote_ip': '192.0.2.2', 'key': '5'}, tag=3,
                      protected=True, other_config={'net_uuid': NET, 'foreign': 'x'})
        values.update(kw)
        return state(**values)

    def test_missing_or_elsewhere_is_created(self):
        self.assertTrue(ovs_ports.diff_port(self.spec, None).create)
        self.assertTrue(ovs_ports.diff_port(self.spec, self.current(bridge='br-x')).create)

    def test_matching_port_needs_nothing(self):
        self.assertFalse(ovs_ports.diff_port(self.spec, self.current()))

    def test_only_differing_columns(self):
        changes = ovs_ports.diff_port(self.spec, self.current(tag=9, protected=False))
        self.assertEqual({'tag': 3, 'protected': True}, changes.port)
        self.assertEqual({}, changes.iface)
        changes = ovs_ports.diff_port(self.spec, self.current(options={'remote_ip': 'x'}))
        self.assertEqual({'options': dict(self.spec.options)}, changes.iface)
        self.assertEqual({}, changes.port)

    def test_other_config_merged(self):
        changes = ovs_ports.diff_port(
            self.spec, self.current(other_config={'net_uuid': 'old', 'foreign': 'x'}))
        self.assertEqual({'net_uuid': NET, 'foreign': 'x'}, changes.port['other_config'])

    def test_untag(self):
        spec = ovs_ports.PortSpec('br-int', 'patch-tun', 'patch', {'peer': 'patch-int'},
                                  tag=None)
        changes = ovs_ports.diff_port(spec, state('patch-tun', tag=4,
                                                  options={'peer': 'patch-int'}))
        self.assertEqual({'tag': []}, changes.port)

    def test_spec_validated(self):
        self.assertRaises(exceptions.InvalidIdentifier, ovs_ports.PortSpec,
                          'br-int', 'x' * 16, 'patch', {'peer': 'y'})
        self.assertRaises(ValueError, ovs_ports.PortSpec, 'br-tun', 'vx', 'vxlan', {})
        self.assertRaises(ValueError, ovs_ports.PortSpec, 'br-int', 'p', 'patch',
                          {'peer': 'q'}, tag=5000)


class SpecOwnsOnlyWhatItStatesTest(base.TestCase):
    """A spec leaves unstated columns alone (an interface driver re-plugging
    its port must not undo the L2 agent's tag)."""

    def test_unstated_columns_are_kept(self):
        spec = ovs_ports.PortSpec('br-int', 'tapx', type='internal',
                                  external_ids={'iface-id': 'p'})
        current = state('tapx', type='internal', tag=7, protected=True,
                        other_config={'net_uuid': NET}, iface_id='p', mtu_request=1450)
        self.assertFalse(ovs_ports.diff_port(spec, current))

    def test_keep_versus_none_tag(self):
        current = state('tapx', type='', tag=7)
        self.assertFalse(ovs_ports.diff_port(
            ovs_ports.PortSpec('br-int', 'tapx', tag=ovs_ports.KEEP), current))
        self.assertEqual({'tag': []}, ovs_ports.diff_port(
            ovs_ports.PortSpec('br-int', 'tapx', tag=None), current).port)

    def test_external_ids_merged_and_mtu(self):
        spec = ovs_ports.PortSpec('br-int', 'tapx', external_ids={'attached-mac': 'm'},
                                  mtu_request=1400)
        changes = ovs_ports.diff_port(spec, state('tapx', iface_id='p', mtu_request=1500))
        self.assertEqual({'external_ids': {'iface-id': 'p', 'attached-mac': 'm'},
                          'mtu_request': 1400}, changes.iface)

    def test_map_values_normalised(self):
        spec = ovs_ports.PortSpec('br-int', 'p', other_config={'segmentation_id': 5,
                                                               'up': True})
        self.assertEqual({'segmentation_id': '5', 'up': 'true'}, spec.other_config)
        self.assertRaises(TypeError, ovs_ports.PortSpec, 'br-int', 'p',
                          external_ids={'a': None})
        self.assertRaises(ValueError, ovs_ports.PortSpec, 'br-int', 'p', mtu_request=10)

    def test_port_refs_skip_ports_on_no_bridge(self):
        self.assertEqual([('br-int', 'a')], ovs_ports.port_refs(
            [state('a'), state('b', bridge=None)]))
