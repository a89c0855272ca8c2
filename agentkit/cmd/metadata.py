"""``agentkit-metadata``: see :mod:`agentkit.agent.metadata`."""

from agentkit import cmd


def main() -> None:
    cmd.bootstrap()
    from agentkit import service
    from agentkit.conf import metadata as metadata_conf
    code = service.run('agentkit-metadata', metadata_conf.register_metadata_opts,
                       'agentkit.agent.metadata.MetadataAgent')
    service.exit_process(code)
