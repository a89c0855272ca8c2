"""``agentkit-dhcp``: see :mod:`agentkit.agent.dhcp`."""

import sys

from agentkit import service
from agentkit.conf import dhcp as dhcp_conf


def main() -> None:
    sys.exit(service.run('agentkit-dhcp', dhcp_conf.register_dhcp_opts,
                         'agentkit.agent.dhcp.DhcpAgent'))
