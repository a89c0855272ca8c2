"""Entering a network namespace from the privsep daemons (no entrypoints here).

``os.setns`` only exists from Python 3.12, so on 3.11 libc's ``setns`` is
called through ctypes. setns() moves only the calling thread: callers use a
forked child or a throwaway thread, never a pooled one.
"""

import ctypes
import os

CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


def setns(fd: int) -> None:
    """``setns(fd, CLONE_NEWNET)``; raises OSError with the errno."""
    os_setns = getattr(os, 'setns', None)
    if os_setns is not None:
        os_setns(fd, CLONE_NEWNET)
        return
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
