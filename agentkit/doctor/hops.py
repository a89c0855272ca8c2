"""Walk the path of a port or a network hop by hop and judge each hop.

Pure logic over two views: what neutron-server wants (:mod:`.intent`) and
what the host has (:mod:`.host`). A hop that cannot be judged because an
earlier one is broken is ``unknown``, not broken, so the report names the
one hop to repair first.
"""

import dataclasses
import ipaddress
import os
import shlex
from collections.abc import Callable
from typing import Protocol

from agentkit import exceptions
from agentkit.agent import router_intent
from agentkit.api import device_owner
from agentkit.api import metadata as metadata_api
from agentkit.doctor import dhcp_filter
from agentkit.doctor import host as host_view
from agentkit.doctor import hosts_ovs
from agentkit.doctor import intent
from agentkit.doctor import probe as doctor_probe
from agentkit.doctor import report
from agentkit.lib import ip_lib
from agentkit.lib import naming

OPENVSWITCH = 'openvswitch'
LINUXBRIDGE = 'linuxbridge'
DEAD_VLAN = 4095   # what the openvswitch driver tags unwired ports with
HYBRID_OVS_PREFIX = 'qvo'
HYBRID_BRIDGE_VETH_PREFIX = 'qvb'
PROVIDER_TYPES = frozenset({'flat', 'vlan'})
TUNNEL_TYPES = frozenset({'vxlan', 'gre'})
L2_LOG = 'the agentkit-l2 log (journalctl -u agentkit-l2)'
DHCP_LOG = 'the agentkit-dhcp log (journalctl -u agentkit-dhcp)'
L3_LOG = 'the agentkit-l3 log (journalctl -u agentkit-l3)'
HAPROXY = 'haproxy'


@dataclasses.dataclass(frozen=True)
class Settings:
    """The parts of the agents' configuration the hops depend on."""
    host: str
    mechanism: str = OPENVSWITCH
    integration_bridge: str = 'br-int'
    physical_networks: frozenset[str] = frozenset()
    tunnel_types: frozenset[str] = frozenset()
    metadata_proxy: bool = True    # [DEFAULT] enable_metadata_proxy of the L3 agent
    physical_bridges: frozenset[str] = frozenset()   # of [l2] bridge_mappings
    #: the L2 agent filters ports with iptables (iptables_hybrid, security groups on)
    iptables_firewall: bool = False
    #: --probe: active checks (a probe port, ARP/ping, TCP connects); else read only
    probe: bool = False
    #: [DEFAULT] enable_isolated_metadata of the DHCP agent
    isolated_metadata: bool = False


class Server(Protocol):
    def port(self, port_id: str) -> intent.PortIntent | None: ...
    def network(self, network_id: str) -> intent.NetworkIntent | None: ...
    def segment(self, port_id: str) -> intent.Segment | None: ...
    def router_ports(self, router_id: str) -> list[intent.PortIntent]: ...


def _unreachable(exc: Exception) -> report.Hop:
    return report.broken('server', f'no answer from neutron-server: {exc}',
                         'neutron-server or RabbitMQ is down, or [DEFAULT] '
                         'transport_url points elsewhere',
                         'openstack network agent list')


def _unknown_to_server(kind: str, resource_id: str) -> report.Hop:
    return report.broken('server', f'neutron-server knows no {kind} {resource_id}',
                         f'a wrong id, or the {kind} was deleted',
                         f'openstack {kind} show {resource_id}')


# -- port -------------------------------------------------------------------
def check_port(port_id: str, server: Server, host: host_view.HostView,
               settings: Settings) -> report.Report:
    result = report.Report('port', port_id, settings.host)
    hops = result.hops
    try:
        port = server.port(port_id)
        if port is None:
            hops.append(_unknown_to_server('port', port_id))
            return result
        binding = _binding_hop(port, settings)
        hops.append(binding)
        if binding.status != report.OK:
            return result
        segment = server.segment(port_id)
        network = server.network(port.network_id)
    except intent.ServerUnreachable as exc:
        hops.append(_unreachable(exc))
        return result
    hops.append(_tap_hop(port, host))
    vlan: int | None = None
    if settings.mechanism == OPENVSWITCH:
        ovs_port = host.ovs_port_of(port.id)
        hops.append(_ovs_bridge_hop(port, ovs_port, host, settings))
        vlan_hop, vlan = _local_vlan_hop(port, ovs_port, settings,
                                         judged=hops[-1].status == report.OK)
        hops.append(vlan_hop)
        hops.append(uplink_hop(port.network_id, segment, vlan, host, settings))
    elif settings.mechanism == LINUXBRIDGE:
        hops.append(_linux_bridge_hop(port, host))
    if settings.iptables_firewall and network is not None and network.dhcp_addresses(port):
        hops.append(_security_group_hop(port, host))
    hops.extend(dhcp_hops(network, [port], vlan, host, settings))
    if settings.probe and network is not None:
        hops.extend(probe_hops(network, [port], vlan, host, settings, list(hops)))
    return result


def _binding_hop(port: intent.PortIntent, settings: Settings) -> report.Hop:
    where = f'openstack port show {port.id} -c binding_host_id -c status'
    if not port.host:
        return report.broken('binding', 'the port is bound to no host',
                             'nova has not bound it yet (VM not spawned), or the '
                             'binding failed', where)
    if port.host != settings.host:
        return report.broken('binding', f'bound to host {port.host}, this is {settings.host}',
                             'the VM runs elsewhere: run the doctor on that host', where)
    ips = ', '.join(ip for _, ip in port.fixed_ips) or 'no fixed IPs'
    return report.ok('binding', f'bound here, status {port.status or "?"}, '
                                f'{port.mac_address}, {ips}')


def _tap_hop(port: intent.PortIntent, host: host_view.HostView) -> report.Hop:
    tap = naming.tap_device_name(port.id)
    link = host.link(tap)
    if link is None:
        return report.broken('vm-tap', f'no device {tap} on this host',
                             'the VM is not running here, or nova/os-vif has not plugged it',
                             f'ip link show {tap}')
    if link.get('state') != 'up':
        return report.broken('vm-tap', f'{tap} is administratively down',
                             'os-vif sets it up when it plugs the VM; something set it down',
                             f'ip link show {tap}')
    return report.ok('vm-tap', f'{tap} exists and is up')


def _ovs_bridge_hop(port: intent.PortIntent, ovs_port: hosts_ovs.OvsPort | None,
                    host: host_view.HostView, settings: Settings) -> report.Hop:
    br_int = settings.integration_bridge
    find = ('ovs-vsctl --columns=name,external_ids find Interface '
            f'external_ids:iface-id={port.id}')
    if ovs_port is None:
        return report.broken('bridge', f'no OVS interface carries iface-id {port.id}',
                             f'the VM port is not plugged into {br_int}: nova/os-vif did '
                             'not plug it, or it was removed', find)
    if ovs_port.bridge != br_int:
        return report.broken('bridge', f'{ovs_port.name} is on {ovs_port.bridge}, not {br_int}',
                             'plugged into the wrong bridge ([ovs] integration_bridge of '
                             'nova and of the agent differ?)', find)
    if not ovs_port.name.startswith(HYBRID_OVS_PREFIX):
        return report.ok('bridge', f'{ovs_port.name} on {br_int}')
    qbr = naming.hybrid_bridge_name(port.id)
    tap = naming.tap_device_name(port.id)
    qvb = HYBRID_BRIDGE_VETH_PREFIX + port.id[:naming.ID_PREFIX_LEN]
    for device in (tap, qvb):
        link = host.link(device) or {}
        if link.get('master') != qbr:
            return report.broken('bridge', f'{device} is not in {qbr} '
                                           f'(master: {link.get("master") or "none"})',
                                 'the hybrid plug is incomplete: the VM\'s frames never '
                                 f'reach {br_int}', f'ip link show master {qbr}')
    return report.ok('bridge', f'{tap} in {qbr}, {qvb}/{ovs_port.name} on {br_int}')


def _local_vlan_hop(port: intent.PortIntent, ovs_port: hosts_ovs.OvsPort | None,
                    settings: Settings, judged: bool) -> tuple[report.Hop, int | None]:
    if ovs_port is None or not judged:
        return report.unknown('local-vlan', 'not checked: the port is not on '
                                            f'{settings.integration_bridge}'), None
    show = f'ovs-vsctl --columns=name,tag,other_config list Port {ovs_port.name}'
    recorded = ovs_port.recorded_tag
    wired_for = ovs_port.other_config.get(hosts_ovs.NET_UUID)
    if ovs_port.tag in (None, DEAD_VLAN) or wired_for != port.network_id or recorded is None:
        return report.broken('local-vlan', f'{ovs_port.name} is not wired for network '
                                           f'{port.network_id} (tag {ovs_port.tag})',
                             'the L2 agent has not wired the port: it did not learn of the '
                             'plug, or failed to bind the segment; see ' + L2_LOG,
                             show), None
    if ovs_port.tag != recorded:
        return report.broken('local-vlan', f'{ovs_port.name} has tag {ovs_port.tag}, but the '
                                           f'L2 agent wired network {port.network_id} on '
                                           f'local VLAN {recorded}',
                             'the tag was changed outside the agent; the port is cut off '
                             'from its network', show), recorded
    return report.ok('local-vlan', f'{ovs_port.name} tag {recorded}, the local VLAN of '
                                   f'network {port.network_id}'), recorded


def _linux_bridge_hop(port: intent.PortIntent, host: host_view.HostView) -> report.Hop:
    tap = naming.tap_device_name(port.id)
    brq = naming.bridge_name(port.network_id)
    master = (host.link(tap) or {}).get('master')
    if master != brq:
        return report.broken('bridge', f'{tap} is not in {brq} (master: {master or "none"})',
                             'the L2 agent has not wired the port, or the tap was taken out '
                             'of the bridge; see ' + L2_LOG, f'bridge link show dev {tap}')
    return report.ok('bridge', f'{tap} in {brq}')


def _security_group_hop(port: intent.PortIntent, host: host_view.HostView) -> report.Hop:
    """Whether the port's firewall chains let its DHCP exchange through (IPv4)."""
    show = 'iptables-save -t filter | grep ' + port.id[:10]
    try:
        rules = host.filter_rules()
    except Exception as exc:   # any failure of the tool is evidence
        return report.unknown('security-group', f'cannot read the filter table: {exc}', show)
    tap = naming.tap_device_name(port.id)
    verdicts = []
    for direction, what in ((dhcp_filter.EGRESS, 'requests'), (dhcp_filter.INGRESS, 'replies')):
        found = dhcp_filter.chain_rules(rules, direction, port.id)
        if found is None:
            if any(tap in r and '-j ACCEPT' in r for r in rules):
                return report.ok('security-group', f'{tap} is not filtered '
                                                   '(port security off or trusted)')
            return report.broken('security-group', f'no firewall chain for {tap}',
                                 'the L2 agent has not filtered the port yet: a filtered '
                                 'bridge passes nothing for it; see ' + L2_LOG, show)
        chain, lines = found
        allowed, rule = dhcp_filter.decide(lines, direction)
        if allowed is False:
            return report.broken('security-group', f'{chain} drops DHCP {what}: {rule}',
                                 'a rule added outside agentkit, or the port\'s security '
                                 'group rules were rendered wrongly', show)
        verdicts.append(f'{chain} lets DHCP {what} through' if allowed
                        else f'{chain}: no rule decides DHCP {what}')
    return report.ok('security-group', '; '.join(verdicts))


# -- uplink -----------------------------------------------------------------
def uplink_hop(network_id: str, segment: intent.Segment | None, vlan: int | None,
               host: host_view.HostView, settings: Settings) -> report.Hop:
    """The network's way off this host: provider patch or tunnel ports."""
    if segment is None:
        return report.unknown('uplink', 'neutron-server reports no bound segment')
    if vlan is None:
        return report.unknown('uplink', 'not checked: no local VLAN to follow')
    wiring = [p for p in host.ovs_network_ports(network_id) if not p.iface_id]
    find = f'ovs-vsctl --columns=name,tag,other_config find Port other_config:net_uuid={network_id}'
    kind = segment.network_type
    if kind in PROVIDER_TYPES:
        what = f'{kind} {segment.physical_network}' + (
            f' VLAN {segment.segmentation_id}' if kind == 'vlan' else '')
        if segment.physical_network not in settings.physical_networks:
            return report.broken('uplink', f'physical network {segment.physical_network} is '
                                           'not in [l2] bridge_mappings',
                                 'the port is bound to a segment this host cannot carry: '
                                 'its network works on this host only', find)
        patches = [p for p in wiring if p.bridge == settings.integration_bridge
                   and p.tag == vlan]
        if not patches:
            return report.broken('uplink', f'no port on {settings.integration_bridge} takes '
                                           f'local VLAN {vlan} to {what}',
                                 'the L2 agent has not wired the network\'s provider patch; '
                                 'see ' + L2_LOG, find)
        return report.ok('uplink', f'{patches[0].name} (VLAN {vlan}) to {what}')
    if kind in TUNNEL_TYPES:
        if kind not in settings.tunnel_types:
            return report.broken('uplink', f'{kind} is not in [l2] tunnel_types',
                                 'the port is bound to a segment this host cannot carry: '
                                 'its network works on this host only', find)
        tunnels = [p for p in wiring if p.bridge != settings.integration_bridge]
        if not tunnels:
            return report.unknown('uplink', f'no {kind} tunnel port for segment '
                                            f'{segment.segmentation_id}: no peer host yet', find)
        return report.ok('uplink', f'{len(tunnels)} {kind} tunnel port(s) for segment '
                                   f'{segment.segmentation_id}')
    return report.unknown('uplink', f'segment type {kind} is not checked')


# -- DHCP -------------------------------------------------------------------
def dhcp_hops(network: intent.NetworkIntent | None, ports: list[intent.PortIntent],
              vlan: int | None, host: host_view.HostView,
              settings: Settings) -> list[report.Hop]:
    """The network's DHCP port here, its dnsmasq, and dnsmasq's entries for ``ports``."""
    if network is None:
        return [report.unknown('dhcp-port', 'neutron-server returned no network info')]
    wanted = {p.id: network.dhcp_addresses(p) for p in ports}
    if not any(wanted.values()):
        return [report.ok('dhcp-port', 'no address on a DHCP-enabled IPv4 subnet: '
                                       'nothing for DHCP to serve')]
    agents = f'openstack network agent list --network {network.id}'
    if not network.dhcp_ports:
        return [report.broken('dhcp-port', f'network {network.id} has no DHCP port',
                              'no DHCP agent hosts the network (none alive, or not '
                              'scheduled)', agents)]
    here = [p for p in network.dhcp_ports if p.host == settings.host]
    if not here:
        hosts = ', '.join(sorted({p.host or '?' for p in network.dhcp_ports}))
        return [report.unknown('dhcp-port', f'served from host(s) {hosts}: run the doctor '
                                            'there', agents)]
    hops = [_dhcp_port_hop(network.id, here[0], vlan, host)]
    state = host.dnsmasq(network.id)
    hops.append(_dnsmasq_hop(network.id, state))
    hops.append(_host_entries_hop(network.id, ports, wanted, state))
    return hops


def _dhcp_device(dhcp_port: intent.PortIntent, addresses: dict[str, list[str]]) -> str | None:
    """The DHCP port's device in its namespace (tap... or ns..., by interface driver)."""
    names = (naming.tap_device_name(dhcp_port.id), naming.ns_device_name(dhcp_port.id))
    return next((n for n in names if n in addresses), None)


def _dhcp_port_hop(network_id: str, dhcp_port: intent.PortIntent, vlan: int | None,
                   host: host_view.HostView) -> report.Hop:
    namespace = naming.dhcp_namespace(network_id)
    if not host.namespace_exists(namespace):
        return report.broken('dhcp-port', f'no namespace {namespace}',
                             'the DHCP agent has not set the network up; see ' + DHCP_LOG,
                             'ip netns list')
    addresses = host.addresses(namespace)
    names = (naming.tap_device_name(dhcp_port.id), naming.ns_device_name(dhcp_port.id))
    device = _dhcp_device(dhcp_port, addresses)
    show = f'ip netns exec {namespace} ip address'
    if device is None:
        return report.broken('dhcp-port', f'no device {" or ".join(names)} with an address '
                                          f'in {namespace}',
                             'the DHCP agent has not plugged its port; see ' + DHCP_LOG, show)
    missing = [ip for _, ip in dhcp_port.fixed_ips if ip not in addresses[device]]
    if missing:
        return report.broken('dhcp-port', f'{device} lacks {", ".join(missing)}',
                             'the DHCP agent has not applied the port\'s addresses; see '
                             + DHCP_LOG, show)
    ovs_port = host.ovs_port_of(dhcp_port.id)
    if vlan is not None and ovs_port is not None and ovs_port.tag != vlan:
        return report.broken('dhcp-port', f'{ovs_port.name} has tag {ovs_port.tag}, the '
                                          f'network\'s VMs are on local VLAN {vlan}',
                             'the L2 agent has not wired the DHCP port; see ' + L2_LOG,
                             f'ovs-vsctl --columns=name,tag,other_config list Port '
                             f'{ovs_port.name}')
    return report.ok('dhcp-port', f'{device} in {namespace} with '
                                  f'{", ".join(ip for _, ip in dhcp_port.fixed_ips)}')


def _dnsmasq_hop(network_id: str, state: host_view.DnsmasqState) -> report.Hop:
    if not state.running:
        return report.broken('dnsmasq', f'no dnsmasq runs for network {network_id} '
                                        f'(pid file {state.pid_file}: {state.pid or "none"})',
                             'dnsmasq died or was killed and the DHCP agent did not '
                             'respawn it (is agentkit-dhcp running?); see ' + DHCP_LOG,
                             f'ps -fp $(cat {state.pid_file})')
    return report.ok('dnsmasq', f'pid {state.pid} serves network {network_id}')


def _host_entries_hop(network_id: str, ports: list[intent.PortIntent],
                      wanted: dict[str, list[str]],
                      state: host_view.DnsmasqState) -> report.Hop:
    missing = []
    for port in ports:
        for ip in wanted[port.id]:
            if state.hosts.get(ip) != port.mac_address:
                found = state.hosts.get(ip)
                missing.append(f'{port.mac_address} {ip}' +
                               (f' (has {found})' if found else ''))
    if missing:
        return report.broken('dnsmasq-host', f'dnsmasq for network {network_id} has no '
                                             f'entry for {"; ".join(missing)} in '
                                             f'{state.host_file}',
                             'the DHCP agent has not received (or not applied) '
                             'port_create_end/port_update_end for the port; see ' + DHCP_LOG,
                             f'cat {state.host_file}')
    count = sum(len(ips) for ips in wanted.values())
    return report.ok('dnsmasq-host', f'{count} address(es) in {state.host_file}')


# -- --probe ----------------------------------------------------------------
def probe_hops(network: intent.NetworkIntent, ports: list[intent.PortIntent],
               vlan: int | None, host: host_view.HostView, settings: Settings,
               earlier: list[report.Hop]) -> list[report.Hop]:
    """Active checks: an OFFER to a probe port, the gateway, the metadata service."""
    broken_before = [h.name for h in earlier if h.status == report.BROKEN]
    hops = [_offer_hop(network, ports, vlan, host, settings, broken_before)]
    dhcp_hop = next((h for h in earlier if h.name == 'dhcp-port'), None)
    here = [p for p in network.dhcp_ports if p.host == settings.host]
    namespace = naming.dhcp_namespace(network.id)
    device = (_dhcp_device(here[0], host.addresses(namespace))
              if here and dhcp_hop is not None and dhcp_hop.status == report.OK else None)
    if device is None:
        why = 'not run: no working DHCP port on this host to ask from'
        hops += [report.unknown('gateway', why), report.unknown('metadata', why)]
        return hops
    hops.append(_gateway_hop(network, namespace, device, host))
    hops.append(_metadata_path_hop(network, namespace, host, settings))
    return hops


def _offer_hop(network: intent.NetworkIntent, ports: list[intent.PortIntent],
               vlan: int | None, host: host_view.HostView, settings: Settings,
               broken_before: list[str]) -> report.Hop:
    client = next(((p, ips) for p in ports if (ips := network.dhcp_addresses(p))), None)
    if client is None:
        return report.unknown('dhcp-offer', 'no port with an address DHCP serves: '
                                            'nothing to ask for')
    port, ips = client
    if settings.mechanism == OPENVSWITCH and vlan is None:
        return report.unknown('dhcp-offer', 'not run: no local VLAN of the network to '
                                            'attach a probe port to')
    try:
        where, offers = host.probe_dhcp(network.id, vlan, port.mac_address)
    except Exception as exc:   # the probe could not run: that is not the network's fault
        return report.unknown('dhcp-offer', f'the probe could not run: {exc}')
    watch = 'tcpdump -eni any udp port 67 or udp port 68'
    if not offers:
        evidence = (f'no OFFER for {port.mac_address} within {probe_timeout()} s to a '
                    f'DISCOVER from the probe port {where}')
        if broken_before:
            return report.unknown('dhcp-offer', f'{evidence}, as expected with '
                                                f'{", ".join(broken_before)} broken')
        return report.broken('dhcp-offer', evidence,
                             'dnsmasq does not answer (stopped or hung), or DHCP is lost '
                             'between the VM\'s switch port and the DHCP port (VLAN, '
                             'uplink, filtering); see ' + DHCP_LOG, watch)
    seen = '; '.join(f'{o["server"]} ({o["server_mac"]}) offered {o["address"]}'
                     for o in offers)
    wrong = [o for o in offers if o['address'] not in ips]
    if wrong:
        return report.broken('dhcp-offer', f'{seen} to {port.mac_address}, which '
                                           f'neutron-server gives {", ".join(ips)}',
                             'another DHCP server answers on the network, or dnsmasq '
                             'serves a stale entry', watch)
    return report.ok('dhcp-offer', f'{seen} to {port.mac_address}, asked from the probe '
                                   f'port {where} (removed)')


def probe_timeout() -> float:
    return doctor_probe.DHCP_TIMEOUT


def _gateway_hop(network: intent.NetworkIntent, namespace: str, device: str,
                 host: host_view.HostView) -> report.Hop:
    gateways = [s.gateway_ip for s in network.subnets
                if s.ip_version == 4 and s.enable_dhcp and s.gateway_ip]
    if not gateways:
        return report.ok('gateway', 'no DHCP-enabled IPv4 subnet has a gateway')
    found, missing = [], []
    for gateway in gateways:
        try:
            answer = host.probe_gateway(namespace, device, gateway)
        except Exception as exc:   # the probe could not run
            return report.unknown('gateway', f'the probe could not run: {exc}')
        if answer['mac'] is None and answer['rtt_ms'] is None:
            missing.append(gateway)
        else:
            ping = (f'ping {answer["rtt_ms"]} ms' if answer['rtt_ms'] is not None
                    else 'no ping reply')
            found.append(f'{gateway} answers ARP ({answer["mac"]}), {ping}')
    if missing:
        return report.broken('gateway', f'no ARP or ping reply from {", ".join(missing)} '
                                        f'to {device} in {namespace}',
                             'the router\'s qr- port is missing or not wired (see '
                             f'{L3_LOG}), or the provider\'s gateway is unreachable '
                             'through the uplink',
                             f'ip netns exec {namespace} ping -c1 {missing[0]}')
    return report.ok('gateway', f'{"; ".join(found)} (from {device} in {namespace})')


def _metadata_path_hop(network: intent.NetworkIntent, namespace: str,
                       host: host_view.HostView, settings: Settings) -> report.Hop:
    routed = any(p.device_owner in device_owner.ROUTER_INTERFACE_OWNERS
                 for p in network.ports)
    if not routed and not settings.isolated_metadata:
        return report.unknown('metadata', 'no router on the network and '
                                          'enable_isolated_metadata off: no metadata service '
                                          'for its VMs to reach')
    return _metadata_connect_hop(namespace, 'the router\'s redirect' if routed
                                 else 'the isolated proxy', L3_LOG if routed else DHCP_LOG,
                                 host)


def _metadata_connect_hop(namespace: str, via: str, log: str,
                          host: host_view.HostView) -> report.Hop:
    """A TCP connect to 169.254.169.254:80 from ``namespace``, as a VM's request goes."""
    target = f'{metadata_api.METADATA_V4_IP}:{metadata_api.METADATA_PORT}'
    try:
        error = host.probe_connect(namespace, metadata_api.METADATA_V4_IP,
                                   metadata_api.METADATA_PORT)
    except Exception as exc:   # the probe could not run
        return report.unknown('metadata', f'the probe could not run: {exc}')
    if error is not None:
        return report.broken('metadata', f'no TCP connection to {target} from {namespace} '
                                         f'({via}): {error}',
                             'the metadata proxy (haproxy) is down, or the router\'s '
                             '169.254.169.254 redirect is missing; see ' + log,
                             f'ip netns exec {namespace} curl -sv '
                             f'http://{metadata_api.METADATA_V4_IP}/')
    return report.ok('metadata', f'{target} accepts connections from {namespace} ({via}, '
                                 'the path of a VM\'s request)')


def _router_metadata_hop(interfaces: list[intent.PortIntent],
                         host: host_view.HostView) -> report.Hop:
    """The router's proxy reached as a VM reaches it: from a network behind it."""
    for port in interfaces:
        namespace = naming.dhcp_namespace(port.network_id)
        if host.namespace_exists(namespace):
            return _metadata_connect_hop(namespace, 'through the router\'s redirect',
                                         L3_LOG, host)
    return report.unknown('metadata', 'not run: no qdhcp- namespace of the router\'s '
                                      'networks on this host to connect from (the proxy\'s '
                                      'own port accepts only requests the redirect marked)')


# -- network ----------------------------------------------------------------
def check_network(network_id: str, server: Server, host: host_view.HostView,
                  settings: Settings) -> report.Report:
    result = report.Report('network', network_id, settings.host)
    hops = result.hops
    try:
        network = server.network(network_id)
        if network is None:
            hops.append(_unknown_to_server('network', network_id))
            return result
        local = [p for p in network.ports if p.host == settings.host]
        segment = server.segment(local[0].id) if local else None
    except intent.ServerUnreachable as exc:
        hops.append(_unreachable(exc))
        return result
    hops.append(report.ok('server', f'{len(network.subnets)} subnet(s), '
                                    f'{len(network.ports)} port(s), {len(local)} bound here'))
    vlan = None
    if settings.mechanism == OPENVSWITCH:
        vlan_hop, vlan = _network_vlan_hop(network_id, host, settings)
        hops.append(vlan_hop)
        hops.append(uplink_hop(network_id, segment, vlan, host, settings))
    hops.extend(dhcp_hops(network, list(network.ports), vlan, host, settings))
    if settings.probe:
        hops.extend(probe_hops(network, list(network.ports), vlan, host, settings, list(hops)))
    return result


def _network_vlan_hop(network_id: str, host: host_view.HostView,
                      settings: Settings) -> tuple[report.Hop, int | None]:
    ports = [p for p in host.ovs_network_ports(network_id)
             if p.iface_id and p.bridge == settings.integration_bridge]
    if not ports:
        return report.unknown('local-vlan', f'no port of network {network_id} is wired on '
                                            f'{settings.integration_bridge}'), None
    vlans = sorted({p.recorded_tag for p in ports if p.recorded_tag is not None})
    astray = [p for p in ports if p.tag != p.recorded_tag]
    if astray or len(vlans) != 1:
        names = ', '.join(f'{p.name} (tag {p.tag}, recorded {p.recorded_tag})'
                          for p in astray) or f'recorded VLANs {vlans}'
        return report.broken('local-vlan', f'ports off the network\'s local VLAN: {names}',
                             'tags changed outside the L2 agent, or it is mid-rewire; see '
                             + L2_LOG,
                             'ovs-vsctl --columns=name,tag,other_config find Port '
                             f'other_config:net_uuid={network_id}'), (vlans[0] if vlans else None)
    return report.ok('local-vlan', f'{len(ports)} port(s) on local VLAN {vlans[0]}'), vlans[0]


# -- router -----------------------------------------------------------------
def check_router(router_id: str, server: Server, host: host_view.HostView,
                 settings: Settings) -> report.Report:
    """The router's namespace, qr-/qg- devices and addresses, NAT and metadata proxy.

    neutron-server has no read-only call that returns a router (see
    :mod:`.intent`): its ports come from ``get_ports``; ``enable_snat`` and
    floating IPs come from what agentkit-l3 recorded it was told
    (:mod:`agentkit.agent.router_intent`); without that record the NAT hops
    show what the host has and judge nothing.
    """
    result = report.Report('router', router_id, settings.host)
    hops = result.hops
    try:
        ports = server.router_ports(router_id)
    except intent.ServerUnreachable as exc:
        hops.append(_unreachable(exc))
        return result
    if not ports:
        hops.append(_unknown_to_server('router', router_id))
        return result
    bound = sorted({p.host for p in ports if p.host})
    if settings.host not in bound:
        hops.append(report.unknown('server', f'the router\'s ports are bound to '
                                             f'{", ".join(bound) or "no host"}: run the '
                                             'doctor on the host of its L3 agent',
                                   f'openstack network agent list --router {router_id}'))
        return result
    gateway = next((p for p in ports
                    if p.device_owner == device_owner.ROUTER_GATEWAY), None)
    interfaces = [p for p in ports if p is not gateway]
    hops.append(report.ok('server', f'{len(interfaces)} interface(s), gateway '
                                    f'{_ips(gateway) if gateway else "none"}'))
    intent_hop, recorded = _intent_hop(router_id, ports, host)
    hops.append(intent_hop)
    namespace = naming.router_namespace(router_id)
    if not host.namespace_exists(namespace):
        hops.append(report.broken('namespace', f'no namespace {namespace}',
                                  'the L3 agent has not set the router up here; see ' + L3_LOG,
                                  'ip netns list'))
        return result
    hops.append(report.ok('namespace', f'{namespace} exists'))
    addresses = host.addresses(namespace)
    hops.append(_router_devices_hop('interfaces', namespace, addresses, interfaces,
                                    naming.router_interface_name))
    if gateway is None:
        hops.append(report.ok('gateway', 'the router has no gateway: no NAT to check'))
    else:
        hops.append(_router_devices_hop('gateway', namespace, addresses, [gateway],
                                        naming.router_gateway_name))
        hops.extend(_nat_hops(namespace, gateway, host, recorded))
    hops.append(_routes_hop(namespace, host, recorded))
    if settings.metadata_proxy and interfaces:
        hops.append(_metadata_proxy_hop(router_id, host))
        if settings.probe:
            hops.append(_router_metadata_hop(interfaces, host))
    return result


def _ips(port: intent.PortIntent) -> str:
    return ', '.join(ip for _, ip in port.fixed_ips) or 'no address'


def _intent_hop(router_id: str, ports: list[intent.PortIntent], host: host_view.HostView
                ) -> tuple[report.Hop, router_intent.Recorded | None]:
    """What agentkit-l3 last received for the router, and whether it is current."""
    where = f'ls -l {os.path.join(host.state_path, router_intent.DIRECTORY)}'
    try:
        recorded = host.router_intent(router_id)
    except (exceptions.InvalidPayload, OSError) as exc:   # not a record, or not readable
        return report.unknown('l3-intent', f'unreadable: {exc}', where), None
    if recorded is None:
        return report.unknown('l3-intent', 'agentkit-l3 recorded nothing for this router '
                                           '(not applied here since it records, or another '
                                           'state_path): SNAT and floating IPs are shown, '
                                           'not judged', where), None
    told = recorded.router
    told_ports = ({p.id for p in told.interfaces} | set(told.unusable_interface_ids)
                  | {p for p in (told.gateway.id if told.gateway else None,
                                 told.unusable_gateway_id) if p})
    current = {p.id for p in ports}
    source = f'{recorded.source} at {recorded.received}, {recorded.path}'
    if told_ports != current:
        changed = sorted(told_ports ^ current)
        return report.broken('l3-intent', f'agentkit-l3 last applied the router with other '
                                          f'ports than neutron-server has now (differ: '
                                          f'{", ".join(changed)}); told by {source}',
                             'agentkit-l3 missed the router\'s update or failed to apply it; '
                             'see ' + L3_LOG, f'cat {recorded.path}'), recorded
    return report.ok('l3-intent', f'enable_snat {str(told.enable_snat).lower()}, '
                                  f'{len(told.floating_ips)} floating IP(s), '
                                  f'{len(told.routes)} extra route(s); told by {source}'
                     ), recorded


def _router_devices_hop(name: str, namespace: str, addresses: dict[str, list[str]],
                        ports: list[intent.PortIntent],
                        device_name: Callable[[str], str]) -> report.Hop:
    problems, found = [], []
    for port in ports:
        device = device_name(port.id)
        missing = [ip for _, ip in port.fixed_ips if ip not in addresses.get(device, [])]
        if device not in addresses:
            problems.append(f'no {device} ({_ips(port)})')
        elif missing:
            problems.append(f'{device} lacks {", ".join(missing)}')
        else:
            found.append(f'{device} {_ips(port)}')
    if problems:
        return report.broken(name, f'in {namespace}: {"; ".join(problems)}',
                             'the L3 agent has not plugged or addressed the router\'s '
                             'port; see ' + L3_LOG, f'ip netns exec {namespace} ip address')
    return report.ok(name, ', '.join(found) or 'none')


def _nat(rules: list[str], target: str) -> list[tuple[str, dict[str, str]]]:
    """(chain, options) of the NAT rules jumping to ``target`` (SNAT, DNAT)."""
    found = []
    for rule in rules:
        words = shlex.split(rule)      # '-A <chain> ...'
        options: dict[str, str] = {}
        for i in range(2, len(words) - 1):
            if words[i].startswith('-') and not words[i + 1].startswith('-'):
                negated = words[i - 1] == '!'
                options[('!' if negated else '') + words[i]] = words[i + 1]
        if options.get('-j') == target:
            found.append((words[1], {k: v.removesuffix('/32') for k, v in options.items()}))
    return found


def _nat_hops(namespace: str, gateway: intent.PortIntent, host: host_view.HostView,
              recorded: router_intent.Recorded | None) -> list[report.Hop]:
    show = f'ip netns exec {namespace} iptables-save -t nat'
    try:
        rules = host.nat_rules(namespace)
    except Exception as exc:   # any failure of the tool is evidence
        return [report.unknown('snat', f'cannot read the NAT table: {exc}', show)]
    snat, dnat = _nat(rules, 'SNAT'), _nat(rules, 'DNAT')
    if recorded is None:
        gateway_ips = [ip for _, ip in gateway.fixed_ips if ':' not in ip]
        shown = [f'{o["-d"]} -> {o["--to-destination"]}' for _, o in dnat
                 if '-d' in o and '--to-destination' in o]
        routed = [o for _, o in snat if '-o' in o and o.get('--to-source') in gateway_ips]
        return [report.ok('snat', f'internal traffic leaves as {", ".join(gateway_ips)}')
                if routed else
                report.unknown('snat', f'no SNAT to {", ".join(gateway_ips) or "?"}: right '
                                       'only if the router has enable_snat false, and '
                                       'agentkit-l3 recorded nothing to tell',
                               f'{show}; openstack router show -c external_gateway_info'),
                report.unknown('floating-ips', f'DNAT here: {", ".join(shown) or "none"}; '
                                               'agentkit-l3 recorded no floating IPs to '
                                               'compare with',
                               f'{show}; openstack floating ip list --router <router>')]
    told = recorded.router
    source = f'as agentkit-l3 was told ({recorded.source} at {recorded.received})'
    told_ip = told.gateway.ipv4_address if told.gateway else None
    routed = [o for _, o in snat if '-o' in o and o.get('--to-source') == told_ip]
    if told_ip is None:
        snat_hop = report.unknown('snat', 'agentkit-l3 was told of no usable IPv4 gateway '
                                          f'({recorded.source} at {recorded.received})',
                                  f'cat {recorded.path}')
    elif told.enable_snat and not routed:
        snat_hop = report.broken('snat', f'no SNAT to {told_ip} in {namespace}, although '
                                         f'agentkit-l3 was told enable_snat true '
                                         f'({recorded.source} at {recorded.received})',
                                 'the rule was removed outside agentkit, or agentkit-l3 '
                                 'failed to apply the router; VMs without a floating IP '
                                 'cannot reach the external network; see ' + L3_LOG, show)
    elif not told.enable_snat and routed:
        snat_hop = report.broken('snat', f'SNAT to {told_ip} in {namespace}, although '
                                         'agentkit-l3 was told enable_snat false',
                                 'a rule added outside agentkit, or agentkit-l3 has not '
                                 'applied the change; see ' + L3_LOG, show)
    elif routed:
        snat_hop = report.ok('snat', f'internal traffic leaves as {told_ip}, {source}')
    else:
        snat_hop = report.ok('snat', f'no SNAT, {source}: enable_snat false')
    wanted = {(f.floating_ip, f.fixed_ip) for f in told.floating_ips}
    inbound = {(o.get('-d'), o.get('--to-destination')) for chain, o in dnat
               if chain.endswith('PREROUTING')}
    outbound = {(o.get('--to-source'), o.get('-s')) for _, o in snat if '-s' in o}
    problems = [f'{fip} -> {fixed}: no ' + ' and no '.join(
                    what for what, have in (('DNAT', inbound), ('SNAT', outbound))
                    if (fip, fixed) not in have)
                for fip, fixed in sorted(wanted) if (fip, fixed) not in inbound & outbound]
    problems += [f'DNAT {fip} -> {fixed} agentkit-l3 was not told of'
                 for fip, fixed in sorted((f, x) for f, x in inbound - wanted if f and x)]
    pairs = ', '.join(f'{fip} -> {fixed}' for fip, fixed in sorted(wanted)) or 'none'
    if problems:
        fip_hop = report.broken('floating-ips', f'{"; ".join(problems)} (wanted: {pairs}, '
                                                f'{source})',
                                'rules removed or added outside agentkit, or agentkit-l3 '
                                'failed to apply the router: a floating IP without DNAT '
                                'does not reach its VM; see ' + L3_LOG, show)
    else:
        fip_hop = report.ok('floating-ips', f'DNAT and SNAT for {pairs}, {source}')
    return [snat_hop, fip_hop]


def _routes_hop(namespace: str, host: host_view.HostView,
                recorded: router_intent.Recorded | None) -> report.Hop:
    """Default route(s) via the external subnet's gateway and the extra
    routes, against what agentkit-l3 was told; shown only without a record."""
    show = f'ip netns exec {namespace} ip route; ip netns exec {namespace} ip -6 route'
    try:
        live = set(host.routes(namespace))
    except Exception as exc:   # any failure of the tool is evidence
        return report.unknown('routes', f'cannot read the routes: {exc}', show)
    listed = ', '.join(f'{dst} via {via}' for dst, via in sorted(live)) or 'none'
    if recorded is None:
        return report.unknown('routes', f'routes with a next hop: {listed}; agentkit-l3 '
                                        'recorded nothing to compare with', show)
    told = recorded.router
    # agentkit-l3 does not install an extra route to a default destination
    # (it would replace the gateway's default route; it logs an error).
    defaults = ip_lib.DEFAULT_DESTINATIONS
    skipped = [r for r in told.routes if r.destination in defaults.values()]
    wanted = {(r.destination, r.nexthop) for r in told.routes if r not in skipped}
    if told.gateway is not None:
        wanted |= {(defaults[ipaddress.ip_address(gw).version], gw)
                   for gw in told.gateway.gateways}
    elif told.gateway_unusable:
        # agentkit-l3 leaves the default routes of an unusable gateway as they are.
        wanted |= {(dst, via) for dst, via in live if dst in defaults.values()}
    missing = sorted(wanted - live)
    unknown = sorted(live - wanted)
    problems = ([f'no {dst} via {via}' for dst, via in missing]
                + [f'{dst} via {via} agentkit-l3 was not told of' for dst, via in unknown])
    if problems:
        return report.broken('routes', f'{"; ".join(problems)} (told by {recorded.source} '
                                       f'at {recorded.received})',
                             'routes removed or added outside agentkit, a next hop not on '
                             'any of the router\'s subnets (the kernel refuses it), or '
                             'agentkit-l3 failed to apply the router; see ' + L3_LOG, show)
    note = ''.join(f'; {r.destination} via {r.nexthop} not installed (agentkit-l3 '
                   'never replaces the default route)' for r in skipped)
    return report.ok('routes', f'{listed}, as agentkit-l3 was told{note}')


def _metadata_proxy_hop(router_id: str, host: host_view.HostView) -> report.Hop:
    state = host.metadata_proxy(router_id)
    if not state.runs(HAPROXY):
        return report.broken('metadata-proxy', f'no haproxy runs for router {router_id} '
                                               f'(pid file {state.pid_file}: '
                                               f'{state.pid or "none"})',
                             'the proxy died and the L3 agent did not respawn it (is '
                             'agentkit-l3 running?); VMs behind the router get no metadata; '
                             'see ' + L3_LOG, f'ps -fp $(cat {state.pid_file})')
    return report.ok('metadata-proxy', f'haproxy pid {state.pid}')


# -- host -------------------------------------------------------------------
AGENTS = frozenset({'agentkit-l2', 'agentkit-dhcp', 'agentkit-l3', 'agentkit-metadata'})


def check_host(server: Server, host: host_view.HostView, settings: Settings) -> report.Report:
    """agentkit's processes, bridges, and namespaces neutron-server no longer knows."""
    result = report.Report('host', settings.host, settings.host)
    hops = result.hops
    running = host.processes(AGENTS)
    listing = ', '.join(f'{name} (pid {", ".join(map(str, pids))})'
                        for name, pids in sorted(running.items()))
    hops.append(report.ok('agents', listing) if running else
                report.unknown('agents', 'no agentkit agent runs on this host',
                               'systemctl status "agentkit-*"'))
    bridges = host.bridges()
    if bridges is not None:
        wanted = [settings.integration_bridge, *sorted(settings.physical_bridges)]
        missing = [b for b in wanted if b not in bridges]
        hops.append(report.broken('bridges', f'missing: {", ".join(missing)}',
                                  'agentkit-l2 creates them at start: it has not run, or '
                                  'failed to; see ' + L2_LOG, 'ovs-vsctl list-br')
                    if missing else report.ok('bridges', ', '.join(wanted)))
    namespaces = host.list_namespaces()
    try:
        hops.append(_leftovers('dhcp-namespaces', naming.DHCP_NS_PREFIX, namespaces,
                               lambda i: server.network(i) is not None, DHCP_LOG))
        hops.append(_leftovers('router-namespaces', naming.ROUTER_NS_PREFIX, namespaces,
                               lambda i: bool(server.router_ports(i)), L3_LOG))
    except intent.ServerUnreachable as exc:
        hops.append(_unreachable(exc))
    bridge = settings.integration_bridge
    probes = doctor_probe.leftovers(namespaces) + [
        f'{port} on {bridge}'
        for port in doctor_probe.leftover_ports(host.probe_ports(bridge))]
    hops.append(report.broken('probe-ports', f'left by a killed agentkit-doctor --probe: '
                                             f'{", ".join(probes)}',
                              'a doctor was killed (SIGKILL) while probing; the next '
                              '--probe run removes them',
                              'ip netns list | grep akprobe-; ovs-vsctl --columns=name,'
                              f'external_ids list Interface | grep -B1 {hosts_ovs.PROBE}')
                if probes else report.ok('probe-ports', 'none left behind'))
    return result


def _leftovers(name: str, prefix: str, namespaces: list[str],
               known: Callable[[str], bool], log: str) -> report.Hop:
    ids = [ns[len(prefix):] for ns in namespaces if ns.startswith(prefix)]
    ids = [i for i in ids if naming.is_valid_id(i)]
    stale = [prefix + i for i in ids if not known(i)]
    if stale:
        return report.broken(name, f'neutron-server no longer knows: {", ".join(stale)}',
                             'left over after a delete the agent missed; its next full '
                             'sync removes it; see ' + log, 'ip netns list')
    return report.ok(name, f'{len(ids)}, all known to neutron-server')
