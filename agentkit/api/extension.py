"""Agent extensions: optional per-port features (QoS, trunks, logging...).

Loaded in the configured order; for every port the agent calls
:meth:`handle_port` after wiring it and :meth:`delete_port` after unwiring.
"""

import abc
from typing import Any

from agentkit.api import driver


class AgentExtension(driver.Driver):
    """A feature that rides on the L2 agent's port processing."""

    def consume_api(self, agent_api: Any) -> None:
        """Receive the agent's extension API (access to the mechanism driver)."""

    @abc.abstractmethod
    def handle_port(self, context: dict[str, Any], port: dict[str, Any]) -> None:
        """Apply the extension to a port that was just wired."""

    @abc.abstractmethod
    def delete_port(self, context: dict[str, Any], port: dict[str, Any]) -> None:
        """Undo the extension for a port that was unwired."""
