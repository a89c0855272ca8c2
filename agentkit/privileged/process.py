"""Root operations on external daemons: spawn inside a namespace, signal.

Runs in the ``daemons`` privsep daemon, which is multi-threaded. Forking a
multi-threaded Python process is only safe if the child does nothing that
could wait on a lock another thread held at fork time, so the child path
below uses nothing but thin syscall wrappers (``os.*``, ``signal.*`` and one
pre-resolved libc ``setns``) before ``execvpe``. Everything that can fail in an
interesting way (namespace missing, log file unwritable) is opened in the
parent first, so the error reaches the caller as a clear exception.

What root starts is narrow: only the daemons agentkit runs
(:data:`DAEMONS`), found by their name in a fixed search path (never the
caller's PATH nor a caller-given path), with arguments checked per daemon
(none that makes the daemon run a further command as root) and an
environment reduced to :data:`ALLOWED_ENV` plus the daemon's own ``PATH``.

Only primitives cross the privsep channel: argv is a list of str, results
are dicts of int/str.
"""

from __future__ import annotations

import errno
import os
import re
import select
import signal
import time
from typing import Any

from agentkit import exceptions
from agentkit.privileged import namespaces
from agentkit.privileged import tool_exec
from agentkit import privileged as _privileged

# Where the daemons are looked up (one search path for every tool root runs).
DEFAULT_PATH = tool_exec.SEARCH_PATH
# How long a self-daemonizing command may take to detach (dnsmasq: ~5 ms).
DEFAULT_DETACH_TIMEOUT = 30.0
_OUTPUT_LIMIT = 4096
# dnsmasq gets one --dhcp-range per subnet and one --server per forwarder:
# generous bounds that still refuse an absurd request.
MAX_ARGS = 1024
MAX_ARG_LEN = 4096
# The only variables a caller may pass; PATH is always the daemon's own.
ALLOWED_ENV = frozenset({'LANG', 'LC_ALL', 'TZ'})

_LONG_OPTION_RE = re.compile(r'--([a-z0-9][a-z0-9-]*)(=.*)?', re.DOTALL)
# dnsmasq options that run a command, or keep dnsmasq root (it drops to
# "nobody" by default).
_DNSMASQ_REFUSED = frozenset({'dhcp-script', 'dhcp-luascript', 'conf-script',
                              'user', 'group'})
# Short options of haproxy and radvd: option -> takes a value.
_HAPROXY_OPTIONS = {'-f': True, '-p': True, '-D': False, '-db': False, '-q': False}
_RADVD_OPTIONS = {'-C': True, '-p': True, '-m': True, '-u': True, '-l': True,
                  '-d': True, '-n': False}


def _refuse(daemon: str, arg: str, why: str) -> exceptions.ProcessError:
    return exceptions.ProcessError('refusing to start %s with argument %r: %s'
                                   % (daemon, arg[:80], why))


def _check_dnsmasq(args: list[str]) -> None:
    """Long options only (what the DHCP driver renders), none that runs a command."""
    for arg in args:
        match = _LONG_OPTION_RE.fullmatch(arg)
        if match is None:
            raise _refuse('dnsmasq', arg, 'only --long-options are accepted')
        if match.group(1) in _DNSMASQ_REFUSED:
            raise _refuse('dnsmasq', arg, 'it would run a command or keep root')


def _check_short_options(daemon: str, options: dict[str, bool], args: list[str]) -> None:
    """Only the listed options, each followed by a value if it takes one."""
    pending = None
    for arg in args:
        if pending is not None:
            if arg.startswith('-') or not arg:
                raise _refuse(daemon, arg, 'a value of %s expected' % pending)
            pending = None
        elif arg in options:
            pending = arg if options[arg] else None
        else:
            raise _refuse(daemon, arg, 'not one of %s' % ', '.join(sorted(options)))
    if pending is not None:
        raise _refuse(daemon, pending, 'its value is missing')


DAEMONS = {
    'dnsmasq': _check_dnsmasq,
    'haproxy': lambda args: _check_short_options('haproxy', _HAPROXY_OPTIONS, args),
    'radvd': lambda args: _check_short_options('radvd', _RADVD_OPTIONS, args),
}
"""The daemons agentkit runs, by the name callers put in argv[0], with the
check of their arguments."""


def _validate_argv(argv: Any) -> tuple[str, list[str]]:
    """(absolute path of the daemon, argv) of an accepted request.

    argv[0] stays the daemon's bare name, so its command line (which the
    agent compares with the one it wants) does not depend on where it is
    installed.
    """
    # The privsep channel (msgpack, use_list=False) delivers lists as tuples.
    if not isinstance(argv, (list, tuple)) or not argv:
        raise exceptions.ProcessError('argv must be a non-empty list of str, got %r'
                                      % (argv,))
    if len(argv) > MAX_ARGS:
        raise exceptions.ProcessError('argv has %d items; at most %d are accepted'
                                      % (len(argv), MAX_ARGS))
    for arg in argv:
        if (not isinstance(arg, str) or '\0' in arg or '\n' in arg or '\r' in arg
                or len(arg) > MAX_ARG_LEN):
            raise exceptions.ProcessError(
                'argv items must be str of at most %d characters without NUL or '
                'line breaks, got %r' % (MAX_ARG_LEN, arg if not isinstance(arg, str)
                                         else arg[:80]))
    if argv[0] not in DAEMONS:
        raise exceptions.ProcessError('refusing to start %r: not one of the daemons '
                                      'agentkit runs (%s)'
                                      % (argv[0][:80], ', '.join(sorted(DAEMONS))))
    DAEMONS[argv[0]](list(argv[1:]))
    return tool_exec.find_binary(argv[0]), list(argv)


def _validate_env(env: Any) -> dict[str, str]:
    if env is None:
        env = {}
    if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and '=' not in k
            and '\0' not in k + v for k, v in env.items()):
        raise exceptions.ProcessError('env must be a dict of str to str, got %r' % (env,))
    refused = sorted(set(env) - ALLOWED_ENV)
    if refused:
        raise exceptions.ProcessError('refusing environment variables %s: only %s may be '
                                      'passed' % (', '.join(refused),
                                                  ', '.join(sorted(ALLOWED_ENV))))
    result = {'PATH': DEFAULT_PATH}
    result.update(env)
    return result


def _open_namespace(namespace: str | None) -> int | None:
    """Open /run/netns/<namespace> in the parent so a missing one is a clean error."""
    try:
        return namespaces.open_namespace(namespace)
    except ValueError as exc:
        raise exceptions.ProcessError(str(exc)) from None
    except namespaces.NetworkNamespaceNotFound as exc:
        raise exceptions.ProcessError(str(exc)) from None


def _open_output(log_file: str | None, capture: bool) -> int:
    if log_file is not None:
        if not isinstance(log_file, str) or not os.path.isabs(log_file) or '\0' in log_file:
            raise exceptions.ProcessError('log_file must be an absolute path, got %r'
                                          % (log_file,))
        return os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                       0o640)
    if capture:
        # Anonymous file: holds the start-up errors of a daemonizing command.
        return os.memfd_create('agentkit-spawn', os.MFD_CLOEXEC)
    return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)


def _report(fd: int, step: str, err: int) -> None:
    try:
        os.write(fd, ('E%s:%d\n' % (step, err)).encode())
    except OSError:
        pass


def _exec_child(path: str, argv: list[str], env: dict[str, str], ns_fd: int | None,
                null_fd: int, out_fd: int, status_w: int, new_session: bool) -> None:
    """Child side after fork: never returns, only syscall wrappers until exec."""
    step = 'setup'
    try:
        if new_session:
            step = 'setsid'
            os.setsid()
        if ns_fd is not None:
            step = 'setns'
            namespaces.setns(ns_fd)
        step = 'stdio'
        os.dup2(null_fd, 0)
        os.dup2(out_fd, 1)
        os.dup2(out_fd, 2)
        # Python ignores SIGPIPE/SIGXFSZ; ignored dispositions survive exec.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.chdir('/')
        # Keep only stdio and the status pipe (which is close-on-exec).
        os.closerange(3, status_w)
        os.closerange(status_w + 1, 1 << 20)
        step = 'exec'
        os.execve(path, argv, env)
    except OSError as exc:
        _report(status_w, step, exc.errno or 0)
    except BaseException:  # noqa: B036 - the child must never unwind into the daemon
        _report(status_w, step, 0)
    finally:
        os._exit(127)


def _read_status(status_r: int) -> tuple[int | None, tuple[str, int] | None]:
    """Read the status pipe to EOF: (grandchild pid, (failed step, errno))."""
    data = b''
    while True:
        chunk = os.read(status_r, 4096)
        if not chunk:
            break
        data += chunk
    pid = None
    failure = None
    for line in data.decode(errors='replace').splitlines():
        if line.startswith('P'):
            pid = int(line[1:])
        elif line.startswith('E'):
            step, _, err = line[1:].rpartition(':')
            failure = (step, int(err))
    return pid, failure


def _failure_error(argv: list[str], namespace: str | None,
                   failure: tuple[str, int]) -> exceptions.ProcessError:
    step, err = failure
    where = ' in namespace %r' % namespace if namespace else ''
    detail = os.strerror(err) if err else 'unexpected error'
    if step == 'exec' and err == errno.ENOENT:
        detail = 'executable not found in PATH'
    return exceptions.ProcessError('cannot start %r%s: %s failed: %s'
                                   % (argv[0], where, step, detail))


def _wait_exit(pid: int, timeout: float) -> int | None:
    """waitpid with a deadline; returns the exit code or None if still running.

    A pidfd wakes us the moment the child exits (polling would add up to
    its interval to every daemon start); polling is only the fallback.
    """
    deadline = time.monotonic() + timeout
    pidfd = None
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pass
    delay = 0.0005
    try:
        while True:
            wpid, status = os.waitpid(pid, os.WNOHANG)
            if wpid == pid:
                return os.waitstatus_to_exitcode(status)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if pidfd is not None:
                select.select([pidfd], [], [], remaining)
            else:
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.05)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _read_output(fd: int) -> str:
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, _OUTPUT_LIMIT, max(0, size - _OUTPUT_LIMIT))
    except OSError:
        return ''
    return data.decode(errors='replace').strip()


@_privileged.daemons.entrypoint
def spawn(argv: list[str], namespace: str | None = None, daemonizes: bool = True,
          log_file: str | None = None, env: dict[str, str] | None = None,
          detach_timeout: float = DEFAULT_DETACH_TIMEOUT) -> dict[str, Any]:
    """Start the daemon ``argv`` in a new session inside network namespace ``namespace``.

    ``argv[0]`` must name one of :data:`DAEMONS` and the arguments pass its
    check; ``env`` may only hold :data:`ALLOWED_ENV`.

    ``daemonizes=True`` is for commands that detach themselves (dnsmasq,
    haproxy with ``daemon``): the direct child is reaped once it exits and
    its exit code returned; the daemon's pid is in the pid file it writes.
    ``daemonizes=False`` is for commands that stay in the foreground: they
    are double-forked so they are reparented to init (and so survive an
    agent restart, like the self-daemonizing ones), and their pid returned.

    stdin is /dev/null; stdout/stderr go to ``log_file`` (appended) or are
    discarded. For a daemonizing command without a log file the start-up
    output is captured and returned as ``output``.

    Returns ``{'pid': int, 'returncode': int | None, 'output': str}``;
    ``returncode`` is None for a foreground command (it is still running).

    :raises ProcessError: a refused daemon, argument or variable, a missing
        namespace or binary, exec failure, or
        a "daemonizing" command that did not exit within ``detach_timeout``.
    """
    path, argv = _validate_argv(argv)
    full_env = _validate_env(env)
    fds: list[int] = []
    try:
        ns_fd = _open_namespace(namespace)
        if ns_fd is not None:
            fds.append(ns_fd)
        null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        fds.append(null_fd)
        out_fd = _open_output(log_file, capture=daemonizes)
        fds.append(out_fd)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        fds.append(status_r)
        if daemonizes:
            return _spawn_daemonizing(path, argv, namespace, full_env, ns_fd, null_fd, out_fd,
                                      status_r, status_w, log_file, detach_timeout)
        return _spawn_detached(path, argv, namespace, full_env, ns_fd, null_fd, out_fd,
                               status_r, status_w)
    finally:
        for fd in fds:
            os.close(fd)


def _spawn_daemonizing(path: str, argv: list[str], namespace: str | None, env: dict[str, str],
                       ns_fd: int | None, null_fd: int, out_fd: int, status_r: int,
                       status_w: int, log_file: str | None,
                       detach_timeout: float) -> dict[str, Any]:
    try:
        pid = os.fork()
    except BaseException:
        os.close(status_w)
        raise
    if pid == 0:
        _exec_child(path, argv, env, ns_fd, null_fd, out_fd, status_w, new_session=True)
    os.close(status_w)
    _, failure = _read_status(status_r)
    if failure is not None:
        os.waitpid(pid, 0)
        raise _failure_error(argv, namespace, failure)
    returncode = _wait_exit(pid, detach_timeout)
    if returncode is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise exceptions.ProcessError(
            '%r did not detach within %.1f s and was killed; is it really a '
            'self-daemonizing command?' % (argv[0], detach_timeout))
    output = '' if log_file else _read_output(out_fd)
    return {'pid': pid, 'returncode': returncode, 'output': output}


def _spawn_detached(path: str, argv: list[str], namespace: str | None, env: dict[str, str],
                    ns_fd: int | None, null_fd: int, out_fd: int, status_r: int,
                    status_w: int) -> dict[str, Any]:
    try:
        middle = os.fork()
    except BaseException:
        os.close(status_w)
        raise
    if middle == 0:
        # Intermediate child: new session, fork the real command, vanish.
        try:
            os.setsid()
            pid = os.fork()
            if pid == 0:
                _exec_child(path, argv, env, ns_fd, null_fd, out_fd, status_w,
                            new_session=False)
            os.write(status_w, b'P%d\n' % pid)
        except OSError as exc:
            _report(status_w, 'fork', exc.errno or 0)
        finally:
            os._exit(0)
    os.close(status_w)
    pid, failure = _read_status(status_r)
    os.waitpid(middle, 0)
    if failure is not None:
        raise _failure_error(argv, namespace, failure)
    if pid is None:
        raise exceptions.ProcessError('cannot start %r: no pid from the launcher' % argv[0])
    return {'pid': pid, 'returncode': None, 'output': ''}


@_privileged.daemons.entrypoint
def kill(pid: int, sig: int, expected: str | None = None) -> bool:
    """Send ``sig`` to ``pid``; False if there is no such (matching) process.

    With ``expected``, the signal is only sent if that string occurs in the
    process's command line, which narrows the window in which a recycled pid
    could be hit. Process groups and "all processes" (pid <= 1) are refused.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        raise exceptions.ProcessError('refusing to signal pid %r' % (pid,))
    valid = {int(s) for s in signal.valid_signals()} | {0}
    if not isinstance(sig, int) or isinstance(sig, bool) or sig not in valid:
        raise exceptions.ProcessError('invalid signal %r' % (sig,))
    if expected is not None:
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                cmdline = f.read().decode(errors='replace')
        except (FileNotFoundError, ProcessLookupError):
            return False
        if expected not in cmdline:
            return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True
