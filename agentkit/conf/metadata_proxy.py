"""Options of the per-namespace metadata proxies (``agentkit.metadata_drivers``).

The DHCP agent (isolated networks) and the L3 agent (routers) both run
metadata proxies, and the metadata agent listens on the socket they forward
to, so these options are shared by three agents and defined only here.
Names, groups and defaults are Neutron's (``neutron.conf.agent.metadata.config``)
so an operator's ``[DEFAULT] metadata_proxy_*`` settings carry over
unchanged. Two defaults differ on purpose:
``metadata_proxy_user``/``metadata_proxy_group`` are ``nobody``/``nogroup``
(Neutron: empty, the agent's own user), so a proxy drops root even when the
agent runs as root.

Options only one proxy driver reads (haproxy's ``[metadata_rate_limiting]``)
live beside that driver, which registers them when it is loaded.

The proxy also reads two options that belong to its agents: the L3 agent's
``metadata_port`` and the DHCP agent's ``check_child_processes_interval``.
:func:`register_metadata_proxy_opts` registers those very ``Opt`` objects
too (registering the same object twice is a no-op in oslo.config), so the
driver finds them whichever agent loads it.
"""

from oslo_config import cfg

from agentkit.conf import dhcp
from agentkit.conf import l3

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


def _opt(opts: list[cfg.Opt], name: str) -> cfg.Opt:
    return next(o for o in opts if o.name == name)


#: Options of other agents the proxy reads (the same objects, see above).
metadata_port_opt = _opt(l3.l3_opts, 'metadata_port')
check_child_processes_interval_opt = _opt(dhcp.dhcp_opts, 'check_child_processes_interval')


def register_metadata_proxy_opts(conf: cfg.ConfigOpts) -> None:
    """Register the proxy's options on ``conf``; safe to call repeatedly."""
    conf.register_opts(shared_opts)
    conf.register_opts(driver_opts)
    conf.register_opts([metadata_port_opt, check_child_processes_interval_opt])
