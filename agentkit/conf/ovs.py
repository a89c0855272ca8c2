"""Open vSwitch connection and bridge options (L2 agent and OVS interface driver)."""

from oslo_config import cfg

OVS_GROUP = 'ovs'

ovs_opts = [
    cfg.StrOpt(
        'ovsdb_connection', default='unix:/var/run/openvswitch/db.sock',
        help='OVSDB endpoint, e.g. unix:/var/run/openvswitch/db.sock or '
             'tcp:127.0.0.1:6640.'),
    cfg.IntOpt(
        'ovsdb_timeout', default=10, min=1,
        help='Seconds to wait for an OVSDB transaction to complete.'),
    cfg.StrOpt(
        'integration_bridge', default='br-int',
        help='Bridge that VM and service ports are plugged into.'),
    cfg.StrOpt(
        'datapath_type', default='system',
        choices=['system', 'netdev'],
        help='OVS datapath of the bridges the agent creates: "system" '
             '(kernel) or "netdev" (userspace, for hosts without the OVS '
             'kernel module).'),
    cfg.StrOpt(
        'tunnel_bridge', default='br-tun',
        help='Bridge holding the vxlan/gre tunnel ports; created when '
             '[l2] tunnel_types is not empty.'),
    cfg.StrOpt(
        'int_peer_patch_port', default='patch-tun',
        help='Patch port on the integration bridge towards the tunnel bridge.'),
    cfg.StrOpt(
        'tun_peer_patch_port', default='patch-int',
        help='Patch port on the tunnel bridge towards the integration bridge.'),
]


def register_ovs_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(ovs_opts, group=OVS_GROUP)
