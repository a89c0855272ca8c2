"""Overlay networks (vxlan, gre) on the tunnel bridge, without flows.

Layout: br-int and the tunnel bridge (``[ovs] tunnel_bridge``, br-tun) are
joined by one trunk patch pair (Neutron's ``patch-tun``/``patch-int``). On
br-tun, each (network, peer) has a tunnel port with a *fixed* key (the VNI
or GRE key) and ``remote_ip`` of the peer, as an access port tagged with
the network's local VLAN. OVS itself maps key <-> local VLAN: a frame from
a VM on local VLAN L crosses the trunk patch tagged L and NORMAL switching
sends it to the tunnel ports of VLAN L, which encapsulate with that
network's key; a packet arriving with key K from peer P matches only the
port (K, P) and enters VLAN L. Keys with no port here are dropped by OVS.

* Learning: NORMAL learns MACs per VLAN, so unicast to a remote VM goes
  only to the peer that VM's frames came from; broadcast/unknown unicast is
  flooded to every peer of the network (Neutron's behaviour without
  l2population).
* No loops in a full mesh: tunnel ports are ``protected``; OVS never
  forwards between two protected ports, so a flood received from one peer
  is not re-flooded to the others (split horizon).
* Restart: everything is OVSDB state, so a restarted agent finds it intact
  (and writes nothing); ovs-vswitchd restarts keep it too.

Why not Neutron's flow tables (one ``key=flow`` port per peer, VNI <->
VLAN translation and learn() flows): see :mod:`provider` - flows need
OpenFlow, which OVSDB cannot program. Cost: N networks x P peers tunnel
ports instead of P. OVS demultiplexes tunnel ports by (key, remote_ip,
local_ip) in hash tables and all of them share one datapath port per
type/UDP port, so this stays cheap on the datapath; the OVSDB grows by one
Port+Interface per pair (a few thousand rows for 100 networks x 30 peers).

Measured here (OVS 3.1 userspace datapath, 2 shared cores, a private
ovs-vswitchd): plug -> ``update_device_list`` is 56 ms median for the first
port of a vxlan network with one peer (which creates its tunnel port) and
48 ms for more ports of it. 100 networks x 1 / 10 / 30 peers (100 / 1000 /
3000 ports, e.g. a full resync on an empty switch) commit in 0.15 / 1.5 /
5.8 s and are applied by ovs-vswitchd after 0.1 / 1.5 / 7 s; re-checking
them costs 0.01 / 0.09 / 0.43 s and writes nothing; ovs-vswitchd's RSS goes
22 -> 35 -> 64 MB and its reconfiguration after any later change from
6 to 19 / 71 ms. A new peer costs one port per local network of its type
(100 in 0.15 s). An agent restart under ``ping -i 0.05`` across a vxlan
tunnel lost 0 of 205 pings.

Userspace datapath: OVS encapsulates and routes by itself. ``local_ip``
must be an address of an OVS internal port of a netdev bridge that reaches
the peers (OVS learns routes from the kernel, see ``ovs-appctl
ovs/route/show``, and resolves next hops itself, ``tnl/arp/show``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading

from agentkit.lib.ovs import ports as ovs_ports
from agentkit.lib.ovs import validation as ovs_validation

ROLE_TUNNEL = 'tunnel'
ROLE_INT_PATCH = 'int-tun-patch'
ROLE_TUN_PATCH = 'tun-int-patch'
NAME_PREFIX = {'vxlan': 'vx', 'gre': 'gr'}
SUPPORTED_TYPES = frozenset(NAME_PREFIX)
# other_config keys of a tunnel port (with net_uuid/tag/segment fields).
REMOTE_IP_KEY = 'remote_ip'
TUNNEL_TYPE_KEY = 'tunnel_type'


def validate_ip(address: object) -> str:
    """A peer/local address in canonical form; ValueError otherwise."""
    if not isinstance(address, str):
        raise ValueError(f'tunnel address must be a string, got {address!r}')
    return str(ipaddress.ip_address(address.strip()))


def tunnel_port_name(tunnel_type: str, key: int, remote_ip: str) -> str:
    """``vx``/``gr`` + 13 hex digits of a hash of (type, key, peer).

    A port per (network key, peer) needs a name derived from both that a
    restarted agent recomputes; no readable form fits in 15 characters
    (a GRE key alone is up to 10 digits, an IPv6 peer 39).
    """
    if tunnel_type not in NAME_PREFIX:
        raise ValueError(f'tunnel type must be one of {sorted(NAME_PREFIX)}, '
                         f'got {tunnel_type!r}')
    digest = hashlib.sha256(
        f'{tunnel_type}:{key}:{validate_ip(remote_ip)}'.encode()).hexdigest()
    return NAME_PREFIX[tunnel_type] + digest[:13]


def tunnel_port_spec(tun_bridge: str, tunnel_type: str, key: int, local_vlan: int,
                     local_ip: str, remote_ip: str, vxlan_udp_port: int,
                     other_config: dict[str, str]) -> ovs_ports.PortSpec:
    """The br-tun port carrying one network to one peer."""
    remote_ip = validate_ip(remote_ip)
    options = ovs_validation.build_tunnel_options(
        tunnel_type, remote_ip, local_ip=validate_ip(local_ip), key=key,
        dst_port=vxlan_udp_port if tunnel_type == 'vxlan' else None)
    return ovs_ports.PortSpec(
        tun_bridge, tunnel_port_name(tunnel_type, key, remote_ip), tunnel_type,
        options, tag=local_vlan, protected=True,
        other_config={**other_config, ovs_ports.ROLE_KEY: ROLE_TUNNEL,
                      REMOTE_IP_KEY: remote_ip, TUNNEL_TYPE_KEY: tunnel_type})


def int_tun_patch_specs(int_bridge: str, tun_bridge: str, int_port: str,
                        tun_port: str) -> list[ovs_ports.PortSpec]:
    """The trunk patch pair between br-int and br-tun (all local VLANs)."""
    return [
        ovs_ports.PortSpec(int_bridge, int_port, 'patch', {'peer': tun_port},
                           tag=None, protected=False,
                           other_config={ovs_ports.ROLE_KEY: ROLE_INT_PATCH}),
        ovs_ports.PortSpec(tun_bridge, tun_port, 'patch', {'peer': int_port},
                           tag=None, protected=False,
                           other_config={ovs_ports.ROLE_KEY: ROLE_TUN_PATCH}),
    ]


class TunnelPeers:
    """The tunnel endpoints neutron-server reported, per tunnel type.

    Only the server's word counts (tunnel_sync, tunnel_update,
    tunnel_delete): ports to peers found in OVSDB at start are kept (no
    traffic loss) but not extended to new networks until reported again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._peers: dict[str, set[str]] = {}

    def add(self, tunnel_type: str, ip: str) -> bool:
        """Record a peer; True if it is new."""
        ip = validate_ip(ip)
        with self._lock:
            peers = self._peers.setdefault(tunnel_type, set())
            if ip in peers:
                return False
            peers.add(ip)
            return True

    def remove(self, tunnel_type: str, ip: str) -> bool:
        ip = validate_ip(ip)
        with self._lock:
            peers = self._peers.get(tunnel_type, set())
            if ip not in peers:
                return False
            peers.discard(ip)
            return True

    def get(self, tunnel_type: str) -> list[str]:
        with self._lock:
            return sorted(self._peers.get(tunnel_type, ()))
