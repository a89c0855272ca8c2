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

import os
import re
import socket
import struct

from agentkit.privileged import namespaces
from agentkit.privileged import network
from agentkit.privileged import nfnetlink as nfnl
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
