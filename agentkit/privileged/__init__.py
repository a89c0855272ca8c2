"""oslo.privsep contexts: the only place agentkit gains root powers.

Every operation that needs root lives in a module of this package and is
decorated with one of the contexts below. Each context is a separate privsep
daemon holding only the capabilities its operations need, so the agent
process itself can run as an unprivileged user.

The daemons are never eventlet-patched, which is why pyroute2 (which breaks
under monkey-patching) is only ever called in here.
"""

from typing import Any, Callable, TypeVar, cast

from oslo_config import cfg
from oslo_privsep import capabilities as caps
from oslo_privsep import priv_context

from agentkit.lib import timing


_F = TypeVar('_F', bound=Callable[..., Any])


class _TimedPrivContext(priv_context.PrivContext):
    """A PrivContext whose calls from the agent are timed per module
    (``privsep`` / ``netlink``, ``iptables``...: see agentkit.lib.timing):
    the round trip to the daemon plus the work done there."""

    def entrypoint(self, func: _F) -> _F:  # type: ignore[override]
        """oslo.privsep's decorator, keeping the function's signature for
        type checkers (callers in agentkit.lib are checked strictly)."""
        return cast(_F, super().entrypoint(func))

    def _wrap(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.client_mode:  # in the daemon: the call itself
            return super()._wrap(func, *args, **kwargs)
        with timing.timed(timing.PRIVSEP, func.__module__.rsplit('.', 1)[-1]):
            return super()._wrap(func, *args, **kwargs)


# Netlink and namespaces: links, addresses, routes, neighbours, sysctls.
# SYS_ADMIN is needed for setns()/mounting /run/netns/<name>; NET_RAW for
# the one raw packet agentkit sends itself, a router's gratuitous ARP.
network = _TimedPrivContext(
    __name__,
    cfg_section='privsep_network',
    pypath=__name__ + '.network',
    capabilities=[caps.CAP_NET_ADMIN, caps.CAP_SYS_ADMIN, caps.CAP_NET_RAW,
                  caps.CAP_DAC_OVERRIDE, caps.CAP_DAC_READ_SEARCH],
)

# Several resources are updated at once ([agent] worker_threads) and most
# network calls wait on the kernel or on an exec (iptables-save/restore,
# netns creation), so more threads than CPUs (oslo.privsep's default):
# measured with benchmarks/l3_routers.py, 8 halves the time to build 100
# routers on a 2-CPU host.
NETWORK_THREADS = 8
cfg.CONF.set_default('thread_pool_size', NETWORK_THREADS, group='privsep_network')

# Daemons run on the agent's behalf (dnsmasq, haproxy, radvd) and their
# one helper (dhcp_release), started inside namespaces and signalled later.
# What this daemon's own code needs, and no more:
#   SYS_ADMIN        setns() into /run/netns/<name> before starting a process
#   KILL             signal a daemon that dropped to its own user (nobody, radvd)
#   DAC_OVERRIDE,    open log files and /proc entries owned by other users
#   DAC_READ_SEARCH  (an unprivileged agent's state directories)
# The daemons themselves get what they need (NET_ADMIN, NET_RAW,
# NET_BIND_SERVICE, SETUID/SETGID to drop to their users, CHOWN...) from
# being exec'd as uid 0, which grants the bounding set, not from this
# daemon's capabilities; that is why process.spawn only starts agentkit's
# daemons, with checked arguments.
daemons = _TimedPrivContext(
    __name__,
    cfg_section='privsep_daemons',
    pypath=__name__ + '.daemons',
    capabilities=[caps.CAP_SYS_ADMIN, caps.CAP_KILL, caps.CAP_DAC_OVERRIDE,
                  caps.CAP_DAC_READ_SEARCH],
)
