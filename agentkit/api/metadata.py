"""Metadata drivers: the proxy that answers 169.254.169.254 in namespaces."""

import abc

from agentkit.api import driver


class MetadataDriver(driver.Driver):
    """Runs one metadata proxy per router or isolated network namespace."""

    @abc.abstractmethod
    def spawn_proxy(self, namespace: str, resource_id: str,
                    router: bool) -> None:
        """Start (or adopt) the proxy for a router or a network namespace."""

    @abc.abstractmethod
    def destroy_proxy(self, resource_id: str) -> None:
        """Stop the proxy (idempotent)."""
