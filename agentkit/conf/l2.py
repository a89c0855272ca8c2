"""Options of the L2 (switch) agent: which mechanism/type/firewall drivers to load."""

from oslo_config import cfg

from agentkit.conf import ovs

L2_GROUP = 'l2'
SECURITYGROUP_GROUP = 'securitygroup'
LINUX_BRIDGE_GROUP = 'linux_bridge'
VXLAN_GROUP = 'vxlan'

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
        help='Tunnel types this host terminates (gre, vxlan); each must also '
             'be in type_drivers and supported by the mechanism driver.'),
    cfg.IPOpt(
        'local_ip',
        help='Address of this host\'s tunnel endpoint.'),
    cfg.ListOpt(
        'bridge_mappings', default=[],
        help='openvswitch: <physical_network>:<bridge> pairs for flat and '
             'vlan provider networks.'),
    cfg.ListOpt(
        'extensions', default=[],
        help='Aliases of agent extensions (entry points in '
             'agentkit.agent_extensions), called in this order.'),
    cfg.IntOpt(
        'vxlan_udp_port', default=4789, min=1, max=65535,
        help='Destination UDP port of vxlan tunnels.'),
    cfg.ListOpt(
        'network_vlan_ranges', default=[],
        help='<physical_network>[:<vlan_min>:<vlan_max>] entries the vlan '
             'type driver accepts; a bare physical network allows all VLANs.'),
    cfg.ListOpt(
        'flat_networks', default=['*'],
        help='Physical networks the flat type driver accepts; "*" allows any.'),
    cfg.ListOpt(
        'tunnel_id_ranges', default=['1:4094'],
        help='<min>:<max> GRE key ranges accepted by the gre type driver.'),
    cfg.ListOpt(
        'vni_ranges', default=['1:16777215'],
        help='<min>:<max> VNI ranges accepted by the vxlan type driver.'),
]

securitygroup_opts = [
    cfg.StrOpt(
        'firewall_driver', default='noop',
        help='Alias of the firewall driver (entry point in '
             'agentkit.firewall_drivers): iptables_hybrid applies security '
             'groups and anti-spoofing where VM taps cross a Linux bridge '
             '(OVS hybrid plug, linuxbridge); noop filters nothing and the '
             'agent warns about it at start.'),
    cfg.BoolOpt(
        'enable_security_group', default=True,
        help='Apply security groups to ports; when false the noop driver is '
             'used whatever firewall_driver says.'),
]

linux_bridge_opts = [
    cfg.ListOpt(
        'physical_interface_mappings', default=[],
        help='linuxbridge: <physical_network>:<interface> pairs for flat and '
             'vlan provider networks.'),
]


vxlan_opts = [
    cfg.StrOpt(
        'vxlan_group',
        help='linuxbridge: multicast group for VXLAN flooding (broadcast, '
             'unknown unicast), e.g. 239.1.1.1, instead of unicast copies '
             'to every tunnel peer. A CIDR (e.g. 239.0.0.0/8) gives each VNI '
             'its own group: the network address plus the VNI masked by the '
             'host bits. Must be the same on all hosts; the underlay must '
             'route multicast. Unset: unicast to the peers neutron-server '
             'reports.'),
]


def register_l2_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(l2_opts, group=L2_GROUP)
    conf.register_opts(securitygroup_opts, group=SECURITYGROUP_GROUP)
    conf.register_opts(linux_bridge_opts, group=LINUX_BRIDGE_GROUP)
    conf.register_opts(vxlan_opts, group=VXLAN_GROUP)
    ovs.register_ovs_opts(conf)
