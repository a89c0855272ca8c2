"""IptablesManager: layout, rendering, diffing against live rules, batching.

The kernel side is an in-memory simulation of ``iptables-save`` and
``iptables-restore --noflush`` (:class:`FakeIptables`): declaring a user
chain creates or flushes it, ``-D`` of a missing rule and ``-X`` of a
referenced chain fail, and a failing input changes nothing. That is enough
to check that what the manager sends converges, keeps foreign rules and is
idempotent.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from unittest import mock

import fixtures

from agentkit import exceptions
from agentkit.lib import iptables_manager as im
from agentkit.privileged import iptables as priv_iptables
from agentkit.privileged import namespaces
from agentkit.privileged import tool_exec
from tests import base

SIM_BUILTINS = {
    'filter': ('INPUT', 'FORWARD', 'OUTPUT'),
    'nat': ('PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'),
    'mangle': ('PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'),
    'raw': ('PREROUTING', 'OUTPUT'),
}
TARGETS = {'ACCEPT', 'DROP', 'RETURN', 'SNAT', 'DNAT', 'REDIRECT', 'MARK',
           'CONNMARK', 'CHECKSUM', 'LOG', 'REJECT'}

# The layout part of Neutron 29's qrouter iptables-save (neutron-observed).
REFERENCE_LAYOUT = {
    'nat': [
        '-A PREROUTING -j neutron-l3-agent-PREROUTING',
        '-A OUTPUT -j neutron-l3-agent-OUTPUT',
        '-A POSTROUTING -j neutron-l3-agent-POSTROUTING',
        '-A POSTROUTING -j neutron-postrouting-bottom',
        '-A neutron-l3-agent-snat -j neutron-l3-agent-float-snat',
        '-A neutron-postrouting-bottom -m comment --comment "Perform source NAT on '
        'outgoing traffic." -j neutron-l3-agent-snat',
    ],
    'filter': [
        '-A INPUT -j neutron-l3-agent-INPUT',
        '-A FORWARD -j neutron-filter-top',
        '-A FORWARD -j neutron-l3-agent-FORWARD',
        '-A OUTPUT -j neutron-filter-top',
        '-A OUTPUT -j neutron-l3-agent-OUTPUT',
        '-A neutron-filter-top -j neutron-l3-agent-local',
    ],
    'mangle': [
        '-A PREROUTING -j neutron-l3-agent-PREROUTING',
        '-A INPUT -j neutron-l3-agent-INPUT',
        '-A FORWARD -j neutron-l3-agent-FORWARD',
        '-A OUTPUT -j neutron-l3-agent-OUTPUT',
        '-A POSTROUTING -j neutron-l3-agent-POSTROUTING',
    ],
    'raw': [
        '-A PREROUTING -j neutron-l3-agent-PREROUTING',
        '-A OUTPUT -j neutron-l3-agent-OUTPUT',
    ],
}


class SimulatedError(Exception):
    pass


class FakeIptables:
    """In-memory ``iptables-save`` / ``iptables-restore --noflush`` of one namespace."""

    def __init__(self, text: str = '') -> None:
        self.tables = im.parse_save(text)
        for name in self.tables:
            self._table(self.tables, name)
        self.restores: list[str] = []
        self.saves = 0
        self.saved_tables: list[str | None] = []
        self.fail_restore = False
        # The namespace's cookie and nf_tables generation (bumped by commits).
        self.cookie, self.generation = 7, 1

    # -- the two privileged calls --------------------------------------------
    def save(self, namespace: str | None, ip_version: int,
             table: str | None = None) -> tuple[int, str, str]:
        self.saves += 1
        self.saved_tables.append(table)
        return 0, self.render(table), ''

    def restore(self, namespace: str | None, ip_version: int,
                rules: str) -> tuple[int, str, str]:
        self.restores.append(rules)
        if self.fail_restore:
            return 1, '', 'iptables-restore: line 2 failed'
        priv_iptables._check_rules(rules)
        try:
            tables = self._apply(rules)
        except SimulatedError as exc:
            return 1, '', str(exc)
        self.tables = tables
        self.generation += 2  # one restore can be more than one commit
        return 0, '', ''

    def ruleset_generation(self, namespace: str | None) -> list[int]:
        return [self.cookie, self.generation]

    # -- simulation ------------------------------------------------------------
    def _table(self, tables: dict[str, im.LiveTable], name: str) -> im.LiveTable:
        table = tables.setdefault(name, im.LiveTable())
        for chain in SIM_BUILTINS[name]:
            table.chains.setdefault(chain, 'ACCEPT')
            table.rules.setdefault(chain, [])
        return table

    def _apply(self, rules: str) -> dict[str, im.LiveTable]:
        tables = copy.deepcopy(self.tables)
        table = None
        for line in rules.splitlines():
            if not line or line.startswith('#') or line == 'COMMIT':
                continue
            if line.startswith('*'):
                table = self._table(tables, line[1:])
                continue
            assert table is not None, line
            if line.startswith(':'):
                chain = line[1:].split()[0]
                if chain not in SIM_BUILTINS:
                    table.chains[chain] = '-'
                    table.rules[chain] = []
                continue
            command, chain, *rest = line.split(' ', 3)
            if chain not in table.chains:
                raise SimulatedError('chain %s does not exist' % chain)
            if command == '-A':
                self._check_target(table, rest[0])
                table.rules[chain].append(' '.join(rest))
            elif command == '-I':
                self._check_target(table, rest[1])
                table.rules[chain].insert(int(rest[0]) - 1, rest[1])
            elif command == '-D':
                spec = ' '.join(rest)
                if spec not in table.rules[chain]:
                    raise SimulatedError('Bad rule (does a matching rule exist?)')
                table.rules[chain].remove(spec)
            elif command == '-X':
                if table.rules[chain] or any(
                        im.rule_target(s) == chain for specs in table.rules.values()
                        for s in specs):
                    raise SimulatedError('chain %s is not empty or referenced' % chain)
                del table.chains[chain], table.rules[chain]
            else:
                raise SimulatedError('unsupported command %s' % command)
        return tables

    @staticmethod
    def _check_target(table: im.LiveTable, spec: str) -> None:
        target = im.rule_target(spec)
        if target and target not in TARGETS and target not in table.chains:
            raise SimulatedError("Chain '%s' does not exist" % target)

    def render(self, only: str | None = None) -> str:
        lines = []
        for name, table in self.tables.items():
            if only is not None and name != only:
                continue
            lines.append('*' + name)
            builtins = SIM_BUILTINS[name]
            others = sorted(c for c in table.chains if c not in builtins)
            lines += [':%s ACCEPT [0:0]' % c for c in builtins]
            lines += [':%s - [0:0]' % c for c in others]
            for chain in list(builtins) + others:
                lines += ['-A %s %s' % (chain, s) for s in table.rules[chain]]
            lines.append('COMMIT')
        return '\n'.join(lines) + '\n'

    def lines(self, table: str) -> list[str]:
        return [line for line in self.render().split('*' + table, 1)[1].split('COMMIT')[0]
                .splitlines() if line.startswith('-A ')]


class ManagerTestCase(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.fake = FakeIptables()
        self._patch_priv()

    def _patch_priv(self) -> None:
        for name in ('save', 'restore', 'ruleset_generation'):
            patcher = mock.patch.object(im.priv, name, side_effect=getattr(self.fake, name))
            patcher.start()
            self.addCleanup(patcher.stop)


class LayoutTest(ManagerTestCase):

    def test_fresh_namespace_gets_the_reference_layout(self) -> None:
        mgr = im.IptablesManager('qrouter-x')
        self.assertTrue(mgr.apply())
        for table, lines in REFERENCE_LAYOUT.items():
            self.assertEqual(sorted(lines), sorted(self.fake.lines(table)), table)
        # Order inside builtin chains matches Neutron's too.
        self.assertEqual(['-A FORWARD -j neutron-filter-top',
                          '-A FORWARD -j neutron-l3-agent-FORWARD'],
                         [r for r in self.fake.lines('filter') if r.startswith('-A FORWARD')])
        self.assertEqual(['-A POSTROUTING -j neutron-l3-agent-POSTROUTING',
                          '-A POSTROUTING -j neutron-postrouting-bottom'],
                         [r for r in self.fake.lines('nat') if r.startswith('-A POSTROUTING')])

    def test_without_nat_there_is_no_nat_table(self) -> None:
        mgr = im.IptablesManager('ns', binary_name='neutron-dhcp-age', nat=False)
        mgr.apply()
        self.assertNotIn('nat', self.fake.tables)
        self.assertIn('-A PREROUTING -j neutron-dhcp-age-PREROUTING',
                      self.fake.lines('mangle'))

    def test_ipv6_tables_have_no_nat(self) -> None:
        mgr = im.IptablesManager('ns', use_ipv6=True)
        self.assertEqual((4, 6), mgr.versions)
        self.assertNotIn('nat', mgr.ipv6)
        # One simulated kernel per IP version, as iptables and ip6tables are.
        fakes = {4: FakeIptables(), 6: FakeIptables()}
        with mock.patch.object(im.priv, 'save', side_effect=lambda ns, v, t=None:
                               fakes[v].save(ns, v, t)), \
                mock.patch.object(im.priv, 'restore', side_effect=lambda ns, v, r:
                                  fakes[v].restore(ns, v, r)):
            mgr.apply()
        self.assertEqual(1, len(fakes[4].restores))
        self.assertEqual(1, len(fakes[6].restores))
        self.assertNotIn('nat', fakes[6].tables)


class RuleModelTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.mgr = im.IptablesManager('ns')
        self.nat = self.mgr.ipv4['nat']

    def test_dollar_names_expand_to_wrapped_chains(self) -> None:
        self.nat.add_chain('fip')
        rule = self.nat.add_rule('PREROUTING', '-j   $fip')
        self.assertEqual(im.Rule('neutron-l3-agent-PREROUTING',
                                 '-j neutron-l3-agent-fip'), rule)

    def test_comment_is_quoted_like_iptables_save(self) -> None:
        rule = self.nat.add_rule('snat', '-j ACCEPT', comment='two words')
        self.assertEqual('-A neutron-l3-agent-snat -m comment --comment "two words" -j ACCEPT',
                         rule.line())

    def test_invalid_names_and_rules_are_refused(self) -> None:
        self.assertRaises(ValueError, self.nat.add_chain, 'twelve-chars')
        self.assertRaises(ValueError, self.nat.add_chain, 'a b')
        self.assertRaises(ValueError, self.nat.add_chain, 'PREROUTING', wrap=False)
        self.assertRaises(ValueError, self.nat.add_rule, 'nosuch', '-j ACCEPT')
        self.assertRaises(ValueError, self.nat.add_rule, 'snat', '-j ACCEPT\n-F')
        self.assertRaises(ValueError, self.nat.add_rule, 'snat', '-j ACCEPT', comment='a"b')
        self.assertRaises(ValueError, im.IptablesManager, 'ns', binary_name='x' * 17)

    def test_top_rules_come_first_and_duplicates_are_ignored(self) -> None:
        self.nat.add_rule('snat', '-j RETURN')
        self.nat.add_rule('snat', '-s 10.0.0.1/32 -j ACCEPT', top=True)
        self.nat.add_rule('snat', '-j RETURN')
        specs = [r.spec for r in self.nat.chain_rules('neutron-l3-agent-snat')]
        self.assertEqual(['-s 10.0.0.1/32 -j ACCEPT', '-j neutron-l3-agent-float-snat',
                          '-j RETURN'], specs)

    def test_remove_chain_removes_jumps_to_it(self) -> None:
        self.nat.add_chain('fip')
        self.nat.add_rule('PREROUTING', '-j $fip')
        self.nat.add_rule('fip', '-j ACCEPT')
        self.nat.remove_chain('fip')
        self.assertNotIn('fip', self.mgr.render())
        self.assertTrue(self.nat.remove_rule('snat', '-j $float-snat'))
        self.assertFalse(self.nat.remove_rule('snat', '-j $float-snat'))

    def test_parse_save_reads_tables_chains_and_rules(self) -> None:
        text = ('# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [3:496]\n'
                ':neutron-l3-agent-snat - [0:0]\n'
                '-A PREROUTING -j neutron-l3-agent-PREROUTING\n'
                '-A neutron-l3-agent-snat -o qg-1 -j SNAT --to-source 1.2.3.4\nCOMMIT\n'
                '*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n')
        tables = im.parse_save(text)
        self.assertEqual({'nat', 'filter'}, set(tables))
        self.assertEqual({'PREROUTING': 'ACCEPT', 'neutron-l3-agent-snat': '-'},
                         tables['nat'].chains)
        self.assertEqual(['-o qg-1 -j SNAT --to-source 1.2.3.4'],
                         tables['nat'].rules['neutron-l3-agent-snat'])
        self.assertEqual('neutron-l3-agent-PREROUTING',
                         im.rule_target(tables['nat'].rules['PREROUTING'][0]))


class ApplyTest(ManagerTestCase):

    def test_apply_only_when_the_model_changed(self) -> None:
        mgr = im.IptablesManager('ns')
        self.assertTrue(mgr.apply())
        self.assertFalse(mgr.apply())
        self.assertEqual(1, len(self.fake.restores))
        mgr.ipv4['nat'].add_rule('snat', '-o qg-1 -j SNAT --to-source 1.2.3.4 --random-fully')
        self.assertTrue(mgr.apply())
        # Only the changed table is rewritten.
        self.assertEqual(['*nat'], [line for line in self.fake.restores[-1].splitlines()
                                    if line.startswith('*')])
        self.assertIn('-A neutron-l3-agent-snat -o qg-1 -j SNAT --to-source 1.2.3.4 '
                      '--random-fully', self.fake.lines('nat'))

    def test_defer_apply_batches_into_one_restore(self) -> None:
        mgr = im.IptablesManager('ns')
        mgr.apply()
        with mgr.defer_apply():
            mgr.ipv4['nat'].add_rule('PREROUTING', '-d 1.1.1.1/32 -j DNAT --to-destination '
                                     '10.0.0.1')
            with mgr.defer_apply():
                mgr.ipv4['filter'].add_rule('INPUT', '-p tcp -m tcp --dport 9697 -j DROP')
            self.assertEqual(1, len(self.fake.restores))
        self.assertEqual(2, len(self.fake.restores))
        self.assertIn('-A neutron-l3-agent-INPUT -p tcp -m tcp --dport 9697 -j DROP',
                      self.fake.lines('filter'))

    def test_failed_block_applies_nothing(self) -> None:
        mgr = im.IptablesManager('ns')
        mgr.apply()
        with self.assertRaises(RuntimeError):
            with mgr.defer_apply():
                mgr.reset()
                raise RuntimeError('half-built model')
        self.assertEqual(1, len(self.fake.restores))

    def test_rebuilding_the_same_rules_is_a_no_op(self) -> None:
        mgr = im.IptablesManager('ns')
        for _ in range(2):
            with mgr.defer_apply():
                mgr.reset()
                mgr.ipv4['nat'].add_rule('snat', '-o qg-1 -j SNAT --to-source 1.2.3.4')
        self.assertEqual(1, len(self.fake.restores))

    def test_foreign_rules_kept_stale_chains_and_duplicate_jumps_removed(self) -> None:
        self.fake = FakeIptables(
            '*nat\n:PREROUTING ACCEPT [0:0]\n:neutron-l3-agent-PREROUTING - [0:0]\n'
            ':neutron-l3-agent-old - [0:0]\n:docker - [0:0]\n'
            '-A PREROUTING -j neutron-l3-agent-PREROUTING\n'
            '-A PREROUTING -s 192.0.2.1/32 -j docker\n'
            '-A PREROUTING -j neutron-l3-agent-PREROUTING\n'
            '-A PREROUTING -j neutron-l3-agent-old\n'
            '-A INPUT -j neutron-l3-agent-old\n'
            '-A neutron-l3-agent-PREROUTING -d 1.1.1.1/32 -j DNAT --to-destination 10.0.0.9\n'
            '-A neutron-l3-agent-old -j ACCEPT\nCOMMIT\n')
        self._patch_priv()
        mgr = im.IptablesManager('ns')  # an agent restart: nothing applied yet
        mgr.apply()
        nat = self.fake.lines('nat')
        self.assertEqual(['-A PREROUTING -j neutron-l3-agent-PREROUTING',
                          '-A PREROUTING -s 192.0.2.1/32 -j docker'],
                         [r for r in nat if r.startswith('-A PREROUTING')])
        self.assertNotIn('neutron-l3-agent-old', self.fake.tables['nat'].chains)
        self.assertIn('docker', self.fake.tables['nat'].chains)
        self.assertFalse([r for r in nat if 'DNAT' in r])
        # And a second manager on the converged state changes nothing more.
        before = self.fake.render()
        im.IptablesManager('ns').apply()
        self.assertEqual(before, self.fake.render())

    def test_stale_chain_jumped_to_from_a_shared_chain_is_removed(self) -> None:
        # What neutron-openvswitch-agent leaves on a host agentkit takes
        # over: its -local chain, hooked into the shared neutron-filter-top.
        self.fake = FakeIptables(
            '*filter\n:FORWARD ACCEPT [0:0]\n:neutron-filter-top - [0:0]\n'
            ':neutron-openvswi-local - [0:0]\n:neutron-openvswi-sg-fallback - [0:0]\n'
            '-A FORWARD -j neutron-filter-top\n'
            '-A neutron-filter-top -s 192.0.2.1/32 -j ACCEPT\n'
            '-A neutron-filter-top -j neutron-openvswi-local\n'
            '-A neutron-openvswi-sg-fallback -j DROP\nCOMMIT\n')
        self._patch_priv()
        mgr = im.IptablesManager(None, binary_name='neutron-openvswi', filter_top=False,
                                 tables=('filter',))
        mgr.apply()
        chains = self.fake.tables['filter'].chains
        self.assertNotIn('neutron-openvswi-local', chains)
        self.assertNotIn('neutron-openvswi-sg-fallback', chains)
        self.assertEqual(['-s 192.0.2.1/32 -j ACCEPT'],
                         self.fake.tables['filter'].rules['neutron-filter-top'])
        before = self.fake.render()
        im.IptablesManager(None, binary_name='neutron-openvswi', filter_top=False,
                           tables=('filter',)).apply()
        self.assertEqual(before, self.fake.render())

    def test_restore_failure_raises_and_is_retried(self) -> None:
        mgr = im.IptablesManager('ns')
        self.fake.fail_restore = True
        err = self.assertRaises(im.IptablesError, mgr.apply)
        self.assertIn('line 2 failed', str(err))
        self.fake.fail_restore = False
        self.assertTrue(mgr.apply())
        self.assertEqual(2, len(self.fake.restores))

    def test_invalidate_compares_with_the_kernel_again(self) -> None:
        mgr = im.IptablesManager('ns')
        mgr.apply()
        saves = self.fake.saves
        mgr.invalidate()
        # The live state already matched: read, compared, nothing written.
        self.assertFalse(mgr.apply())
        self.assertEqual(1, len(self.fake.restores))
        self.assertGreater(self.fake.saves, saves)
        self.fake.tables['nat'].rules['neutron-l3-agent-snat'].append('-j ACCEPT')
        mgr.invalidate()
        self.assertTrue(mgr.apply())
        self.assertNotIn('-j ACCEPT', '\n'.join(self.fake.lines('nat')))


class RestartWithoutChurnTest(ManagerTestCase):
    """A new manager (an agent restart) on rules it wrote before writes nothing."""

    @staticmethod
    def router_rules(mgr: im.IptablesManager, fip: str = '203.0.113.5') -> None:
        nat = mgr.ipv4['nat']
        nat.add_rule('snat', '-o qg-1 -j SNAT --to-source 203.0.113.2 --random-fully')
        nat.add_rule('PREROUTING', '-d %s/32 -j DNAT --to-destination 10.0.0.5' % fip)
        nat.add_rule('float-snat', '-s 10.0.0.5/32 -j SNAT --to-source %s' % fip)
        mgr.ipv4['mangle'].add_chain('mark')
        mgr.ipv4['mangle'].add_rule('PREROUTING', '-j $mark')
        mgr.ipv4['filter'].add_rule('INPUT', '-p tcp -m tcp --dport 9697 -j DROP')

    def test_restart_on_matching_rules_writes_nothing(self) -> None:
        first = im.IptablesManager('ns')
        with first.defer_apply():
            self.router_rules(first)
        self.assertEqual(1, len(self.fake.restores))
        before = self.fake.render()
        restarted = im.IptablesManager('ns')
        with restarted.defer_apply():
            restarted.reset()
            self.router_rules(restarted)
        self.assertEqual(1, len(self.fake.restores), self.fake.restores[-1])
        self.assertEqual(before, self.fake.render())
        # All four tables were due: read with one save, not four.
        self.assertEqual([None], self.fake.saved_tables[-1:])
        self.assertEqual(2, self.fake.saves)

    def test_only_chains_that_differ_are_rewritten(self) -> None:
        first = im.IptablesManager('ns')
        with first.defer_apply():
            self.router_rules(first)
        restarted = im.IptablesManager('ns')
        with restarted.defer_apply():
            self.router_rules(restarted, fip='203.0.113.6')  # the FIP moved meanwhile
        text = self.fake.restores[-1]
        self.assertEqual(['*nat'], [line for line in text.splitlines()
                                    if line.startswith('*')])
        declared = sorted(line.split()[0][1:] for line in text.splitlines()
                          if line.startswith(':'))
        self.assertEqual(['neutron-l3-agent-PREROUTING', 'neutron-l3-agent-float-snat'],
                         declared)
        nat = self.fake.lines('nat')
        self.assertIn('-A neutron-l3-agent-PREROUTING -d 203.0.113.6/32 -j DNAT '
                      '--to-destination 10.0.0.5', nat)
        self.assertFalse([r for r in nat if '203.0.113.5' in r])

    def record_path(self) -> str:
        return os.path.join(self.useFixture(fixtures.TempDir()).path, 'l3', 'r1.json')

    def test_restart_with_an_unchanged_generation_reads_nothing(self) -> None:
        path = self.record_path()
        first = im.IptablesManager('ns', state_file=path)
        with first.defer_apply():
            self.router_rules(first)
        saves, restores = self.fake.saves, len(self.fake.restores)
        restarted = im.IptablesManager('ns', state_file=path)
        with restarted.defer_apply():
            self.router_rules(restarted)
        self.assertEqual((saves, restores), (self.fake.saves, len(self.fake.restores)))
        # A later change is compared with the kernel as always.
        restarted.ipv4['nat'].add_rule('OUTPUT', '-d 1.1.1.1/32 -j DNAT --to-destination '
                                       '10.0.0.1')
        self.assertTrue(restarted.apply())
        self.assertEqual(['nat'], self.fake.saved_tables[-1:])

    def test_a_commit_by_anyone_else_means_reading_again(self) -> None:
        path = self.record_path()
        first = im.IptablesManager('ns', state_file=path)
        with first.defer_apply():
            self.router_rules(first)
        # Someone changed one of our chains meanwhile (a commit: new generation).
        self.fake.tables['nat'].rules['neutron-l3-agent-snat'].append('-j ACCEPT')
        self.fake.generation += 1
        restarted = im.IptablesManager('ns', state_file=path)
        with restarted.defer_apply():
            self.router_rules(restarted)
        self.assertNotIn('-A neutron-l3-agent-snat -j ACCEPT', self.fake.lines('nat'))

    def test_a_recreated_namespace_is_not_trusted(self) -> None:
        path = self.record_path()
        first = im.IptablesManager('ns', state_file=path)
        with first.defer_apply():
            self.router_rules(first)
        self.fake.tables.clear()  # a new namespace, whose generation happens to match
        self.fake.cookie += 1
        restarted = im.IptablesManager('ns', state_file=path)
        with restarted.defer_apply():
            self.router_rules(restarted)
        self.assertIn('-A neutron-l3-agent-snat -o qg-1 -j SNAT --to-source 203.0.113.2 '
                      '--random-fully', self.fake.lines('nat'))

    def test_a_different_model_is_compared_and_no_generation_means_reading(self) -> None:
        path = self.record_path()
        first = im.IptablesManager('ns', state_file=path)
        with first.defer_apply():
            self.router_rules(first)
        restarted = im.IptablesManager('ns', state_file=path)
        with restarted.defer_apply():
            self.router_rules(restarted, fip='203.0.113.9')
        self.assertIn('-A neutron-l3-agent-PREROUTING -d 203.0.113.9/32 -j DNAT '
                      '--to-destination 10.0.0.5', self.fake.lines('nat'))
        saves = self.fake.saves
        with mock.patch.object(im.priv, 'ruleset_generation', side_effect=OSError(22, 'no')):
            again = im.IptablesManager('ns', state_file=path)
            with again.defer_apply():
                self.router_rules(again, fip='203.0.113.9')
        self.assertEqual(saves + 1, self.fake.saves)
        self.assertFalse(os.path.exists(path))

    def test_a_failed_restore_drops_the_record(self) -> None:
        path = self.record_path()
        first = im.IptablesManager('ns', state_file=path)
        with first.defer_apply():
            self.router_rules(first)
        self.assertTrue(os.path.exists(path))
        self.fake.fail_restore = True
        first.ipv4['nat'].add_rule('OUTPUT', '-d 1.1.1.1/32 -j DNAT --to-destination 10.0.0.1')
        self.assertRaises(im.IptablesError, first.apply)
        self.assertFalse(os.path.exists(path))

    def test_a_change_reads_only_the_changed_table(self) -> None:
        mgr = im.IptablesManager('ns')
        mgr.apply()
        self.fake.saved_tables.clear()
        mgr.ipv4['nat'].add_rule('OUTPUT', '-d 1.1.1.1/32 -j DNAT --to-destination 10.0.0.1')
        mgr.apply()
        self.assertEqual(['nat'], self.fake.saved_tables)


class PrivilegedHelpersTest(base.TestCase):
    """The root-side helpers that need no root (no namespace, no privsep)."""

    def test_check_rules_accepts_rendered_input_only(self) -> None:
        priv_iptables._check_rules(im.IptablesManager('ns').restore_input(4, {}))
        for bad in ('-t nat -A X -j ACCEPT', '*bogus', 'FLUSH', 'COMMIT\x00'):
            self.assertRaises(ValueError, priv_iptables._check_rules, bad)

    def test_execute_passes_stdin_and_captures_output(self) -> None:
        script = ('import sys; data = sys.stdin.read(); sys.stdout.write(data.upper()); '
                  'sys.stderr.write("err"); sys.exit(3)')
        rc, out, err = tool_exec.execute([sys.executable, '-c', script], None,
                                         'x' * 200000)
        self.assertEqual((3, 'X' * 200000, 'err'), (rc, out, err))

    def test_execute_reports_missing_binary_and_timeout(self) -> None:
        self.assertRaises(exceptions.ProcessError, tool_exec.execute,
                          ['/nonexistent/iptables-restore'], None)
        sleep = subprocess.run(['which', 'sleep'], capture_output=True, text=True)
        err = self.assertRaises(exceptions.ProcessError, tool_exec.execute,
                                [sleep.stdout.strip(), '30'], None, '', 0.3)
        self.assertIn('timeout', str(err))

    def test_execute_missing_namespace(self) -> None:
        self.assertRaises(LookupError, tool_exec.execute, ['/bin/true'],
                          'akr-no-such-namespace-%s' % os.getpid())

    def test_binary_and_argument_checks(self) -> None:
        self.assertRaises(ValueError, priv_iptables._binary, priv_iptables.SAVE_BINARIES, 5)
        self.assertRaises(ValueError, tool_exec.check_timeout, 0)
        self.assertRaises(ValueError, namespaces.open_namespace, '../etc')
