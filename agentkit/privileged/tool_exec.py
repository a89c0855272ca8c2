"""Run a command-line tool as root from a privsep daemon, optionally inside a namespace.

Shared by the privileged modules that drive a tool without a netlink API
(``iptables-save``/``iptables-restore``, ``nft``, ``dhcp_release``) and by
:mod:`agentkit.privileged.process`, which starts daemons the same way.
Nothing here is an entrypoint: each caller validates its own arguments and
builds argv from a binary found with :func:`find_binary`, so no
caller-supplied path is ever executed.

Starting a process: the daemons are multi-threaded, so there is no
``os.fork()`` with Python code in the child; :mod:`subprocess` forks and
execs in C. To be born inside a namespace, the process is started from a
thread that has joined it (:func:`agentkit.privileged.namespaces.run_in_namespace`).
A missing namespace is a clean :class:`~agentkit.privileged.namespaces.NetworkNamespaceNotFound`
before anything starts, and an exec failure an exception naming the step.

Only primitives cross the privsep channel: callers return
``(returncode, stdout, stderr)`` or values derived from it.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from typing import Any

from agentkit import exceptions
from agentkit.privileged import namespaces

SEARCH_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
DEFAULT_TIMEOUT = 60.0
# A router with thousands of floating IPs renders a few MB; refuse absurd sizes.
MAX_INPUT = 64 * 1024 * 1024
MAX_OUTPUT = 64 * 1024 * 1024


def find_binary(name: str) -> str:
    """Absolute path of the tool ``name`` in :data:`SEARCH_PATH` (never the caller's PATH)."""
    path = shutil.which(name, path=SEARCH_PATH)
    if path is None:
        raise exceptions.ProcessError('%s not found in %s' % (name, SEARCH_PATH))
    return path


def check_timeout(timeout: float) -> float:
    """A timeout received over the privsep channel, as a float in (0, 3600]."""
    if (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
            or not 0 < timeout <= 3600):
        raise ValueError('timeout must be a number of seconds in (0, 3600], got %r'
                         % (timeout,))
    return float(timeout)


def start(argv: list[str], namespace: str | None, executable: str | None = None,
          **popen_kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv)`` born in ``namespace`` (None: the daemon's own).

    The process starts in ``/`` with only stdio open, default dispositions
    for the signals Python ignores (``restore_signals``) and no blocked
    signal, whatever the calling thread had.

    :raises NetworkNamespaceNotFound: no such namespace.
    :raises ValueError: an invalid namespace name.
    :raises OSError: the process could not be started (see :func:`start_error`).
    """
    def popen() -> subprocess.Popen[bytes]:
        mask = signal.pthread_sigmask(signal.SIG_SETMASK, [])
        try:
            return subprocess.Popen(argv, executable=executable, cwd='/', close_fds=True,
                                    restore_signals=True, **popen_kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    return namespaces.run_in_namespace(namespace, popen)


def start_error(verb: str, argv0: str, namespace: str | None,
                exc: OSError) -> exceptions.ProcessError:
    """What failed when :func:`start` raised ``exc``, as the caller reports it."""
    if exc.filename == '/':
        step = 'chdir'
    elif exc.filename is not None:
        step = 'exec'
    else:
        step = 'setup'
    detail = exc.strerror or 'unexpected error'
    return exceptions.ProcessError('cannot %s %s%s: %s failed: %s' % (
        verb, argv0, ' in namespace %r' % namespace if namespace else '', step, detail))


def kill_and_reap(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()


def _collect(proc: subprocess.Popen[bytes], deadline: float,
             argv0: str) -> tuple[bytes, bytes]:
    """Read stdout/stderr to EOF, killing the child past the deadline."""
    assert proc.stdout is not None and proc.stderr is not None
    out_r, err_r = proc.stdout.fileno(), proc.stderr.fileno()
    buffers = {out_r: bytearray(), err_r: bytearray()}
    poller = select.poll()
    for fd in buffers:
        poller.register(fd, select.POLLIN)
    open_fds = set(buffers)
    while open_fds:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            kill_and_reap(proc)
            raise exceptions.ProcessError('%s did not finish within the timeout'
                                          % argv0)
        for fd, _ in poller.poll(remaining * 1000):
            chunk = os.read(fd, 65536)
            if not chunk:
                poller.unregister(fd)
                open_fds.discard(fd)
                continue
            buffers[fd] += chunk
            if len(buffers[fd]) > MAX_OUTPUT:
                kill_and_reap(proc)
                raise exceptions.ProcessError('%s wrote more than %d bytes'
                                              % (argv0, MAX_OUTPUT))
    return bytes(buffers[out_r]), bytes(buffers[err_r])


def execute(argv: list[str], namespace: str | None, stdin: str = '',
            timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str, str]:
    """Run ``argv`` inside ``namespace``; returns (returncode, stdout, stderr).

    ``namespace=None`` runs the tool in the daemon's (the root) namespace.
    stdin is an anonymous memory file rather than a pipe, so a large input
    can never deadlock against a child that writes before it reads. The
    tool gets a fixed environment (the search path and the C locale, so
    the error messages the caller logs stay untranslated).
    """
    data = stdin.encode()
    if len(data) > MAX_INPUT:
        raise ValueError('input of %d bytes exceeds %d' % (len(data), MAX_INPUT))
    in_fd = os.memfd_create('agentkit-%s' % os.path.basename(argv[0]), os.MFD_CLOEXEC)
    try:
        os.write(in_fd, data)
        os.lseek(in_fd, 0, os.SEEK_SET)
        deadline = time.monotonic() + timeout
        try:
            proc = start(argv, namespace, stdin=in_fd, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env={'PATH': SEARCH_PATH, 'LC_ALL': 'C'})
        except OSError as exc:
            raise start_error('run', argv[0], namespace, exc) from None
    finally:
        os.close(in_fd)
    with proc:
        out, err_out = _collect(proc, deadline, argv[0])
        # It closed its output, so this is normally immediate.
        try:
            returncode = proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill_and_reap(proc)
            raise exceptions.ProcessError('%s did not exit within the timeout'
                                          % argv[0]) from None
    return returncode, out.decode(errors='replace'), err_out.decode(errors='replace')
