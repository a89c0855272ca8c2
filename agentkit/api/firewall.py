"""Firewall drivers: security groups on the ports of this host."""

import abc
from typing import Any

from agentkit.api import driver


class FirewallDriver(driver.Driver):
    """Applies a port's security groups and anti-spoofing rules.

    ``port`` dicts carry at least ``id``, ``device``, ``mac_address``,
    ``fixed_ips`` (list of ``{ip_address, subnet_id}``), ``security_groups``
    (ids), ``port_security_enabled`` and ``allowed_address_pairs``.
    """

    @abc.abstractmethod
    def prepare_port_filter(self, port: dict[str, Any]) -> None:
        """Install the filter for a newly wired port."""

    @abc.abstractmethod
    def update_port_filter(self, port: dict[str, Any]) -> None:
        """Re-apply the filter after the port's addresses or groups changed."""

    @abc.abstractmethod
    def remove_port_filter(self, port_id: str) -> None:
        """Drop everything installed for the port (idempotent)."""

    @abc.abstractmethod
    def update_security_group_rules(self, sg_id: str,
                                    rules: list[dict[str, Any]]) -> None:
        """Replace the rules of one security group."""

    @abc.abstractmethod
    def update_security_group_members(self, sg_id: str,
                                      member_ips: list[str]) -> None:
        """Replace the addresses of ports in one security group (remote_group_id)."""
