"""Router drivers: realise neutron routers on this host."""

import abc
from typing import Any

from oslo_config import cfg

from agentkit import exceptions
from agentkit.api import driver
from agentkit.api import interface


# Floating IP statuses reported with update_floatingip_statuses (Neutron's).
FIP_ACTIVE = 'ACTIVE'
FIP_DOWN = 'DOWN'
FIP_ERROR = 'ERROR'


class RouterProcessingError(exceptions.AgentkitError):
    """Some parts of a router failed; the others were configured.

    ``fip_statuses`` holds what :meth:`RouterDriver.process_router` would have
    returned, so the agent reports them before retrying the router.
    """

    def __init__(self, router_id: str, failures: list[str],
                 fip_statuses: dict[str, str] | None = None) -> None:
        super().__init__('router %s: %d part(s) failed: %s'
                         % (router_id, len(failures), '; '.join(failures)))
        self.router_id = router_id
        self.failures = failures
        self.fip_statuses = fip_statuses or {}


class RouterDriver(driver.Driver):
    """Builds routers (namespace, interfaces, routes, SNAT, floating IPs).

    ``router`` is one entry of ``sync_routers`` (``id``, ``_interfaces``,
    ``gw_port``, ``_floatingips``, ``enable_snat``, ``routes``...), already
    checked by the agent for a valid ``id``.

    :param interface_driver: plugs the router's qr-/qg- ports; the L3 agent
        loads it from ``[DEFAULT] interface_driver`` and initialises it first.
    """

    def __init__(self, conf: cfg.ConfigOpts, host: str,
                 interface_driver: interface.InterfaceDriver) -> None:
        super().__init__(conf, host)
        self.interface_driver = interface_driver

    def unsupported_reason(self, router: dict[str, Any]) -> str | None:
        """Why this driver must not build ``router``, or None if it can.

        The default refuses HA and distributed (DVR) routers: built as
        plain routers they would be active on several hosts at once with
        the same IP and MAC addresses. A driver that implements them (e.g.
        keepalived-based HA) overrides this; the agent needs no change.
        """
        if router.get('ha'):
            return ('HA routers (ha=True) need an HA router driver; %s builds '
                    'legacy routers only' % type(self).__name__)
        if router.get('distributed'):
            return ('distributed (DVR) routers are not supported by %s'
                    % type(self).__name__)
        return None

    @abc.abstractmethod
    def process_router(self, router: dict[str, Any]) -> dict[str, str]:
        """Make the host match ``router``; returns floating IP statuses.

        :raises RouterProcessingError: part of the router failed; carries
            the statuses of what did work.
        """

    @abc.abstractmethod
    def delete_router(self, router_id: str) -> None:
        """Remove everything of the router from the host (idempotent)."""

    @abc.abstractmethod
    def existing_routers(self) -> set[str]:
        """Router ids with state on this host (for stale cleanup)."""
