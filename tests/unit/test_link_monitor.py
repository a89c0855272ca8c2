import struct

from agentkit.lib import link_monitor as lm
from tests import base


def _msg(msg_type, name, extra_attrs=b''):
    ifname = name.encode() + b'\0'
    attr = struct.pack('=HH', 4 + len(ifname), lm.IFLA_IFNAME) + ifname
    attr += b'\0' * ((4 - len(attr) % 4) % 4)
    body = struct.pack('=BxHiII', 0, 1, 7, 0, 0) + extra_attrs + attr
    return struct.pack('=IHHII', 16 + len(body), msg_type, 0, 0, 0) + body


class ParseLinkEventsTest(base.TestCase):

    def test_new_and_del(self):
        data = _msg(lm.RTM_NEWLINK, 'tap12345678-9a') + _msg(lm.RTM_DELLINK, 'eth1')
        self.assertEqual([(lm.ADDED, 'tap12345678-9a'), (lm.REMOVED, 'eth1')],
                         lm.parse_link_events(data))

    def test_ifname_after_other_attributes(self):
        mtu = struct.pack('=HHI', 8, 4, 1450)  # IFLA_MTU first
        self.assertEqual([(lm.ADDED, 'brqabc')],
                         lm.parse_link_events(_msg(lm.RTM_NEWLINK, 'brqabc', mtu)))

    def test_other_messages_and_garbage_ignored(self):
        self.assertEqual([], lm.parse_link_events(_msg(20, 'x')))  # RTM_NEWADDR
        self.assertEqual([], lm.parse_link_events(b'\x01\x02'))
        truncated = _msg(lm.RTM_NEWLINK, 'tapx')[:-4]
        self.assertEqual([], lm.parse_link_events(truncated))
