"""What every driver has in common."""

import abc
from typing import Any

from oslo_config import cfg


class Driver(abc.ABC):
    """Base of all driver roles.

    :param conf: the agent's configuration; read options lazily so SIGHUP
        changes to mutable options take effect.
    :param host: this host's name as neutron-server knows it.
    """

    def __init__(self, conf: cfg.ConfigOpts, host: str) -> None:
        self.conf = conf
        self.host = host

    def initialize(self) -> None:
        """Connect to what the driver needs (OVSDB, netlink, ...).

        Called once, after every driver of the agent is constructed and before
        the first sync. Raise to stop the agent with the driver's name.
        """

    def stop(self) -> None:
        """Release connections and threads; never undo host state.

        VMs must keep working across an agent restart, so a driver leaves its
        bridges, flows, namespaces and daemons in place here.
        """

    def get_configurations(self) -> dict[str, Any]:
        """Entries merged into the agent's ``configurations`` state report."""
        return {}
