"""Every option, given a value of the wrong type or out of range, stops its
agent at start (exit code 2) with a message naming the option.

One case per (agent, option): the value is derived from the option's own
oslo.config type (a word for a number or a boolean, one past a bound, a
name outside the choices, a malformed address), written to a config file,
and loaded the way ``service.run`` loads it. Options any string is valid
for (paths, names) have no wrong value and are counted, not skipped
silently. A driver's own options are checked the same way when the driver
registers them (``agentkit.api.driver.register_options``).
"""

from __future__ import annotations

import os
import tempfile


from oslo_config import cfg
from oslo_config import types

from agentkit import exceptions
from agentkit import opts
from agentkit import service
from agentkit.api import driver as driver_api
from agentkit.conf import checks
from agentkit.conf import dhcp as dhcp_conf
from agentkit.conf import l2 as l2_conf
from agentkit.conf import l3 as l3_conf
from agentkit.conf import metadata as metadata_conf
from drivers.l3 import radvd
from drivers.linuxbridge import mech_driver as linuxbridge
from drivers.metadata import haproxy
from tests import base
from tests import reliability

AGENTS = {
    'agentkit-l2': (l2_conf.register_l2_opts, opts.list_l2_opts),
    'agentkit-dhcp': (dhcp_conf.register_dhcp_opts, opts.list_dhcp_opts),
    'agentkit-l3': (l3_conf.register_l3_opts, opts.list_l3_opts),
    'agentkit-metadata': (metadata_conf.register_metadata_opts, opts.list_metadata_opts),
}
DRIVER_OPTIONS = {'radvd': radvd.OPTIONS, 'haproxy': haproxy.OPTIONS,
                  'linuxbridge': linuxbridge.OPTIONS}


def wrong_value(opt: cfg.Opt) -> str | None:
    """A value ``opt``'s type refuses, or None if every string is valid."""
    kind = opt.type
    if isinstance(kind, types.List):
        item = wrong_value(cfg.Opt('item', type=kind.item_type))
        return None if item is None else item
    if isinstance(kind, types.Boolean):
        return 'maybe'
    if isinstance(kind, (types.Integer, types.Float)):
        if getattr(kind, 'max', None) is not None:
            return str(kind.max + 1)
        if getattr(kind, 'min', None) is not None:
            return str(kind.min - 1)
        return 'many'
    if isinstance(kind, types.IPAddress):
        return '999.0.0.1'
    if isinstance(kind, types.String) and kind.choices:
        return 'no-such-choice'
    if isinstance(kind, types.Dict):
        return 'no-colon-here'
    return None


def config_file(test: base.TestCase, group: str | None, opt: cfg.Opt, value: str,
                also: dict[str, dict[str, str]] | None = None) -> str:
    """A file setting ``[group] opt = value``, and the options of ``also``."""
    sections: dict[str, dict[str, str]] = {k: dict(v) for k, v in (also or {}).items()}
    sections.setdefault(group or 'DEFAULT', {})[opt.name] = value
    fd, path = tempfile.mkstemp(suffix='.conf')
    with os.fdopen(fd, 'w') as f:
        for section, values in sections.items():
            f.write(f'[{section}]\n' + ''.join(f'{k} = {v}\n' for k, v in values.items()))
    test.addCleanup(os.unlink, path)
    return path


class WrongValueStopsTheAgentTest(base.TestCase):

    def test_every_option_of_every_agent(self) -> None:
        checked, free = 0, []
        for prog, (register, listed) in AGENTS.items():
            for group, group_opts in listed():
                for opt in group_opts:
                    value = wrong_value(opt)
                    if value is None:
                        free.append(f'{prog} [{group or "DEFAULT"}] {opt.name}')
                        continue
                    path = config_file(self, group, opt, value)
                    errors = service.load_config(cfg.ConfigOpts(), prog, register,
                                                 ['--config-file', path])
                    where = f'[{group or "DEFAULT"}] {opt.name}'
                    self.assertTrue(any(e.startswith(where + ':') for e in errors),
                                    f'{prog}: {where} = {value} was accepted ({errors})')
                    self.assertEqual(service.EXIT_CONFIG_ERROR, 2)
                    checked += 1
        # 32 (agent, option) pairs have a typed wrong value today; the others
        # are free-form strings (names, paths, mappings whose format is
        # checked when the agent starts its drivers, not by oslo.config).
        self.assertGreaterEqual(checked, 32, free)

    def test_every_driver_option(self) -> None:
        checked = 0
        for name, options in DRIVER_OPTIONS.items():
            for group, group_opts in options:
                for opt in group_opts:
                    value = wrong_value(opt)
                    if value is None:
                        continue
                    conf = cfg.ConfigOpts()
                    conf(['--config-file', config_file(self, group, opt, value)],
                         project='agentkit')
                    exc = self.assertRaises(exceptions.AgentkitError,
                                            driver_api.register_options, conf, options)
                    self.assertIn(opt.name, str(exc), f'{name}: {group} {opt.name}')
                    checked += 1
        self.assertGreater(checked, 5)

    def test_a_good_file_loads_without_errors(self) -> None:
        # The check above would also pass if every file were refused.
        for prog, (register, _listed) in AGENTS.items():
            errors = service.load_config(cfg.ConfigOpts(), prog, register, [])
            self.assertEqual([], errors, prog)

    def test_the_wrong_values_are_wrong(self) -> None:
        self.assertIsNone(wrong_value(cfg.StrOpt('path')))
        self.assertEqual('maybe', wrong_value(cfg.BoolOpt('b')))
        self.assertEqual('65536', wrong_value(cfg.PortOpt('p')))
        self.assertEqual('0', wrong_value(cfg.IntOpt('i', min=1)))
        self.assertEqual('no-such-choice', wrong_value(cfg.StrOpt('c', choices=['a'])))


class FreeFormValueStopsTheAgentTest(base.TestCase):
    """Free-form options (ranges, mappings, interface names) are parsed at
    load as well: a bad value is an exit-2 error naming the option and the
    value, not a driver failure (exit 3) later."""

    def load(self, prog: str, group: str, opt: cfg.Opt, value: str,
             also: dict[str, dict[str, str]] | None = None) -> list[str]:
        register = AGENTS[prog][0]
        path = config_file(self, None if group == 'DEFAULT' else group, opt, value, also)
        return service.load_config(cfg.ConfigOpts(), prog, register, ['--config-file', path])

    def test_every_checked_option_of_every_agent(self) -> None:
        exercised = set()
        for prog, (_register, listed) in AGENTS.items():
            for group, group_opts in listed():
                for opt in group_opts:
                    key = (group or 'DEFAULT', opt.dest)
                    if key not in checks.CHECKS:
                        continue
                    _check, bad, good = checks.CHECKS[key]
                    # Options used only with some settings (tunnels) get them.
                    enabling = checks.WHEN.get(key, (None, {}))[1]
                    where = f'[{key[0]}] {opt.name}'
                    if key in checks.WHEN and prog != 'agentkit-l2':
                        # Registered for its OVS interface driver, which never
                        # reads it: not refused, as no driver would.
                        self.assertEqual([], self.load(prog, key[0], opt, bad), where)
                        continue
                    errors = self.load(prog, key[0], opt, bad, enabling)
                    mine = [e for e in errors if e.startswith(where + ':')]
                    self.assertEqual(1, len(mine), f'{prog}: {where} = {bad}: {errors}')
                    # The message shows the value (its first entry at least).
                    self.assertIn(bad.split(',')[0][:10], mine[0])
                    # Positive control: a good value of the same option loads.
                    self.assertEqual([], self.load(prog, key[0], opt, good, enabling),
                                     f'{prog}: {where} = {good}')
                    exercised.add(key)
        self.assertEqual(set(checks.CHECKS), exercised,
                         'a check no agent registers the option of')
        reliability.record(
            'input-config-values', kind='input',
            fault='bad option values (wrong type, out of range, malformed)',
            injected='one config file per (agent, option): a typed wrong value for '
                     'every typed option, a malformed one for every free-form option '
                     'with a format (ranges, mappings, interface names, DNS servers)',
            checked='service.load_config refuses it naming the option (exit 2); the '
                    'good value of each free-form option loads',
            result={'free-form options checked': len(exercised),
                    'free-form (agent, option) pairs refused': sum(
                        1 for prog, (_r, listed) in AGENTS.items()
                        for g, os_ in listed() for o in os_
                        if (g or 'DEFAULT', o.dest) in checks.CHECKS)},
            order=220)


class ConditionalChecksTest(base.TestCase):
    """Options the drivers read only with tunnels (br-tun, its patch pair, a
    tunnel type's key ranges) are checked at load under the same condition
    and by the same function as the driver: same refusals, no refusal of a
    stale value the driver ignores."""

    #: settings under which each conditional option is not used
    UNUSED = {('l2', 'tunnel_id_ranges'): {'l2': {'type_drivers': 'flat,vlan'}},
              ('l2', 'vni_ranges'): {'l2': {'type_drivers': 'flat,vlan'}}}

    def load(self, group: str, name: str, value: str,
             also: dict[str, dict[str, str]]) -> tuple[cfg.ConfigOpts, list[str]]:
        opt = cfg.StrOpt(name)
        conf = cfg.ConfigOpts()
        path = config_file(self, group, opt, value, also)
        errors = service.load_config(conf, 'agentkit-l2', l2_conf.register_l2_opts,
                                     ['--config-file', path])
        return conf, errors

    def ovs_driver(self, conf: cfg.ConfigOpts) -> object:
        from drivers.openvswitch import mech_driver as ovs
        return ovs.OpenvswitchMechanismDriver(conf, 'h')

    def test_a_stale_value_is_not_refused_where_unused(self) -> None:
        self.assertEqual({('l2', 'tunnel_id_ranges'), ('l2', 'vni_ranges'),
                          ('ovs', 'tunnel_bridge'), ('ovs', 'int_peer_patch_port'),
                          ('ovs', 'tun_peer_patch_port')}, set(checks.WHEN))
        for key in checks.WHEN:
            _check, bad, _good = checks.CHECKS[key]
            where = f'[{key[0]}] {key[1]}'
            _conf, errors = self.load(*key, bad, self.UNUSED.get(key, {}))
            self.assertEqual([], errors, f'{where} = {bad} without tunnels')
            # Positive control: the same value with tunnels is refused.
            _conf, errors = self.load(*key, bad, checks.WHEN[key][1])
            self.assertEqual(1, len([e for e in errors if e.startswith(where + ':')]), errors)

    def test_the_driver_ignores_what_the_load_check_ignores(self) -> None:
        # No tunnels: the OVS driver starts with the patch pair the load
        # check let through; with tunnels, both refuse it.
        for name in ('int_peer_patch_port', 'tun_peer_patch_port'):
            bad = checks.CHECKS[('ovs', name)][1]
            conf, errors = self.load('ovs', name, bad, {})
            self.assertEqual([], errors)
            self.ovs_driver(conf)
            conf, errors = self.load('ovs', name, bad, {'l2': {
                'tunnel_types': 'vxlan', 'local_ip': '192.0.2.1'}})
            self.assertEqual(1, len(errors), errors)
            exc = self.assertRaises(exceptions.InvalidConfiguration, self.ovs_driver, conf)
            self.assertIn(name, str(exc))

    def test_patch_ports_must_differ_at_load_as_in_the_driver(self) -> None:
        tunnels = {'l2': {'tunnel_types': 'vxlan', 'local_ip': '192.0.2.1'},
                   'ovs': {'int_peer_patch_port': 'patch-x'}}
        conf, errors = self.load('ovs', 'tun_peer_patch_port', 'patch-x', tunnels)
        self.assertEqual(['[ovs] tun_peer_patch_port: invalid value \'patch-x\': '
                          'int_peer_patch_port and tun_peer_patch_port must differ '
                          '(both \'patch-x\')'], errors)
        exc = self.assertRaises(exceptions.InvalidConfiguration, self.ovs_driver, conf)
        self.assertIn('int_peer_patch_port and tun_peer_patch_port must differ', str(exc))
        # Positive control: distinct names load and the driver takes them.
        conf, errors = self.load('ovs', 'tun_peer_patch_port', 'patch-y', tunnels)
        self.assertEqual([], errors)
        self.ovs_driver(conf)
        # Without tunnels neither refuses the pair (no br-tun is built).
        conf, errors = self.load('ovs', 'tun_peer_patch_port', 'patch-x',
                                 {'ovs': {'int_peer_patch_port': 'patch-x'}})
        self.assertEqual([], errors)
        self.ovs_driver(conf)
