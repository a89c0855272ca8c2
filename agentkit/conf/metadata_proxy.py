"""Options of the per-namespace metadata proxies (``agentkit.metadata_drivers``).

The DHCP agent (isolated networks) and the L3 agent (routers) both run
metadata proxies, and the metadata agent listens on the socket they forward
to, so these options are shared by three agents and defined only here.
Names, groups and defaults are Neutron's (``neutron.conf.agent.metadata.config``)
so an operator's ``[DEFAULT] metadata_proxy_*`` and ``[metadata_rate_limiting]``
settings carry over unchanged. Two defaults differ on purpose:
``metadata_proxy_user``/``metadata_proxy_group`` are ``nobody``/``nogroup``
(Neutron: empty, the agent's own user), so a proxy drops root even when the
agent runs as root, and ``ip_versions`` may list both 4 and 6 (Neutron then
disables rate limiting with a warning; here each family gets its own tables).

The proxy also reads two options that belong to its agents: the L3 agent's
``metadata_port`` and the DHCP agent's ``check_child_processes_interval``.
:func:`register_metadata_proxy_opts` registers those very ``Opt`` objects
too (registering the same object twice is a no-op in oslo.config), so the
driver finds them whichever agent loads it.
"""

from oslo_config import cfg
from oslo_config import types

from agentkit.conf import dhcp
from agentkit.conf import l3

RATE_LIMITING_GROUP = 'metadata_rate_limiting'

# The options Neutron shares between the metadata agent and the agents that
# run the proxies (its SHARED_OPTS). agentkit/conf/metadata.py is to register
# this very list; until it does, its copy must stay equal to this one
# (oslo.config accepts a second registration of a name only from an equal
# Opt, and tests share cfg.CONF).
shared_opts = [
    cfg.StrOpt(
        'metadata_proxy_socket', default='$state_path/metadata_proxy',
        help='Unix socket the per-namespace metadata proxies (haproxy) forward '
             'VM requests to; the metadata agent serves it. Its directory is '
             'created if missing and must be traversable by the proxy user.'),
    cfg.StrOpt(
        'metadata_proxy_user', default='nobody',
        help='User (name or uid) the metadata proxies run as; "deduce" socket '
             'mode derives the socket\'s permissions from it. Empty means the '
             'agent\'s effective user (Neutron\'s default). agentkit defaults to '
             '"nobody": the proxies drop privileges as dnsmasq does.'),
    cfg.StrOpt(
        'metadata_proxy_group', default='nogroup',
        help='Group (name or gid) the metadata proxies run as. Empty means the '
             'agent\'s effective group. agentkit defaults to "nogroup", the '
             'primary group of "nobody" on Debian.'),
]

# Which proxy the DHCP and L3 agents run (an alias like every driver).
driver_opts = [
    cfg.StrOpt(
        'metadata_driver', default='haproxy',
        help='Alias of the metadata proxy driver (entry point in '
             'agentkit.metadata_drivers) the DHCP agent (isolated networks) and '
             'the L3 agent (routers) run.'),
]

rate_limiting_opts = [
    cfg.BoolOpt(
        'rate_limit_enabled', default=False,
        help='Limit the rate of metadata requests per VM (source address); '
             'requests over a limit are answered 429 by the proxy without '
             'reaching the metadata agent.'),
    cfg.ListOpt(
        'ip_versions', default=[4],
        item_type=types.Integer(choices=[(4, 'IPv4'), (6, 'IPv6')]),
        help='IP versions of the clients to rate limit: 4, 6 or both '
             '(Neutron allows only one; here each version has its own '
             'tables).'),
    cfg.IntOpt(
        'base_window_duration', default=10, min=1,
        help='Duration (seconds) of the base window.'),
    cfg.IntOpt(
        'base_query_rate_limit', default=10, min=1,
        help='Requests a client may make within the base window.'),
    cfg.IntOpt(
        'burst_window_duration', default=10, min=1,
        help='Duration (seconds) of the burst window.'),
    cfg.IntOpt(
        'burst_query_rate_limit', default=10, min=1,
        help='Requests a client may make within the burst window.'),
]


def _opt(opts: list[cfg.Opt], name: str) -> cfg.Opt:
    return next(o for o in opts if o.name == name)


#: Options of other agents the proxy reads (the same objects, see above).
metadata_port_opt = _opt(l3.l3_opts, 'metadata_port')
check_child_processes_interval_opt = _opt(dhcp.dhcp_opts, 'check_child_processes_interval')


def register_metadata_proxy_opts(conf: cfg.ConfigOpts) -> None:
    """Register the proxy's options on ``conf``; safe to call repeatedly."""
    conf.register_opts(shared_opts)
    conf.register_opts(driver_opts)
    conf.register_opts(rate_limiting_opts, group=RATE_LIMITING_GROUP)
    conf.register_opts([metadata_port_opt, check_child_processes_interval_opt])
