"""Select the concurrency model before anything imports oslo.messaging.

Threads are the default: OpenStack is retiring eventlet (deprecated in
2027.1, removed in 2027.2), Neutron itself runs on oslo.service's threading
backend, and pyroute2 breaks under eventlet's monkey-patching. eventlet stays
available as an opt-in compatibility mode for deployments that still need it;
in that mode pyroute2 is still safe because it only runs in the privsep
daemons, which are never patched.

``oslo_messaging`` imports ``oslo_service.service``, which locks in
oslo.service's backend, so :func:`select` must run first.
"""

import sys

from agentkit.conf import common as common_conf

_selected: str | None = None


def select(mode: str = common_conf.CONCURRENCY_THREADING) -> str:
    """Choose the backend once per process; later calls must agree."""
    global _selected
    if _selected is not None:
        if mode != _selected:
            raise RuntimeError(
                f'concurrency mode already set to {_selected!r}, cannot '
                f'switch to {mode!r} in a running process')
        return _selected
    if mode == common_conf.CONCURRENCY_EVENTLET:
        import eventlet
        eventlet.monkey_patch()
        backend_type_name = 'EVENTLET'
    elif mode == common_conf.CONCURRENCY_THREADING:
        backend_type_name = 'THREADING'
    else:
        raise ValueError(f'unknown concurrency mode {mode!r}')
    if 'oslo_messaging' in sys.modules and mode == common_conf.CONCURRENCY_EVENTLET:
        raise RuntimeError('oslo.messaging was imported before the '
                           'concurrency mode was selected')
    from oslo_service import backend
    try:
        backend.init_backend(getattr(backend.BackendType, backend_type_name))
    except backend.exceptions.BackendAlreadySelected:
        if backend.get_backend_type() != getattr(backend.BackendType,
                                                 backend_type_name):
            raise
    _selected = mode
    return mode


def selected() -> str | None:
    """The mode chosen by :func:`select`, or None before start-up."""
    return _selected


def executor() -> str:
    """The oslo.messaging executor matching the selected mode."""
    return 'eventlet' if _selected == common_conf.CONCURRENCY_EVENTLET else 'threading'
