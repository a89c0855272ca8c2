"""Options of the DHCP agent."""

from oslo_config import cfg

from agentkit.conf import interface
from agentkit.conf import ovs

dhcp_opts = [
    cfg.StrOpt(
        'dhcp_driver', default='dnsmasq',
        help='Alias of the DHCP driver (entry point in agentkit.dhcp_drivers). '
             'Neutron\'s neutron.agent.linux.dhcp.Dnsmasq is accepted as '
             'dnsmasq.'),
    cfg.BoolOpt(
        'enable_isolated_metadata', default=False,
        help='Serve metadata on 169.254.169.254 from the DHCP namespace for '
             'networks without a router.'),
    cfg.IntOpt(
        'dhcp_lease_duration', default=86400, min=-1,
        help='DHCP lease time in seconds; -1 means infinite.'),
    cfg.StrOpt(
        'dnsmasq_config_file', default='',
        help='Extra dnsmasq configuration file (e.g. dhcp-option-force=26,1454 '
             'to lower the MTU of GRE networks).'),
    cfg.ListOpt(
        'dnsmasq_dns_servers', default=[],
        help='Upstream DNS servers dnsmasq forwards the VMs\' queries to '
             '(--server=<ip>[#port]), as in Neutron. VMs are handed their '
             'subnet\'s dns_nameservers, or else dnsmasq itself; these '
             'servers are never handed to VMs.'),
    cfg.BoolOpt(
        'dnsmasq_local_resolv', default=False,
        help='Let dnsmasq forward to the resolvers of the host\'s '
             'resolv.conf (drops --no-resolv). Ignored when '
             'dnsmasq_dns_servers is set.'),
    cfg.StrOpt(
        'dns_domain', default='openstacklocal',
        help='Domain of the host names dnsmasq hands out.'),
    cfg.IntOpt(
        'dnsmasq_lease_max', default=2 ** 24, min=1,
        help='Upper bound of leases per network.'),
    cfg.FloatOpt(
        'dhcp_reload_coalesce_seconds', default=0.1, min=0, mutable=True,
        help='Changes to one network within this window are written and '
             'signalled to dnsmasq once.'),
    cfg.IntOpt(
        'check_child_processes_interval', default=60, min=0, mutable=True,
        # Neutron keeps it in [agent] (its process monitor's options).
        deprecated_opts=[cfg.DeprecatedOpt('check_child_processes_interval',
                                           group='agent')],
        help='Seconds between checks that the daemons the agent runs '
             '(dnsmasq, metadata proxies, radvd) are alive; a dead one is '
             'started again. 0 disables respawning. Also read by the L3 agent '
             'for its metadata proxies and radvds.'),
]


def register_dhcp_opts(conf: cfg.ConfigOpts) -> None:
    from agentkit.conf import metadata_proxy  # it refers to dhcp_opts itself
    conf.register_opts(dhcp_opts)
    metadata_proxy.register_metadata_proxy_opts(conf)
    interface.register_interface_opts(conf)
    ovs.register_ovs_opts(conf)
