"""The interface driver option shared by the DHCP and L3 agents."""

from oslo_config import cfg

interface_opts = [
    cfg.StrOpt(
        'interface_driver', default='openvswitch',
        help='Alias of the interface driver that plugs service ports (DHCP '
             'ports, router qr-/qg- ports); entry point in '
             'agentkit.interface_drivers: openvswitch or linuxbridge. '
             'Neutron\'s class paths (neutron.agent.linux.interface.'
             'OVSInterfaceDriver, ...BridgeInterfaceDriver) are accepted.'),
]


def register_interface_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(interface_opts)
