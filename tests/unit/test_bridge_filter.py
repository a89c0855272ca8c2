"""ARP/MAC anti-spoofing: the nft ruleset renderer, its validation, and the model.

The renderer (:func:`agentkit.privileged.nftables.render_bridge_table`) is
pure, so the exact ``nft -f`` input is pinned here; that it means what it
says is proven with real frames in ``tests/functional/test_bridge_filter.py``.
The privileged entrypoints run in-process (privsep client mode off) with
the nft execution mocked.
"""

from __future__ import annotations

import threading
from unittest import mock

import fixtures
import msgpack

from agentkit import exceptions
from agentkit import privileged
from agentkit.lib import bridge_filter as bf
from agentkit.privileged import nftables as priv
from agentkit.privileged import tool_exec
from tests import base

TABLE = 'agentkit-test'
TAP = 'tap1a2b3c4d-5e'
MAC = 'fa:16:3e:11:22:33'

HEADER = ('table bridge agentkit-test {}\n'
          'delete table bridge agentkit-test\n'
          'table bridge agentkit-test {\n'
          '\tcomment "agentkit ARP/MAC anti-spoofing of VM ports; replaced as a whole, '
          'do not edit"\n')

# Indented with four spaces here; the renderer uses tabs like ``nft list``.
SAMPLE = HEADER + '''\
    set ports {
        type ifname
        elements = {
            "tap1a2b3c4d-5e",
        }
    }
    set macs {
        type ifname . ether_addr
        elements = {
            "tap1a2b3c4d-5e" . fa:16:3e:11:22:33,
            "tap1a2b3c4d-5e" . fa:16:3e:aa:bb:cc,
            "tap1a2b3c4d-5e" . fa:16:3e:dd:ee:ff,
        }
    }
    set arp-senders {
        type ifname . ether_addr . ipv4_addr
        flags interval
        elements = {
            "tap1a2b3c4d-5e" . fa:16:3e:11:22:33 . 10.0.0.5,
            "tap1a2b3c4d-5e" . fa:16:3e:11:22:33 . 10.0.0.100,
            "tap1a2b3c4d-5e" . fa:16:3e:aa:bb:cc . 192.168.7.0/24,
        }
    }
    chain prerouting {
        type filter hook prerouting priority -200; policy accept;
        iifname @ports jump guard
    }
    chain guard {
        iifname . ether saddr != @macs counter drop
        ether type { ip, ip6 } accept
        arp htype 1 arp ptype ip arp hlen 6 arp plen 4 \
iifname . arp saddr ether . arp saddr ip @arp-senders accept
        arp htype 1 arp ptype ip arp hlen 6 arp plen 4 \
arp saddr ip 0.0.0.0 iifname . arp saddr ether @macs accept
        counter drop
    }
}
'''.replace('    ', '\t')


def sample_guard(device: str = TAP) -> bf.PortGuard:
    """The port MAC twice (merged), a MAC in upper case, a MAC without IPv4."""
    return bf.PortGuard(device, (
        (MAC, ('10.0.0.5',)),
        (MAC, ('10.0.0.100',)),
        ('FA:16:3E:AA:BB:CC', ('192.168.7.0/24',)),
        ('fa:16:3e:dd:ee:ff', ())))


def msgpack_round_trip(value: object) -> object:
    """What the privsep daemon receives: lists become tuples."""
    return msgpack.unpackb(msgpack.packb(value), use_list=False)


class RenderTest(base.TestCase):
    """The exact nft input, and that it is canonical."""

    def test_port_with_fixed_ips_and_address_pairs(self) -> None:
        guard = sample_guard()
        self.assertEqual(
            (('fa:16:3e:11:22:33', ('10.0.0.5/32', '10.0.0.100/32')),
             ('fa:16:3e:aa:bb:cc', ('192.168.7.0/24',)),
             ('fa:16:3e:dd:ee:ff', ())), guard.allowed)
        self.assertEqual(SAMPLE, priv.render_bridge_table(TABLE, [guard.to_primitive()]))

    def test_no_ports_is_an_empty_table_without_hook(self) -> None:
        self.assertEqual(HEADER + '}\n', priv.render_bridge_table(TABLE, []))
        self.assertEqual(HEADER + '}\n', priv.render_bridge_table(TABLE, ()))

    def test_privsep_tuples_render_the_same(self) -> None:
        ports = [sample_guard().to_primitive(), sample_guard('tap2').to_primitive()]
        self.assertEqual(priv.render_bridge_table(TABLE, ports),
                         priv.render_bridge_table(TABLE, msgpack_round_trip(ports)))

    def test_normalisation(self) -> None:
        # Same MAC twice, overlapping prefixes, host bits, upper case, order.
        messy = ['tap1', [['FA:16:3E:00:00:01', ['10.1.0.7/16', '10.0.0.9']],
                          ['fa:16:3e:00:00:02', []],
                          ['fa:16:3e:00:00:01', ['10.1.2.3', '10.0.0.8/31']]]]
        self.assertEqual(
            ('tap1', (('fa:16:3e:00:00:01', ('10.0.0.8/31', '10.1.0.0/16')),
                      ('fa:16:3e:00:00:02', ()))),
            priv.normalize_port(messy))
        # Ports come out sorted by device whatever the input order.
        a, b = ['tapb', [[MAC, []]]], ['tapa', [[MAC, []]]]
        self.assertEqual(priv.render_bridge_table(TABLE, [a, b]),
                         priv.render_bridge_table(TABLE, [b, a]))
        text = priv.render_bridge_table(TABLE, [messy])
        self.assertIn('"tap1" . fa:16:3e:00:00:01 . 10.0.0.8/31,\n', text)
        self.assertIn('"tap1" . fa:16:3e:00:00:01 . 10.1.0.0/16,\n', text)
        self.assertNotIn('10.1.2.3', text)

    def test_port_without_ipv4_has_no_arp_elements(self) -> None:
        text = priv.render_bridge_table(TABLE, [['tap1', [[MAC, []]]]])
        self.assertIn('\tset arp-senders {\n\t\ttype ifname . ether_addr . ipv4_addr\n'
                      '\t\tflags interval\n\t}\n', text)

    def test_any_address_pair(self) -> None:
        # Neutron allows 0.0.0.0/0 pairs: the MAC may then claim any IPv4.
        guard = bf.PortGuard('tap1', ((MAC, ('10.0.0.5',)), (MAC, ('0.0.0.0/0',))))
        self.assertEqual(((MAC, ('0.0.0.0/0',)),), guard.allowed)
        self.assertIn('"tap1" . %s . 0.0.0.0/0,' % MAC,
                      priv.render_bridge_table(TABLE, [guard.to_primitive()]))


class ValidationTest(base.TestCase):
    """Nothing but checked, canonical values ever reaches the nft text."""

    def assert_bad_port(self, port: object) -> None:
        self.assertRaises(priv.InvalidGuardValue, priv.render_bridge_table, TABLE, [port])

    def test_table_names(self) -> None:
        for good in ('agentkit', 'agentkit-antispoof', 'agentkit-t-1a2b3c'):
            self.assertEqual(good, priv.check_table_name(good))
        for bad in ('filter', 'nat', 'agentkit-', 'agentkit--x', 'agentkit_x', 'agentkit-X',
                    'agentkitx', 'agentkit-a b', 'agentkit-x { }', 'agentkit-x\n',
                    'agentkit; flush ruleset', 'agentkit-' + 'a' * 56, '', None, 7,
                    ['agentkit']):
            self.assertRaises(priv.InvalidGuardValue, priv.render_bridge_table, bad, [])
            self.assertRaises(priv.InvalidGuardValue, bf.BridgeAntiSpoof, bad)

    def test_device_names(self) -> None:
        for good in ('tap1a2b3c4d-5e', 'eth0.100', 'a', 'qvb_x', 'x' * 15):
            self.assertEqual(good, priv.check_device(good))
        for bad in ('tap1" accept; #', 'tap1"', 'tap*', 'tap 1', 'tap1\n', 'tap/1',
                    'tap:1', '-tap', '.', '', 'x' * 16, 'tap1} accept', None, 5, b'tap1'):
            self.assert_bad_port([bad, [[MAC, []]]])
            self.assertRaises(priv.InvalidGuardValue, bf.PortGuard, bad)

    def test_macs(self) -> None:
        for bad in ('fa:16:3e:00:00', 'fa:16:3e:00:00:01:02', 'fa-16-3e-00-00-01',
                    'fa163e000001', '01:00:5e:00:00:01', 'ff:ff:ff:ff:ff:ff',
                    '00:00:00:00:00:00', 'fa:16:3e:00:00:01 . 1.2.3.4',
                    'fa:16:3e:00:00:01, 02:00:00:00:00:01', ' fa:16:3e:00:00:01', None, 1):
            self.assert_bad_port(['tap1', [[bad, []]]])
            self.assertRaises(priv.InvalidGuardValue, bf.PortGuard, 'tap1', ((bad, ()),))

    def test_prefixes(self) -> None:
        for bad in ('10.0.0.1/33', '10.0.0.256', '::1', 'fe80::/64', '10.0.0.1; drop',
                    '10.0.0.0/8"', '10.0.0.0/8 }', '', ' 10.0.0.1', '010.0.0.1',
                    '10.0.0.1, 10.0.0.2', None, 167772161):
            self.assert_bad_port(['tap1', [[MAC, [bad]]]])

    def test_structure(self) -> None:
        for bad in ('tap1', ['tap1'], ['tap1', 'fa:16:3e:11:22:33'], ['tap1', [MAC]],
                    ['tap1', [[MAC, '10.0.0.1']]], ['tap1', [[MAC, [], []]]],
                    ['tap1', [[MAC, []]], 'extra'], {'tap1': []}):
            self.assert_bad_port(bad)
        self.assertRaises(priv.InvalidGuardValue, priv.render_bridge_table, TABLE,
                          'tap1')
        self.assertRaises(priv.InvalidGuardValue, priv.render_bridge_table, TABLE,
                          [['tap1', []], ['tap1', [[MAC, []]]]])

    def test_limits(self) -> None:
        many_macs = [['fa:16:3e:00:01:%02x' % i, []] for i in range(priv.MAX_MACS_PER_PORT + 1)]
        self.assert_bad_port(['tap1', many_macs])
        many_prefixes = ['10.%d.%d.1' % (i // 256, i % 256)
                         for i in range(priv.MAX_PREFIXES_PER_PORT + 1)]
        self.assert_bad_port(['tap1', [[MAC, many_prefixes]]])
        with mock.patch.object(priv, 'MAX_PORTS', 2):
            self.assertRaises(priv.InvalidGuardValue, priv.render_bridge_table, TABLE,
                              [['tap%d' % i, []] for i in range(3)])

    def test_port_guard_is_frozen_and_canonical(self) -> None:
        one = bf.PortGuard('tap1', (('FA:16:3E:11:22:33', ('10.0.0.6', '10.0.0.5')),))
        two = bf.PortGuard('tap1', [[MAC, ['10.0.0.5/32']], [MAC, ['10.0.0.6']]])
        self.assertEqual(one, two)
        self.assertEqual(hash(one), hash(two))
        self.assertRaises(AttributeError, setattr, one, 'device', 'tap2')
        self.assertEqual(['tap1', [[MAC, ['10.0.0.5/32', '10.0.0.6/32']]]],
                         one.to_primitive())


class EntrypointTest(base.TestCase):
    """The root side, run in-process with nft's execution mocked."""

    def setUp(self) -> None:
        super().setUp()
        self.useFixture(fixtures.MockPatchObject(privileged.network, 'client_mode', False))
        self.useFixture(fixtures.MockPatchObject(
            tool_exec, 'find_binary', mock.Mock(return_value='/usr/sbin/nft')))
        self.execute = mock.Mock(return_value=(0, '', ''))
        self.useFixture(fixtures.MockPatchObject(tool_exec, 'execute', self.execute))

    def test_replace_runs_one_nft_transaction_in_the_root_namespace(self) -> None:
        ports = msgpack_round_trip([sample_guard().to_primitive()])
        self.assertIsNone(priv.replace_bridge_table(TABLE, ports))
        self.execute.assert_called_once_with(['/usr/sbin/nft', '-f', '-'], None, SAMPLE,
                                             priv.NFT_TIMEOUT)

    def test_replace_failure_carries_stderr(self) -> None:
        self.execute.return_value = (1, '', 'Error: Could not process rule: File exists\n')
        err = self.assertRaises(exceptions.ProcessError, priv.replace_bridge_table,
                                TABLE, [])
        self.assertIn('File exists', str(err))
        self.assertIn('exit code 1', str(err))

    def test_invalid_input_never_runs_nft(self) -> None:
        self.assertRaises(priv.InvalidGuardValue, priv.replace_bridge_table, TABLE,
                          [['tap1" accept; #', [[MAC, []]]]])
        self.assertRaises(priv.InvalidGuardValue, priv.delete_bridge_table, 'filter')
        self.assertRaises(priv.InvalidGuardValue, priv.list_bridge_table, 'nat')
        self.execute.assert_not_called()

    def test_delete(self) -> None:
        self.assertTrue(priv.delete_bridge_table(TABLE))
        self.execute.assert_called_once_with(
            ['/usr/sbin/nft', 'delete', 'table', 'bridge', TABLE], None, '', priv.NFT_TIMEOUT)
        # Missing: delete fails, the table list confirms it is absent.
        self.execute.side_effect = [(1, '', 'Error: No such file or directory'),
                                    (0, 'table bridge other\n', '')]
        self.assertFalse(priv.delete_bridge_table(TABLE))
        # Present but undeletable: an error.
        self.execute.side_effect = [(1, '', 'Error: Operation not permitted'),
                                    (0, 'table bridge %s\n' % TABLE, '')]
        err = self.assertRaises(exceptions.ProcessError, priv.delete_bridge_table, TABLE)
        self.assertIn('Operation not permitted', str(err))

    def test_list(self) -> None:
        self.execute.return_value = (0, 'table bridge agentkit-test {\n}\n', '')
        self.assertEqual('table bridge agentkit-test {\n}\n', priv.list_bridge_table(TABLE))
        priv.list_bridge_table(TABLE, handles=True)
        self.assertEqual(['/usr/sbin/nft', '-a', 'list', 'table', 'bridge', TABLE],
                         self.execute.call_args[0][0])
        self.execute.side_effect = [(1, '', 'Error: No such file or directory'),
                                    (0, '', '')]
        self.assertIsNone(priv.list_bridge_table(TABLE))

    def test_process_error_survives_privsep(self) -> None:
        exc = exceptions.ProcessError('nft -f failed with exit code 1: Error: x')
        again = type(exc)(*msgpack_round_trip(exc.args))
        self.assertEqual(str(exc), str(again))
        exc = priv.InvalidGuardValue('invalid device name')
        self.assertEqual(str(exc), str(type(exc)(*msgpack_round_trip(exc.args))))


class BridgeAntiSpoofTest(base.TestCase):
    """The model: what reaches the privileged side, and when."""

    def setUp(self) -> None:
        super().setUp()
        self.replace = mock.Mock(return_value=None)
        self.delete = mock.Mock(return_value=True)
        self.useFixture(fixtures.MockPatchObject(priv, 'replace_bridge_table', self.replace))
        self.useFixture(fixtures.MockPatchObject(priv, 'delete_bridge_table', self.delete))
        self.guards = bf.BridgeAntiSpoof(TABLE)

    def sent(self) -> list[object]:
        """The ports of the last replace call."""
        table, ports = self.replace.call_args[0]
        self.assertEqual(TABLE, table)
        return ports

    def test_default_table(self) -> None:
        self.assertEqual('agentkit-antispoof', bf.BridgeAntiSpoof().table)

    def test_unchanged_apply_does_not_touch_the_kernel(self) -> None:
        self.guards.update_port(sample_guard())
        self.assertTrue(self.guards.apply())
        self.assertEqual([sample_guard().to_primitive()], self.sent())
        self.assertEqual(SAMPLE, priv.render_bridge_table(TABLE, self.sent()))
        self.assertFalse(self.guards.apply())
        # Setting an equal guard again (built differently) is no change either.
        self.guards.set_ports([bf.PortGuard(TAP, sample_guard().allowed[::-1])])
        self.assertFalse(self.guards.apply())
        self.assertEqual(1, self.replace.call_count)

    def test_changes_are_applied(self) -> None:
        self.guards.update_port(sample_guard('tap1'))
        self.guards.apply()
        self.guards.update_port(sample_guard('tap2'))
        self.assertTrue(self.guards.apply())
        self.assertEqual(['tap1', 'tap2'], [p[0] for p in self.sent()])
        self.assertTrue(self.guards.remove_port('tap1'))
        self.assertFalse(self.guards.remove_port('tap1'))
        self.assertTrue(self.guards.apply())
        self.assertEqual(['tap2'], [p[0] for p in self.sent()])
        self.guards.set_ports([])
        self.assertTrue(self.guards.apply())
        self.assertEqual([], self.sent())
        self.assertEqual(4, self.replace.call_count)

    def test_defer_apply_batches(self) -> None:
        with self.guards.defer_apply():
            for i in range(5):
                self.guards.update_port(sample_guard('tap%d' % i))
                self.assertFalse(self.guards.apply())
            with self.guards.defer_apply():  # nested: still one apply at the end
                self.guards.remove_port('tap0')
            self.replace.assert_not_called()
        self.assertEqual(1, self.replace.call_count)
        self.assertEqual(['tap1', 'tap2', 'tap3', 'tap4'], [p[0] for p in self.sent()])

    def test_defer_apply_applies_nothing_on_error(self) -> None:
        def broken() -> None:
            with self.guards.defer_apply():
                self.guards.update_port(sample_guard())
                raise RuntimeError('sync failed half way')
        self.assertRaises(RuntimeError, broken)
        self.replace.assert_not_called()
        self.assertTrue(self.guards.apply())  # the model still holds the change

    def test_failure_raises_with_stderr_and_next_apply_retries(self) -> None:
        self.guards.update_port(sample_guard())
        self.guards.apply()
        self.guards.update_port(sample_guard('tap2'))
        self.replace.side_effect = exceptions.ProcessError(
            'nft -f failed with exit code 1: Error: Could not process rule: No buffer space')
        err = self.assertRaises(bf.BridgeFilterError, self.guards.apply)
        self.assertIsInstance(err, exceptions.AgentkitError)
        self.assertIn('No buffer space', str(err))
        self.assertIn(TABLE, str(err))
        self.replace.side_effect = None
        self.assertTrue(self.guards.apply())
        # Even back to the state of the last success: the kernel's is unknown.
        self.guards.remove_port('tap2')
        self.guards.apply()
        self.replace.side_effect = exceptions.ProcessError('boom')
        self.guards.update_port(sample_guard('tap2'))
        self.assertRaises(bf.BridgeFilterError, self.guards.apply)
        self.replace.side_effect = None
        self.guards.remove_port('tap2')
        self.assertTrue(self.guards.apply())

    def test_other_errors_also_force_a_retry(self) -> None:
        self.guards.update_port(sample_guard())
        self.replace.side_effect = OSError('privsep daemon went away')
        self.assertRaises(OSError, self.guards.apply)
        self.replace.side_effect = None
        self.assertTrue(self.guards.apply())

    def test_invalidate(self) -> None:
        self.guards.apply()
        self.assertFalse(self.guards.apply())
        self.guards.invalidate()
        self.assertTrue(self.guards.apply())
        self.assertEqual(2, self.replace.call_count)

    def test_remove_all(self) -> None:
        self.guards.update_port(sample_guard())
        self.guards.apply()
        self.assertTrue(self.guards.remove_all())
        self.delete.assert_called_once_with(TABLE)
        self.assertEqual({}, self.guards.ports)
        self.delete.side_effect = exceptions.ProcessError('nft delete failed: EPERM')
        self.assertRaises(bf.BridgeFilterError, self.guards.remove_all)
        # Afterwards an apply writes the (empty) table again.
        self.assertTrue(self.guards.apply())
        self.assertEqual([], self.sent())

    def test_model_accessors(self) -> None:
        guard = sample_guard()
        self.guards.update_port(guard)
        self.assertIs(guard, self.guards.get_port(TAP))
        self.assertIsNone(self.guards.get_port('tap2'))
        ports = self.guards.ports
        ports.clear()  # a copy
        self.assertEqual({TAP: guard}, self.guards.ports)
        self.assertEqual(SAMPLE, self.guards.render())
        self.assertRaises(priv.InvalidGuardValue, self.guards.set_ports,
                          [guard, sample_guard()])
        self.assertEqual({TAP: guard}, self.guards.ports)  # unchanged
        self.assertRaises(TypeError, self.guards.update_port, [TAP, []])
        self.assertRaises(TypeError, self.guards.set_ports, [[TAP, []]])

    def test_concurrent_updates(self) -> None:
        def worker(n: int) -> None:
            for i in range(20):
                self.guards.update_port(sample_guard('tap%d-%d' % (n, i)))
                self.guards.apply()
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.guards.apply()
        self.assertEqual(80, len(self.sent()))
        self.assertFalse(self.guards.apply())
