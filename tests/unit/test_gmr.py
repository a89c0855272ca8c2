"""Guru Meditation Reports: agentkit's sections in a real oslo.reports run."""

from oslo_reports import guru_meditation_report as oslo_gmr

from agentkit import gmr
from agentkit.agent import work_queue as wq
from agentkit.lib import timing
from tests import base
from tests.unit import test_systemd


class GmrTest(base.TestCase):

    def setUp(self):
        super().setUp()
        self.agent = test_systemd.FakeAgent(self.conf)
        self.addCleanup(self.agent.halt)
        saved = list(getattr(oslo_gmr.TextGuruMeditation, 'persistent_sections', []))

        def restore():
            oslo_gmr.TextGuruMeditation.persistent_sections = saved
        self.addCleanup(restore)

    def test_driver_aliases_from_entry_points(self):
        from drivers.dhcp.dnsmasq import driver as dnsmasq
        from drivers.firewall import noop
        drv = object.__new__(dnsmasq.DnsmasqDriver)
        fw = object.__new__(noop.NoopFirewallDriver)
        dnsmasq_path = 'drivers.dhcp.dnsmasq.driver.DnsmasqDriver'
        self.assertEqual({'agentkit.dhcp_drivers:dnsmasq': dnsmasq_path,
                          'agentkit.firewall_drivers:noop':
                              'drivers.firewall.noop.NoopFirewallDriver'},
                         gmr.driver_aliases([drv, fw]))
        self.assertEqual({'(no alias):builtins.object': 'builtins.object'},
                         gmr.driver_aliases([object()]))

    def test_report_has_agentkit_sections(self):
        self.agent.gate.clear()
        self.agent.queue.put(wq.ResourceUpdate('net-1', 'apply', wq.PRIORITY_SYNC))
        timing.LEDGER.record(timing.RPC, 'gmr_test_call', 0.25)
        for title, generator in gmr.agent_sections(self.agent):
            oslo_gmr.TextGuruMeditation.register_section(title, generator)
        text = oslo_gmr.TextGuruMeditation(gmr.VersionInfo('agentkit-fake')).run()
        for title in ('Package', 'Threads', 'Configuration', 'Agent', 'Work Queue',
                      'Drivers', 'Resources', 'Time Spent'):
            self.assertRegex(text, rf'\n====\s+{title}\s+====\n')
        self.assertIn('agentkit-fake', text)
        self.assertIn('pending_total = 1', text)
        self.assertIn('resource_id = net-1', text)
        self.assertIn('networks = 2', text)
        self.assertIn('ports = 5', text)
        self.assertIn('status = starting: first full sync', text)
        self.assertRegex(text, r'gmr_test_call = \n\s*calls = \d+\n\s*seconds = ')
        self.agent.gate.set()
