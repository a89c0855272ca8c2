"""Files and directories dnsmasq reads after dropping to ``nobody``.

If ``nobody`` cannot traverse the state directory, dnsmasq runs and
silently answers nothing: directories are made world-searchable and a
``state_path`` that blocks it is refused.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from collections.abc import Iterator

from agentkit import exceptions
from agentkit.lib import fileutils

UNPRIVILEGED_USER = 'nobody'


def write_file_if_changed(path: str, content: str) -> bool:
    """Atomically replace ``path`` (tmp + rename) unless it already holds ``content``.

    dnsmasq may re-read a file at any moment (SIGHUP from a concurrent
    reload), so it must never see a half-written one. Files are 0644: dnsmasq
    reads them as ``nobody``. Returns True if the file was written.
    """
    try:
        with open(path, encoding='utf-8') as f:
            if f.read() == content:
                if stat.S_IMODE(os.fstat(f.fileno()).st_mode) & 0o044 != 0o044:
                    os.chmod(path, 0o644)
                return False
    except FileNotFoundError:
        pass
    fileutils.write_atomic(path, content)
    return True


@contextlib.contextmanager
def writing_files_of(network_id: str, state_dir: str) -> Iterator[None]:
    """Turn a failed write of a network's files into an error naming it.

    A full or read-only ``state_path`` otherwise shows as a bare ``[Errno
    28]`` on a temporary file name; the operator needs to know which
    network is not being updated and where. The files already there are
    untouched (every write is tmp + rename), so its dnsmasq, if running,
    keeps serving what it had.
    """
    try:
        yield
    except OSError as exc:
        raise exceptions.StateWriteError(
            f'Network {network_id}: cannot write its DHCP files in {state_dir}: '
            f'{exc.strerror or exc}') from exc


def ensure_dir(path: str) -> None:
    """Create ``path`` (and missing parents) as 0755 whatever the umask is.

    dnsmasq must traverse every directory we create; a 0700 ``state_path``
    made under a strict umask would silently break DHCP.
    """
    missing = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    os.makedirs(path, mode=0o755, exist_ok=True)
    for directory in missing + [path]:
        if stat.S_IMODE(os.stat(directory).st_mode) & 0o055 != 0o055:
            os.chmod(directory, 0o755)


def _nobody_uid() -> int:
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER).pw_uid
    except KeyError:
        return 65534


def check_traversable(path: str, uid: int | None = None) -> None:
    """Refuse a ``path`` that dnsmasq, once it is ``nobody``, cannot reach.

    Every directory on the way -- of the path as configured and of its
    resolved target, so a symlink into root's mode-0700 home is caught -- must
    be searchable by others (or owned by ``nobody``). Group bits are not
    trusted: which group dnsmasq ends up in depends on how it was built.

    :raises InvalidConfiguration: naming the first directory that blocks.
    """
    if uid is None:
        uid = _nobody_uid()
    blocked = fileutils.blocking_directory(path, uid)
    if blocked is not None:
        current, st = blocked
        raise exceptions.InvalidConfiguration(
            'state_path %s is not usable for dnsmasq: %s (mode %04o, uid %d) '
            'cannot be traversed by %r, the user dnsmasq drops to before '
            'reading its files; it would run and answer no DHCP request. Use '
            'a directory like /var/lib/agentkit or make %s world-searchable '
            '(chmod o+x).' % (path, current, stat.S_IMODE(st.st_mode),
                              st.st_uid, UNPRIVILEGED_USER, current))
