"""Network namespaces as the privsep daemons see them (no entrypoints here).

The one home of the facts every privileged module needs about a namespace:
where ``ip netns`` keeps them (:data:`NETNS_RUN_DIR`), which names are safe
to turn into a path there (:data:`NAME_PATTERN`, also what
:mod:`agentkit.lib.ip_lib` checks in the agent), how to open one so that a
missing namespace is a clean :class:`NetworkNamespaceNotFound`, and how to
run code inside one.

Entering a namespace: ``setns()`` moves only the calling *thread*, so
:func:`run_in_namespace` uses a throwaway thread and the daemon's pooled
threads never change namespace. A process started from that thread (with
:mod:`subprocess`, a C-level fork+exec) is born in the namespace, which is
how the tools and daemons agentkit runs get there without any Python code
running in a forked child of the multi-threaded daemon.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import threading
from typing import Any, Callable, Iterator, TypeGuard, TypeVar

from agentkit import exceptions

NETNS_RUN_DIR = '/run/netns'
MAX_NAME_LEN = 255
# A file name under NETNS_RUN_DIR: no '/', never '.' or '..', and no leading
# '-' so that a name can never be taken for an option of a tool.
NAME_PATTERN = r'[A-Za-z0-9_][A-Za-z0-9_.-]{0,%d}' % (MAX_NAME_LEN - 1)
_NAME_RE = re.compile(NAME_PATTERN)

CLONE_NEWNET = 0x40000000

# os.setns only exists from Python 3.12; on 3.11 libc's is called through ctypes
# (the symbols of the running process include libc's: no ldconfig lookup).
_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int

T = TypeVar('T')


class NetworkNamespaceNotFound(exceptions.AgentkitError, LookupError):
    """The named network namespace does not exist (no /run/netns/<name>).

    The constructor takes only primitives and passes them all to
    Exception.__init__, so privsep's ``cls(*e.args)`` rebuilds it faithfully.
    """

    def __init__(self, namespace: str) -> None:
        super().__init__(namespace)
        self.namespace = namespace

    def __str__(self) -> str:
        return 'network namespace %r does not exist' % (self.namespace,)


def is_valid_name(name: Any) -> TypeGuard[str]:
    """True if ``name`` is safe as ``/run/netns/<name>``."""
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


def check_name(name: Any) -> str:
    """``name`` if it is a valid namespace name, else ValueError.

    Defence in depth: the agent validates first (ip_lib), but root re-checks
    whatever would otherwise become a path.
    """
    if not is_valid_name(name):
        raise ValueError('invalid network namespace name %r' % (name,))
    return name


def path(name: str) -> str:
    """``/run/netns/<name>`` of a checked name."""
    return os.path.join(NETNS_RUN_DIR, check_name(name))


def open_namespace(name: str | None) -> int | None:
    """An O_CLOEXEC fd of ``/run/netns/<name>``, None for the root namespace.

    Opened before anything is started, so a missing namespace is a clean
    :class:`NetworkNamespaceNotFound` rather than a failure half-way.
    """
    if name is None:
        return None
    try:
        return os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetworkNamespaceNotFound(name) from None


@contextlib.contextmanager
def netns_fd(name: str | None) -> Iterator[int]:
    """An fd for a namespace, without ever creating it; None is the daemon's own."""
    fd = open_namespace(name)
    if fd is None:
        fd = os.open('/proc/self/ns/net', os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def setns(fd: int) -> None:
    """``setns(fd, CLONE_NEWNET)`` for the calling thread; OSError with the errno."""
    os_setns = getattr(os, 'setns', None)
    if os_setns is not None:
        os_setns(fd, CLONE_NEWNET)
        return
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def run_in_namespace(name: str | None, func: Callable[[], T]) -> T:
    """Run ``func`` in a thread whose network namespace is ``name``.

    Sockets created by ``func`` stay in that namespace, /proc/sys/net shows
    it, and processes it starts are born in it. A throwaway thread joins
    the namespace, runs ``func`` and exits; ``name=None`` runs ``func`` in
    the calling thread (the root namespace).

    :raises NetworkNamespaceNotFound: no such namespace.
    """
    if name is None:
        return func()
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            with netns_fd(name) as fd:
                setns(fd)
                expected = os.fstat(fd).st_ino
            if os.stat('/proc/thread-self/ns/net').st_ino != expected:
                raise RuntimeError('setns into %r did not take effect' % name)
            result['value'] = func()
        except BaseException as e:  # handed to the calling thread
            result['error'] = e

    thread = threading.Thread(target=target, name='netns-%s' % name[:40], daemon=True)
    thread.start()
    thread.join()
    if 'error' in result:
        raise result['error']
    return result['value']
