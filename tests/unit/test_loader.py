from unittest import mock

from agentkit import exceptions
from agentkit import loader
from agentkit.api import firewall as firewall_api
from agentkit.api import type_driver as type_api
from agentkit.conf import l2 as l2_conf
from tests import base


class LoaderTest(base.TestCase):

    def setUp(self):
        super().setUp()
        l2_conf.register_l2_opts(self.conf)

    def test_available_lists_in_tree_drivers(self):
        self.assertEqual(['flat', 'gre', 'vlan', 'vxlan'],
                         loader.available(loader.TYPE_DRIVERS))
        self.assertIn('openvswitch', loader.available(loader.MECHANISM_DRIVERS))
        self.assertIn('linuxbridge', loader.available(loader.MECHANISM_DRIVERS))

    def test_load_by_alias(self):
        drv = loader.load_driver(loader.TYPE_DRIVERS, 'vxlan',
                                 type_api.TypeDriver, conf=self.conf, host='h')
        self.assertEqual('vxlan', drv.network_type)
        self.assertEqual('h', drv.host)

    def test_unknown_alias_lists_choices(self):
        e = self.assertRaises(exceptions.DriverNotFound, loader.load_driver,
                              loader.TYPE_DRIVERS, 'geneve',
                              type_api.TypeDriver, conf=self.conf, host='h')
        self.assertIn("'geneve'", str(e))
        self.assertIn('available: flat, gre, vlan, vxlan', str(e))

    def test_empty_namespace_says_none_installed(self):
        e = self.assertRaises(exceptions.DriverNotFound, loader.load_driver,
                              'agentkit.no_such_namespace', 'x', object)
        self.assertIn('(none installed)', str(e))

    def test_wrong_base_class_refused(self):
        e = self.assertRaises(exceptions.DriverLoadError, loader.load_driver,
                              loader.TYPE_DRIVERS, 'flat',
                              firewall_api.FirewallDriver, conf=self.conf,
                              host='h')
        self.assertIn('does not implement', str(e))
        self.assertIn('FirewallDriver', str(e))

    def test_constructor_failure_names_driver(self):
        self.conf.set_override('vni_ranges', ['5:1'], 'l2')
        e = self.assertRaises(exceptions.DriverLoadError, loader.load_driver,
                              loader.TYPE_DRIVERS, 'vxlan', type_api.TypeDriver,
                              conf=self.conf, host='h')
        self.assertIn("'vxlan' failed to initialise", str(e))
        self.assertIn('vni_ranges', str(e))

    def test_import_failure_names_driver(self):
        with mock.patch('stevedore.driver.DriverManager',
                        side_effect=ImportError('No module named foo')):
            e = self.assertRaises(exceptions.DriverLoadError,
                                  loader.load_driver, loader.TYPE_DRIVERS,
                                  'flat', type_api.TypeDriver)
        self.assertIn("'flat' failed to load", str(e))
        self.assertIn('No module named foo', str(e))

    def test_load_many_reports_all_unknown(self):
        e = self.assertRaises(exceptions.DriverNotFound, loader.load_drivers,
                              loader.TYPE_DRIVERS, ['flat', 'x', 'y'],
                              type_api.TypeDriver, conf=self.conf, host='h')
        self.assertIn("'x', 'y'", str(e))

    def test_load_many_keeps_order_refuses_duplicates(self):
        drivers = loader.load_drivers(loader.TYPE_DRIVERS, ['vxlan', 'flat'],
                                      type_api.TypeDriver, conf=self.conf,
                                      host='h')
        self.assertEqual(['vxlan', 'flat'], list(drivers))
        self.assertRaises(exceptions.InvalidConfiguration, loader.load_drivers,
                          loader.TYPE_DRIVERS, ['flat', 'flat'],
                          type_api.TypeDriver)
