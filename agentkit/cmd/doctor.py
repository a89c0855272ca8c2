"""``agentkit-doctor``: see :mod:`agentkit.doctor`."""

import sys

from agentkit import cmd


def main() -> None:
    cmd.bootstrap()
    from agentkit.doctor import cli
    sys.exit(cli.run(sys.argv[1:]))
