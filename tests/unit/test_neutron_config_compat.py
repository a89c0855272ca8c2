"""Neutron's configuration files read by agentkit: option aliases, Neutron's
driver names and class paths, the firewall fallback rule, and type driver
defaults per mechanism."""

import logging
import os
import re
import tempfile
from unittest import mock

from oslo_config import cfg

from agentkit import exceptions
from agentkit import loader
from agentkit.agent import l2
from agentkit.api import driver as driver_api
from agentkit.api import firewall as firewall_api
from agentkit.conf import common as common_conf
from agentkit.conf import dhcp as dhcp_conf
from agentkit.conf import l2 as l2_conf
from agentkit.conf import l3 as l3_conf
from drivers.firewall import iptables_hybrid
from drivers.firewall import noop
from drivers.l3 import radvd
from drivers.linuxbridge import mech_driver as linuxbridge
from drivers.metadata import haproxy
from tests import base

GUIDE = os.path.join(os.path.dirname(__file__), '..', '..', 'doc', 'operator-guide.md')

# (Neutron's group, Neutron's name, value in the file, agentkit's group or
# None for DEFAULT, agentkit's name, the value agentkit reads).
OPTION_ALIASES = [
    ('ovs', 'local_ip', '192.0.2.7', 'l2', 'local_ip', '192.0.2.7'),
    ('vxlan', 'local_ip', '192.0.2.8', 'l2', 'local_ip', '192.0.2.8'),
    ('ovs', 'bridge_mappings', 'ext:br-ex,phys:br-phys', 'l2', 'bridge_mappings',
     ['ext:br-ex', 'phys:br-phys']),
    ('linux_bridge', 'bridge_mappings', 'ext:br0', 'l2', 'bridge_mappings', ['ext:br0']),
    ('agent', 'tunnel_types', 'vxlan,gre', 'l2', 'tunnel_types', ['vxlan', 'gre']),
    ('agent', 'l2_population', 'true', 'l2', 'l2_population', True),
    ('vxlan', 'l2_population', 'true', 'l2', 'l2_population', True),
    ('agent', 'extensions', 'qos', 'l2', 'extensions', ['qos']),
    ('agent', 'vxlan_udp_port', '4790', 'l2', 'vxlan_udp_port', 4790),
    ('vxlan', 'udp_dstport', '8472', 'l2', 'vxlan_udp_port', 8472),
    ('ml2_type_vlan', 'network_vlan_ranges', 'phys:100:199', 'l2',
     'network_vlan_ranges', ['phys:100:199']),
    ('ml2_type_flat', 'flat_networks', 'ext', 'l2', 'flat_networks', ['ext']),
    ('ml2_type_gre', 'tunnel_id_ranges', '1:1000', 'l2', 'tunnel_id_ranges', ['1:1000']),
    ('ml2_type_vxlan', 'vni_ranges', '1001:2000', 'l2', 'vni_ranges', ['1001:2000']),
    ('agent', 'check_child_processes_interval', '7', None,
     'check_child_processes_interval', 7),
]

# Neutron's options agentkit has under the same group and name.
SAME_PLACE = [
    ('linux_bridge', 'physical_interface_mappings', 'phys:eth1', ['phys:eth1']),
    ('vxlan', 'vxlan_group', '239.1.1.1', '239.1.1.1'),
    ('securitygroup', 'firewall_driver', 'iptables_hybrid', 'iptables_hybrid'),
    ('securitygroup', 'enable_security_group', 'false', False),
    ('ovs', 'integration_bridge', 'nqbr-int', 'nqbr-int'),
    ('ovs', 'tunnel_bridge', 'nqbr-tun', 'nqbr-tun'),
    ('ovs', 'int_peer_patch_port', 'nqpatch-tun', 'nqpatch-tun'),
    ('ovs', 'tun_peer_patch_port', 'nqpatch-int', 'nqpatch-int'),
    ('ovs', 'datapath_type', 'netdev', 'netdev'),
    ('ovs', 'ovsdb_connection', 'tcp:127.0.0.1:6640', 'tcp:127.0.0.1:6640'),
    ('DEFAULT', 'interface_driver', 'linuxbridge', 'linuxbridge'),
    ('DEFAULT', 'dhcp_driver', 'neutron.agent.linux.dhcp.Dnsmasq',
     'neutron.agent.linux.dhcp.Dnsmasq'),
    ('agent', 'report_interval', '11', 11),
    ('agent', 'availability_zone', 'az2', 'az2'),
]


def _parse(text: str) -> cfg.ConfigOpts:
    """A ConfigOpts with every option of the L2, DHCP and L3 agents, reading ``text``."""
    conf = cfg.ConfigOpts()
    common_conf.register_common_opts(conf)
    l2_conf.register_l2_opts(conf)
    dhcp_conf.register_dhcp_opts(conf)
    l3_conf.register_l3_opts(conf)
    fd, path = tempfile.mkstemp(suffix='.ini')
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    conf(['--config-file', path], project='agentkit', default_config_files=[])
    # ... and the options the in-tree drivers register when loaded.
    for options in (linuxbridge.OPTIONS, radvd.OPTIONS, haproxy.OPTIONS):
        driver_api.register_options(conf, options)
    return conf


def _read(conf: cfg.ConfigOpts, group: str | None, name: str):
    return getattr(conf if group in (None, 'DEFAULT') else conf[group], name)


class OptionAliasTest(base.TestCase):

    def test_neutron_locations_are_read(self):
        for n_group, n_name, text, group, name, expected in OPTION_ALIASES:
            conf = _parse(f'[{n_group}]\n{n_name} = {text}\n')
            self.assertEqual(expected, _read(conf, group, name),
                             f'[{n_group}] {n_name} -> [{group}] {name}')

    def test_alias_use_is_logged_as_deprecated(self):
        conf = _parse('[ovs]\nlocal_ip = 192.0.2.7\n')
        with self.assertLogs('oslo_config.cfg', logging.WARNING) as logs:
            self.assertEqual('192.0.2.7', conf.l2.local_ip)
        self.assertIn('"local_ip" from group "ovs" is deprecated. Use option '
                      '"local_ip" from group "l2"', '\n'.join(logs.output))

    def test_agentkit_name_wins_over_neutron_alias(self):
        for n_group, n_name, text, group, name, expected in OPTION_ALIASES:
            if name == 'l2_population':
                own, want = 'false', False
            elif name == 'check_child_processes_interval':
                own, want = '3', 3
            elif name == 'vxlan_udp_port':
                own, want = '4789', 4789
            else:
                continue
            conf = _parse(f'[{n_group}]\n{n_name} = {text}\n'
                          f'[{group or "DEFAULT"}]\n{name} = {own}\n')
            self.assertEqual(want, _read(conf, group, name))

    def test_same_place_options(self):
        for group, name, text, expected in SAME_PLACE:
            conf = _parse(f'[{group}]\n{name} = {text}\n')
            self.assertEqual(expected, _read(conf, group, name), f'[{group}] {name}')

    def test_defaults_without_neutron_values(self):
        conf = _parse('')
        self.assertIsNone(conf.l2.type_drivers)
        self.assertEqual([], conf.l2.tunnel_types)
        self.assertFalse(conf.l2.l2_population)
        self.assertIsNone(conf.vxlan.enable_vxlan)
        self.assertIsNone(conf.securitygroup.unsupported_firewall_fallback)

    def test_every_alias_is_in_the_operator_guide(self):
        section = _guide_section()
        for n_group, n_name, _, group, name, _ in OPTION_ALIASES:
            row = f'`[{n_group}] {n_name}` | `[{group or "DEFAULT"}] {name}`'
            self.assertIn(row, section)


def _guide_section() -> str:
    with open(GUIDE) as f:
        text = f.read()
    match = re.search(r"^## Using Neutron's configuration files\n(.*?)(?=^## )",
                      text, re.S | re.M)
    assert match, 'operator guide section missing'
    return match.group(1)


class NoticeTestCase(base.TestCase):
    """L2 options registered; each test sees the loader's once-only notices afresh."""

    def setUp(self):
        super().setUp()
        l2_conf.register_l2_opts(self.conf)
        patcher = mock.patch.object(loader, '_noticed', set())
        patcher.start()
        self.addCleanup(patcher.stop)


class ResolveTest(NoticeTestCase):

    def test_every_neutron_alias_maps(self):
        for namespace, table in loader.NEUTRON_ALIASES.items():
            installed = loader.available(namespace)
            for neutron_name, alias in table.items():
                self.assertIn(alias, installed)
                self.assertEqual(alias, loader.resolve(namespace, neutron_name))

    def test_expected_mappings(self):
        expect = {
            (loader.INTERFACE_DRIVERS, 'openvswitch'): 'openvswitch',
            (loader.INTERFACE_DRIVERS, 'linuxbridge'): 'linuxbridge',
            (loader.INTERFACE_DRIVERS,
             'neutron.agent.linux.interface.OVSInterfaceDriver'): 'openvswitch',
            (loader.INTERFACE_DRIVERS,
             'neutron.agent.linux.interface.BridgeInterfaceDriver'): 'linuxbridge',
            (loader.DHCP_DRIVERS, 'neutron.agent.linux.dhcp.Dnsmasq'): 'dnsmasq',
            (loader.DHCP_DRIVERS, 'dnsmasq'): 'dnsmasq',
            (loader.FIREWALL_DRIVERS, 'iptables_hybrid'): 'iptables_hybrid',
            (loader.FIREWALL_DRIVERS, 'neutron.agent.linux.iptables_firewall.'
             'OVSHybridIptablesFirewallDriver'): 'iptables_hybrid',
            (loader.FIREWALL_DRIVERS, 'iptables'): 'iptables_hybrid',
            (loader.FIREWALL_DRIVERS, 'neutron.agent.linux.iptables_firewall.'
             'IptablesFirewallDriver'): 'iptables_hybrid',
            (loader.FIREWALL_DRIVERS, 'noop'): 'noop',
            (loader.FIREWALL_DRIVERS, 'neutron.agent.firewall.NoopFirewallDriver'): 'noop',
            # entry-point spelling of a class path
            (loader.DHCP_DRIVERS, 'neutron.agent.linux.dhcp:Dnsmasq'): 'dnsmasq',
        }
        for (namespace, name), alias in expect.items():
            self.assertEqual(alias, loader.resolve(namespace, name), name)

    def test_notice_names_option_path_and_alias_once(self):
        name = 'neutron.agent.linux.interface.OVSInterfaceDriver'
        loader.resolve(loader.INTERFACE_DRIVERS, name)
        loader.resolve(loader.INTERFACE_DRIVERS, name)
        notices = [line for line in self.log.output.splitlines() if name in line]
        self.assertEqual(
            [f"interface_driver = {name} is Neutron's class path; using "
             "agentkit's 'openvswitch'"], notices)
        loader.resolve(loader.FIREWALL_DRIVERS, 'iptables')
        self.assertIn("[securitygroup] firewall_driver = iptables is Neutron's name; "
                      "using agentkit's 'iptables_hybrid'", self.log.output)

    def test_agentkit_alias_logs_nothing(self):
        self.assertEqual('dnsmasq', loader.resolve(loader.DHCP_DRIVERS, 'dnsmasq'))
        self.assertNotIn("Neutron's", self.log.output)

    def test_unknown_name_is_left_for_the_loader(self):
        self.assertEqual('nosuch', loader.resolve(loader.FIREWALL_DRIVERS, 'nosuch',
                                                  fallback='iptables_hybrid'))
        e = self.assertRaises(exceptions.DriverNotFound, loader.load_driver,
                              loader.FIREWALL_DRIVERS, 'nosuch',
                              firewall_api.FirewallDriver, conf=self.conf, host='h')
        self.assertIn('available: iptables_hybrid, noop', str(e))

    def test_load_driver_takes_class_paths(self):
        drv = loader.load_driver(loader.FIREWALL_DRIVERS,
                                 'neutron.agent.firewall.NoopFirewallDriver',
                                 firewall_api.FirewallDriver, conf=self.conf, host='h')
        self.assertIsInstance(drv, noop.NoopFirewallDriver)

    def test_load_drivers_resolves_each_name(self):
        drivers = loader.load_drivers(
            loader.FIREWALL_DRIVERS, ['neutron.agent.firewall.NoopFirewallDriver'],
            firewall_api.FirewallDriver, conf=self.conf, host='h')
        self.assertEqual(['noop'], list(drivers))

    def test_installed_alias_wins_over_neutron_table(self):
        with mock.patch.object(loader, 'available',
                               return_value=['iptables', 'openvswitch']):
            self.assertEqual('iptables', loader.resolve(loader.FIREWALL_DRIVERS, 'iptables'))
            self.assertEqual('openvswitch',
                             loader.resolve(loader.FIREWALL_DRIVERS, 'openvswitch'))


class UnsupportedDriverTest(NoticeTestCase):

    def test_every_unsupported_name_is_refused_clearly(self):
        for namespace, table in loader.NEUTRON_UNSUPPORTED.items():
            for name, what in table.items():
                e = self.assertRaises(loader.UnsupportedNeutronDriver,
                                      loader.resolve, namespace, name)
                message = str(e)
                self.assertIn(f'{loader.OPTION_NAMES[namespace]} = {name} is {what}',
                              message)
                self.assertIn('which agentkit does not implement', message)
                for alias in loader.available(namespace):
                    self.assertIn(alias, message)
                # exit code 3, as for an unknown driver
                self.assertIsInstance(e, exceptions.DriverNotFound)

    def test_openvswitch_firewall_message(self):
        e = self.assertRaises(loader.UnsupportedNeutronDriver, loader.resolve,
                              loader.FIREWALL_DRIVERS, 'openvswitch')
        self.assertEqual(
            "[securitygroup] firewall_driver = openvswitch is Neutron's native Open "
            "vSwitch firewall (OpenFlow rules on br-int), which agentkit does not "
            "implement (agentkit's firewall drivers: iptables_hybrid, noop). Set "
            "[securitygroup] firewall_driver to one of them, or allow a fallback "
            "with [securitygroup] unsupported_firewall_fallback = <one of them>",
            str(e))

    def test_openvswitch_firewall_class_paths_refused(self):
        for name in ('neutron.agent.linux.openvswitch_firewall:OVSFirewallDriver',
                     'neutron.agent.linux.openvswitch_firewall.firewall.OVSFirewallDriver'):
            self.assertRaises(loader.UnsupportedNeutronDriver, loader.resolve,
                              loader.FIREWALL_DRIVERS, name)

    def test_fallback_used_with_warning(self):
        self.assertEqual('iptables_hybrid', loader.resolve(
            loader.FIREWALL_DRIVERS, 'openvswitch', fallback='iptables_hybrid'))
        self.assertIn("[securitygroup] firewall_driver = openvswitch is Neutron's native "
                      "Open vSwitch firewall (OpenFlow rules on br-int), which agentkit "
                      "does not implement; falling back to 'iptables_hybrid' because "
                      "[securitygroup] unsupported_firewall_fallback allows it",
                      self.log.output)

    def test_fallback_may_be_a_neutron_name(self):
        self.assertEqual('iptables_hybrid', loader.resolve(
            loader.FIREWALL_DRIVERS, 'openvswitch', fallback='iptables'))

    def test_fallback_must_be_installed(self):
        e = self.assertRaises(exceptions.DriverNotFound, loader.resolve,
                              loader.FIREWALL_DRIVERS, 'openvswitch', fallback='nosuch')
        self.assertIn('[securitygroup] unsupported_firewall_fallback = nosuch is not', str(e))

    def test_no_fallback_where_none_is_offered(self):
        e = self.assertRaises(loader.UnsupportedNeutronDriver, loader.resolve,
                              loader.INTERFACE_DRIVERS, 'null', fallback='openvswitch')
        self.assertNotIn('fallback', str(e))

    def test_neutron_l2_extension_refused(self):
        e = self.assertRaises(exceptions.DriverNotFound, loader.load_drivers,
                              loader.AGENT_EXTENSIONS, ['qos'], object)
        self.assertIn("[l2] extensions = qos is Neutron's qos L2 agent extension", str(e))

    def test_every_driver_name_is_in_the_operator_guide(self):
        section = _guide_section()
        for table in (loader.NEUTRON_ALIASES, loader.NEUTRON_UNSUPPORTED):
            for namespace, names in table.items():
                if namespace == loader.AGENT_EXTENSIONS:
                    continue  # listed together
                for name in names:
                    self.assertIn(f'`{name}`', section)


class L2StartupTest(NoticeTestCase):
    """What the L2 agent makes of Neutron's values before loading drivers."""

    def agent(self, overrides):
        for (group, name), value in overrides.items():
            self.conf.set_override(name, value, group)
        return l2.L2Agent(self.conf)

    def test_openvswitch_firewall_refused_without_fallback(self):
        e = self.assertRaises(loader.UnsupportedNeutronDriver, self.agent,
                              {('securitygroup', 'firewall_driver'): 'openvswitch'})
        self.assertIn('unsupported_firewall_fallback', str(e))

    def test_openvswitch_firewall_falls_back_when_allowed(self):
        agent = self.agent({
            ('securitygroup', 'firewall_driver'): 'openvswitch',
            ('securitygroup', 'unsupported_firewall_fallback'): 'iptables_hybrid'})
        self.assertIsInstance(agent.firewall, iptables_hybrid.IptablesHybridFirewallDriver)
        # The mechanism sees the firewall actually used: VMs get hybrid-plugged.
        self.assertEqual('iptables_hybrid', self.conf.securitygroup.firewall_driver)
        self.assertTrue(agent.get_configurations()['ovs_hybrid_plug'])
        self.assertIn('falling back to', self.log.output)

    def test_neutron_class_path_hybrid_plugs(self):
        agent = self.agent({
            ('securitygroup', 'firewall_driver'):
                'neutron.agent.linux.iptables_firewall.OVSHybridIptablesFirewallDriver'})
        self.assertIsInstance(agent.firewall, iptables_hybrid.IptablesHybridFirewallDriver)
        self.assertTrue(agent.get_configurations()['ovs_hybrid_plug'])

    def test_security_groups_off_ignores_firewall_driver(self):
        agent = self.agent({('securitygroup', 'firewall_driver'): 'openvswitch',
                            ('securitygroup', 'enable_security_group'): False})
        self.assertIsInstance(agent.firewall, noop.NoopFirewallDriver)
        self.assertFalse(agent.get_configurations()['ovs_hybrid_plug'])

    def test_enable_vxlan_adds_vxlan_tunnels(self):
        agent = self.agent({('l2', 'mechanism_driver'): 'linuxbridge',
                            ('l2', 'local_ip'): '192.0.2.9',
                            ('vxlan', 'enable_vxlan'): True})
        self.assertEqual(['vxlan'], self.conf.l2.tunnel_types)
        self.assertEqual(['vxlan'], agent.get_configurations()['tunnel_types'])

    def test_enable_vxlan_false_contradicting_tunnel_types(self):
        e = self.assertRaises(exceptions.InvalidConfiguration, self.agent, {
            ('l2', 'mechanism_driver'): 'linuxbridge', ('l2', 'local_ip'): '192.0.2.9',
            ('l2', 'tunnel_types'): ['vxlan'], ('vxlan', 'enable_vxlan'): False})
        self.assertIn('enable_vxlan = false', str(e))

    def test_enable_vxlan_unset_leaves_tunnel_types(self):
        agent = self.agent({('l2', 'mechanism_driver'): 'linuxbridge'})
        self.assertEqual([], agent.get_configurations()['tunnel_types'])

    def test_l2_population_warns_and_reports_false(self):
        agent = self.agent({('l2', 'l2_population'): True})
        self.assertIn("Neutron's L2 population is not implemented", self.log.output)
        self.assertFalse(agent.get_configurations()['l2_population'])

    def test_linuxbridge_refuses_neutron_bridge_mappings(self):
        e = self.assertRaises(exceptions.DriverLoadError, self.agent, {
            ('l2', 'mechanism_driver'): 'linuxbridge', ('l2', 'bridge_mappings'): ['ext:br0']})
        self.assertIn("[linux_bridge] bridge_mappings", str(e))
        self.assertIn('physical_interface_mappings', str(e))


class TypeDriverDefaultTest(base.TestCase):
    """Unset [l2] type_drivers follows what the mechanism driver supports."""

    def setUp(self):
        super().setUp()
        l2_conf.register_l2_opts(self.conf)

    def agent(self, mechanism, type_drivers=None):
        self.conf.set_override('mechanism_driver', mechanism, 'l2')
        if type_drivers is not None:
            self.conf.set_override('type_drivers', type_drivers, 'l2')
        return l2.L2Agent(self.conf)

    def test_linuxbridge_default(self):
        agent = self.agent('linuxbridge')
        self.assertEqual(['flat', 'vlan', 'vxlan'], sorted(agent.type_drivers))
        self.assertEqual(agent.mech.supported_network_types, frozenset(agent.type_drivers))

    def test_openvswitch_default(self):
        agent = self.agent('openvswitch')
        self.assertEqual(['flat', 'gre', 'vlan', 'vxlan'], sorted(agent.type_drivers))

    def test_explicit_unsupported_type_stays_an_error(self):
        e = self.assertRaises(exceptions.InvalidConfiguration, self.agent,
                              'linuxbridge', ['flat', 'gre'])
        self.assertIn("does not support network type(s) gre", str(e))

    def test_explicit_subset_is_kept(self):
        agent = self.agent('linuxbridge', ['vxlan'])
        self.assertEqual(['vxlan'], list(agent.type_drivers))
