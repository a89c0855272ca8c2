"""Run a command-line tool as root from a privsep daemon, optionally inside a namespace.

Shared by the privileged modules that drive a tool without a netlink API
(``iptables-save``/``iptables-restore``, ``nft``). Nothing here is an
entrypoint: each caller validates its own arguments and builds argv from a
binary found with :func:`find_binary`, so no caller-supplied path is ever
executed.

Entering a namespace: the daemon forks, the child ``setns()``es into
``/run/netns/<name>`` and execs the tool. The daemon is multi-threaded, so
the child uses only thin syscall wrappers (``os.*`` and a pre-resolved libc
``setns``; Python 3.11 has no ``os.setns``) until ``execve``. Everything that
can fail in an interesting way (namespace missing, binary missing) is
checked in the parent first so it surfaces as a clear exception.

Only primitives cross the privsep channel: callers return
``(returncode, stdout, stderr)`` or values derived from it.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import time

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


def _child(argv: list[str], ns_fd: int | None, in_fd: int, out_w: int,
           err_w: int, status_w: int) -> None:
    """After fork: join the namespace, wire stdio, exec. Never returns."""
    code = 0
    try:
        if ns_fd is not None:
            namespaces.setns(ns_fd)
        os.dup2(in_fd, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.closerange(3, status_w)
        os.closerange(status_w + 1, 1 << 20)
        # C locale: error messages the caller logs stay untranslated.
        os.execve(argv[0], argv, {'PATH': SEARCH_PATH, 'LC_ALL': 'C'})
    except OSError as exc:
        code = exc.errno or 0
    except BaseException:  # noqa: B036 - never unwind into the daemon's code
        code = 0
    try:
        os.write(status_w, b'%d' % code)
    finally:
        os._exit(127)


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


def _collect(pid: int, out_r: int, err_r: int, deadline: float,
             argv0: str) -> tuple[bytes, bytes]:
    """Read stdout/stderr to EOF, killing the child past the deadline."""
    buffers = {out_r: bytearray(), err_r: bytearray()}
    poller = select.poll()
    for fd in buffers:
        poller.register(fd, select.POLLIN)
    open_fds = set(buffers)
    while open_fds:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _kill_and_reap(pid)
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
                _kill_and_reap(pid)
                raise exceptions.ProcessError('%s wrote more than %d bytes'
                                              % (argv0, MAX_OUTPUT))
    return bytes(buffers[out_r]), bytes(buffers[err_r])


def execute(argv: list[str], namespace: str | None, stdin: str = '',
            timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str, str]:
    """Run ``argv`` inside ``namespace``; returns (returncode, stdout, stderr).

    ``namespace=None`` runs the tool in the daemon's (the root) namespace.
    stdin is an anonymous memory file rather than a pipe, so a large input
    can never deadlock against a child that writes before it reads.
    """
    data = stdin.encode()
    if len(data) > MAX_INPUT:
        raise ValueError('input of %d bytes exceeds %d' % (len(data), MAX_INPUT))
    fds: list[int] = []
    try:
        ns_fd = namespaces.open_namespace(namespace)
        if ns_fd is not None:
            fds.append(ns_fd)
        in_fd = os.memfd_create('agentkit-%s' % os.path.basename(argv[0]),
                                os.MFD_CLOEXEC)
        fds.append(in_fd)
        os.write(in_fd, data)
        os.lseek(in_fd, 0, os.SEEK_SET)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        fds += [out_r, out_w]
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        fds += [err_r, err_w]
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        fds += [status_r, status_w]
        deadline = time.monotonic() + timeout
        pid = os.fork()
        if pid == 0:
            _child(argv, ns_fd, in_fd, out_w, err_w, status_w)
        for fd in (out_w, err_w, status_w):
            os.close(fd)
            fds.remove(fd)
        # EOF without data: the exec succeeded (the pipe is close-on-exec).
        status = os.read(status_r, 64)
        if status:
            os.waitpid(pid, 0)
            err = int(status)
            raise exceptions.ProcessError(
                'cannot run %s%s: %s' % (
                    argv[0], ' in namespace %r' % namespace if namespace else '',
                    os.strerror(err) if err else 'unexpected error'))
        out, err_out = _collect(pid, out_r, err_r, deadline, argv[0])
        remaining = max(0.0, deadline - time.monotonic())
        returncode = _wait(pid, remaining, argv[0])
        return (returncode, out.decode(errors='replace'),
                err_out.decode(errors='replace'))
    finally:
        for fd in fds:
            os.close(fd)


def _wait(pid: int, timeout: float, argv0: str) -> int:
    """Reap the child; it closed its output, so this is normally immediate."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            _kill_and_reap(pid)
            raise exceptions.ProcessError('%s did not exit within the timeout' % argv0)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
