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
    cfg.BoolOpt(
        'handle_internal_only_routers', default=True,
        help='Host routers that have no external gateway.'),
    cfg.IntOpt(
        'metadata_port', default=9697, min=1, max=65535,
        help='Port the per-router metadata proxy listens on inside qrouter-.'),
]


def register_l3_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(l3_opts)
    interface.register_interface_opts(conf)
    ovs.register_ovs_opts(conf)
