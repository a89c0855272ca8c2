"""An in-memory iptables model per namespace, applied with one iptables-restore.

Why a model instead of ``iptables -A`` calls: a router update changes dozens
of rules, and one exec per rule would cost tens of milliseconds and leave
the namespace half-configured in between. The model is rendered into one
``iptables-restore --noflush`` input that replaces agentkit's chains
atomically and leaves every other rule in the namespace alone.

Layout (Neutron-compatible, so operators' tooling and habits still work):
every builtin chain ``X`` of a table gets a wrapped chain
``<binary>-X`` (e.g. ``neutron-l3-agent-PREROUTING``) and a jump to it from
``X``; drivers add rules to the wrapped chains or to chains of their own,
also wrapped. ``filter`` has the shared ``neutron-filter-top`` chain (jumped
from FORWARD and OUTPUT) holding a jump to ``<binary>-local``; ``nat`` has
``neutron-postrouting-bottom`` (appended to POSTROUTING) →
``<binary>-snat`` → ``<binary>-float-snat``. In rules, ``$name`` stands for
the wrapped chain ``<binary>-name``.

What is compared, and when the kernel is touched: :meth:`IptablesManager.apply`
renders the model and does nothing if the text equals the last applied one.
Otherwise it reads only the changed tables (``iptables-save -t <table>``,
or one ``iptables-save`` when all of its tables are due) and compares them
with the model rule by rule: a chain whose rules already
match is not touched, only chains that differ are flushed and refilled,
stale chains of its own (left from a previous agent run or removed from the
model) are deleted, and jumps from builtin chains change only when they
differ. When nothing differs -- the first apply after an agent restart on
a host that kept its rules -- no ``iptables-restore`` runs at all; otherwise
one runs for all changed tables. :meth:`defer_apply` batches a whole router
update into that single call. The comparison is textual, so rules are
written the way ``iptables-save`` prints them (a rule written differently
is still correct, but its chain is rewritten whenever its table changes).
A manager with a ``state_file`` skips even the reading after a restart
while the namespace's nf_tables generation shows no commit since its
last apply (see :meth:`IptablesManager.apply`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Callable

from agentkit import exceptions
from agentkit.lib import batching
from agentkit.lib import fileutils
from agentkit.privileged import iptables as priv

LOG = logging.getLogger(__name__)

L3_AGENT_BINARY = 'neutron-l3-agent'
# Neutron's wrap names are at most 16 characters ('neutron-l3-agent').
MAX_BINARY_LEN = 16
# iptables chain names: 28 characters (XT_EXTENSION_MAXNAMELEN - 1).
MAX_CHAIN_LEN = 28
# Neutron keeps the wrapped part short so binary + '-' + chain fits in 28.
MAX_WRAPPED_LEN = 11
FILTER_TOP = 'neutron-filter-top'
POSTROUTING_BOTTOM = 'neutron-postrouting-bottom'
SNAT_COMMENT = 'Perform source NAT on outgoing traffic.'

BUILTIN_CHAINS: dict[int, dict[str, tuple[str, ...]]] = {
    4: {'filter': ('INPUT', 'OUTPUT', 'FORWARD'),
        'nat': ('PREROUTING', 'OUTPUT', 'POSTROUTING'),
        'mangle': ('PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'),
        'raw': ('PREROUTING', 'OUTPUT')},
    6: {'filter': ('INPUT', 'OUTPUT', 'FORWARD'),
        'mangle': ('PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'),
        'raw': ('PREROUTING', 'OUTPUT')},
}
# Order in which tables are rendered (iptables-save uses no fixed order).
TABLE_ORDER = ('raw', 'mangle', 'nat', 'filter')

_CHAIN_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+-]*')
_WRAP_REF_RE = re.compile(r'\$([A-Za-z0-9][A-Za-z0-9_.+-]*)')
_TARGET_RE = re.compile(r'(?:^|\s)-[jg]\s+(\S+)')


class IptablesError(exceptions.AgentkitError):
    """iptables-save/restore failed; carries the tool's stderr."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """One rule of a chain, as iptables-restore reads it (``spec`` after the chain)."""

    chain: str
    spec: str
    top: bool = False

    def line(self, command: str = '-A') -> str:
        return '%s %s %s' % (command, self.chain, self.spec)


def _check_chain(name: str, wrap: bool) -> str:
    limit = MAX_WRAPPED_LEN if wrap else MAX_CHAIN_LEN
    if not isinstance(name, str) or not _CHAIN_RE.fullmatch(name) or len(name) > limit:
        raise ValueError('invalid %schain name %r (at most %d characters of '
                         '[A-Za-z0-9_.+-])' % ('wrapped ' if wrap else '', name, limit))
    return name


def _check_spec(spec: str) -> str:
    if not isinstance(spec, str) or not spec.strip() or any(c in spec for c in '\n\r\0'):
        raise ValueError('invalid iptables rule %r' % (spec,))
    return ' '.join(spec.split())


def rule_target(spec: str) -> str | None:
    """The chain or target a rule jumps to (``-j``/``-g``), if any."""
    match = _TARGET_RE.search(spec)
    return match.group(1) if match else None


class IptablesTable:
    """Chains and rules of one table, as agentkit wants them.

    Methods take a chain's short name, wrapped to ``<binary>-<name>``
    unless ``wrap=False`` (builtin chains, and shared Neutron chains like
    ``neutron-filter-top``); everything is stored by full name.
    """

    def __init__(self, name: str, wrap_name: str, builtins: tuple[str, ...]) -> None:
        self.name = name
        self.wrap_name = wrap_name
        self.builtins = builtins
        self.chains: list[str] = []  # full names, in creation order
        self.rules: list[Rule] = []
        self._rule_set: set[Rule] = set()  # O(1) duplicate checks

    def _set_rules(self, rules: list[Rule]) -> None:
        self.rules = rules
        self._rule_set = set(rules)

    def full_name(self, chain: str, wrap: bool = True) -> str:
        """The name iptables shows for ``chain`` (``$``-free, checked)."""
        _check_chain(chain, wrap)
        return '%s-%s' % (self.wrap_name, chain) if wrap else chain

    def expand(self, spec: str) -> str:
        """Replace ``$name`` by the wrapped chain name."""
        return _WRAP_REF_RE.sub(lambda m: '%s-%s' % (self.wrap_name, m.group(1)),
                                _check_spec(spec))

    def add_chain(self, chain: str, wrap: bool = True) -> str:
        """Declare a chain (idempotent); returns its full name."""
        full = self.full_name(chain, wrap)
        if full in self.builtins:
            raise ValueError('%s is a builtin chain of %s' % (full, self.name))
        if full not in self.chains:
            self.chains.append(full)
        return full

    def remove_chain(self, chain: str, wrap: bool = True) -> None:
        """Drop a chain, its rules and every rule jumping to it."""
        full = self.full_name(chain, wrap)
        if full in self.chains:
            self.chains.remove(full)
        self._set_rules([r for r in self.rules
                         if r.chain != full and rule_target(r.spec) != full])

    def has_chain(self, chain: str, wrap: bool = True) -> bool:
        return self.full_name(chain, wrap) in self.chains

    def _rule(self, chain: str, spec: str, wrap: bool, top: bool,
              comment: str | None) -> Rule:
        full = self.full_name(chain, wrap)
        if full not in self.chains and full not in self.builtins:
            raise ValueError('unknown chain %s in table %s' % (full, self.name))
        spec = self.expand(spec)
        if comment is not None:
            if '"' in comment or '\\' in comment or '\n' in comment:
                raise ValueError('invalid rule comment %r' % (comment,))
            spec = '-m comment --comment "%s" %s' % (comment, spec)
        return Rule(full, spec, top)

    def add_rule(self, chain: str, spec: str, wrap: bool = True, top: bool = False,
                 comment: str | None = None) -> Rule:
        """Append a rule (``top``: before the others of the chain)."""
        rule = self._rule(chain, spec, wrap, top, comment)
        if rule not in self._rule_set:
            self.rules.append(rule)
            self._rule_set.add(rule)
        return rule

    def remove_rule(self, chain: str, spec: str, wrap: bool = True, top: bool = False,
                    comment: str | None = None) -> bool:
        """Remove a rule; False if the model did not hold it."""
        rule = self._rule(chain, spec, wrap, top, comment)
        if rule in self._rule_set:
            self.rules.remove(rule)
            self._rule_set.discard(rule)
            return True
        return False

    def empty_chain(self, chain: str, wrap: bool = True) -> None:
        """Remove every rule of ``chain`` (the chain itself stays)."""
        full = self.full_name(chain, wrap)
        self._set_rules([r for r in self.rules if r.chain != full])

    def chain_rules(self, full_name: str) -> list[Rule]:
        """Rules of one chain in evaluation order (``top`` ones first)."""
        return self._by_chain().get(full_name, [])

    def _by_chain(self) -> dict[str, list[Rule]]:
        grouped: dict[str, list[Rule]] = {}
        for rule in self.rules:
            grouped.setdefault(rule.chain, []).append(rule)
        return {chain: [r for r in rules if r.top] + [r for r in rules if not r.top]
                for chain, rules in grouped.items()}

    def render(self) -> str:
        """Canonical text of the wanted state: the change-detection key."""
        lines = ['*' + self.name]
        lines += [':' + c for c in sorted(self.chains)]
        grouped = self._by_chain()
        for chain in list(self.builtins) + sorted(self.chains):
            lines += [r.line() for r in grouped.get(chain, [])]
        return '\n'.join(lines)


@dataclasses.dataclass
class LiveTable:
    """One table as ``iptables-save`` shows it."""

    chains: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> policy
    rules: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # chain -> specs


def parse_save(text: str) -> dict[str, LiveTable]:
    """Parse ``iptables-save`` output into tables, chains and rule specs."""
    tables: dict[str, LiveTable] = {}
    current: LiveTable | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        if line.startswith('*'):
            current = tables.setdefault(line[1:], LiveTable())
        elif current is None:
            continue
        elif line == 'COMMIT':
            current = None
        elif line.startswith(':'):
            name, _, rest = line[1:].partition(' ')
            current.chains[name] = rest.split(' ', 1)[0]
            current.rules.setdefault(name, [])
        elif line.startswith('-A '):
            chain, _, spec = line[3:].partition(' ')
            current.rules.setdefault(chain, []).append(spec)
    return tables


class IptablesManager(batching.DeferredApply):
    """The iptables of one namespace (or the root one, ``namespace=None``).

    :param binary_name: prefix of agentkit's chains; ``neutron-l3-agent``
        for routers so the rules look exactly like Neutron's.
    :param use_ipv6: also manage ip6tables.
    :param nat: create the SNAT chain layout (``neutron-postrouting-bottom``,
        ``snat``, ``float-snat``).
    :param tables: manage only these tables (default: all of
        :data:`BUILTIN_CHAINS`). The root namespace's firewall needs only
        ``filter``; leaving the others alone keeps raw/mangle untouched.
    :param filter_top: hook the shared ``neutron-filter-top`` chain into
        ``filter``. Without it every rule of the manager lives in chains
        carrying its own prefix, so :meth:`remove_all` can take all of
        them away even when other managers share the namespace.
    :param state_file: where to record what was applied together with the
        namespace's nf_tables generation (see :meth:`apply`); a manager of
        a restarted agent then trusts rules whose generation is unchanged
        instead of reading them back. None: always read.
    """

    def __init__(self, namespace: str | None, binary_name: str = L3_AGENT_BINARY,
                 use_ipv6: bool = False, nat: bool = True,
                 tables: tuple[str, ...] | None = None,
                 filter_top: bool = True, state_file: str | None = None) -> None:
        if not binary_name or len(binary_name) > MAX_BINARY_LEN \
                or not _CHAIN_RE.fullmatch(binary_name):
            raise ValueError('invalid binary name %r' % (binary_name,))
        if tables is not None:
            unknown = set(tables) - set(TABLE_ORDER)
            if unknown or not tables:
                raise ValueError('invalid tables %r (choose from %s)'
                                 % (tables, ', '.join(TABLE_ORDER)))
        self.namespace = namespace
        self.wrap_name = binary_name
        self.use_ipv6 = use_ipv6
        self.nat = nat
        self.managed_tables = tuple(tables) if tables is not None else None
        self.filter_top = filter_top
        self.state_file = state_file
        self.ipv4: dict[str, IptablesTable] = {}
        self.ipv6: dict[str, IptablesTable] = {}
        # (ip_version, table) -> rendered text last applied successfully
        self._applied: dict[tuple[int, str], str] = {}
        self._init_deferral()
        self.reset()

    # -- model -----------------------------------------------------------
    @property
    def versions(self) -> tuple[int, ...]:
        return (4, 6) if self.use_ipv6 else (4,)

    def tables(self, ip_version: int) -> dict[str, IptablesTable]:
        return self.ipv4 if ip_version == 4 else self.ipv6

    def reset(self) -> None:
        """Back to the bare layout; callers then add the rules they want.

        Rebuilding the whole model on every update and letting
        :meth:`apply` diff the text is simpler and safer than tracking
        individual rule additions and removals.
        """
        for version in self.versions:
            tables = self.tables(version)
            tables.clear()
            for name, builtins in BUILTIN_CHAINS[version].items():
                if name == 'nat' and not self.nat:
                    continue
                if self.managed_tables is not None and name not in self.managed_tables:
                    continue
                tables[name] = self._layout(name, builtins)

    def _layout(self, name: str, builtins: tuple[str, ...]) -> IptablesTable:
        table = IptablesTable(name, self.wrap_name, builtins)
        top = name == 'filter' and self.filter_top
        if top:
            table.add_chain(FILTER_TOP, wrap=False)
        for chain in builtins:
            table.add_chain(chain)
            if top and chain in ('FORWARD', 'OUTPUT'):
                table.add_rule(chain, '-j ' + FILTER_TOP, wrap=False, top=True)
            table.add_rule(chain, '-j $' + chain, wrap=False, top=True)
        if top:
            table.add_chain('local')
            table.add_rule(FILTER_TOP, '-j $local', wrap=False)
        elif name == 'nat':
            table.add_chain(POSTROUTING_BOTTOM, wrap=False)
            table.add_rule('POSTROUTING', '-j ' + POSTROUTING_BOTTOM, wrap=False)
            table.add_chain('snat')
            table.add_rule(POSTROUTING_BOTTOM, '-j $snat', wrap=False,
                           comment=SNAT_COMMENT)
            table.add_chain('float-snat')
            table.add_rule('snat', '-j $float-snat')
        return table

    def render(self, ip_version: int = 4) -> str:
        """The wanted state of one IP version (for comparison and tests)."""
        tables = self.tables(ip_version)
        return '\n'.join(tables[name].render() for name in TABLE_ORDER if name in tables)

    # -- applying ----------------------------------------------------------
    def invalidate(self) -> None:
        """Forget what was applied (e.g. the namespace was recreated)."""
        with self._lock:
            self._applied.clear()
            self._forget_record()

    def apply(self) -> bool:
        """Make the kernel match the model; True if iptables-restore ran.

        False also when the kernel already matched (nothing was written).
        Only tables whose rendered text changed since the last successful
        apply are restored: the kernel's nf_tables commit costs a few ms
        per rewritten table, and a floating IP change only touches ``nat``.

        With a ``state_file``, what was applied is recorded with the
        namespace's nf_tables generation (and the namespace's cookie). A
        fresh manager -- an agent restart -- whose record matches both the
        kernel's current generation and its own model knows the kernel is
        exactly as recorded (no commit happened in that namespace since)
        and reads nothing; otherwise it reads and compares as usual.

        :raises IptablesError: the restore failed; the previous rules stay,
            and the next apply starts again from the live state.
        """
        with self._lock:
            if self.deferring:
                return False
            trusted = self._trusted_record() if not self._applied else {}
            changed = compared = False
            before: list[int] | None = None
            for version in self.versions:
                tables = self.tables(version)
                wanted = {name: table.render() for name, table in tables.items()}
                todo = [name for name in TABLE_ORDER if name in wanted
                        and self._applied.get((version, name)) != wanted[name]]
                for name in list(todo):
                    if trusted.get('%d/%s' % (version, name)) == wanted[name]:
                        self._applied[(version, name)] = wanted[name]
                        todo.remove(name)
                if not todo:
                    continue
                if self.state_file and before is None and not changed:
                    before = self._generation()
                for name in todo:
                    self._applied.pop((version, name), None)
                live = self._read_live(version, todo)
                text = self.restore_input(version, live, todo)
                if text:
                    LOG.debug('iptables-restore (IPv%d) in %s: %s', version,
                              self.namespace or 'the root namespace', ', '.join(todo))
                    try:
                        self._run(priv.restore, version, 'iptables-restore', text)
                    except IptablesError:
                        self._forget_record()
                        raise
                    changed = True
                for name in todo:
                    self._applied[(version, name)] = wanted[name]
                compared = True
            if self.state_file and compared:
                # After a restore the generation is read again (a commit by
                # someone else within that millisecond would go unseen); after
                # a compare that wrote nothing, only if nothing was committed
                # while it ran.
                now = self._generation()
                self._record(now if changed or now == before else None)
            return changed

    # -- the record of what was applied -------------------------------------
    def _generation(self) -> list[int] | None:
        try:
            return list(priv.ruleset_generation(self.namespace))
        except Exception as exc:  # old kernel, no nf_tables: just read always
            LOG.debug('No nf_tables generation for %s: %s', self.namespace, exc)
            return None

    def _trusted_record(self) -> dict[str, str]:
        """Rendered tables of the record, if the kernel has not changed since."""
        if not self.state_file:
            return {}
        try:
            with open(self.state_file) as f:
                record = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            LOG.warning('Ignoring the iptables record %s: %s', self.state_file, exc)
            return {}
        generation = self._generation()
        if (generation is None or not isinstance(record, dict)
                or record.get('generation') != generation
                or not isinstance(record.get('tables'), dict)):
            return {}
        return {k: v for k, v in record['tables'].items() if isinstance(v, str)}

    def _record(self, generation: list[int] | None) -> None:
        if generation is None:
            self._forget_record()
            return
        tables = {'%d/%s' % key: text for key, text in self._applied.items()}
        try:
            os.makedirs(os.path.dirname(self.state_file), exist_ok=True)  # type: ignore
            fileutils.write_atomic(self.state_file,  # type: ignore[arg-type]
                                   json.dumps({'generation': generation, 'tables': tables}))
        except OSError as exc:
            LOG.warning('Cannot record the iptables of %s in %s: %s', self.namespace,
                        self.state_file, exc)
            self._forget_record()

    def _forget_record(self) -> None:
        """Drop the record: the next fresh manager reads the kernel."""
        if self.state_file:
            try:
                os.unlink(self.state_file)
            except FileNotFoundError:
                pass

    def _read_live(self, version: int, todo: list[str]) -> dict[str, LiveTable]:
        """The live state of the tables in ``todo``, in as few reads as possible.

        One ``iptables-save -t`` per table when a few change (a floating IP
        touches only ``nat``); one save of the namespace when all of the
        manager's tables are due (after a restart), which costs one exec
        instead of four and reads nothing else of the namespace's tables
        but ``security``, if loaded.
        """
        if len(todo) > 1 and set(todo) == set(self.tables(version)):
            live = parse_save(self._run(priv.save, version, 'iptables-save'))
            return {name: table for name, table in live.items() if name in todo}
        live = {}
        for name in todo:
            live.update(parse_save(self._run(priv.save, version, 'iptables-save', name)))
        return live

    def remove_all(self) -> bool:
        """Take every chain of this manager, and the jumps to them, out of the kernel.

        For an owner that stops filtering for good (a test's cleanup, an
        operator switching the firewall off): an empty model makes
        :meth:`apply` delete the builtin chains' jumps to the manager's
        chains and then the chains. Only chains carrying the manager's
        prefix are touched. The model stays empty until :meth:`reset`.

        :raises ValueError: the manager hooks ``neutron-filter-top``, which
            other managers share; its jump to ``local`` cannot be taken
            out without rewriting the shared chain.
        """
        if self.filter_top and 'filter' in (self.managed_tables or TABLE_ORDER):
            raise ValueError('remove_all() needs filter_top=False')
        with self._lock:
            self.invalidate()
            for version in self.versions:
                tables = self.tables(version)
                for name, table in list(tables.items()):
                    tables[name] = IptablesTable(name, self.wrap_name, table.builtins)
            return self.apply()

    def _run(self, func: Callable[..., tuple[int, str, str]], version: int,
             what: str, *args: str) -> str:
        rc, out, err = func(self.namespace, version, *args)
        if rc != 0:
            where = 'namespace %s' % self.namespace if self.namespace else 'root namespace'
            raise IptablesError('%s (IPv%d) failed in %s with exit code %d: %s'
                                % (what, version, where, rc, err.strip()[:2000]))
        return out

    def _owns(self, chain: str) -> bool:
        return chain.startswith(self.wrap_name + '-')

    def restore_input(self, ip_version: int, live: dict[str, LiveTable],
                      tables: list[str] | None = None) -> str:
        """iptables-restore --noflush input turning ``live`` into the model.

        Empty when ``live`` already matches. Own chains that are missing or
        whose rules differ are (re)declared, which creates or flushes them,
        and refilled; own chains that are no longer wanted are flushed and
        deleted (with any other chain's jumps into them); jumps from builtin
        chains are only touched when they differ from the wanted ones, and
        other foreign rules never. ``tables``
        limits the input to those tables (default: all of the model).
        """
        out: list[str] = []
        for name in TABLE_ORDER:
            table = self.tables(ip_version).get(name)
            if table is None or tables is not None and name not in tables:
                continue
            out += self._table_input(table, live.get(name, LiveTable()))
        return '\n'.join(out) + '\n' if out else ''

    def _table_input(self, table: IptablesTable, live: LiveTable) -> list[str]:
        wanted = set(table.chains)
        stale = sorted(c for c in live.chains if self._owns(c) and c not in wanted)
        ours = wanted | set(stale)
        grouped = table._by_chain()
        changed = sorted(c for c in wanted if c not in live.chains or live.rules.get(c, [])
                         != [r.spec for r in grouped.get(c, [])])
        jumps: list[str] = []
        # Live builtin chains count too: a stale chain cannot be deleted
        # while any builtin chain still jumps to it.
        live_builtins = [c for c, policy in live.chains.items() if policy != '-']
        for builtin in list(table.builtins) + [
                c for c in live_builtins if c not in table.builtins]:
            rules = grouped.get(builtin, [])
            have = [s for s in live.rules.get(builtin, []) if rule_target(s) in ours]
            if [r.spec for r in rules] == have:
                continue
            jumps += ['-D %s %s' % (builtin, spec) for spec in have]
            top = [r for r in rules if r.top]
            jumps += ['-I %s %d %s' % (builtin, i, r.spec) for i, r in enumerate(top, 1)]
            jumps += [r.line() for r in rules if not r.top]
        # Other chains' jumps into a stale chain go too, or its deletion
        # fails (EBUSY): Neutron's agent, whose chains these names were
        # before agentkit replaced it, hooks its ``<prefix>-local`` chain
        # into the shared ``neutron-filter-top``. Any other rule of those
        # chains stays.
        builtins = set(table.builtins) | set(live_builtins)  # done above
        for chain, specs in sorted(live.rules.items()):
            if chain not in ours and chain not in builtins:
                jumps += ['-D %s %s' % (chain, spec) for spec in specs
                          if rule_target(spec) in stale]
        if not changed and not stale and not jumps:
            return []
        lines = ['*' + table.name]
        lines += [':%s - [0:0]' % c for c in sorted(changed + stale)]
        lines += jumps
        for chain in changed:
            lines += [r.line() for r in grouped.get(chain, [])]
        lines += ['-X ' + c for c in stale]
        lines.append('COMMIT')
        return lines

    def get_live_rules(self, ip_version: int = 4, table: str | None = None) -> str:
        """``iptables-save`` of the namespace (for diagnostics and tests)."""
        return self._run(priv.save, ip_version, 'iptables-save', *(
            (table,) if table else ()))
