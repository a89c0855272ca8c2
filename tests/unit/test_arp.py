"""Gratuitous ARP: the frame, and the repeats of lib/arp.announce."""

import struct
import threading
from unittest import mock

from agentkit.lib import arp
from agentkit.privileged import arp as priv
from tests import base

MAC = bytes.fromhex('fa163e200201')


class FrameTest(base.TestCase):

    def test_gratuitous_request_frame(self):
        frame = priv.build_packet(MAC, '172.24.4.43')
        self.assertEqual(42, len(frame))
        self.assertEqual(b'\xff' * 6, frame[:6])  # broadcast
        self.assertEqual(MAC, frame[6:12])
        self.assertEqual(0x0806, struct.unpack('!H', frame[12:14])[0])
        htype, ptype, hlen, plen, op = struct.unpack('!HHBBH', frame[14:22])
        self.assertEqual((1, 0x0800, 6, 4, 1), (htype, ptype, hlen, plen, op))
        ip = bytes([172, 24, 4, 43])
        self.assertEqual(MAC + ip + b'\0' * 6 + ip, frame[22:42])  # sender == target

    def test_bad_input_is_refused(self):
        self.assertRaises(ValueError, priv.build_packet, MAC[:5], '172.24.4.43')
        self.assertRaises(ValueError, priv.build_packet, MAC, 'fd00::1')
        self.assertRaises(ValueError, priv._check_device, 'a' * 16)
        self.assertRaises(ValueError, priv._check_device, '../x')


class AnnounceTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.sent = []
        self.done = threading.Event()

        def send(device, address, namespace):
            self.sent.append((device, address, namespace))
            if len(self.sent) == 3:
                self.done.set()
        patcher = mock.patch.object(arp.priv, 'send_gratuitous_arp', side_effect=send)
        self.send = patcher.start()
        self.addCleanup(patcher.stop)

    def test_first_now_then_repeated_by_one_thread(self):
        arp.announce('qg-1', '172.24.4.43', 'qrouter-x', count=3, interval=0.01)
        self.assertEqual([('qg-1', '172.24.4.43', 'qrouter-x')], self.sent[:1])
        self.assertTrue(self.done.wait(5))
        self.assertEqual(3 * [('qg-1', '172.24.4.43', 'qrouter-x')], self.sent)
        self.assertEqual(1, sum(1 for t in threading.enumerate() if t.name == 'garp'))

    def test_nothing_for_ipv6_or_zero_count_and_no_root_namespace(self):
        arp.announce('qg-1', 'fd00::1', 'qrouter-x')
        arp.announce('qg-1', '172.24.4.43', 'qrouter-x', count=0)
        self.assertEqual([], self.sent)
        self.assertRaises(ValueError, arp.announce, 'qg-1', '172.24.4.43', None)

    def test_first_error_reaches_the_caller(self):
        self.send.side_effect = OSError(6, 'No such device or address')
        self.assertRaises(OSError, arp.announce, 'qg-1', '172.24.4.43', 'qrouter-x')
