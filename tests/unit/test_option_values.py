"""Free-form option values read as Neutron reads them (neutron_lib's
``parse_mappings``; dnsmasq_dns_servers passed to ``--server=``)."""

from agentkit import exceptions
from agentkit.lib import option_values
from tests import base


#: (option value, what agentkit passes to dnsmasq --server=); every one is
#: also checked with dnsmasq itself (tests/functional/test_dnsmasq.py).
DNSMASQ_SERVER_FORMS = (
    ('8.8.8.8', '8.8.8.8'),
    ('2001:DB8::53#5353', '2001:db8::53#5353'),
    ('/example.org/10.0.0.53', '/example.org/10.0.0.53'),
    ('/a.example/b.example/10.0.0.53#53', '/a.example/b.example/10.0.0.53#53'),
    ('/*.example.org/10.0.0.53', '/*.example.org/10.0.0.53'),
    ('/local.lan/', '/local.lan/'),
    ('/example.org/#', '/example.org/#'),
    ('//10.0.0.53', '//10.0.0.53'),
    ('8.8.8.8@eth0', '8.8.8.8@eth0'),
    ('8.8.8.8@192.0.2.1#5353', '8.8.8.8@192.0.2.1#5353'),
)


class MappingsTest(base.TestCase):

    def parse(self, entries):
        return option_values.parse_mappings(entries, 'bridge_mappings', 'bridge')

    def test_blank_entries_are_skipped_as_by_neutron(self):
        self.assertEqual({'a': 'br-a', 'c': 'br-c'}, self.parse(['a:br-a', ' ', '', 'c : br-c']))

    def test_exactly_one_colon_and_both_sides(self):
        for bad in ('physnet:br:ex', 'physnet', 'physnet:', ':br-ex', ' : '):
            err = self.assertRaises(exceptions.InvalidConfiguration, self.parse, [bad])
            self.assertIn(repr(bad), str(err))

    def test_a_physnet_or_a_bridge_named_twice(self):
        self.assertRaises(exceptions.InvalidConfiguration, self.parse, ['a:br', 'a:br2'])
        self.assertRaises(exceptions.InvalidConfiguration, self.parse, ['a:br', 'b:br'])


class DnsForwarderTest(base.TestCase):

    def test_forms_dnsmasq_takes_and_neutron_passes_on(self):
        for value, normalised in DNSMASQ_SERVER_FORMS:
            self.assertEqual(normalised, option_values.parse_dns_forwarder(value), value)

    def test_anything_else_is_refused(self):
        for bad in ('dns.example.org', '8.8.8.8#0', '8.8.8.8#x', '8.8.8.8 --x', '/',
                    '///8.8.8.8', '/exa mple/8.8.8.8', '/a/b', '8.8.8.8@', '8.8.8.8@eth0 x',
                    '8.8.8.8@eth:0', '8.8.8.8@1.2.3', 'fe80::1%eth0', 'fe80::1%eth0 --x',
                    '8.8.8.8@2001:db8::1', '/' + 'a' * 64 + '.org/10.0.0.53', 7):
            self.assertRaises(ValueError, option_values.parse_dns_forwarder, bad)
