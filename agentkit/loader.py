"""Load drivers by alias from their stevedore entry-point namespace.

stevedore's ``DriverManager`` reports an unknown alias without naming the
valid ones (and ignores ``on_missing_entrypoints_callback``), so the alias is
checked against the entry points first and the error lists every choice.
Import and initialisation failures are re-raised with the driver's name so
the agent stops with a message an operator can act on.
"""

import importlib.metadata
import logging
from typing import Any, TypeVar

from stevedore import driver as stevedore_driver

from agentkit import exceptions

LOG = logging.getLogger(__name__)

MECHANISM_DRIVERS = 'agentkit.mechanism_drivers'
TYPE_DRIVERS = 'agentkit.type_drivers'
DHCP_DRIVERS = 'agentkit.dhcp_drivers'
L3_DRIVERS = 'agentkit.l3_drivers'
METADATA_DRIVERS = 'agentkit.metadata_drivers'
INTERFACE_DRIVERS = 'agentkit.interface_drivers'
FIREWALL_DRIVERS = 'agentkit.firewall_drivers'
AGENT_EXTENSIONS = 'agentkit.agent_extensions'

NAMESPACES = (MECHANISM_DRIVERS, TYPE_DRIVERS, DHCP_DRIVERS, L3_DRIVERS,
              METADATA_DRIVERS, INTERFACE_DRIVERS, FIREWALL_DRIVERS,
              AGENT_EXTENSIONS)

T = TypeVar('T')


def available(namespace: str) -> list[str]:
    """Sorted aliases registered in ``namespace`` by any installed package."""
    return sorted({ep.name for ep in
                   importlib.metadata.entry_points(group=namespace)})


def _check_known(namespace: str, name: str) -> None:
    names = available(namespace)
    if name not in names:
        raise exceptions.DriverNotFound(
            f'unknown {namespace} driver {name!r}; available: '
            f'{", ".join(names) if names else "(none installed)"}')


def load_driver(namespace: str, name: str, base: type[T],
                *args: Any, **kwargs: Any) -> T:
    """Instantiate the driver registered as ``name`` in ``namespace``.

    :param base: the ABC the driver must implement; anything else is refused
        so a mis-registered entry point fails at start, not on first use.
    :param args, kwargs: passed to the driver's constructor.
    :raises DriverNotFound: unknown alias (the message lists the valid ones).
    :raises DriverLoadError: import failure, wrong type or constructor error.
    """
    _check_known(namespace, name)
    try:
        manager = stevedore_driver.DriverManager(
            namespace, name, invoke_on_load=False)
    except Exception as exc:  # import errors of the driver's module
        raise exceptions.DriverLoadError(
            f'{namespace} driver {name!r} failed to load: '
            f'{type(exc).__name__}: {exc}') from exc
    driver_cls = manager.driver
    if not (isinstance(driver_cls, type) and issubclass(driver_cls, base)):
        raise exceptions.DriverLoadError(
            f'{namespace} driver {name!r} ({driver_cls!r}) does not '
            f'implement {base.__module__}.{base.__qualname__}')
    try:
        instance = driver_cls(*args, **kwargs)
    except exceptions.AgentkitError as exc:
        raise exceptions.DriverLoadError(
            f'{namespace} driver {name!r} failed to initialise: {exc}') from exc
    except Exception as exc:
        raise exceptions.DriverLoadError(
            f'{namespace} driver {name!r} failed to initialise: '
            f'{type(exc).__name__}: {exc}') from exc
    LOG.info('Loaded %s driver %r (%s.%s)', namespace, name,
             driver_cls.__module__, driver_cls.__qualname__)
    return instance


def load_drivers(namespace: str, names: list[str], base: type[T],
                 *args: Any, **kwargs: Any) -> dict[str, T]:
    """Load several drivers in the configured order; duplicates are refused.

    Every alias is checked before any driver is loaded, so one typo reports
    all unknown names at once instead of one per restart.
    """
    seen: set[str] = set()
    dupes = [n for n in names if n in seen or seen.add(n)]
    if dupes:
        raise exceptions.InvalidConfiguration(
            f'{namespace}: driver(s) listed twice: {", ".join(dupes)}')
    known = available(namespace)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise exceptions.DriverNotFound(
            f'unknown {namespace} driver(s) {", ".join(map(repr, unknown))}; '
            f'available: {", ".join(known) if known else "(none installed)"}')
    return {n: load_driver(namespace, n, base, *args, **kwargs) for n in names}
