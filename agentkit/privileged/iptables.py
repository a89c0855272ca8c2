"""Root iptables operations: read and atomically rewrite one namespace's rules.

Runs in the ``network`` privsep daemon. iptables has no netlink API that
pyroute2 offers, so ``iptables-save`` / ``iptables-restore`` are executed,
but only once per router change: the unprivileged
:mod:`agentkit.lib.iptables_manager` renders the whole change into one
``iptables-restore --noflush`` input, which the kernel applies atomically per
table (``COMMIT``). ``--noflush`` matters: rules of other tools in the same
namespace are never touched; agentkit's own chains are flushed by
re-declaring them in the input, the way Neutron's IptablesManager does.

The tool is run by :mod:`agentkit.privileged.tool_exec` (fork, ``setns()``
in the child, exec; stdin from a memory file), shared with the ``nft``
operations.

Only primitives cross the privsep channel: ``(returncode, stdout, stderr)``.
"""

from __future__ import annotations

import re

from agentkit.privileged import network
from agentkit.privileged import tool_exec

DEFAULT_TIMEOUT = tool_exec.DEFAULT_TIMEOUT

SAVE_BINARIES = {4: 'iptables-save', 6: 'ip6tables-save'}
RESTORE_BINARIES = {4: 'iptables-restore', 6: 'ip6tables-restore'}
TABLES = frozenset({'filter', 'nat', 'mangle', 'raw', 'security'})

# What an iptables-restore --noflush input produced by agentkit consists of.
_RESTORE_LINE_RE = re.compile(
    r'(\*(%s)|:[^\s]+ [^\s]+( \[\d+:\d+\])?|-[AIDFXNZR] .*|COMMIT|#.*|)'
    % '|'.join(sorted(TABLES)))


def _binary(table: dict[int, str], ip_version: int) -> str:
    if ip_version not in table or isinstance(ip_version, bool):
        raise ValueError('ip_version must be 4 or 6, got %r' % (ip_version,))
    return tool_exec.find_binary(table[ip_version])


def _check_rules(rules: str) -> None:
    """Defence in depth: only the restore grammar agentkit itself renders."""
    if not isinstance(rules, str) or '\0' in rules:
        raise ValueError('rules must be a str without NUL')
    for number, line in enumerate(rules.splitlines(), 1):
        if not _RESTORE_LINE_RE.fullmatch(line):
            raise ValueError('line %d of the iptables-restore input is not '
                             'accepted: %r' % (number, line[:80]))


@network.entrypoint
def restore(namespace: str | None, ip_version: int, rules: str,
            timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str, str]:
    """``iptables-restore --noflush`` of ``rules`` inside ``namespace``.

    Each ``*table ... COMMIT`` block is applied atomically by the kernel;
    a failing block leaves that table untouched.

    :returns: (returncode, stdout, stderr) of the tool.
    :raises NetworkNamespaceNotFound: no such namespace.
    :raises ProcessError: the tool is missing, or did not finish in time.
    """
    argv = [_binary(RESTORE_BINARIES, ip_version), '--noflush']
    _check_rules(rules)
    return tool_exec.execute(argv, namespace, rules, tool_exec.check_timeout(timeout))


@network.entrypoint
def save(namespace: str | None, ip_version: int, table: str | None = None,
         timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str, str]:
    """``iptables-save`` (of one ``table`` or all) inside ``namespace``.

    :returns: (returncode, stdout, stderr) of the tool.
    :raises NetworkNamespaceNotFound: no such namespace.
    """
    argv = [_binary(SAVE_BINARIES, ip_version)]
    if table is not None:
        if table not in TABLES:
            raise ValueError('unknown iptables table %r' % (table,))
        argv += ['-t', table]
    return tool_exec.execute(argv, namespace, '', tool_exec.check_timeout(timeout))
