"""Root iptables operations: read and atomically rewrite one namespace's rules.

Runs in the ``network`` privsep daemon. iptables has no netlink API that
pyroute2 offers, so ``iptables-save`` / ``iptables-restore`` are executed,
but only once per router change: the unprivileged
:mod:`agentkit.lib.iptables_manager` renders the whole change into one
``iptables-restore --noflush`` input, which the kernel applies atomically per
table (``COMMIT``). ``--noflush`` matters: rules of other tools in the same
namespace are never touched; agentkit's own chains are flushed by
re-declaring them in the input, the way Neutron's IptablesManager does.

The tool is run by :mod:`agentkit.privileged.tool_exec` (``subprocess``
started from a thread inside the namespace; stdin from a memory file),
shared with the ``nft`` operations.

What root accepts is narrower than what the tool could do: ``restore``
only declares, fills and deletes agentkit's own chains
(:data:`OWN_CHAIN_PREFIX`, which all of Neutron's layouts share:
``neutron-l3-agent-*``, ``neutron-openvswi-*``, ``neutron-filter-top``...),
adds to or removes from the kernel's builtin chains nothing but jumps into
them (never replaces a rule, ``-R``), and works only in the root namespace
or a namespace agentkit creates (:data:`OWN_NAMESPACE_PREFIXES`). An agent
that is taken over can therefore not rewrite the chains of other tools
(libvirt, Docker, the operator's) nor put its own rules into the builtin
chains. It can still accept traffic through its own chains once they are
hooked: that is what a firewall driver does, and no syntactic check can
tell a security group's rule from a hostile one.

Only primitives cross the privsep channel: ``(returncode, stdout, stderr)``.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import struct

from agentkit.lib import naming
from agentkit.privileged import namespaces
from agentkit.privileged import network
from agentkit.privileged import nfnetlink as nfnl
from agentkit.privileged import tool_exec

DEFAULT_TIMEOUT = tool_exec.DEFAULT_TIMEOUT

SAVE_BINARIES = {4: 'iptables-save', 6: 'ip6tables-save'}
RESTORE_BINARIES = {4: 'iptables-restore', 6: 'ip6tables-restore'}
TABLES = frozenset({'filter', 'nat', 'mangle', 'raw', 'security'})
# The kernel's builtin chains per table: restore may only add or remove
# jumps from them into agentkit's own chains.
KERNEL_BUILTIN_CHAINS = {
    'filter': frozenset({'INPUT', 'FORWARD', 'OUTPUT'}),
    'nat': frozenset({'PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'}),
    'mangle': frozenset({'PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'}),
    'raw': frozenset({'PREROUTING', 'OUTPUT'}),
    'security': frozenset({'INPUT', 'FORWARD', 'OUTPUT'}),
}
# Every chain agentkit creates, as Neutron's agents named theirs.
OWN_CHAIN_PREFIX = 'neutron-'
# Namespaces whose iptables agentkit may rewrite (besides the root one).
OWN_NAMESPACE_PREFIXES = (naming.ROUTER_NS_PREFIX, naming.DHCP_NS_PREFIX)

# What an iptables-restore --noflush input produced by agentkit consists of.
_RESTORE_LINE_RE = re.compile(
    r'(\*(%s)|:[^\s]+ [^\s]+( \[\d+:\d+\])?|-[AIDFXNZR] .*|COMMIT|#.*|)'
    % '|'.join(sorted(TABLES)))
_JUMP_OPTIONS = frozenset({'-j', '--jump', '-g', '--goto'})


def _binary(table: dict[int, str], ip_version: int) -> str:
    if ip_version not in table or isinstance(ip_version, bool):
        raise ValueError('ip_version must be 4 or 6, got %r' % (ip_version,))
    return tool_exec.find_binary(table[ip_version])


def _check_rules(rules: str) -> None:
    """Defence in depth: only the restore grammar agentkit itself renders,
    and only on agentkit's own chains (see :func:`_check_chains`)."""
    if not isinstance(rules, str) or '\0' in rules:
        raise ValueError('rules must be a str without NUL')
    table = ''
    for number, line in enumerate(rules.splitlines(), 1):
        if not _RESTORE_LINE_RE.fullmatch(line):
            raise ValueError('line %d of the iptables-restore input is not '
                             'accepted: %r' % (number, line[:80]))
        if line.startswith('*'):
            table = line[1:]
        elif line.startswith((':', '-')):
            _check_chains(table, line, number)


def _is_own(chain: str) -> bool:
    return chain.startswith(OWN_CHAIN_PREFIX) and len(chain) > len(OWN_CHAIN_PREFIX)


def _jumps_to_own(line: str) -> bool:
    """Whether the rule's one target is a chain of agentkit's. Tokens as the
    shell would split them, so a ``-j`` inside a quoted comment is no jump."""
    try:
        tokens = shlex.split(line)
    except ValueError:  # unbalanced quotes
        return False
    targets = [tokens[i + 1] for i, token in enumerate(tokens[:-1])
               if token in _JUMP_OPTIONS]
    return len(targets) == 1 and _is_own(targets[0])


def _check_chains(table: str, line: str, number: int) -> None:
    """Refuse a line that declares, flushes or deletes a chain agentkit does
    not own, or adds to a builtin chain anything but a jump to its own."""
    if line.startswith(':'):
        chain, command = line[1:].split(' ', 1)[0], ':'
    else:
        command, _, rest = line.partition(' ')
        chain = rest.split(' ', 1)[0]
    if _is_own(chain):
        return
    if command in ('-A', '-I', '-D') and _jumps_to_own(line) and (
            chain in KERNEL_BUILTIN_CHAINS.get(table, ()) or command == '-D'):
        # Hooks of agentkit's chains into builtin ones, and the removal of
        # any rule that still jumps into a chain of agentkit being deleted.
        return
    raise ValueError('line %d of the iptables-restore input touches chain %r of '
                     'table %r, which is not agentkit\'s (%s*): %r'
                     % (number, chain, table or '?', OWN_CHAIN_PREFIX, line[:80]))


def _check_namespace(namespace: str | None) -> None:
    """The root namespace or one agentkit creates (a router's, a network's)."""
    if namespace is None:
        return
    namespaces.check_name(namespace)
    if not namespace.startswith(OWN_NAMESPACE_PREFIXES):
        raise ValueError('refusing to rewrite the iptables of namespace %r: not one of '
                         'agentkit\'s (%s)' % (namespace, ', '.join(OWN_NAMESPACE_PREFIXES)))


@network.entrypoint
def restore(namespace: str | None, ip_version: int, rules: str,
            timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str, str]:
    """``iptables-restore --noflush`` of ``rules`` inside ``namespace``.

    Each ``*table ... COMMIT`` block is applied atomically by the kernel;
    a failing block leaves that table untouched.

    :returns: (returncode, stdout, stderr) of the tool.
    :raises ValueError: the input is not agentkit's, or the namespace is not
        the root one or one of agentkit's.
    :raises NetworkNamespaceNotFound: no such namespace.
    :raises ProcessError: the tool is missing, or did not finish in time.
    """
    _check_namespace(namespace)
    _check_rules(rules)
    argv = [_binary(RESTORE_BINARIES, ip_version), '--noflush']
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


# nf_tables (the kernel side of iptables-nft): NFT_MSG_GETGEN asks for the
# ruleset generation of the namespace, which every committed change bumps.
_NETLINK_NETFILTER = 12
_NFNL_SUBSYS_NFTABLES = 10
_NFT_MSG_GETGEN = 16
_NFT_MSG_NEWGEN = 15
_NFTA_GEN_ID = 1
_NLM_F_REQUEST = 0x1
_NLMSG_ERROR = 2
# getsockopt: a 64-bit id of the socket's network namespace, never reused
# while the host runs (Linux 5.14+), unlike the namespace's inode number.
_SO_NETNS_COOKIE = 71


def _generation_here() -> list[int]:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        sock.settimeout(5.0)
        cookie = struct.unpack('=Q', sock.getsockopt(socket.SOL_SOCKET, _SO_NETNS_COOKIE,
                                                     8))[0]
        request = struct.pack('=IHHII', 20, (_NFNL_SUBSYS_NFTABLES << 8) | _NFT_MSG_GETGEN,
                              _NLM_F_REQUEST, 1, 0) + struct.pack('=BBH', 0, 0, 0)
        sock.send(request)
        reply = sock.recv(65536)
    length, msg_type = struct.unpack('=IH', reply[:6])
    if msg_type == _NLMSG_ERROR:
        code = -struct.unpack('=i', reply[16:20])[0]
        raise OSError(code, 'NFT_MSG_GETGEN: %s' % os.strerror(code))
    if msg_type != (_NFNL_SUBSYS_NFTABLES << 8) | _NFT_MSG_NEWGEN:
        raise OSError(0, 'unexpected reply type %#x to NFT_MSG_GETGEN' % msg_type)
    # After the netlink header (16 bytes) and the nfgenmsg (4).
    for attr_type, value in nfnl.iter_attrs(reply, 20, length):
        if attr_type == _NFTA_GEN_ID and len(value) >= 4:
            return [cookie, nfnl.be32(value)]
    raise OSError(0, 'NFT_MSG_GETGEN reply without a generation id')


_nft_backend: bool | None = None


def _iptables_uses_nf_tables() -> bool:
    """Whether ``iptables-restore`` is iptables-nft (cached; the binary is fixed).

    Only then does every change agentkit or an operator makes with the
    iptables tools bump the nf_tables generation; iptables-legacy commits
    leave it alone.
    """
    global _nft_backend
    if _nft_backend is None:
        rc, out, _ = tool_exec.execute([_binary(RESTORE_BINARIES, 4), '--version'], None,
                                       '', DEFAULT_TIMEOUT)
        _nft_backend = rc == 0 and '(nf_tables)' in out
    return _nft_backend


@network.entrypoint
def ruleset_generation(namespace: str | None = None) -> list[int]:
    """``[namespace cookie, nf_tables generation]`` of ``namespace``.

    Equal values at two moments mean no iptables/nftables change was
    committed in that very namespace in between: a restarted agent can
    trust rules it recorded without reading them back (one netlink round
    trip instead of an ``iptables-save``).

    :raises NetworkNamespaceNotFound: no such namespace.
    :raises OSError: the iptables tools are not iptables-nft (legacy
        commits would go unseen), or the kernel refused (no nf_tables,
        Linux < 5.14).
    """
    if not _iptables_uses_nf_tables():
        raise OSError(0, 'iptables is not the nf_tables variant: its changes do not '
                         'show in the nf_tables generation')
    return namespaces.run_in_namespace(namespace, _generation_here)
