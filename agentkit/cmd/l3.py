"""``agentkit-l3``: see :mod:`agentkit.agent.l3`."""

from agentkit import cmd


def main() -> None:
    cmd.bootstrap()
    from agentkit import service
    from agentkit.conf import l3 as l3_conf
    code = service.run('agentkit-l3', l3_conf.register_l3_opts,
                       'agentkit.agent.l3.L3Agent')
    service.exit_process(code)
