"""One host change for many model changes: the ``defer_apply`` of the managers.

Why a mixin: the iptables manager and the nftables bridge guards both keep
a model in memory and write it to the kernel in one transaction; a caller
changing many things (a router update, a full sync) batches them so the
kernel sees one write, and a failure half-way writes nothing.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, TypeVar

T = TypeVar('T', bound='DeferredApply')


class DeferredApply:
    """Gives a manager with an ``apply()`` a nestable ``defer_apply()``.

    Subclasses call :meth:`_init_deferral` in ``__init__``, hold
    ``self._lock`` while changing their model, and make ``apply()`` return
    early while :attr:`deferring` is true.
    """

    _lock: threading.RLock
    _defer_depth: int

    def _init_deferral(self) -> None:
        self._lock = threading.RLock()
        self._defer_depth = 0

    @property
    def deferring(self) -> bool:
        return self._defer_depth > 0

    def apply(self) -> bool:
        raise NotImplementedError

    @contextlib.contextmanager
    def defer_apply(self: T) -> Iterator[T]:
        """Batch changes: one apply when the outermost block exits normally.

        On an exception nothing is applied, so a half-built model never
        reaches the kernel (what was applied before stays in force).
        """
        with self._lock:
            self._defer_depth += 1
            try:
                yield self
            finally:
                self._defer_depth -= 1
            if self._defer_depth == 0:
                self.apply()
