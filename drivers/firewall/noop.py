"""``noop``: no security groups (enable_security_group = False)."""

from typing import Any

from agentkit.api import firewall


class NoopFirewallDriver(firewall.FirewallDriver):
    """Accepts everything; the explicit choice of an operator who filters elsewhere."""

    needs_security_group_info = False

    def prepare_port_filter(self, port: dict[str, Any]) -> None:
        pass

    def update_port_filter(self, port: dict[str, Any]) -> None:
        pass

    def remove_port_filter(self, port_id: str) -> None:
        pass

    def update_security_group_rules(self, sg_id: str,
                                    rules: list[dict[str, Any]]) -> None:
        pass

    def update_security_group_members(self, sg_id: str, member_ips: Any) -> None:
        pass
