"""IpsetManager and the ipset daemon's pure parts: names, validation, memoisation.

Every privileged entrypoint is replaced by a mock; a test that expects a
refusal also asserts that no privileged call was made. The daemon-side
checks (which run again in root) and the netlink packing are pure and run
unmocked.
"""

import ipaddress
import subprocess
import sys
import uuid
from unittest import mock

import msgpack

from agentkit import exceptions
from agentkit.lib import ipset_manager
from agentkit.privileged import ipset as priv
from agentkit.privileged import network
from agentkit.privileged import nfnetlink as nfnl
from tests import base

ENTRYPOINTS = sorted(name for name, obj in vars(priv).items()
                     if network.is_entrypoint(obj))
SG = '3f8a4b7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b'

BAD_NAMES = [
    '', 'a' * 30, 'NIPv4abc-n', 'NIPv4abc-n-n', '-abc', '.abc', 'a b', 'a;b', 'a\nb',
    'a\0b', 'a/b', '../x', 'ab$c', 'é', None, 4, b'abc', ['abc'],
]
BAD_MEMBERS = [
    '10.0.0.1 -j ACCEPT', '10.0.0.1\n', ' 10.0.0.1', '10.0.0.1/33', '10.0.0', '010.0.0.1',
    'fe80::1%eth0', '10.0.0.1,10.0.0.2', 'example.com', '', 167772161, b'10.0.0.1', None,
    ['10.0.0.1'],
]


class ManagerTestCase(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.priv: dict[str, mock.MagicMock] = self.patch_entrypoints(priv)
        self.priv['replace_set'].return_value = True
        self.manager = ipset_manager.IpsetManager()

    def assert_refused(self, func, *args, **kwargs) -> Exception:
        for m in self.priv.values():
            m.reset_mock()
        e = self.assertRaises(ipset_manager.InvalidIpsetArgument, func, *args, **kwargs)
        self.assertIsInstance(e, ValueError)
        self.assertIsInstance(e, exceptions.AgentkitError)
        self.assertEqual([], [n for n, m in self.priv.items() if m.called],
                         'privileged call made despite invalid input')
        return e


class TestEntrypoints(ManagerTestCase):

    def test_all_entrypoints_found(self):
        self.assertEqual(['destroy_set', 'list_members', 'list_sets', 'replace_set'],
                         ENTRYPOINTS)

    def test_agent_side_does_not_import_pyroute2(self):
        # pyroute2 costs ~170 ms to import and is only needed in the daemon.
        code = ('import sys, agentkit.lib.ipset_manager, agentkit.lib.conntrack; '
                'sys.exit(any(m.startswith("pyroute2") for m in sys.modules))')
        subprocess.run([sys.executable, '-c', code], check=True, capture_output=True)


class TestNames(ManagerTestCase):

    def test_neutron_scheme(self):
        # Neutron: 'N' + 'IPv4' + id, cut to 31 - len('-n') characters.
        self.assertEqual('NIPv4' + SG[:24], self.manager.set_name(4, SG))
        self.assertEqual('NIPv6' + SG[:24], self.manager.set_name(6, SG))
        self.assertEqual(29, len(self.manager.set_name(4, SG)))
        self.assertEqual('NIPv4short', self.manager.set_name(4, 'short'))

    def test_custom_prefix(self):
        manager = ipset_manager.IpsetManager('akt1a2b')
        name = manager.set_name(4, SG)
        self.assertEqual('akt1a2b4' + SG[:21], name)
        self.assertEqual(priv.MAX_SET_NAME_LEN, len(name))

    def test_bad_prefixes(self):
        for prefix in ('', '4abc', 'a' * 9, 'a-b', 'a.b', 'a b', None, 'NIPv4\n'):
            self.assertRaises(ipset_manager.InvalidIpsetArgument,
                              ipset_manager.IpsetManager, prefix)

    def test_bad_group_ids_and_versions(self):
        for group_id in ('', ' x', 'a;b', 'a b', '-abc', 'x\n', None, 5):
            self.assert_refused(self.manager.set_name, 4, group_id)
        for version in (0, 5, '4', None, True):
            self.assert_refused(self.manager.set_name, version, SG)

    def test_truncation_ending_in_swap_suffix_refused(self):
        # 24th character of the id '-' then 'n': the name would end in '-n'.
        group_id = 'a' * 22 + '-n' + 'tail'
        self.assert_refused(self.manager.set_name, 4, group_id)

    def test_uuid_truncation_does_not_collide_in_practice(self):
        # 24 characters of a UUID4 keep 74 random bits; 20,000 distinct ids
        # (a large cloud's groups) all get distinct names.
        names = {self.manager.set_name(4, str(uuid.uuid4())) for _ in range(20000)}
        self.assertEqual(20000, len(names))
        # The longest allowed prefix still leaves 20 characters of the id.
        longest = ipset_manager.IpsetManager('a' * ipset_manager.MAX_PREFIX_LEN)
        self.assertEqual(20, len(longest.set_name(4, SG)) - ipset_manager.MAX_PREFIX_LEN - 1)

    def test_collision_is_detected(self):
        a = SG[:24] + 'aaaaaaaaaaaa'
        b = SG[:24] + 'bbbbbbbbbbbb'
        self.assertEqual(self.manager.set_name(4, a), self.manager.set_name(4, b))
        self.manager.set_members(4, a, ['10.0.0.1'])
        self.priv['replace_set'].reset_mock()
        self.assertRaises(ipset_manager.IpsetNameCollision,
                          self.manager.set_members, 4, b, ['10.0.0.2'])
        self.priv['replace_set'].assert_not_called()
        # The same group again is fine, and forget() releases the name.
        self.assertFalse(self.manager.set_members(4, a, ['10.0.0.1']))
        self.manager.forget(self.manager.set_name(4, a))
        self.assertTrue(self.manager.set_members(4, b, ['10.0.0.2']))


class TestDaemonNameChecks(base.TestCase):
    """The daemon re-checks names (runs unmocked: pure)."""

    def test_bad_names(self):
        for name in BAD_NAMES:
            self.assertRaises(priv.InvalidIpsetArgument, priv.check_name, name)

    def test_temporary_names(self):
        name = 'NIPv4' + SG[:24]
        temp = priv.temporary_name(name)
        self.assertEqual(name + '-n', temp)
        self.assertEqual(priv.MAX_NAME_LEN, len(temp))
        # A temporary name is never a valid set name...
        self.assertRaises(priv.InvalidIpsetArgument, priv.check_name, temp)
        self.assertRaises(priv.InvalidIpsetArgument, priv.temporary_name, temp)
        # ...but may be destroyed or listed (left over by an interruption).
        self.assertEqual(temp, priv.check_name(temp, allow_temporary=True))
        self.assertRaises(priv.InvalidIpsetArgument, priv.check_name, temp + '-n',
                          allow_temporary=True)

    def test_valid_names(self):
        for name in ('a', 'NIPv4' + SG[:24], 'akt_1.x-y', 'a' * 29):
            self.assertEqual(name, priv.check_name(name))


class TestMembers(ManagerTestCase):

    def test_normalisation(self):
        self.assertEqual(
            ['0.0.0.0/1', '10.0.0.0/24', '10.0.0.1/32', '128.0.0.0/1', '192.0.2.0/24'],
            priv.normalise_members(['10.0.0.1', '10.0.0.1/32', '10.0.0.5/24', '0.0.0.0/0',
                                    '192.0.2.0/255.255.255.0'], 4))
        self.assertEqual(['::/1', '2001:db8::1/128', '2001:db8:1::/64', '8000::/1'],
                         priv.normalise_members(['2001:DB8::1', '2001:db8:1::7/64', '::/0'],
                                                6))
        self.assertEqual([], priv.normalise_members([], 4))
        self.assertEqual(['10.0.0.1/32'], priv.normalise_members(iter(['10.0.0.1']), 4))

    def test_bad_members_refused_before_root(self):
        for member in BAD_MEMBERS:
            self.assert_refused(self.manager.set_members, 4, SG, [member])
        self.assert_refused(self.manager.set_members, 4, SG, ['2001:db8::1'])
        self.assert_refused(self.manager.set_members, 6, SG, ['10.0.0.1'])
        e = self.assert_refused(self.manager.set_members, 4, SG, '10.0.0.1')
        self.assertIn('must be a list', str(e))

    def test_daemon_rechecks_members(self):
        for member in BAD_MEMBERS:
            self.assertRaises(priv.InvalidIpsetArgument, priv.normalise_members, [member], 4)
        for members in ('10.0.0.1', b'10.0.0.1', None, 7, {'10.0.0.1': 1}):
            self.assertRaises(priv.InvalidIpsetArgument, priv._parse_members, members, 4)
        for version in (0, 5, '4', None, True, [4], 4.0):
            self.assertRaises(priv.InvalidIpsetArgument, priv._parse_members, [], version)

    def test_count_bounded(self):
        too_many = ['10.%d.%d.%d' % (i >> 16, (i >> 8) & 255, i & 255)
                    for i in range(priv.MAX_MEMBERS + 1)]
        self.assert_refused(self.manager.set_members, 4, SG, too_many)
        # /0 splits into two: MAX_MEMBERS - 1 others plus 0.0.0.0/0 is one too many.
        almost = too_many[:priv.MAX_MEMBERS - 1] + ['0.0.0.0/0']
        self.assertRaises(priv.InvalidIpsetArgument, priv.normalise_members, almost, 4)
        self.assertEqual(priv.MAX_MEMBERS,
                         len(priv.normalise_members(too_many[:priv.MAX_MEMBERS], 4)))


class TestMemoisation(ManagerTestCase):

    def test_unchanged_members_make_no_call(self):
        name = self.manager.set_name(4, SG)
        self.assertTrue(self.manager.set_members(4, SG, ['10.0.0.2', '10.0.0.1']))
        self.priv['replace_set'].assert_called_once_with(name, 4, ['10.0.0.1/32',
                                                                   '10.0.0.2/32'])
        self.priv['replace_set'].reset_mock()
        # Same members, other order and spelling: nothing crosses to root.
        self.assertFalse(self.manager.set_members(4, SG, ('10.0.0.1/32', '10.0.0.2')))
        self.assertFalse(self.manager.set_members(4, SG, {'10.0.0.2', '10.0.0.1'}))
        self.priv['replace_set'].assert_not_called()
        # Another family is another set.
        self.assertTrue(self.manager.set_members(6, SG, ['2001:db8::1']))
        self.priv['replace_set'].assert_called_once_with(
            self.manager.set_name(6, SG), 6, ['2001:db8::1/128'])

    def test_change_goes_to_root(self):
        self.manager.set_members(4, SG, ['10.0.0.1'])
        self.priv['replace_set'].return_value = True
        self.assertTrue(self.manager.set_members(4, SG, ['10.0.0.1', '10.0.0.3']))
        self.assertEqual(2, self.priv['replace_set'].call_count)
        # The daemon may find the kernel already right: False is passed on.
        self.priv['replace_set'].return_value = False
        self.assertFalse(self.manager.set_members(4, SG, []))

    def test_failure_is_not_remembered(self):
        self.priv['replace_set'].side_effect = priv.IpsetError(4099, 'creating ipset')
        self.assertRaises(priv.IpsetError, self.manager.set_members, 4, SG, ['10.0.0.1'])
        self.priv['replace_set'].side_effect = None
        self.assertTrue(self.manager.set_members(4, SG, ['10.0.0.1']))
        self.assertEqual(2, self.priv['replace_set'].call_count)

    def test_a_failed_change_forgets_the_previous_state(self):
        self.manager.set_members(4, SG, ['10.0.0.1'])
        self.priv['replace_set'].side_effect = priv.IpsetError(4352, 'adding')
        self.assertRaises(priv.IpsetError, self.manager.set_members, 4, SG, ['10.0.0.2'])
        self.priv['replace_set'].side_effect = None
        # The kernel may hold either content now: asking for the old one must go to root.
        self.manager.set_members(4, SG, ['10.0.0.1'])
        self.assertEqual(3, self.priv['replace_set'].call_count)

    def test_forget_and_reset(self):
        name = self.manager.set_name(4, SG)
        self.manager.set_members(4, SG, ['10.0.0.1'])
        self.manager.forget(name)
        self.manager.set_members(4, SG, ['10.0.0.1'])
        self.manager.reset()
        self.manager.set_members(4, SG, ['10.0.0.1'])
        self.assertEqual(3, self.priv['replace_set'].call_count)


class TestDestroyUnused(ManagerTestCase):

    def test_destroys_only_unknown_sets_of_the_prefix(self):
        keep = self.manager.set_name(4, SG)
        gone = self.manager.set_name(4, 'old-group')
        busy = self.manager.set_name(6, 'busy-group')
        self.manager.set_members(4, 'old-group', ['10.0.0.1'])
        self.priv['list_sets'].return_value = [keep, keep + '-n', gone, busy, busy + '-n',
                                               'NIPvbad name']

        def destroy(name):
            if name == busy:
                raise priv.IpsetInUse(name)
            if name == 'NIPvbad name':
                raise priv.InvalidIpsetArgument('invalid')
            return True

        self.priv['destroy_set'].side_effect = destroy
        self.assertEqual({gone, busy + '-n'}, self.manager.destroy_unused({keep}))
        self.priv['list_sets'].assert_called_once_with('NIPv')
        self.assertEqual([mock.call(gone), mock.call(busy), mock.call(busy + '-n'),
                          mock.call('NIPvbad name')],
                         self.priv['destroy_set'].call_args_list)
        self.assertIn('still referenced', self.log.output)
        # The destroyed set is forgotten: setting it again goes to root.
        self.priv['replace_set'].reset_mock()
        self.manager.set_members(4, 'old-group', ['10.0.0.1'])
        self.priv['replace_set'].assert_called_once()


class TestPacking(base.TestCase):
    """What the daemon sends and parses, against hand-made netlink bytes."""

    def test_entry_round_trip(self):
        for cidr in ('10.0.0.1/32', '10.1.0.0/16', '2001:db8::1/128', '2001:db8::/32'):
            net = ipaddress.ip_network(cidr)
            packed = priv._pack_entry(net)
            self.assertEqual(0, len(packed) % 4)
            ((atype, payload),) = list(nfnl.iter_attrs(packed))
            self.assertEqual(priv._ATTR_DATA, atype)
            key, nomatch = priv._entry_key(payload)
            self.assertEqual(priv._net_key(net), key)
            self.assertFalse(nomatch)

    def test_ipv4_entry_bytes(self):
        # Same bytes as pyroute2's ipset_msg encodes (checked once by hand).
        self.assertEqual('180007800c000180080001400a0000010500034020000000',
                         priv._pack_entry(ipaddress.ip_network('10.0.0.1/32')).hex())

    def test_parse_list(self):
        entries = b''.join(priv._pack_entry(ipaddress.ip_network(c))
                           for c in ('10.0.0.1/32', '10.1.0.0/16'))
        nomatch = nfnl.attr(priv._ATTR_DATA, nfnl.attr(
            priv._ATTR_IP, nfnl.attr(1, bytes([10, 9, 0, 0]), net_byteorder=True),
            nested=True) + nfnl.attr(priv._ATTR_CIDR, b'\x10')
            + nfnl.attr(priv._ATTR_CADT_FLAGS, b'\0\0\0\x04'), nested=True)
        raw = (nfnl.attr(priv._ATTR_SETNAME, b'x\0') + nfnl.attr(priv._ATTR_TYPENAME,
                                                                 b'hash:net\0')
               + nfnl.attr(priv._ATTR_FAMILY, b'\x02')
               + nfnl.attr(priv._ATTR_ADT, entries, nested=True))
        content = priv._parse_list([raw, nfnl.attr(priv._ATTR_ADT, nomatch, nested=True)])
        self.assertEqual('hash:net', content.type)
        self.assertEqual(2, content.family)
        self.assertEqual({(bytes([10, 0, 0, 1]), 32), (bytes([10, 1, 0, 0]), 16)},
                         content.members)
        self.assertTrue(content.foreign)  # the nomatch entry forces a rewrite

    def test_compatibility_check(self):
        content = priv._SetContent()
        content.type, content.family = 'hash:ip', 2
        e = self.assertRaises(priv.IpsetIncompatible, priv._check_compatible, 'x', content, 4)
        self.assertIn('hash:ip set of family inet', str(e))
        content.type = 'hash:net'
        priv._check_compatible('x', content, 4)
        self.assertRaises(priv.IpsetIncompatible, priv._check_compatible, 'x', content, 6)

    def test_truncated_attribute_ends_the_walk(self):
        good = nfnl.attr(1, b'abcd')
        self.assertEqual([(1, b'abcd')], list(nfnl.iter_attrs(good + b'\x10\x00\x02\x00ab')))


class TestExceptions(base.TestCase):
    """Errors must survive privsep: it re-raises ``cls(*args)`` after msgpack."""

    def test_round_trip(self):
        for exc in (priv.IpsetError(4352, 'adding 3 members to ipset x'),
                    priv.IpsetError(1, 'creating ipset x'),
                    priv.IpsetNotFound('x'), priv.IpsetInUse('x'),
                    priv.IpsetIncompatible('x', 'it is a hash:ip set'),
                    priv.InvalidIpsetArgument('invalid ipset name')):
            args = msgpack.unpackb(msgpack.packb(exc.args), use_list=False)
            again = type(exc)(*args)
            self.assertEqual(str(exc), str(again))
            self.assertIsInstance(again, exceptions.AgentkitError)

    def test_messages(self):
        self.assertIn('hash is full', str(priv.IpsetError(4352, 'adding')))
        self.assertIn('Operation not permitted', str(priv.IpsetError(1, 'creating')))
        self.assertIn('still referenced', str(priv.IpsetInUse('x')))
        self.assertIs(ipset_manager.IpsetInUse, priv.IpsetInUse)
