"""Options of the L3 agent."""

from oslo_config import cfg

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


def register_l3_opts(conf: cfg.ConfigOpts) -> None:
    from agentkit.conf import metadata_proxy  # it refers to l3_opts itself
    conf.register_opts(l3_opts)
    metadata_proxy.register_metadata_proxy_opts(conf)
    interface.register_interface_opts(conf)
    ovs.register_ovs_opts(conf)
