"""``agentkit-l2``: see :mod:`agentkit.agent.l2`."""

from agentkit import cmd


def main() -> None:
    cmd.bootstrap()
    from agentkit import service
    from agentkit.conf import l2 as l2_conf
    code = service.run('agentkit-l2', l2_conf.register_l2_opts,
                       'agentkit.agent.l2.L2Agent')
    service.exit_process(code)
