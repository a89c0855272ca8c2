"""Options of the L2 (switch) agent: which mechanism/type/firewall drivers to load.

Where Neutron's agents name an option differently (``[ovs] local_ip``,
``[agent] tunnel_types``, ``[vxlan] udp_dstport``...), that name is a
deprecated alias of agentkit's, so an operator's openvswitch_agent.ini or
linuxbridge_agent.ini is read as it is; oslo.config logs a notice for each
alias it uses.
"""

from oslo_config import cfg

from agentkit.conf import ovs

L2_GROUP = 'l2'
SECURITYGROUP_GROUP = 'securitygroup'
LINUX_BRIDGE_GROUP = 'linux_bridge'
VXLAN_GROUP = 'vxlan'

# Groups of Neutron's agent and ML2 configuration files that hold options
# agentkit keeps elsewhere (Neutron's names, aliases only).
NEUTRON_OVS_GROUP = 'ovs'
NEUTRON_AGENT_GROUP = 'agent'


def _neutron(*locations: tuple[str, str]) -> list[cfg.DeprecatedOpt]:
    """Neutron's (group, name) spellings of an option, as aliases."""
    return [cfg.DeprecatedOpt(name, group=group) for group, name in locations]


l2_opts = [
    cfg.StrOpt(
        'mechanism_driver', default='openvswitch',
        help='Alias of the mechanism driver (entry point in '
             'agentkit.mechanism_drivers), e.g. openvswitch or linuxbridge.'),
    cfg.ListOpt(
        'type_drivers',
        help='Aliases of the enabled network type drivers (entry points in '
             'agentkit.type_drivers). A port on a segment of any other type '
             'is reported as failed. Unset: every type the mechanism driver '
             'supports (openvswitch: flat, vlan, gre, vxlan; linuxbridge: '
             'flat, vlan, vxlan).'),
    cfg.ListOpt(
        'tunnel_types', default=[],
        deprecated_opts=_neutron((NEUTRON_AGENT_GROUP, 'tunnel_types')),
        help='Tunnel types this host terminates (gre, vxlan); each must also '
             'be in type_drivers and supported by the mechanism driver.'),
    cfg.IPOpt(
        'local_ip',
        deprecated_opts=_neutron((NEUTRON_OVS_GROUP, 'local_ip'),
                                 (VXLAN_GROUP, 'local_ip')),
        help='Address of this host\'s tunnel endpoint.'),
    cfg.ListOpt(
        'bridge_mappings', default=[],
        deprecated_opts=_neutron((NEUTRON_OVS_GROUP, 'bridge_mappings'),
                                 (LINUX_BRIDGE_GROUP, 'bridge_mappings')),
        help='openvswitch: <physical_network>:<bridge> pairs for flat and '
             'vlan provider networks. linuxbridge (which plugs uplinks with '
             '[linux_bridge] physical_interface_mappings) refuses to start '
             'when it is set: it does not adopt existing Linux bridges.'),
    cfg.ListOpt(
        'extensions', default=[],
        deprecated_opts=_neutron((NEUTRON_AGENT_GROUP, 'extensions')),
        help='Aliases of agent extensions (entry points in '
             'agentkit.agent_extensions), called in this order.'),
    cfg.IntOpt(
        'vxlan_udp_port', default=4789, min=1, max=65535,
        deprecated_opts=_neutron((NEUTRON_AGENT_GROUP, 'vxlan_udp_port'),
                                 (VXLAN_GROUP, 'udp_dstport')),
        help='Destination UDP port of vxlan tunnels. Must be the same on '
             'every host (Neutron\'s linuxbridge agent left it to the '
             'kernel, 8472, unless [vxlan] udp_dstport was set).'),
    cfg.BoolOpt(
        'l2_population', default=False,
        deprecated_opts=_neutron((NEUTRON_AGENT_GROUP, 'l2_population'),
                                 (VXLAN_GROUP, 'l2_population')),
        help='Neutron\'s L2 population (forwarding entries pushed by '
             'neutron-server). Not implemented: tunnels go to every peer '
             'neutron-server announces and flooding reaches them all; when '
             'true the agent logs a warning and reports l2_population false, '
             'so neutron-server sends it no forwarding entries.'),
    cfg.ListOpt(
        'network_vlan_ranges', default=[],
        deprecated_opts=_neutron(('ml2_type_vlan', 'network_vlan_ranges')),
        help='<physical_network>[:<vlan_min>:<vlan_max>] entries the vlan '
             'type driver accepts; a bare physical network allows all VLANs.'),
    cfg.ListOpt(
        'flat_networks', default=['*'],
        deprecated_opts=_neutron(('ml2_type_flat', 'flat_networks')),
        help='Physical networks the flat type driver accepts; "*" allows any.'),
    cfg.ListOpt(
        'tunnel_id_ranges', default=['1:4094'],
        deprecated_opts=_neutron(('ml2_type_gre', 'tunnel_id_ranges')),
        help='<min>:<max> GRE key ranges accepted by the gre type driver.'),
    cfg.ListOpt(
        'vni_ranges', default=['1:16777215'],
        deprecated_opts=_neutron(('ml2_type_vxlan', 'vni_ranges')),
        help='<min>:<max> VNI ranges accepted by the vxlan type driver.'),
]

securitygroup_opts = [
    cfg.StrOpt(
        'firewall_driver', default='noop',
        help='Alias of the firewall driver (entry point in '
             'agentkit.firewall_drivers): iptables_hybrid applies security '
             'groups and anti-spoofing where VM taps cross a Linux bridge '
             '(OVS hybrid plug, linuxbridge); noop filters nothing and the '
             'agent warns about it at start. Neutron\'s names are accepted '
             '(iptables, its class paths; see agentkit.loader); Neutron\'s '
             'openvswitch firewall is not implemented: see '
             'unsupported_firewall_fallback.'),
    cfg.StrOpt(
        'unsupported_firewall_fallback',
        help='agentkit firewall driver to use instead when firewall_driver '
             'names a Neutron firewall agentkit does not implement (e.g. '
             'openvswitch), typically iptables_hybrid (which makes '
             'neutron-server hybrid-plug new VMs). Unset: the agent refuses '
             'to start, so security groups never silently change '
             'implementation.'),
    cfg.BoolOpt(
        'enable_security_group', default=True,
        help='Apply security groups to ports; when false the noop driver is '
             'used whatever firewall_driver says.'),
]

vxlan_opts = [
    cfg.BoolOpt(
        'enable_vxlan',
        help='Neutron\'s linuxbridge switch: true adds vxlan to [l2] '
             'tunnel_types, false refuses a vxlan in tunnel_types. Unset: '
             '[l2] tunnel_types alone decides.'),
]


def register_l2_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(l2_opts, group=L2_GROUP)
    conf.register_opts(securitygroup_opts, group=SECURITYGROUP_GROUP)
    conf.register_opts(vxlan_opts, group=VXLAN_GROUP)
    ovs.register_ovs_opts(conf)
