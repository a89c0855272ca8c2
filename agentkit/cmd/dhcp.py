"""``agentkit-dhcp``: see :mod:`agentkit.agent.dhcp`."""

from agentkit import cmd


def main() -> None:
    cmd.bootstrap()
    from agentkit import service
    from agentkit.conf import dhcp as dhcp_conf
    code = service.run('agentkit-dhcp', dhcp_conf.register_dhcp_opts,
                       'agentkit.agent.dhcp.DhcpAgent')
    service.exit_process(code)
