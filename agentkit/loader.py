"""Load drivers by alias from their stevedore entry-point namespace.

stevedore's ``DriverManager`` reports an unknown alias without naming the
valid ones (and ignores ``on_missing_entrypoints_callback``), so the alias is
checked against the entry points first and the error lists every choice.
Import and initialisation failures are re-raised with the driver's name so
the agent stops with a message an operator can act on.

Neutron's configuration files name drivers Neutron's way (``iptables``,
``neutron.agent.linux.interface.OVSInterfaceDriver``...). :data:`NEUTRON_ALIASES`
is the one table that maps those names to agentkit's aliases (a notice is
logged once per name), and :data:`NEUTRON_UNSUPPORTED` names the Neutron
drivers agentkit does not implement, so the agent refuses them with a
message that says so instead of "unknown driver". doc/operator-guide.md
shows both tables.
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

#: The option each namespace's driver is chosen by, for messages.
OPTION_NAMES = {
    MECHANISM_DRIVERS: '[l2] mechanism_driver',
    TYPE_DRIVERS: '[l2] type_drivers',
    DHCP_DRIVERS: 'dhcp_driver',
    L3_DRIVERS: 'l3_driver',
    METADATA_DRIVERS: 'metadata_driver',
    INTERFACE_DRIVERS: 'interface_driver',
    FIREWALL_DRIVERS: '[securitygroup] firewall_driver',
    AGENT_EXTENSIONS: '[l2] extensions',
}

#: Neutron's names of drivers agentkit has -> agentkit's alias. Keys are
#: written with dots; ``module:Class`` spellings are looked up the same way.
NEUTRON_ALIASES: dict[str, dict[str, str]] = {
    INTERFACE_DRIVERS: {
        'neutron.agent.linux.interface.OVSInterfaceDriver': 'openvswitch',
        'neutron.agent.linux.interface.BridgeInterfaceDriver': 'linuxbridge',
    },
    DHCP_DRIVERS: {
        'neutron.agent.linux.dhcp.Dnsmasq': 'dnsmasq',
    },
    FIREWALL_DRIVERS: {
        # Neutron's linuxbridge firewall: the same iptables rules at brq-,
        # which iptables_hybrid also filters at.
        'iptables': 'iptables_hybrid',
        'neutron.agent.linux.iptables_firewall.IptablesFirewallDriver':
            'iptables_hybrid',
        'neutron.agent.linux.iptables_firewall.OVSHybridIptablesFirewallDriver':
            'iptables_hybrid',
        'neutron.agent.firewall.NoopFirewallDriver': 'noop',
    },
}

_OVS_FIREWALL = "Neutron's native Open vSwitch firewall (OpenFlow rules on br-int)"
_L2_EXTENSION = "Neutron's %s L2 agent extension"

#: Neutron's names of drivers agentkit does not implement -> what they are.
NEUTRON_UNSUPPORTED: dict[str, dict[str, str]] = {
    FIREWALL_DRIVERS: {
        'openvswitch': _OVS_FIREWALL,
        'neutron.agent.linux.openvswitch_firewall.OVSFirewallDriver': _OVS_FIREWALL,
        'neutron.agent.linux.openvswitch_firewall.firewall.OVSFirewallDriver':
            _OVS_FIREWALL,
    },
    INTERFACE_DRIVERS: {
        'null': "Neutron's null interface driver (ports plugged by someone else)",
        'neutron.agent.linux.interface.NullDriver':
            "Neutron's null interface driver (ports plugged by someone else)",
    },
    AGENT_EXTENSIONS: {
        name: _L2_EXTENSION % name
        for name in ('qos', 'fdb', 'dhcp', 'dns_forwarder', 'local_ip', 'log',
                     'metadata_path')},
}

#: Options that allow a fallback for a Neutron driver agentkit lacks.
FALLBACK_OPTIONS = {
    FIREWALL_DRIVERS: '[securitygroup] unsupported_firewall_fallback',
}

_noticed: set[tuple[str, str]] = set()


class UnsupportedNeutronDriver(exceptions.DriverNotFound):
    """A configuration names a Neutron driver that agentkit does not implement."""


def _neutron_key(name: str) -> str:
    return name.strip().replace(':', '.')


def _notice_once(namespace: str, name: str, alias: str) -> None:
    if (namespace, name) in _noticed:
        return
    _noticed.add((namespace, name))
    kind = 'class path' if '.' in _neutron_key(name) else 'name'
    LOG.warning("%s = %s is Neutron's %s; using agentkit's %r",
                OPTION_NAMES.get(namespace, namespace), name, kind, alias)


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


def resolve(namespace: str, name: str, fallback: str | None = None) -> str:
    """agentkit's alias for the driver a configuration file names.

    An installed alias is returned as it is; one of Neutron's names of a
    driver agentkit has is mapped (notice logged once); anything else
    unknown is returned unchanged for :func:`load_driver` to refuse with
    the list of choices.

    :param fallback: the alias the operator allows instead of a Neutron
        driver agentkit does not implement (e.g. ``[securitygroup]
        unsupported_firewall_fallback``); used with a warning.
    :raises UnsupportedNeutronDriver: ``name`` is such a Neutron driver and
        no fallback is allowed (the message names the driver, the choices
        and the fallback option).
    :raises DriverNotFound: the fallback itself is not an installed driver.
    """
    installed = available(namespace)
    if name in installed:
        return name
    key = _neutron_key(name)
    alias = NEUTRON_ALIASES.get(namespace, {}).get(key)
    if alias is not None:
        _notice_once(namespace, name, alias)
        return alias
    what = NEUTRON_UNSUPPORTED.get(namespace, {}).get(key)
    if what is None:
        return name
    option = OPTION_NAMES.get(namespace, namespace)
    choices = ', '.join(installed) if installed else '(none installed)'
    allow = FALLBACK_OPTIONS.get(namespace)
    if fallback and allow:
        target = resolve(namespace, fallback)
        if target not in installed:
            raise exceptions.DriverNotFound(
                f'{allow} = {fallback} is not an agentkit {namespace} driver; '
                f'available: {choices}')
        LOG.warning('%s = %s is %s, which agentkit does not implement; falling '
                    'back to %r because %s allows it', option, name, what,
                    target, allow)
        return target
    kind = namespace.split('.', 1)[-1].replace('_', ' ')
    message = (f'{option} = {name} is {what}, which agentkit does not '
               f'implement (agentkit\'s {kind}: {choices}). Set {option} '
               f'to one of them')
    if allow:
        message += f', or allow a fallback with {allow} = <one of them>'
    raise UnsupportedNeutronDriver(message)


def load_driver(namespace: str, name: str, base: type[T],
                *args: Any, **kwargs: Any) -> T:
    """Instantiate the driver registered as ``name`` in ``namespace``.

    :param name: the alias, or Neutron's name of the driver (see
        :func:`resolve`).
    :param base: the ABC the driver must implement; anything else is refused
        so a mis-registered entry point fails at start, not on first use.
    :param args, kwargs: passed to the driver's constructor.
    :raises DriverNotFound: unknown alias (the message lists the valid ones)
        or a Neutron driver agentkit does not implement.
    :raises DriverLoadError: import failure, wrong type or constructor error.
    """
    name = resolve(namespace, name)
    _check_known(namespace, name)
    try:
        manager: stevedore_driver.DriverManager = stevedore_driver.DriverManager(
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
    names = [resolve(namespace, n) for n in names]
    dupes = sorted({n for n in names if names.count(n) > 1})
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
