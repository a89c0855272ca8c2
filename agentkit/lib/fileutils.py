"""Files shared with daemons that run as other users, and written while they read."""

import os
import stat
import tempfile
from collections.abc import Collection


def write_atomic(path: str, content: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``content`` in one rename.

    Readers (dnsmasq re-reading its hosts file on SIGHUP, a second agent
    reading a pid file) see the old or the new file, never a half-written
    one. ``mode`` is applied before the rename: dnsmasq reads as ``nobody``.
    """
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{name}-', dir=directory or '.')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(content)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_text(path: str) -> str | None:
    """The text of ``path``, or None if it does not exist."""
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def ensure_shared_dir(path: str) -> None:
    """``path`` as 0755 whatever the umask: a daemon that dropped to its own
    user (dnsmasq, haproxy, radvd) reads what is in it."""
    os.makedirs(path, mode=0o755, exist_ok=True)
    if stat.S_IMODE(os.stat(path).st_mode) & 0o055 != 0o055:
        os.chmod(path, 0o755)


def searchable_by(st: os.stat_result, uid: int, gids: Collection[int]) -> bool:
    """Whether a process of ``uid`` with groups ``gids`` may enter a directory."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in gids:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def blocking_directory(path: str, uid: int, gids: Collection[int] = (),
                       missing_ok: bool = False) -> tuple[str, os.stat_result] | None:
    """The first directory on the way to ``path`` that ``uid`` cannot enter.

    Why: a daemon that drops privileges and then cannot reach its files runs
    and silently serves nothing. Both the path as given and its resolved
    target are walked, so a symlink into root's mode-0700 home is caught.
    ``gids`` empty means group bits are not trusted (only owner and other).

    :param missing_ok: stop at a directory that does not exist yet (it will
        be created with suitable modes) instead of raising.
    :returns: (directory, its stat) or None if every directory can be entered.
    """
    checked: set[str] = set()
    for candidate in (os.path.abspath(path), os.path.realpath(path)):
        current = '/'
        for part in [''] + [p for p in candidate.split('/') if p]:
            current = os.path.join(current, part) if part else '/'
            if current in checked:
                continue
            checked.add(current)
            try:
                st = os.stat(current)
            except FileNotFoundError:
                if missing_ok:
                    break
                raise
            if stat.S_ISDIR(st.st_mode) and not searchable_by(st, uid, gids):
                return current, st
    return None
