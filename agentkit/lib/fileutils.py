"""Writing files that another process may read at any moment."""

import os
import tempfile


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
