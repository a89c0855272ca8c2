"""Option lists for oslo-config-generator (entry points in ``oslo.config.opts``).

One function per agent so each sample file (etc/oslo-config-generator/*.conf)
shows only what that agent reads.
"""

import copy
import itertools

from agentkit.conf import common
from agentkit.conf import dhcp
from agentkit.conf import interface
from agentkit.conf import l2
from agentkit.conf import l3
from agentkit.conf import metadata
from agentkit.conf import metadata_proxy
from agentkit.conf import ovs

Opts = list[tuple[str | None, list]]


def _copy(opts: list) -> list:
    return [copy.deepcopy(o) for o in opts]


def list_common_opts() -> Opts:
    return [(None, _copy(common.core_opts)),
            (common.AGENT_GROUP, _copy(common.agent_opts))]


def list_l2_opts() -> Opts:
    return [(l2.L2_GROUP, _copy(l2.l2_opts)),
            (l2.SECURITYGROUP_GROUP, _copy(l2.securitygroup_opts)),
            (l2.VXLAN_GROUP, _copy(l2.vxlan_opts)),
            (ovs.OVS_GROUP, _copy(ovs.ovs_opts))]


def _metadata_proxy_opts() -> Opts:
    """What the metadata proxy of a DHCP or L3 agent reads, beyond that agent's."""
    return [(None, _copy(metadata_proxy.shared_opts) + _copy(metadata_proxy.driver_opts))]


def list_dhcp_opts() -> Opts:
    return [(None, _copy(dhcp.dhcp_opts) + _copy(interface.interface_opts)),
            (ovs.OVS_GROUP, _copy(ovs.ovs_opts))] + _metadata_proxy_opts()


def list_l3_opts() -> Opts:
    # check_child_processes_interval is the DHCP agent's option; the L3
    # agent reads it for the monitor of its metadata proxies and radvds.
    return [(None, _copy(l3.l3_opts) + _copy(interface.interface_opts)
             + _copy([metadata_proxy.check_child_processes_interval_opt])),
            (ovs.OVS_GROUP, _copy(ovs.ovs_opts))] + _metadata_proxy_opts()


def list_metadata_opts() -> Opts:
    return [(None, _copy(metadata.metadata_opts))]


def list_all_opts() -> Opts:
    """Every option, for tools that want the whole set."""
    return list(itertools.chain(list_common_opts(), list_l2_opts(),
                                list_dhcp_opts(), list_l3_opts(),
                                list_metadata_opts()))
