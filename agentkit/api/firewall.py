"""Firewall drivers: security groups on the ports of this host."""

import abc
from collections.abc import Mapping
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
    def update_security_group_members(self, sg_id: str, member_ips: Any) -> None:
        """Replace the addresses of ports in one security group (remote_group_id)."""

    #: Whether the agent must fetch ``security_group_info_for_devices`` for
    #: this driver (the noop driver needs nothing).
    needs_security_group_info: bool = True

    def update_security_group_info(self, info: Mapping[str, Any]) -> None:
        """Apply a ``security_group_info_for_devices`` reply.

        ``info['security_groups']`` maps group ids to rule lists and
        ``info['sg_member_ips']`` group ids to ``{'IPv4': [...], 'IPv6':
        [...]}``. Drivers may override this to apply everything at once.
        """
        for sg_id, rules in (info.get('security_groups') or {}).items():
            self.update_security_group_rules(sg_id, rules)
        for sg_id, members in (info.get('sg_member_ips') or {}).items():
            self.update_security_group_members(sg_id, members)
