"""Driver options live beside their drivers, which register and check them."""

import ast
import importlib.metadata
import pathlib

import fixtures
from oslo_config import cfg

from agentkit import exceptions
from agentkit.api import driver as driver_api
from drivers.l3 import radvd
from drivers.linuxbridge import mech_driver as linuxbridge
from drivers.metadata import haproxy
from tests import base

DRIVERS_DIR = pathlib.Path(__file__).resolve().parents[2] / 'drivers'


class DriverOptionsTest(base.TestCase):

    def test_drivers_do_not_import_agentkit_conf(self) -> None:
        offenders = []
        for path in sorted(DRIVERS_DIR.rglob('*.py')):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
                if any(n == 'agentkit.conf' or n.startswith('agentkit.conf.')
                       for n in names):
                    offenders.append(str(path.relative_to(DRIVERS_DIR)))
        self.assertEqual([], offenders)

    def test_every_driver_option_is_listed_for_the_generator(self) -> None:
        listed = {}
        for ep in importlib.metadata.entry_points(group='oslo.config.opts'):
            if ep.name.startswith('agentkit.'):
                for group, opts in ep.load()():
                    listed.update({(group, o.name): ep.name for o in opts})
        for options in (radvd.OPTIONS, haproxy.OPTIONS, linuxbridge.OPTIONS):
            for group, opts in options:
                for opt in opts:
                    self.assertIn((group, opt.name), listed)

    def test_names_and_groups_are_neutrons(self) -> None:
        self.assertEqual(
            {(None, 'min_rtr_adv_interval'), (None, 'max_rtr_adv_interval'),
             ('metadata_rate_limiting', 'rate_limit_enabled'),
             ('metadata_rate_limiting', 'ip_versions'),
             ('metadata_rate_limiting', 'base_window_duration'),
             ('metadata_rate_limiting', 'base_query_rate_limit'),
             ('metadata_rate_limiting', 'burst_window_duration'),
             ('metadata_rate_limiting', 'burst_query_rate_limit'),
             # The one of agentkit's own, next to the limits it belongs with.
             ('metadata_rate_limiting', 'max_connections_per_client'),
             ('linux_bridge', 'physical_interface_mappings'),
             ('vxlan', 'vxlan_group')},
            {(group, o.name) for options in (radvd.OPTIONS, haproxy.OPTIONS,
                                             linuxbridge.OPTIONS)
             for group, opts in options for o in opts})

    def conf_from(self, text: str) -> cfg.ConfigOpts:
        path = self.useFixture(fixtures.TempDir()).join('agent.ini')
        with open(path, 'w') as f:
            f.write(text)
        conf = cfg.ConfigOpts()
        conf(['--config-file', path], project='agentkit', default_config_files=[])
        return conf

    def test_bad_value_is_refused_naming_the_option(self) -> None:
        conf = self.conf_from('[metadata_rate_limiting]\nip_versions = 5\n')
        err = self.assertRaises(exceptions.InvalidOptionValue,
                                driver_api.register_options, conf, haproxy.OPTIONS)
        self.assertIn('[metadata_rate_limiting] ip_versions', str(err))

    def test_driver_refuses_a_bad_value_of_its_own_option_at_construction(self) -> None:
        conf = self.conf_from('[DEFAULT]\nmin_rtr_adv_interval = often\n')
        err = self.assertRaises(exceptions.InvalidOptionValue, radvd.RadvdManager, conf)
        self.assertIn('[DEFAULT] min_rtr_adv_interval', str(err))

    def test_registering_again_is_harmless(self) -> None:
        conf = cfg.ConfigOpts()
        conf([], project='agentkit', default_config_files=[])
        for _ in range(2):
            driver_api.register_options(conf, linuxbridge.OPTIONS)
        self.assertEqual([], conf.linux_bridge.physical_interface_mappings)
        self.assertIsNone(conf.vxlan.vxlan_group)
