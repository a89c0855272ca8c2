"""Options of the L3 agent."""

from oslo_config import cfg

from agentkit import exceptions
from agentkit.conf import interface
from agentkit.conf import ovs

l3_opts = [
    cfg.StrOpt(
        'l3_driver', default='namespace',
        help='Alias of the router driver (entry point in agentkit.l3_drivers).'),
    cfg.StrOpt(
        'agent_mode', default='legacy', choices=['legacy'],
        help='Router placement mode reported to neutron-server.'),
    cfg.IntOpt(
        'send_arp_for_ha', default=3, min=0, max=10,
        help='Gratuitous ARPs sent, one a second, for every IPv4 address a '
             'router port gains (gateway IP, floating IP), so upstream '
             'routers learn it at once; 0 sends none (Neutron\'s option).'),
    cfg.BoolOpt(
        'handle_internal_only_routers', default=True,
        help='Host routers that have no external gateway.'),
    cfg.IntOpt(
        'metadata_port', default=9697, min=1, max=65535,
        help='Port the per-router metadata proxy listens on inside qrouter-.'),
    cfg.BoolOpt(
        'enable_metadata_proxy', default=True,
        help='Run a metadata proxy in every router namespace, so VMs behind a '
             'router reach 169.254.169.254 (Neutron\'s option).'),
]

# radvd, one per router namespace that has IPv6 subnets to advertise
# (drivers/l3/radvd.py). Neutron's names and defaults; the bounds are
# radvd's (RFC 4861 section 6.2.1), which otherwise logs an error and
# advertises nothing on the interface.
ra_opts = [
    cfg.IntOpt(
        'min_rtr_adv_interval', default=30, min=3, max=1350,
        help='MinRtrAdvInterval of radvd: least seconds between unsolicited '
             'router advertisements. At most 3/4 of max_rtr_adv_interval.'),
    cfg.IntOpt(
        'max_rtr_adv_interval', default=100, min=4, max=1800,
        help='MaxRtrAdvInterval of radvd: most seconds between unsolicited '
             'router advertisements. Hosts keep the router as default '
             'gateway for three times this long after the last one.'),
]


def validate_ra_intervals(conf: cfg.ConfigOpts) -> tuple[int, int]:
    """(min, max) advertisement intervals, if radvd accepts them together.

    :raises InvalidConfiguration: ``min_rtr_adv_interval`` is more than 3/4
        of ``max_rtr_adv_interval`` (radvd would advertise nothing).
    """
    low, high = conf.min_rtr_adv_interval, conf.max_rtr_adv_interval
    if 4 * low > 3 * high:
        raise exceptions.InvalidConfiguration(
            'min_rtr_adv_interval (%d) must be at most 3/4 of max_rtr_adv_interval '
            '(%d), i.e. at most %d: radvd refuses to advertise otherwise'
            % (low, high, 3 * high // 4))
    return low, high


def register_l3_opts(conf: cfg.ConfigOpts) -> None:
    from agentkit.conf import metadata_proxy  # it refers to l3_opts itself
    conf.register_opts(l3_opts)
    conf.register_opts(ra_opts)
    metadata_proxy.register_metadata_proxy_opts(conf)
    interface.register_interface_opts(conf)
    ovs.register_ovs_opts(conf)
