"""Router drivers: realise neutron routers on this host."""

import abc
from typing import Any

from agentkit.api import driver


class RouterDriver(driver.Driver):
    """Builds routers (namespace, interfaces, routes, SNAT, floating IPs).

    ``router`` is one entry of ``sync_routers`` (``id``, ``_interfaces``,
    ``gw_port``, ``_floatingips``, ``enable_snat``, ``routes``...).
    """

    @abc.abstractmethod
    def process_router(self, router: dict[str, Any]) -> dict[str, str]:
        """Make the host match ``router``; returns floating IP statuses."""

    @abc.abstractmethod
    def delete_router(self, router_id: str) -> None:
        """Remove everything of the router from the host (idempotent)."""

    @abc.abstractmethod
    def existing_routers(self) -> set[str]:
        """Router ids with state on this host (for stale cleanup)."""
