"""``noop``: no security groups (enable_security_group = False)."""

from collections.abc import Sequence

from agentkit.api import firewall
from agentkit.api import security_group


class NoopFirewallDriver(firewall.FirewallDriver):
    """Accepts everything; the explicit choice of an operator who filters elsewhere."""

    needs_security_group_info = False

    def apply_port_filters(self, ports: Sequence[security_group.PortFilter],
                           info: security_group.SecurityGroupInfo) -> None:
        pass

    def remove_port_filters(self, port_ids: Sequence[str],
                            devices: Sequence[str] = ()) -> None:
        pass
