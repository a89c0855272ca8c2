"""Root operations on external daemons: spawn inside a namespace, signal.

Runs in the ``daemons`` privsep daemon, which is multi-threaded, so nothing
here forks with Python code in the child: daemons are started with
:func:`agentkit.privileged.tool_exec.start` (:mod:`subprocess`, a C-level
fork+exec, from a thread inside the namespace). Everything that can fail in
an interesting way (namespace missing, log file unwritable, binary missing)
is checked before anything starts, so the error reaches the caller as a
clear exception.

What root starts is narrow: only the daemons agentkit runs
(:data:`DAEMONS`), found by their name in a fixed search path (never the
caller's PATH nor a caller-given path), with arguments checked per daemon
(dnsmasq: only the options agentkit renders, by full name, and a
configuration file only if root owns it) and an environment reduced to
:data:`ALLOWED_ENV` plus the daemon's own ``PATH``. Not checked yet: where the
pid, log and configuration files the arguments name are (see issue 14).

Only primitives cross the privsep channel: argv is a list of str, results
are dicts of int/str.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
from typing import Any, Callable, TypeVar

from agentkit import exceptions
from agentkit.privileged import namespaces
from agentkit.privileged import tool_exec
from agentkit import privileged as _privileged

# Where the daemons are looked up (one search path for every tool root runs).
DEFAULT_PATH = tool_exec.SEARCH_PATH
# How long a self-daemonizing command may take to detach (dnsmasq: ~5 ms).
DEFAULT_DETACH_TIMEOUT = 30.0
_OUTPUT_LIMIT = 4096
T = TypeVar('T')
# dnsmasq gets one --dhcp-range per subnet and one --server per forwarder:
# generous bounds that still refuse an absurd request.
MAX_ARGS = 1024
MAX_ARG_LEN = 4096
# The only variables a caller may pass; PATH is always the daemon's own.
ALLOWED_ENV = frozenset({'LANG', 'LC_ALL', 'TZ'})

_LONG_OPTION_RE = re.compile(r'--([a-z0-9][a-z0-9-]*)(=.*)?', re.DOTALL)
# The dnsmasq options the DHCP driver renders, by their full names: dnsmasq
# also takes any unambiguous abbreviation (getopt_long), so a deny-list of
# dangerous names (dhcp-script, conf-script, user...) could be walked around.
DNSMASQ_OPTIONS = frozenset({
    'no-hosts', 'no-resolv', 'pid-file', 'dhcp-hostsfile', 'addn-hosts', 'dhcp-optsfile',
    'dhcp-leasefile', 'dhcp-match', 'dhcp-userclass', 'local-service', 'bind-dynamic',
    'dhcp-range', 'dhcp-option-force', 'dhcp-lease-max', 'conf-file', 'server', 'domain',
    # and the rest of what Neutron's DHCP agent gives it (a foreground mode
    # for supervision, no DNS port, a log file)
    'interface', 'keep-in-foreground', 'port', 'log-facility'})
# Short options of haproxy and radvd: option -> takes a value.
_HAPROXY_OPTIONS = {'-f': True, '-p': True, '-D': False, '-db': False, '-q': False}
_RADVD_OPTIONS = {'-C': True, '-p': True, '-m': True, '-u': True, '-l': True,
                  '-d': True, '-n': False}


def _refuse(daemon: str, arg: str, why: str) -> exceptions.ProcessError:
    return exceptions.ProcessError('refusing to start %s with argument %r: %s'
                                   % (daemon, arg[:80], why))


def _check_dnsmasq(args: list[str]) -> None:
    """Only the long options the DHCP driver renders, by full name; a
    ``--conf-file`` only if root owns it and nobody else may write it (it
    could name a ``dhcp-script``, which dnsmasq would run as root)."""
    for arg in args:
        match = _LONG_OPTION_RE.fullmatch(arg)
        if match is None:
            raise _refuse('dnsmasq', arg, 'only --long-options are accepted')
        if match.group(1) not in DNSMASQ_OPTIONS:
            raise _refuse('dnsmasq', arg, 'not an option agentkit gives dnsmasq')
        if match.group(1) == 'conf-file' and match.group(2) not in ('=', '=/dev/null'):
            _check_root_file(arg, match.group(2)[1:])


def _check_root_file(arg: str, path: str) -> None:
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _refuse('dnsmasq', arg, 'cannot read it: %s' % exc.strerror) from None
    if info.st_uid != 0 or info.st_mode & 0o022:
        raise _refuse('dnsmasq', arg, 'a configuration file root does not own, or that '
                      'others may write, could make dnsmasq run commands as root')


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


def _translate_start_errors(namespace: str | None, argv0: str,
                            start: Callable[[], T]) -> T:
    """``start()``, with a bad or missing namespace or a failed exec as ProcessError."""
    try:
        return start()
    except (ValueError, namespaces.NetworkNamespaceNotFound) as exc:
        raise exceptions.ProcessError(str(exc)) from None
    except OSError as exc:
        raise tool_exec.start_error('start', repr(argv0), namespace, exc) from None


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
    return exceptions.ProcessError('cannot start %r%s: %s failed: %s'
                                   % (argv[0], where, step, detail))


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit code, or None if ``proc`` is still running after ``timeout``.

    A pidfd wakes us the moment the child exits (Popen.wait's polling
    would add up to its interval to every daemon start); Popen.wait's
    polling is only the fallback.
    """
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        try:
            select.select([pidfd], [], [], timeout)
        finally:
            os.close(pidfd)
        timeout = 0
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


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
    ``daemonizes=False`` is for commands that stay in the foreground: a
    short-lived launcher starts them so they are reparented to init (and so
    survive an agent restart, like the self-daemonizing ones), and their
    pid is returned.

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
    with contextlib.ExitStack() as fds:
        null_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        fds.callback(os.close, null_fd)
        out_fd = _open_output(log_file, capture=daemonizes)
        fds.callback(os.close, out_fd)
        if daemonizes:
            return _spawn_daemonizing(path, argv, namespace, full_env, null_fd, out_fd,
                                      log_file, detach_timeout)
        return _spawn_detached(path, argv, namespace, full_env, null_fd, out_fd)


def _spawn_daemonizing(path: str, argv: list[str], namespace: str | None,
                       env: dict[str, str], null_fd: int, out_fd: int,
                       log_file: str | None, detach_timeout: float) -> dict[str, Any]:
    proc = _translate_start_errors(namespace, argv[0], lambda: tool_exec.start(
        argv, namespace, executable=path, env=env, stdin=null_fd, stdout=out_fd,
        stderr=out_fd, start_new_session=True))
    returncode = _wait_exit(proc, detach_timeout)
    if returncode is None:
        tool_exec.kill_and_reap(proc)
        raise exceptions.ProcessError(
            '%r did not detach within %.1f s and was killed; is it really a '
            'self-daemonizing command?' % (argv[0], detach_timeout))
    output = '' if log_file else _read_output(out_fd)
    return {'pid': proc.pid, 'returncode': returncode, 'output': output}


# A foreground daemon must not stay a child of this daemon (it would have to
# be reaped here, and could not outlive it the way self-daemonizing ones
# do), so a fresh, single-threaded interpreter starts it and exits at once:
# the daemon is reparented to init. It reports "P<pid>" or "E<step>:<errno>"
# on the status fd given as its first argument.
_LAUNCHER = """
import os, subprocess, sys
status, path, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
try:
    pid = subprocess.Popen(argv, executable=path, cwd='/', close_fds=True).pid
    os.write(status, b'P%d\\n' % pid)
except OSError as e:
    step = b'chdir' if e.filename == '/' else b'exec' if e.filename else b'setup'
    os.write(status, b'E%s:%d\\n' % (step, e.errno or 0))
"""


def _spawn_detached(path: str, argv: list[str], namespace: str | None,
                    env: dict[str, str], null_fd: int, out_fd: int) -> dict[str, Any]:
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    try:
        # -I -S: nothing from the environment or site-packages runs as root.
        launcher = [sys.executable, '-I', '-S', '-c', _LAUNCHER, str(status_w), path,
                    *argv]
        proc = _translate_start_errors(namespace, argv[0], lambda: tool_exec.start(
            launcher, namespace, env=env, stdin=null_fd, stdout=out_fd, stderr=out_fd,
            start_new_session=True, pass_fds=(status_w,)))
        os.close(status_w)
        status_w = -1
        pid, failure = _read_status(status_r)
        proc.wait()
    finally:
        os.close(status_r)
        if status_w >= 0:
            os.close(status_w)
    if failure is not None:
        raise _failure_error(argv, namespace, failure)
    if pid is None:
        raise exceptions.ProcessError('cannot start %r: no pid from the launcher (exit '
                                      'code %s)' % (argv[0], proc.returncode))
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
