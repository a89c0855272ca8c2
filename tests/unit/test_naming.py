"""Ids from neutron-server must never become unsafe device names or paths."""

import os
import uuid

import fixtures

from agentkit import exceptions
from agentkit.lib import naming
from tests import base

GOOD_IDS = [
    '00000000-0000-0000-0000-000000000000',
    'ffffffff-ffff-ffff-ffff-ffffffffffff',
    '3f2504e0-4f89-41d3-9a0c-0305e82c3301',
    str(uuid.uuid4()),
    str(uuid.uuid1()),
]

BAD_IDS = [
    None,
    '',
    ' ',
    42,
    b'3f2504e0-4f89-41d3-9a0c-0305e82c3301',
    ['3f2504e0-4f89-41d3-9a0c-0305e82c3301'],
    uuid.UUID('3f2504e0-4f89-41d3-9a0c-0305e82c3301'),  # an object, not a str
    '../x',
    '../../../../etc/passwd',
    '..',
    '.',
    'a b',
    'a/b',
    '/abs',
    'abc',
    '3F2504E0-4F89-41D3-9A0C-0305E82C3301',            # uppercase: rejected by design
    '3f2504e0-4f89-41d3-9a0c-0305E82c3301',            # one uppercase letter
    '3f2504e04f8941d39a0c0305e82c3301',                # no dashes (32 chars)
    '{3f2504e0-4f89-41d3-9a0c-0305e82c3301}',          # braces
    'urn:uuid:3f2504e0-4f89-41d3-9a0c-0305e82c3301',
    '3f2504e0-4f89-41d3-9a0c-0305e82c3301\n',          # trailing newline ($ trap)
    '3f2504e0-4f89-41d3-9a0c-0305e82c3301 ',
    ' 3f2504e0-4f89-41d3-9a0c-0305e82c330',
    '3f2504e0-4f89-41d3-9a0c-0305e82c33011',           # 37 chars
    '3f2504e0-4f89-41d3-9a0c-0305e82c330',             # 35 chars
    '3f2504e0-4f89-41d3-9a0c-0305e82c330g',            # non-hex
    '3f2504e0_4f89_41d3_9a0c_0305e82c3301',
    '3f2504e0-4f89-41d3-9a0c-0305e82c330\0',           # NUL
    '3f2504e0-4f89-41d3-9a0c-0305e82c330\u0661',       # ARABIC-INDIC DIGIT ONE
    '3f2504e0-4f89-41d3-9a0c-0305e82c330\uff41',       # FULLWIDTH a
    '\u00e9' * 36,
    '3f2504e0-4f89-41d3-9a0c-0305e82c33/1',
    '3f2504e0-4f89-41d3-9a0c-../../../../',
    'x' * 10000,
]


class TestValidateId(base.TestCase):

    def test_good_ids_pass_unchanged(self):
        for value in GOOD_IDS:
            self.assertEqual(value, naming.validate_id(value))
            self.assertTrue(naming.is_valid_id(value))

    def test_bad_ids_rejected(self):
        for value in BAD_IDS:
            self.assertFalse(naming.is_valid_id(value), value)
            self.assertRaises(exceptions.InvalidIdentifier, naming.validate_id, value)

    def test_invalid_identifier_is_a_value_error(self):
        self.assertRaises(ValueError, naming.validate_id, '../x')

    def test_message_names_kind_and_repr(self):
        exc = self.assertRaises(exceptions.InvalidIdentifier,
                                naming.validate_id, '../x', 'network')
        self.assertIn('network', str(exc))
        self.assertIn(repr('../x'), str(exc))

    def test_message_for_non_string_names_type(self):
        exc = self.assertRaises(exceptions.InvalidIdentifier, naming.validate_id, None, 'router')
        self.assertIn('router', str(exc))
        self.assertIn('NoneType', str(exc))

    def test_message_is_bounded_for_huge_values(self):
        exc = self.assertRaises(exceptions.InvalidIdentifier, naming.validate_id, 'y' * 100000)
        self.assertLess(len(str(exc)), 300)
        self.assertIn('100002 chars', str(exc))

    def test_newline_and_nul_are_visible_in_message(self):
        exc = self.assertRaises(exceptions.InvalidIdentifier, naming.validate_id,
                                GOOD_IDS[2][:-1] + '\0')
        self.assertIn('\\x00', str(exc))


class TestDeviceNames(base.TestCase):

    PORT = '3f2504e0-4f89-41d3-9a0c-0305e82c3301'

    def test_port_device_names(self):
        self.assertEqual('tap3f2504e0-4f', naming.tap_device_name(self.PORT))
        self.assertEqual('ns-3f2504e0-4f', naming.ns_device_name(self.PORT))
        self.assertEqual('qr-3f2504e0-4f', naming.router_interface_name(self.PORT))
        self.assertEqual('qg-3f2504e0-4f', naming.router_gateway_name(self.PORT))
        self.assertEqual('brq3f2504e0-4f', naming.bridge_name(self.PORT))

    def test_all_device_names_fit_ifnamsiz(self):
        builders = [naming.tap_device_name, naming.ns_device_name,
                    naming.router_interface_name, naming.router_gateway_name,
                    naming.bridge_name]
        for object_id in GOOD_IDS:
            for build in builders:
                name = build(object_id)
                self.assertLessEqual(len(name), naming.MAX_DEVICE_NAME_LEN, name)
                self.assertTrue(name.endswith(object_id[:11]))
        for vni in (1, 4096, 10 ** 7, naming.MAX_VXLAN_VNI):
            self.assertLessEqual(len(naming.vxlan_device_name(vni)), 15)

    def test_device_names_reject_bad_ids(self):
        for build in (naming.tap_device_name, naming.ns_device_name,
                      naming.router_interface_name, naming.router_gateway_name,
                      naming.bridge_name):
            for value in ('../x', 'a b', '', None, GOOD_IDS[2].upper()):
                self.assertRaises(exceptions.InvalidIdentifier, build, value)

    def test_bridge_error_names_network(self):
        exc = self.assertRaises(exceptions.InvalidIdentifier, naming.bridge_name, 'x')
        self.assertIn('network', str(exc))

    def test_vxlan_name(self):
        self.assertEqual('vxlan-1001', naming.vxlan_device_name(1001))
        self.assertEqual('vxlan-16777215', naming.vxlan_device_name(2 ** 24 - 1))
        for bad in (0, -1, 2 ** 24, '1001', None, True, 1.0):
            self.assertRaises(exceptions.InvalidIdentifier, naming.vxlan_device_name, bad)

    def test_namespaces(self):
        self.assertEqual('qdhcp-' + self.PORT, naming.dhcp_namespace(self.PORT))
        self.assertEqual('qrouter-' + self.PORT, naming.router_namespace(self.PORT))
        for bad in ('../x', '', 'a/b'):
            self.assertRaises(exceptions.InvalidIdentifier, naming.dhcp_namespace, bad)
            self.assertRaises(exceptions.InvalidIdentifier, naming.router_namespace, bad)


class TestSegmentationIds(base.TestCase):

    def test_vlan_range(self):
        for good in (1, 100, 4094):
            self.assertEqual(good, naming.validate_vlan_tag(good))
            self.assertEqual(good, naming.validate_segmentation_id('vlan', good))
        for bad in (0, 4095, -5, None, '100', False):
            self.assertRaises(exceptions.InvalidIdentifier, naming.validate_vlan_tag, bad)
            self.assertRaises(exceptions.InvalidIdentifier,
                              naming.validate_segmentation_id, 'vlan', bad)

    def test_vxlan_and_gre_ranges(self):
        self.assertEqual(2 ** 24 - 1, naming.validate_segmentation_id('vxlan', 2 ** 24 - 1))
        self.assertRaises(exceptions.InvalidIdentifier,
                          naming.validate_segmentation_id, 'vxlan', 2 ** 24)
        self.assertEqual(2 ** 32 - 1, naming.validate_segmentation_id('gre', 2 ** 32 - 1))
        self.assertRaises(exceptions.InvalidIdentifier,
                          naming.validate_segmentation_id, 'gre', 2 ** 32)
        self.assertRaises(exceptions.InvalidIdentifier,
                          naming.validate_segmentation_id, 'gre', 0)

    def test_unsegmented_types(self):
        self.assertIsNone(naming.validate_segmentation_id('flat', None))
        self.assertIsNone(naming.validate_segmentation_id('local', None))
        exc = self.assertRaises(exceptions.InvalidIdentifier,
                                naming.validate_segmentation_id, 'flat', 5)
        self.assertIn('flat', str(exc))

    def test_unknown_type_lists_known_ones(self):
        exc = self.assertRaises(exceptions.InvalidIdentifier,
                                naming.validate_segmentation_id, 'geneve-ish', 5)
        self.assertIn('vxlan', str(exc))
        self.assertRaises(exceptions.InvalidIdentifier,
                          naming.validate_segmentation_id, None, 5)
        self.assertRaises(exceptions.InvalidIdentifier,
                          naming.validate_segmentation_id, ['vlan'], 5)


class TestSafeJoin(base.TestCase):

    def setUp(self):
        super().setUp()
        self.base = self.useFixture(fixtures.TempDir()).path

    def test_joins_below_base(self):
        self.assertEqual(os.path.join(self.base, 'dhcp', 'x'),
                         naming.safe_join(self.base, 'dhcp', 'x'))
        self.assertEqual(os.path.join(self.base, 'a'),
                         naming.safe_join(self.base + '/', 'a'))

    def test_dhcp_state_dir(self):
        net = GOOD_IDS[2]
        self.assertEqual(os.path.join(self.base, 'dhcp', net),
                         naming.dhcp_state_dir(self.base, net))
        for bad in ('../x', '..', '/etc', 'a/../../b', ''):
            self.assertRaises(exceptions.InvalidIdentifier,
                              naming.dhcp_state_dir, self.base, bad)

    def test_escapes_refused(self):
        for parts in (('..',), ('../x',), ('a', '..', '..', 'b'), ('/etc/passwd',),
                      ('a/../../etc',), ('.',), ('a', '..'), ('x\0y',), ('',), (None,)):
            self.assertRaises(exceptions.InvalidIdentifier,
                              naming.safe_join, self.base, *parts)

    def test_inner_dotdot_that_stays_inside_is_fine(self):
        self.assertEqual(os.path.join(self.base, 'b'),
                         naming.safe_join(self.base, 'a/../b'))

    def test_prefix_sibling_is_not_inside(self):
        # /base-evil shares a string prefix with /base but is outside it.
        sibling = os.path.basename(self.base) + '-evil'
        self.assertRaises(exceptions.InvalidIdentifier,
                          naming.safe_join, self.base, '..', sibling)

    def test_symlink_escape_refused(self):
        outside = self.useFixture(fixtures.TempDir()).path
        os.symlink(outside, os.path.join(self.base, 'link'))
        self.assertRaises(exceptions.InvalidIdentifier,
                          naming.safe_join, self.base, 'link', 'x')

    def test_needs_parts_and_valid_base(self):
        self.assertRaises(exceptions.InvalidIdentifier, naming.safe_join, self.base)
        self.assertRaises(exceptions.InvalidIdentifier, naming.safe_join, '', 'a')
        self.assertRaises(exceptions.InvalidIdentifier, naming.safe_join, None, 'a')
