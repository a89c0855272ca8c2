"""drivers/ml2/linuxbridge.py inside neutron's ML2 port-binding machinery.

The driver runs in neutron-server, so it is tested against neutron itself:
neutron's real ``PortContext``/``NetworkContext`` and ML2 ``MechanismManager``
binding loop, with agent records shaped like neutron-server's agents table
and ``configurations`` produced by agentkit's own L2 agent.

agentkit does not depend on neutron, so neutron lives in a separate venv
(``tools/neutron-venv.sh``). Run from the main venv, this module has one
test that re-runs the module inside that venv and passes only if every test
there passes; it skips, saying how to build it, when that venv is absent.
"""

import json
import os
import subprocess
import sys
import unittest
import uuid

import testtools

try:
    import neutron  # noqa: F401
    HAVE_NEUTRON = True
except ImportError:
    HAVE_NEUTRON = False

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NEUTRON_VENV = os.environ.get('AGENTKIT_NEUTRON_VENV',
                              os.path.join(REPO, '.venv-neutron'))


class InNeutronVenvTest(testtools.TestCase):
    """Delegates to the neutron venv (the only place the driver imports)."""

    def test_ml2_driver_against_neutron(self):
        python = os.path.join(NEUTRON_VENV, 'bin', 'python')
        if not os.access(python, os.X_OK):
            self.skipTest(f'no neutron venv at {NEUTRON_VENV}: build it with '
                          f'tools/neutron-venv.sh to test drivers/ml2 against '
                          f'neutron-server\'s ML2 API')
        proc = subprocess.run(
            [python, '-m', 'unittest', '-v', __name__],
            cwd=REPO, capture_output=True, text=True, timeout=300,
            env={**os.environ, 'PYTHONPATH': REPO})
        output = proc.stdout + proc.stderr
        self.assertEqual(0, proc.returncode, output)
        # Guard against a run that silently tested nothing.
        summary = output.rsplit('\nRan ', 1)[-1]
        self.assertRegex(summary, r'^([1-9][0-9]+) tests', output)
        self.assertNotIn('skipped', summary, output)


class AgentkitLinuxbridgeBindingTest(testtools.TestCase):
    """bind_port through neutron's own contexts and binding loop."""

    def setUp(self):
        super().setUp()
        import fixtures
        from neutron_lib import context as n_context
        from oslo_config import fixture as config_fixture
        from neutron.conf.plugins.ml2 import config as ml2_config
        from drivers.ml2 import linuxbridge
        self.useFixture(fixtures.FakeLogger())  # neutron logs refusals
        self.cfg = self.useFixture(config_fixture.Config())
        ml2_config.register_ml2_plugin_opts(self.cfg.conf)
        # As neutron-server parses its command line before loading drivers
        # (the policy engine behind admin contexts needs it).
        self.cfg.conf([], project='neutron', default_config_files=[])
        self.cfg.config(group='SECURITYGROUP', enable_security_group=True)
        self.linuxbridge = linuxbridge
        self.driver = linuxbridge.AgentkitLinuxbridgeMechanismDriver()
        self.driver.initialize()
        self.plugin_context = n_context.get_admin_context()
        self.host = 'compute-' + uuid.uuid4().hex[:6]
        self.agents = []

    # -- what neutron-server holds --------------------------------------
    def agentkit_configurations(self, type_drivers='flat,vlan,vxlan',
                                tunnel_types='vxlan', mappings='provider:eth1'):
        """What an agentkit-l2 (linuxbridge) reports, as the server stores it."""
        from oslo_config import cfg
        from agentkit.agent import l2
        from agentkit.conf import common as common_conf
        from agentkit.api import driver as driver_api
        from agentkit.conf import l2 as l2_conf
        from drivers.linuxbridge import mech_driver as lb_mech
        conf = cfg.ConfigOpts()
        common_conf.register_common_opts(conf)
        l2_conf.register_l2_opts(conf)
        # The driver registers its own options; set before it exists here.
        driver_api.register_options(conf, lb_mech.OPTIONS)
        conf([], project='agentkit', default_config_files=[])
        conf.set_override('host', self.host)
        conf.set_override('mechanism_driver', 'linuxbridge', 'l2')
        conf.set_override('type_drivers', type_drivers.split(','), 'l2')
        conf.set_override('tunnel_types',
                          tunnel_types.split(',') if tunnel_types else [], 'l2')
        conf.set_override('local_ip', '192.0.2.10', 'l2')
        conf.set_override('physical_interface_mappings',
                          mappings.split(',') if mappings else [], 'linux_bridge')
        agent = l2.L2Agent(conf)
        # report_state carries JSON; the server hands drivers the decoded dict.
        return json.loads(json.dumps(agent.get_configurations()))

    def add_agent(self, configurations, alive=True, agent_type=None, host=None):
        self.agents.append({
            'id': str(uuid.uuid4()), 'host': host or self.host,
            'agent_type': agent_type or self.linuxbridge.AGENT_TYPE,
            'binary': 'agentkit-l2', 'topic': 'N/A', 'admin_state_up': True,
            'alive': alive, 'configurations': configurations,
            'availability_zone': None, 'resources_synced': None})

    def get_agents(self, context, filters=None):
        """The one plugin call bind_port makes (ML2's agents table)."""
        filters = filters or {}
        return [a for a in self.agents
                if all(a.get(k) in v for k, v in filters.items())]

    def segment(self, network_type, physnet=None, seg_id=None):
        from neutron_lib.plugins.ml2 import api
        return {api.ID: str(uuid.uuid4()), api.NETWORK_TYPE: network_type,
                api.PHYSICAL_NETWORK: physnet, api.SEGMENTATION_ID: seg_id,
                api.NETWORK_ID: self.network_id, api.MTU: 1450}

    def port_context(self, segments, vnic_type='normal'):
        from neutron.plugins.ml2 import driver_context
        from neutron.plugins.ml2 import models
        from neutron.plugins.ml2 import plugin as ml2_plugin

        class Plugin:
            """The two Ml2Plugin methods a PortContext uses while binding."""
            get_agents = self.get_agents
            _get_vif_details = ml2_plugin.Ml2Plugin._get_vif_details

        plugin = Plugin()
        port_id = str(uuid.uuid4())
        port = {'id': port_id, 'network_id': self.network_id,
                'device_owner': 'compute:nova', 'fixed_ips': [],
                'binding:host_id': self.host, 'binding:vnic_type': vnic_type,
                'binding:profile': {}, 'status': 'DOWN'}
        binding = models.PortBinding(
            port_id=port_id, host=self.host, vnic_type=vnic_type, profile='',
            vif_type='unbound', vif_details='', status='ACTIVE')
        network = driver_context.NetworkContext(
            plugin, self.plugin_context, {'id': self.network_id},
            segments=segments)
        return driver_context.PortContext(plugin, self.plugin_context, port,
                                          network, binding, None)

    network_id = property(lambda self: self.__dict__.setdefault(
        '_network_id', str(uuid.uuid4())))

    def bind(self, *segments, vnic_type='normal'):
        ctx = self.port_context(list(segments), vnic_type)
        ctx._prepare_to_bind(list(segments))  # what ML2 does before bind_port
        self.driver.bind_port(ctx)
        return ctx

    def assertBound(self, ctx, segment):
        self.assertEqual(segment['id'], ctx._new_bound_segment)
        self.assertEqual('bridge', ctx.vif_type)
        self.assertEqual({'connectivity': 'l2', 'port_filter': True,
                          'bridge_name': 'brq' + self.network_id[:11]},
                         ctx.vif_details)

    def assertNotBound(self, ctx):
        self.assertIsNone(ctx._new_bound_segment)
        self.assertEqual('unbound', ctx.vif_type)

    # -- tests ------------------------------------------------------------
    def test_flat_on_a_mapped_physnet(self):
        self.add_agent(self.agentkit_configurations())
        seg = self.segment('flat', 'provider')
        self.assertBound(self.bind(seg), seg)

    def test_vlan_on_a_mapped_physnet(self):
        self.add_agent(self.agentkit_configurations())
        seg = self.segment('vlan', 'provider', 100)
        self.assertBound(self.bind(seg), seg)

    def test_vxlan_when_the_agent_terminates_vxlan_tunnels(self):
        self.add_agent(self.agentkit_configurations())
        seg = self.segment('vxlan', seg_id=1001)
        self.assertBound(self.bind(seg), seg)

    def test_refuses_unknown_physnet(self):
        self.add_agent(self.agentkit_configurations())
        for seg in (self.segment('flat', 'other'),
                    self.segment('vlan', 'other', 5),
                    self.segment('flat', None)):
            self.assertNotBound(self.bind(seg))

    def test_refuses_types_the_agent_cannot_carry(self):
        self.add_agent(self.agentkit_configurations(tunnel_types=''))
        self.assertNotBound(self.bind(self.segment('vxlan', seg_id=1001)))
        for seg in (self.segment('gre', seg_id=5), self.segment('geneve', seg_id=5),
                    self.segment('local'), self.segment('no_such_type')):
            self.assertNotBound(self.bind(seg))

    def test_refuses_types_whose_agentkit_type_driver_is_off(self):
        self.add_agent(self.agentkit_configurations(type_drivers='flat,vxlan'))
        self.assertNotBound(self.bind(self.segment('vlan', 'provider', 100)))

    def test_picks_the_segment_the_agent_can_carry(self):
        self.add_agent(self.agentkit_configurations(tunnel_types=''))
        vx = self.segment('vxlan', seg_id=1001)
        flat = self.segment('flat', 'provider')
        self.assertBound(self.bind(vx, flat), flat)

    def test_only_live_linuxbridge_agents_on_the_host(self):
        configurations = self.agentkit_configurations()
        seg = self.segment('flat', 'provider')
        self.add_agent(configurations, alive=False)
        self.add_agent(configurations, agent_type='Open vSwitch agent')
        self.add_agent(configurations, host='elsewhere')
        self.assertNotBound(self.bind(seg))
        self.add_agent(configurations)
        self.assertBound(self.bind(seg), seg)

    def test_refuses_direct_vnic(self):
        self.add_agent(self.agentkit_configurations())
        self.assertNotBound(self.bind(self.segment('flat', 'provider'),
                                      vnic_type='direct'))

    def test_neutron_linuxbridge_agent_without_network_types(self):
        # A Neutron (<= 25) linuxbridge agent reports no network_types.
        self.add_agent({'interface_mappings': {'provider': 'eth1'},
                        'bridge_mappings': {}, 'tunnel_types': ['vxlan'],
                        'l2_population': False, 'devices': 0})
        for seg in (self.segment('vlan', 'provider', 7),
                    self.segment('vxlan', seg_id=9)):
            self.assertBound(self.bind(seg), seg)
        self.assertNotBound(self.bind(self.segment('gre', seg_id=9)))

    def test_port_filter_follows_server_security_group_setting(self):
        self.cfg.config(group='SECURITYGROUP', enable_security_group=False)
        driver = self.linuxbridge.AgentkitLinuxbridgeMechanismDriver()
        self.add_agent(self.agentkit_configurations())
        ctx = self.port_context([self.segment('flat', 'provider')])
        ctx._prepare_to_bind(ctx.network.network_segments)
        driver.bind_port(ctx)
        self.assertFalse(ctx.vif_details['port_filter'])

    def test_through_ml2_mechanism_manager(self):
        """ML2's binding loop (connectivity check, binding levels) around it.

        Loaded by its entry point when registered; until then the manager is
        given the class directly, as stevedore would after loading it.
        """
        from importlib import metadata
        from stevedore import extension
        from neutron.plugins.ml2 import managers
        registered = any(
            ep.name == 'agentkit_linuxbridge'
            for ep in metadata.entry_points(group='neutron.ml2.mechanism_drivers'))
        if registered:
            self.cfg.config(group='ml2', mechanism_drivers=['agentkit_linuxbridge'])
            manager = managers.MechanismManager()
            self.assertIsInstance(
                manager.mech_drivers['agentkit_linuxbridge'].obj,
                self.linuxbridge.AgentkitLinuxbridgeMechanismDriver)
        else:
            manager = managers.MechanismManager.__new__(managers.MechanismManager)
            ext = extension.Extension(
                'agentkit_linuxbridge', None,
                self.linuxbridge.AgentkitLinuxbridgeMechanismDriver, self.driver)
            manager.mech_drivers = {ext.name: ext}
            manager.ordered_mech_drivers = [ext]
        manager.initialize()
        self.add_agent(self.agentkit_configurations())
        other = self.segment('flat', 'other')
        seg = self.segment('vxlan', seg_id=1001)
        ctx = self.port_context([other, seg])
        manager.bind_port(ctx)
        self.assertBound(ctx, seg)
        self.assertEqual(['agentkit_linuxbridge'],
                         [level.driver for level in ctx._binding_levels])
        unbindable = self.port_context([other])
        manager.bind_port(unbindable)
        self.assertEqual('binding_failed', unbindable._binding.vif_type)


def load_tests(loader, tests, pattern):
    """Only the tests that can run in this interpreter, so nothing is skipped.

    With neutron: the binding tests. Without (agentkit's venv): the one test
    that runs them in the neutron venv.
    """
    suite = unittest.TestSuite()
    wanted = AgentkitLinuxbridgeBindingTest if HAVE_NEUTRON else InNeutronVenvTest
    suite.addTests(loader.loadTestsFromTestCase(wanted))
    return suite


if __name__ == '__main__':
    sys.exit(unittest.main())
