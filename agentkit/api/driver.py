"""What every driver has in common."""

import abc
import copy
from collections.abc import Sequence
from typing import Any, ClassVar

from oslo_config import cfg

from agentkit import exceptions

#: Options by group (None: ``[DEFAULT]``), as oslo-config-generator lists them.
OptionGroups = Sequence[tuple[str | None, Sequence[cfg.Opt]]]


def register_options(conf: cfg.ConfigOpts, options: OptionGroups) -> None:
    """Register a driver's own options on the agent's ``conf`` and read each once.

    oslo.config converts a value only when it is first read; reading here
    makes a bad value stop the agent at start, naming the option, instead of
    failing the first operation that needs it. Registering the same ``Opt``
    objects again is a no-op, so this is safe to call repeatedly.

    :raises InvalidOptionValue: ``[group] name: why`` of the first bad value.
    """
    for group, opts in options:
        conf.register_opts(list(opts), group=group)
        node = conf if group is None else conf[group]
        for opt in opts:
            try:
                getattr(node, opt.dest)
            except (ValueError, cfg.Error) as exc:
                raise exceptions.InvalidOptionValue(
                    f'[{group or "DEFAULT"}] {opt.name}: {exc}') from None


def list_options(options: OptionGroups) -> list[tuple[str | None, list[cfg.Opt]]]:
    """Copies of ``options`` for an ``oslo.config.opts`` entry point (the
    generator may change what it is given)."""
    return [(group, [copy.deepcopy(o) for o in opts]) for group, opts in options]


class Driver(abc.ABC):
    """Base of all driver roles.

    :param conf: the agent's configuration; read options lazily so SIGHUP
        changes to mutable options take effect.
    :param host: this host's name as neutron-server knows it.
    """

    #: Options only this driver reads, registered (and checked) by
    #: ``__init__``; options shared with the agent are registered by the
    #: agent and read by name. List them for oslo-config-generator with an
    #: ``oslo.config.opts`` entry point returning :func:`list_options`.
    options: ClassVar[OptionGroups] = ()

    def __init__(self, conf: cfg.ConfigOpts, host: str) -> None:
        self.conf = conf
        self.host = host
        register_options(conf, self.options)

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
