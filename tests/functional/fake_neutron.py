"""A stand-in for neutron-server's RPC side, for functional tests and benchmarks.

It serves ``q-reports-plugin``, ``q-plugin`` and ``q-l3-plugin`` with the
versions Neutron 29 uses, from in-memory state the test controls, and records
every call. Each instance gets its own RabbitMQ vhost (created by
``start()``; building state needs no broker): queue names such as
``q-plugin`` are global to a vhost, so concurrent tests sharing one would
answer each other's agents.

Routers come from :meth:`FakeNeutron.add_router` and the :class:`L3Model`
(``FakeNeutron.l3``); what the server sends the L3 agent from
:class:`L3Notifications` through :meth:`FakeNeutron.send_to_agent`. Both
follow the captures in tests/fixtures/neutron29/ (sync_routers.json,
casts-l3.json), checked by tests/unit/test_neutron29_l3_contract.py.
"""

import copy
import dataclasses
import ipaddress
import subprocess
import threading
import time
import uuid
import zlib
from collections.abc import Sequence
from typing import Any

import oslo_messaging
from oslo_config import cfg


# What neutron 29's get_devices_details_list_and_failed_devices puts in a
# bound port's entry (tests/fixtures/neutron29/): no security groups.
DETAILS_KEYS = frozenset({
    'device', 'network_id', 'port_id', 'mac_address', 'admin_state_up',
    'network_type', 'segmentation_id', 'physical_network', 'mtu', 'fixed_ips',
    'device_owner', 'allowed_address_pairs', 'port_security_enabled',
    'qos_policy_id', 'qos_network_policy_id', 'profile', 'propagate_uplink_status'})
# neutron_lib.constants.INTERFACE_PREFIXES: what the server strips from a
# device before matching it as a port-id prefix in security-group calls.
INTERFACE_PREFIXES = ('tap', 'qvo', 'sg-')
DIRECTION_IP_PREFIX = {'ingress': 'source_ip_prefix', 'egress': 'dest_ip_prefix'}
# What neutron 29's get_ports RPC (MetadataRpcCallback, the plugin's
# get_ports) returns per port: the REST port dict plus standard_attr_id
# (tests/fixtures/neutron29/get_ports.json). Values for keys a test record
# lacks are what the server gives a new, unbound port.
REST_PORT_DEFAULTS: dict[str, Any] = {
    'name': '', 'description': '', 'admin_state_up': True, 'status': 'DOWN',
    'device_id': '', 'device_owner': '', 'fixed_ips': [], 'allowed_address_pairs': [],
    'extra_dhcp_opts': [], 'security_groups': [], 'binding:vnic_type': 'normal',
    'binding:profile': {}, 'binding:host_id': '', 'binding:vif_type': 'unbound',
    'binding:vif_details': {}, 'port_security_enabled': True, 'tags': [],
    'created_at': '2025-01-01T00:00:00Z', 'updated_at': '2025-01-01T00:00:00Z',
    'revision_number': 1}
REST_PORT_KEYS = frozenset(REST_PORT_DEFAULTS) | {
    'id', 'network_id', 'project_id', 'tenant_id', 'mac_address', 'standard_attr_id'}


def _port_id(record: dict[str, Any]) -> str:
    return record.get('port_id') or record.get('id') or record['device']


def _ip_version(address: str) -> int:
    import ipaddress
    return ipaddress.ip_network(address, strict=False).version


class _Recorder:
    def __init__(self, server: 'FakeNeutron') -> None:
        self.server = server

    def _record(self, method: str, **kwargs: Any) -> None:
        kwargs = copy.deepcopy(kwargs)
        kwargs['_received'] = time.monotonic()
        with self.server.lock:
            self.server.calls.append((method, kwargs))
            self.server.changed.notify_all()


class ReportsEndpoint(_Recorder):
    target = oslo_messaging.Target(version='1.4')

    def report_state(self, context, agent_state, time):
        self._record('report_state', agent_state=agent_state, time=time)
        return 'alive'

    def has_alive_neutron_server(self, context, **kwargs):
        return True


class PluginEndpoint(_Recorder):
    """The q-plugin methods of the L2 and DHCP agents."""

    target = oslo_messaging.Target(version='1.9')

    def get_devices_details_list_and_failed_devices(self, context, devices,
                                                    agent_id, host=None):
        """As neutron 29: each device is a port-id *prefix* (a ``tap`` form
        resolves to nothing), and details carry no security groups."""
        self._record('get_devices_details_list_and_failed_devices',
                     devices=devices, agent_id=agent_id, host=host)
        with self.server.lock:
            details = []
            for device in devices:
                record = self.server.security_groups.find_port(device)
                if record is None:
                    details.append({'device': device})
                    continue
                entry = {k: copy.deepcopy(v) for k, v in record.items()
                         if k in DETAILS_KEYS}
                entry.update(device=device, port_id=_port_id(record))
                details.append(entry)
        return {'devices': details, 'failed_devices': []}

    def bulk_pull(self, context, resource_type, version, filter_kwargs=None):
        """Neutron's resources pull (q-plugin 1.1): Trunk objects by port_id,
        Port objects by id."""
        self._record('bulk_pull', resource_type=resource_type, version=version,
                     filter_kwargs=filter_kwargs)
        if resource_type == 'Port':
            return self._port_objects(set((filter_kwargs or {}).get('id') or []), version)
        if resource_type != 'Trunk':
            return []
        wanted = set((filter_kwargs or {}).get('port_id') or [])
        with self.server.lock:
            return [{'versioned_object.name': 'Trunk',
                     'versioned_object.namespace': 'versionedobjects',
                     'versioned_object.version': version,
                     'versioned_object.data': {'id': trunk_id, 'port_id': port_id,
                                               'status': 'DOWN', 'sub_ports': []}}
                    for port_id, trunk_id in self.server.trunks.items()
                    if port_id in wanted]

    def _port_objects(self, wanted: set[str], version: str) -> list[dict[str, Any]]:
        """Port objects as neutron-server pulls them. The status follows the
        server's rules from the call log: answering a port's details moves
        it to BUILD (DOWN if disabled), a report up to ACTIVE, down to DOWN."""
        def ovo(name, data):
            return {'versioned_object.name': name, 'versioned_object.version': version,
                    'versioned_object.namespace': 'versionedobjects',
                    'versioned_object.data': data}
        with self.server.lock:
            records = {}
            for port_id in wanted:
                record = self.server.security_groups.find_port(port_id)
                if record is not None and _port_id(record) == port_id:
                    records[port_id] = record
            status = {p: 'DOWN' for p in records}
            for method, kw in self.server.calls:
                if method == 'get_devices_details_list_and_failed_devices':
                    for d in kw['devices']:
                        for p in records:
                            if p.startswith(d):
                                status[p] = ('BUILD' if records[p].get('admin_state_up', True)
                                             else 'DOWN')
                elif method == 'update_device_list':
                    for p in kw['devices_up']:
                        if p in status:
                            status[p] = 'ACTIVE'
                    for p in kw['devices_down']:
                        if p in status:
                            status[p] = 'DOWN'
            return [ovo('Port', {
                'id': p, 'network_id': r.get('network_id'), 'status': status[p],
                'mac_address': r.get('mac_address'),
                'admin_state_up': r.get('admin_state_up', True),
                'device_owner': r.get('device_owner', ''),
                'fixed_ips': [ovo('IPAllocation', {'ip_address': ip.get('ip_address')})
                              for ip in r.get('fixed_ips') or []],
                'binding_levels': [ovo('PortBindingLevel', {
                    'level': 0, 'segment': ovo('NetworkSegment', {
                        'network_type': r.get('network_type'),
                        'segmentation_id': r.get('segmentation_id'),
                        'physical_network': r.get('physical_network')})})],
            }) for p, r in records.items()]

    def update_device_list(self, context, devices_up, devices_down, agent_id,
                           host, refresh_tunnels=False):
        self._record('update_device_list', devices_up=devices_up,
                     devices_down=devices_down, agent_id=agent_id, host=host)
        return {'devices_up': devices_up, 'failed_devices_up': [],
                'devices_down': [{'device': d, 'exists': True}
                                 for d in devices_down],
                'failed_devices_down': []}

    def security_group_info_for_devices(self, context, devices, call_version='1.2'):
        self._record('security_group_info_for_devices', devices=devices,
                     call_version=call_version)
        with self.server.lock:
            return self.server.security_groups.info_for_devices(devices, call_version)

    def tunnel_sync(self, context, tunnel_ip, tunnel_type, host=None):
        self._record('tunnel_sync', tunnel_ip=tunnel_ip, tunnel_type=tunnel_type,
                     host=host)
        with self.server.lock:
            return {'tunnels': [dict(t) for t in self.server.tunnels]}

    def get_active_networks_info(self, context, host, enable_dhcp_filter=True):
        self._record('get_active_networks_info', host=host)
        with self.server.lock:
            return copy.deepcopy(list(self.server.networks.values()))

    def get_network_info(self, context, network_id, host):
        self._record('get_network_info', network_id=network_id, host=host)
        with self.server.lock:
            return copy.deepcopy(self.server.networks.get(network_id))

    def create_dhcp_port(self, context, port, host):
        self._record('create_dhcp_port', port=port, host=host)
        return self.server.make_dhcp_port(port['port'], host)

    def update_dhcp_port(self, context, port_id, port, host):
        self._record('update_dhcp_port', port_id=port_id, port=port, host=host)
        return self.server.update_dhcp_port(port_id, port['port'])

    def release_dhcp_port(self, context, network_id, device_id, host):
        self._record('release_dhcp_port', network_id=network_id,
                     device_id=device_id, host=host)

    def dhcp_ready_on_ports(self, context, port_ids):
        self._record('dhcp_ready_on_ports', port_ids=port_ids)

    def get_ports(self, context, filters):
        """As neutron 29's MetadataRpcCallback: the plugin's get_ports over
        every port the fake knows (``port_details`` and the networks' ports)."""
        self._record('get_ports', filters=filters)
        with self.server.lock:
            records = list(self.server.port_details.values())
            known = {_port_id(r) for r in records}
            for network in self.server.networks.values():
                records.extend(dict(p, project_id=p.get('project_id', network.get('project_id')))
                               for p in network.get('ports', []) if p['id'] not in known)
            return get_ports(records, filters)


class L3Endpoint(_Recorder):
    """``q-l3-plugin`` as neutron 29's L3RpcCallback answers a legacy L3
    agent, from :class:`L3Model` (tests/fixtures/neutron29/sync_routers.json)."""

    target = oslo_messaging.Target(version='1.13')

    def get_router_ids(self, context, host):
        self._record('get_router_ids', host=host)
        with self.server.lock:
            return self.server.l3.get_router_ids(host)

    def sync_routers(self, context, host=None, router_ids=None, **kwargs):
        self._record('sync_routers', host=host, router_ids=router_ids)
        slow = self.server.slow_sync_routers
        if slow is not None and len(router_ids or ()) > slow[0]:
            # A busy server: the agent's call times out before this answer.
            time.sleep(slow[1])
        with self.server.lock:
            return self.server.l3.sync_routers(host, router_ids)

    def get_host_ha_router_count(self, context, host):
        self._record('get_host_ha_router_count', host=host)
        with self.server.lock:
            return self.server.l3.ha_router_count(host)

    def update_floatingip_statuses(self, context, router_id, fip_statuses):
        self._record('update_floatingip_statuses', router_id=router_id,
                     fip_statuses=fip_statuses)
        with self.server.lock:
            self.server.l3.update_floatingip_statuses(router_id, fip_statuses)


def rest_port(record: dict[str, Any]) -> dict[str, Any]:
    """A port record (REST- or details-shaped) as get_ports returns it."""
    port = {k: copy.deepcopy(v) for k, v in record.items() if k in REST_PORT_KEYS}
    port['id'] = _port_id(record)
    for key, default in REST_PORT_DEFAULTS.items():
        port.setdefault(key, copy.deepcopy(default))
    project = port.get('project_id') or port.get('tenant_id') or ''
    port['project_id'] = port['tenant_id'] = project
    port.setdefault('mac_address', '')
    port.setdefault('network_id', '')
    # An integer of the server's database; nothing may rely on its value.
    port.setdefault('standard_attr_id', zlib.crc32(port['id'].encode()) % 100000)
    return port


def _matches(port: dict[str, Any], filters: dict[str, Any]) -> bool:
    """neutron's _get_ports_query + model_query.apply_filters, for ports."""
    fixed_ips = filters.get('fixed_ips') or {}
    if fixed_ips.get('ip_address') and not any(
            ip.get('ip_address') in fixed_ips['ip_address'] for ip in port['fixed_ips']):
        return False
    if fixed_ips.get('subnet_id') and not any(
            ip.get('subnet_id') in fixed_ips['subnet_id'] for ip in port['fixed_ips']):
        return False
    macs = filters.get('mac_address')
    if macs and port['mac_address'].lower() not in {m.lower() for m in macs}:
        return False
    for key, values in filters.items():
        if key in ('fixed_ips', 'mac_address') or key not in REST_PORT_KEYS:
            continue  # not a column: ignored, as the server does
        if not values or port.get(key) not in values:
            return False  # an empty list matches nothing
    return True


def get_ports(records: list[dict[str, Any]], filters: dict[str, Any]) -> list[dict[str, Any]]:
    """The ports among ``records`` matching ``filters``, REST-shaped, by id
    (the order the real server's database gave)."""
    ports = (rest_port(r) for r in records)
    return sorted((p for p in ports if _matches(p, filters or {})), key=lambda p: p['id'])


class SecurityGroupModel:
    """The server's security-group answers, computed as neutron 29 does.

    Pure (no broker): the fake server answers RPCs from it and firewall
    tests feed a driver from it directly. ``ports`` are port records as
    tests write them (details-like: ``port_id``, ``fixed_ips`` as dicts,
    ``security_groups``...), ``rules`` group rules as the API shows them,
    ``stateful`` groups' flags, ``address_groups`` their addresses.
    Members of a remote group are the addresses of its ports, as in the
    server's database.
    """

    def __init__(self) -> None:
        self.ports: dict[str, dict[str, Any]] = {}
        self.rules: dict[str, list[dict[str, Any]]] = {}
        self.stateful: dict[str, bool] = {}
        self.address_groups: dict[str, list[str]] = {}

    def find_port(self, prefix: str) -> dict[str, Any] | None:
        """The one port whose id starts with ``prefix`` ."""
        matches = [r for r in self.ports.values() if _port_id(r).startswith(prefix)]
        return matches[0] if len(matches) == 1 else None

    def _ports_in_group(self, sg_id: str) -> list[dict[str, Any]]:
        return [r for r in self.ports.values() if sg_id in r.get('security_groups', [])]

    def _rpc_rule(self, sg_id: str, rule: dict[str, Any]) -> dict[str, Any]:
        """An API-shaped rule as security_group_info_for_devices sends it."""
        out = {'direction': rule['direction'], 'ethertype': rule.get('ethertype', 'IPv4')}
        for key in ('protocol', 'port_range_min', 'port_range_max', 'remote_ip_prefix',
                    'remote_group_id', 'remote_address_group_id'):
            if rule.get(key) is not None:
                if key == 'remote_ip_prefix':
                    out[DIRECTION_IP_PREFIX[rule['direction']]] = rule[key]
                else:
                    out[key] = rule[key]
        out['stateful'] = self.stateful.get(sg_id, True)
        return out

    def info_for_devices(self, devices: list[str], call_version: str = '1.3') -> dict[str, Any]:
        """``security_group_info_for_devices`` as neutron 29 computes it
        (neutron/db/securitygroups_rpc_base.py)."""
        ports = {}
        for device in devices:
            prefix = device
            for strip in INTERFACE_PREFIXES:
                if device.startswith(strip):
                    prefix = device[len(strip):]
                    break
            record = self.find_port(prefix)
            if record is None or str(record.get('device_owner', '')).startswith('network:'):
                continue
            port = {k: copy.deepcopy(v) for k, v in record.items() if k not in ('port_id',)}
            port.update(id=_port_id(record), device=device,
                        fixed_ips=[ip['ip_address'] for ip in record.get('fixed_ips', [])],
                        security_groups=list(record.get('security_groups', [])),
                        allowed_address_pairs=copy.deepcopy(
                            record.get('allowed_address_pairs', [])),
                        port_security_enabled=record.get('port_security_enabled', True),
                        security_group_rules=[], security_group_source_groups=[],
                        security_group_remote_address_groups=[])
            # The server's own rules (router advertisements, DHCP replies).
            if any(_ip_version(ip) == 6 for ip in port['fixed_ips']):
                port['security_group_rules'].append({
                    'direction': 'ingress', 'ethertype': 'IPv6', 'protocol': 'ipv6-icmp',
                    'source_port_range_min': 134})
            for version, dests in ((4, ['255.255.255.255/32']), (6, ['fe80::/64'])):
                own = [f'{ip}/{32 if version == 4 else 128}' for ip in port['fixed_ips']
                       if _ip_version(ip) == version]
                for dest in own + dests:
                    port['security_group_rules'].append({
                        'direction': 'ingress', 'ethertype': f'IPv{version}',
                        'protocol': 'udp', 'port_range_min': 68 if version == 4 else 546,
                        'port_range_max': 68 if version == 4 else 546,
                        'source_port_range_min': 67 if version == 4 else 547,
                        'source_port_range_max': 67 if version == 4 else 547,
                        'dest_ip_prefix': dest})
            ports[port['id']] = port
        groups: dict[str, list[dict[str, Any]]] = {}
        members: dict[str, dict[str, list[Any]]] = {}
        for port in ports.values():
            for sg_id in port['security_groups']:
                rules = groups.setdefault(sg_id, [])
                for rule in self.rules.get(sg_id, []):
                    rpc_rule = self._rpc_rule(sg_id, rule)
                    if rpc_rule not in rules:
                        rules.append(rpc_rule)
                    remote = rule.get('remote_group_id') or rule.get('remote_address_group_id')
                    if remote:
                        members.setdefault(remote, {}).setdefault(rule.get('ethertype', 'IPv4'),
                                                                  [])
                        key = ('security_group_source_groups' if rule.get('remote_group_id')
                               else 'security_group_remote_address_groups')
                        if remote not in port[key]:
                            port[key].append(remote)
        for remote, by_type in members.items():
            entries: set[tuple[str, str | None]] = set()
            for record in self._ports_in_group(remote):
                entries |= {(ip['ip_address'], None) for ip in record.get('fixed_ips', [])}
                entries |= {(p['ip_address'], p.get('mac_address') or record['mac_address'])
                            for p in record.get('allowed_address_pairs', [])}
            entries |= {(a, None) for a in self.address_groups.get(remote, [])}
            for ip, mac in sorted(entries, key=lambda e: (e[0], e[1] or '')):
                ethertype = f'IPv{_ip_version(ip)}'
                if ethertype in by_type:
                    by_type[ethertype].append([ip, mac] if call_version >= '1.3' else ip)
            if call_version < '1.3':
                # make_compatible_sg_member_ips: flat lists, both families.
                members[remote] = {e: by_type.get(e, []) for e in ('IPv4', 'IPv6')}
        return {'devices': ports, 'security_groups': groups, 'sg_member_ips': members}


# -- L3: routers as neutron 29's sync_routers returns them ------------------------
# (tests/fixtures/neutron29/sync_routers.json; README "L3 agent").
L3_AGENT_TOPIC = 'l3_agent'
NETWORK_UPDATE_TOPIC = 'q-agent-notifier-network-update'
ROUTER_INTERFACE = 'network:router_interface'
HA_REPLICATED_INTERFACE = 'network:ha_router_replicated_interface'
ROUTER_GATEWAY = 'network:router_gateway'
ROUTER_HA_INTERFACE = 'network:router_ha_interface'
HA_NETWORK_CIDR = '169.254.192.0/18'  # the server's l3_ha_net_cidr default
# What ML2's openvswitch driver puts in a bound router port.
OVS_VIF_DETAILS = {'connectivity': 'l2', 'port_filter': True, 'ovs_hybrid_plug': True,
                   'datapath_type': 'system', 'bridge_name': 'br-int',
                   'bound_drivers': {'0': 'openvswitch'}}
TIMESTAMP = '2025-01-01T00:00:00Z'


def _subnet_view(subnet: dict[str, Any]) -> dict[str, Any]:
    """A subnet as a router port's ``subnets``/``extra_subnets`` entry."""
    return {'id': subnet['id'], 'cidr': subnet['cidr'],
            'gateway_ip': subnet.get('gateway_ip'),
            'dns_nameservers': list(subnet.get('dns_nameservers') or []),
            'ipv6_ra_mode': subnet.get('ipv6_ra_mode'),
            'subnetpool_id': subnet.get('subnetpool_id')}


def rest_network(network: dict[str, Any], external: bool = False,
                 network_type: str = 'vxlan', physical_network: str | None = None,
                 segmentation_id: int | None = None) -> dict[str, Any]:
    """A fake network (``add_network``) as the REST API shows it: what
    ``network_update`` carries (casts-l3.json)."""
    project = network.get('project_id', '')
    return {
        'id': network['id'], 'name': network.get('name', ''), 'tenant_id': project,
        'project_id': project, 'admin_state_up': network.get('admin_state_up', True),
        'mtu': network.get('mtu', 1500), 'status': 'ACTIVE',
        'subnets': [s['id'] for s in network.get('subnets', [])],
        'standard_attr_id': zlib.crc32(network['id'].encode()) % 100000,
        'shared': False, 'availability_zone_hints': [], 'availability_zones': [],
        'ipv4_address_scope': None, 'ipv6_address_scope': None,
        'router:external': external, 'qinq': None, 'vlan_transparent': None,
        'description': '', 'port_security_enabled': True, 'is_default': False,
        'tags': [], 'created_at': TIMESTAMP, 'updated_at': TIMESTAMP,
        'revision_number': 1, 'provider:network_type': network_type,
        'provider:physical_network': physical_network,
        'provider:segmentation_id': segmentation_id}


@dataclasses.dataclass
class _Router:
    attrs: dict[str, Any]              # the router's own REST attributes
    gw_port: dict[str, Any] | None = None
    interfaces: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    ha_port: dict[str, Any] | None = None
    # L3 agent hosts it is scheduled to; None: whichever legacy agent asks.
    hosts: set[str] | None = None


class L3Model:
    """Routers and floating IPs, answered as neutron 29's L3 plugin does.

    Pure (no broker): :class:`FakeNeutron` serves it on ``q-l3-plugin`` and
    unit tests compare it with the captured replies. Ports are stored in
    the networks (``FakeNeutron.networks``) like every other port, so the
    DHCP and metadata answers see the router's ports too.
    """

    def __init__(self, networks: dict[str, dict[str, Any]]) -> None:
        self.networks = networks
        self.routers: dict[str, _Router] = {}
        self.floating_ips: dict[str, dict[str, Any]] = {}
        # L3 agents whose admin_state_up is false: get nothing.
        self.agents_down: set[str] = set()
        self._macs = iter(f'fa:16:3e:01:{i // 256:02x}:{i % 256:02x}'
                          for i in range(1, 65536))
        self._vr_ids = iter(range(1, 256))
        self._ha_networks: dict[str, dict[str, Any]] = {}

    # -- building ----------------------------------------------------------------
    def _subnet(self, subnet: dict[str, Any] | str) -> tuple[dict[str, Any], dict[str, Any]]:
        subnet_id = subnet if isinstance(subnet, str) else subnet['id']
        for network in self.networks.values():
            for s in network.get('subnets', []):
                if s['id'] == subnet_id:
                    return network, s
        raise KeyError(f'no subnet {subnet_id}')

    def _network(self, network: dict[str, Any] | str) -> dict[str, Any]:
        return self.networks[network if isinstance(network, str) else network['id']]

    def _used(self, network: dict[str, Any]) -> set[str]:
        used = {ip['ip_address'] for p in network.get('ports', [])
                for ip in p.get('fixed_ips', [])}
        used |= {f['floating_ip_address'] for f in self.floating_ips.values()}
        used |= {s.get('gateway_ip') for s in network.get('subnets', [])}
        return used

    def _free(self, network: dict[str, Any], subnet: dict[str, Any]) -> str:
        used = self._used(network)
        return next(str(h) for h in ipaddress.ip_network(subnet['cidr']).hosts()
                    if str(h) not in used)

    def _port(self, network: dict[str, Any], fixed_ips: list[dict[str, str]],
              device_owner: str, device_id: str, project_id: str) -> dict[str, Any]:
        port = {'id': str(uuid.uuid4()), 'name': '', 'network_id': network['id'],
                'mac_address': next(self._macs), 'admin_state_up': True,
                'status': 'DOWN', 'device_owner': device_owner, 'device_id': device_id,
                'fixed_ips': fixed_ips, 'extra_dhcp_opts': [],
                'port_security_enabled': False, 'security_groups': [],
                'binding:host_id': '', 'project_id': project_id}
        network.setdefault('ports', []).append(port)
        return port

    def _network_of(self, network_id: str) -> dict[str, Any] | None:
        network = self.networks.get(network_id)
        if network is None:
            network = next((n for n in self._ha_networks.values()
                            if n['id'] == network_id), None)
        return network

    def _drop_port(self, port: dict[str, Any]) -> None:
        network = self._network_of(port['network_id'])
        if network is not None:
            network['ports'] = [p for p in network.get('ports', []) if p['id'] != port['id']]

    def add_router(self, gateway_network: dict[str, Any] | str | None = None,
                   interfaces: Sequence[dict[str, Any] | str] = (),
                   floating_ips: Sequence[dict[str, Any]] = (),
                   routes: Sequence[dict[str, str]] = (), enable_snat: bool = True,
                   admin_state_up: bool = True, ha: bool = False,
                   distributed: bool = False, host: str | None = None,
                   name: str = '', project_id: str = 'demo') -> dict[str, Any]:
        """A router as the API would build it; returns its sync_routers view.

        ``gateway_network``: the external network (a fake network or its
        id); the gateway port gets an address of its first IPv4 subnet and
        of each IPv6 subnet. ``interfaces``: subnets (or ids) to attach, as
        ``add_router_interface`` by subnet does: the subnet's gateway IP on
        a port of its own, except IPv6 subnets of one network, which share
        a port. ``floating_ips``: ports (``add_port``) to give a floating IP
        of the gateway network. ``host``: the L3 agent host it is scheduled
        to (default: any legacy agent that asks); distributed routers are
        never scheduled to a legacy agent.
        """
        router_id = str(uuid.uuid4())
        attrs = {
            'id': router_id, 'name': name, 'project_id': project_id,
            'admin_state_up': admin_state_up, 'status': 'ACTIVE',
            'enable_snat': enable_snat, 'external_gateway_info': None, 'gw_port_id': None,
            'description': '', 'availability_zones': ['nova'], 'distributed': distributed,
            'ha': ha, 'ha_vr_id': next(self._vr_ids) if ha else 0,
            'availability_zone_hints': [], 'enable_default_route_ecmp': False,
            'enable_default_route_bfd': False, 'routes': [dict(r) for r in routes],
            'flavor_id': None, 'tags': [], 'created_at': TIMESTAMP, 'updated_at': TIMESTAMP,
            'revision_number': 1, 'tenant_id': project_id, 'gw_port_host': None}
        router = _Router(attrs, hosts=None if host is None else {host})
        if distributed:
            router.hosts = set()
        self.routers[router_id] = router
        if ha:
            router.ha_port = self._ha_port(router)
        if gateway_network is not None:
            self.set_gateway(router_id, gateway_network, enable_snat=enable_snat)
        for subnet in interfaces:
            self.add_router_interface(router_id, subnet)
        for port in floating_ips:
            self.add_floating_ip(router_id, port)
        return self.router_view(router_id)

    def _ha_port(self, router: _Router) -> dict[str, Any]:
        """The router's port on its project's HA network (one per project)."""
        project = router.attrs['project_id']
        network = self._ha_networks.get(project)
        if network is None:
            network = {'id': str(uuid.uuid4()), 'name': f'HA network tenant {project}',
                       'project_id': '', 'tenant_id': '', 'admin_state_up': True,
                       'mtu': 1450, 'ports': [], 'non_local_subnets': [],
                       'subnets': [{'id': str(uuid.uuid4()), 'name': '', 'ip_version': 4,
                                    'cidr': HA_NETWORK_CIDR, 'gateway_ip': None,
                                    'enable_dhcp': False, 'dns_nameservers': [],
                                    'ipv6_ra_mode': None, 'ipv6_address_mode': None,
                                    'subnetpool_id': None}]}
            network['subnets'][0]['network_id'] = network['id']
            # Not in self.networks: no DHCP agent serves it.
            self._ha_networks[project] = network
        subnet = network['subnets'][0]
        port = self._port(network, [{'subnet_id': subnet['id'],
                                     'ip_address': self._free(network, subnet)}],
                          ROUTER_HA_INTERFACE, router.attrs['id'], '')
        port['name'] = f'HA port project {project}'
        return port

    def set_gateway(self, router_id: str, network: dict[str, Any] | str | None,
                    enable_snat: bool = True) -> None:
        """Set (or with ``None`` clear) the external gateway."""
        router = self.routers[router_id]
        if router.gw_port is not None:
            self._drop_port(router.gw_port)
            router.gw_port = None
        router.attrs.update(external_gateway_info=None, gw_port_id=None)
        if network is None:
            return
        network = self._network(network)
        fixed_ips = []
        v4 = [s for s in network['subnets'] if s['ip_version'] == 4][:1]
        for subnet in v4 + [s for s in network['subnets'] if s['ip_version'] == 6]:
            fixed_ips.append({'subnet_id': subnet['id'],
                              'ip_address': self._free(network, subnet)})
        router.gw_port = self._port(network, fixed_ips, ROUTER_GATEWAY, router_id, '')
        router.attrs.update(
            enable_snat=enable_snat, gw_port_id=router.gw_port['id'],
            external_gateway_info={'network_id': network['id'],
                                   'external_fixed_ips': [dict(ip) for ip in fixed_ips],
                                   'enable_snat': enable_snat})

    def add_router_interface(self, router_id: str, subnet: dict[str, Any] | str
                             ) -> dict[str, Any]:
        """Attach ``subnet``; returns the interface port record."""
        router = self.routers[router_id]
        network, subnet = self._subnet(subnet)
        address = subnet.get('gateway_ip') or self._free(network, subnet)
        fixed = {'subnet_id': subnet['id'], 'ip_address': address}
        if subnet['ip_version'] == 6:
            for port in router.interfaces:
                if port['network_id'] == network['id'] and any(
                        _ip_version(ip['ip_address']) == 6 for ip in port['fixed_ips']):
                    port['fixed_ips'].append(fixed)
                    return port
        owner = HA_REPLICATED_INTERFACE if router.attrs['ha'] else ROUTER_INTERFACE
        port = self._port(network, [fixed], owner, router_id, router.attrs['project_id'])
        router.interfaces.append(port)
        return port

    def remove_router_interface(self, router_id: str, subnet: dict[str, Any] | str) -> None:
        router = self.routers[router_id]
        subnet_id = subnet if isinstance(subnet, str) else subnet['id']
        for port in list(router.interfaces):
            port['fixed_ips'] = [ip for ip in port['fixed_ips']
                                 if ip['subnet_id'] != subnet_id]
            if not port['fixed_ips']:
                router.interfaces.remove(port)
                self._drop_port(port)

    def add_floating_ip(self, router_id: str | None, port: dict[str, Any] | None = None,
                        fixed_ip_address: str | None = None,
                        floating_ip_address: str | None = None,
                        network: dict[str, Any] | str | None = None,
                        status: str = 'DOWN') -> dict[str, Any]:
        """A floating IP of the router's gateway network (or ``network``),
        associated to ``port`` (its first IPv4 address unless
        ``fixed_ip_address``) or, without a port, to nothing."""
        if network is None:
            network = self.routers[router_id].attrs['external_gateway_info']['network_id']
        network = self._network(network)
        if floating_ip_address is None:
            v4 = next(s for s in network['subnets'] if s['ip_version'] == 4)
            floating_ip_address = self._free(network, v4)
        fip_id = str(uuid.uuid4())
        project = self.routers[router_id].attrs['project_id'] if router_id else 'demo'
        fip = {'id': fip_id, 'tenant_id': project, 'project_id': project,
               'floating_ip_address': floating_ip_address,
               'floating_network_id': network['id'], 'router_id': None, 'port_id': None,
               'fixed_ip_address': None, 'status': status,
               'standard_attr_id': zlib.crc32(fip_id.encode()) % 100000,
               'description': '', 'qos_policy_id': None, 'qos_network_policy_id': None,
               'port_details': None, 'dns_domain': '', 'dns_name': '', 'tags': [],
               'created_at': TIMESTAMP, 'updated_at': TIMESTAMP, 'revision_number': 0,
               'fixed_ip_address_scope': None}
        self.floating_ips[fip_id] = fip
        if port is not None:
            self.associate_floating_ip(fip_id, port, router_id, fixed_ip_address)
        return fip

    def associate_floating_ip(self, fip_id: str, port: dict[str, Any] | None,
                              router_id: str | None = None,
                              fixed_ip_address: str | None = None) -> None:
        """Associate to ``port`` (through ``router_id``), or with ``None``
        disassociate: a disassociated floating IP is in no router."""
        fip = self.floating_ips[fip_id]
        if port is None:
            fip.update(router_id=None, port_id=None, fixed_ip_address=None,
                       port_details=None)
            return
        if fixed_ip_address is None:
            fixed_ip_address = next(ip['ip_address'] for ip in port['fixed_ips']
                                    if _ip_version(ip['ip_address']) == 4)
        fip.update(router_id=router_id or fip['router_id'], port_id=port['id'],
                   fixed_ip_address=fixed_ip_address,
                   port_details={'name': port.get('name', ''),
                                 'network_id': port['network_id'],
                                 'mac_address': port['mac_address'],
                                 'admin_state_up': port.get('admin_state_up', True),
                                 'status': port.get('status', 'DOWN'),
                                 'device_id': port.get('device_id', ''),
                                 'device_owner': port.get('device_owner', '')})

    def delete_floating_ip(self, fip_id: str) -> None:
        self.floating_ips.pop(fip_id, None)

    def update_router(self, router_id: str, **attrs: Any) -> None:
        """Change REST attributes (``admin_state_up``, ``routes``, ``name``...)."""
        self.routers[router_id].attrs.update(copy.deepcopy(attrs))

    def delete_router(self, router_id: str) -> None:
        router = self.routers.pop(router_id)
        for port in router.interfaces + [router.gw_port, router.ha_port]:
            if port is not None:
                self._drop_port(port)
        project = router.attrs['project_id']
        if router.attrs['ha'] and not any(r.attrs['ha'] and r.attrs['project_id'] == project
                                          for r in self.routers.values()):
            self._ha_networks.pop(project, None)  # the server deletes it too

    def schedule_router(self, router_id: str, host: str) -> None:
        router = self.routers[router_id]
        router.hosts = (router.hosts or set()) | {host}

    def unschedule_router(self, router_id: str, host: str | None = None) -> None:
        """Off ``host`` (default: off every agent), as ``l3-agents`` remove."""
        router = self.routers[router_id]
        router.hosts = set() if host is None else (router.hosts or set()) - {host}

    # -- answering ---------------------------------------------------------------
    def _port_view(self, record: dict[str, Any], host: str | None) -> dict[str, Any]:
        """A router port as sync_routers nests it: the REST port, fixed IPs
        with ``prefixlen``, its ``subnets``, the network's other subnets as
        ``extra_subnets``, ``address_scopes`` and the network's ``mtu``."""
        network = self._network_of(record['network_id'])
        subnets = {s['id']: s for s in network.get('subnets', [])}
        port = rest_port(record)
        port['fixed_ips'] = [
            {'subnet_id': ip['subnet_id'], 'ip_address': ip['ip_address'],
             'prefixlen': ipaddress.ip_network(subnets[ip['subnet_id']]['cidr']).prefixlen}
            for ip in record['fixed_ips']]
        own = list(dict.fromkeys(ip['subnet_id'] for ip in record['fixed_ips']))
        port['subnets'] = [_subnet_view(subnets[s]) for s in own]
        port['extra_subnets'] = [_subnet_view(s) for s in network.get('subnets', [])
                                 if s['id'] not in own]
        port['address_scopes'] = {'4': None, '6': None}
        port['mtu'] = network.get('mtu', 1500)
        if host:
            # sync_routers binds the router's ports to the asking host.
            port.update({'binding:host_id': host, 'binding:vif_type': 'ovs',
                         'binding:vif_details': copy.deepcopy(OVS_VIF_DETAILS)})
        return port

    def router_view(self, router_id: str, host: str | None = None) -> dict[str, Any]:
        """The router as sync_routers returns it to ``host``.

        ``gw_port``, ``_interfaces`` and ``_floatingips`` are only present
        when non-empty; an HA router adds ``_ha_interface`` and
        ``_ha_state``; ``gw_port_host`` is the gateway port's host.
        """
        router = self.routers[router_id]
        view = copy.deepcopy(router.attrs)
        # An HA router's gateway and interface ports stay unbound until an
        # agent reports it active (update_ha_routers_states); its HA port
        # is bound to the asking host.
        port_host = None if router.attrs['ha'] else host
        if router.gw_port is not None:
            view['gw_port'] = self._port_view(router.gw_port, port_host)
            view['gw_port_host'] = view['gw_port']['binding:host_id'] or None
        fips = [copy.deepcopy(f) for f in self.floating_ips.values()
                if f['router_id'] == router_id and f['port_id']]
        if fips:
            view['_floatingips'] = fips
        if router.interfaces:
            view['_interfaces'] = [self._port_view(p, port_host) for p in router.interfaces]
        if router.ha_port is not None:
            view['_ha_interface'] = self._port_view(router.ha_port, host)
            view['_ha_state'] = 'standby'
        return view

    def _scheduled(self, router: _Router, host: str) -> bool:
        if router.attrs['distributed']:
            return False  # never on a legacy agent
        return router.hosts is None or host in router.hosts

    def get_router_ids(self, host: str) -> list[str]:
        """Routers scheduled to ``host``, admin-down ones included; routers
        on no agent are scheduled to the asking one first (the server's
        ``router_auto_schedule``)."""
        if host in self.agents_down:
            return []
        for router in self.routers.values():
            if router.hosts == set() and not router.attrs['distributed']:
                router.hosts = {host}
        return [rid for rid, r in self.routers.items() if self._scheduled(r, host)]

    def sync_routers(self, host: str, router_ids: list[str] | None) -> list[dict[str, Any]]:
        """Routers scheduled to ``host`` among ``router_ids`` (all when None
        or empty), without admin-down ones; unknown and unscheduled ids are
        ignored. No auto-scheduling here."""
        if host in self.agents_down:
            return []
        wanted = set(router_ids or self.routers)
        routers = [r for rid, r in self.routers.items()
                   if rid in wanted and self._scheduled(r, host) and r.attrs['admin_state_up']]
        for router in routers:
            self._bind_ports(router, host)
        return [self.router_view(r.attrs['id'], host) for r in routers]

    def _bind_ports(self, router: _Router, host: str) -> None:
        """Bind a legacy router's ports to the asking host, kept on the port
        records as neutron's l3_rpc ``_ensure_host_set_on_ports`` updates the
        ports (so get_ports sees the host too); HA routers' ports stay unbound
        until an agent reports the router active."""
        if router.attrs['ha'] or router.attrs['distributed']:
            return
        for record in [router.gw_port, *router.interfaces]:
            if record is not None:
                record.update({'binding:host_id': host, 'binding:vif_type': 'ovs',
                               'binding:vif_details': copy.deepcopy(OVS_VIF_DETAILS)})

    def ha_router_count(self, host: str) -> int:
        return sum(1 for r in self.routers.values() if r.attrs['ha']
                   and r.attrs['admin_state_up'] and self._scheduled(r, host)
                   and host not in self.agents_down)

    def update_floatingip_statuses(self, router_id: str, fip_statuses: dict[str, str]) -> None:
        """Unknown floating IPs are skipped silently; the reply is None."""
        for fip_id, status in fip_statuses.items():
            if fip_id in self.floating_ips:
                self.floating_ips[fip_id]['status'] = status


@dataclasses.dataclass(frozen=True)
class AgentMessage:
    """One message neutron-server sends an agent: where, how and what."""

    topic: str
    method: str
    version: str
    args: dict[str, Any]
    server: str | None = None    # topic.<server>; None: fanout
    call: bool = False

    @property
    def fanout(self) -> bool:
        return self.server is None


class L3Notifications:
    """What neutron 29 sends the L3 agent (tests/fixtures/neutron29/casts-l3.json)."""

    @staticmethod
    def routers_updated(host: str, router_ids: Sequence[str]) -> AgentMessage:
        """Router create/update, interface add/remove, gateway set/clear,
        floating IP associate/disassociate/delete, admin_state_up either way."""
        return AgentMessage(L3_AGENT_TOPIC, 'routers_updated', '1.1',
                            {'routers': list(router_ids)}, server=host)

    @staticmethod
    def router_deleted(router_id: str) -> AgentMessage:
        return AgentMessage(L3_AGENT_TOPIC, 'router_deleted', '1.0',
                            {'router_id': router_id})

    @staticmethod
    def router_added_to_agent(host: str, router_ids: Sequence[str]) -> AgentMessage:
        """An RPC *call*: the server waits for the agent's answer."""
        return AgentMessage(L3_AGENT_TOPIC, 'router_added_to_agent', '1.0',
                            {'payload': list(router_ids)}, server=host, call=True)

    @staticmethod
    def router_removed_from_agent(host: str, router_id: str) -> AgentMessage:
        return AgentMessage(L3_AGENT_TOPIC, 'router_removed_from_agent', '1.0',
                            {'payload': {'router_id': router_id}}, server=host)

    @staticmethod
    def agent_updated(host: str, admin_state_up: bool) -> AgentMessage:
        return AgentMessage(L3_AGENT_TOPIC, 'agent_updated', '1.0',
                            {'payload': {'admin_state_up': admin_state_up}}, server=host)

    @staticmethod
    def fipnamespace_delete_on_ext_net(ext_net_id: str) -> AgentMessage:
        """External network delete (and a distributed router's delete)."""
        return AgentMessage(L3_AGENT_TOPIC, 'fipnamespace_delete_on_ext_net', '1.0',
                            {'ext_net_id': ext_net_id})

    @staticmethod
    def network_update(network: dict[str, Any]) -> AgentMessage:
        """ML2's network update (e.g. the MTU) to every agent; ``network``
        is REST-shaped (:func:`rest_network`)."""
        return AgentMessage(NETWORK_UPDATE_TOPIC, 'network_update', '1.4',
                            {'network': network})


class FakeNeutron:
    """Start with :meth:`start`, point agents at ``exchange``, inspect ``calls``."""

    def __init__(self, base_url: str | None = None) -> None:
        from tests.functional import amqp
        base_url = base_url or amqp.RABBIT_URL
        self.vhost = f'agentkit-test-{uuid.uuid4().hex[:12]}'
        prefix, _, _ = base_url.rpartition('/')
        self.transport_url = f'{prefix}/{self.vhost}'
        self._user = base_url.split('://', 1)[1].split(':', 1)[0]
        self._vhost_created = False
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.security_groups = SecurityGroupModel()
        self.port_details = self.security_groups.ports
        # Trunks by parent port id (trunk id): what bulk_pull('Trunk') answers.
        self.trunks: dict[str, str] = {}
        self.networks: dict[str, dict[str, Any]] = {}
        # Routers and floating IPs (add_router; the model's other methods
        # under self.lock): what q-l3-plugin answers.
        self.l3 = L3Model(self.networks)
        self.routers = self.l3.routers
        # (max router ids, seconds): sync_routers asked for more ids than
        # that answers only after that delay, as an overloaded server.
        self.slow_sync_routers: tuple[int, float] | None = None
        self.tunnels: list[dict[str, Any]] = []
        # Rules as the API shows them (remote_ip_prefix, ...); members are
        # computed from the ports in port_details, as the server does.
        self.sg_rules = self.security_groups.rules
        self.sg_stateful = self.security_groups.stateful
        self.address_groups = self.security_groups.address_groups
        self.dhcp_port_macs = iter(f'fa:16:3e:00:{i // 256:02x}:{i % 256:02x}'
                                   for i in range(1, 65536))
        self._servers: list[Any] = []
        self.transport = None

    def start(self) -> 'FakeNeutron':
        """Create the vhost and serve it (building state needs no broker)."""
        subprocess.run(['rabbitmqctl', '-q', 'add_vhost', self.vhost],
                       check=True, capture_output=True)
        self._vhost_created = True
        subprocess.run(['rabbitmqctl', '-q', 'set_permissions', '-p', self.vhost,
                        self._user, '.*', '.*', '.*'], check=True, capture_output=True)
        self.transport = oslo_messaging.get_rpc_transport(
            cfg.CONF, url=self.transport_url)
        for topic, endpoint in (('q-reports-plugin', ReportsEndpoint(self)),
                                ('q-plugin', PluginEndpoint(self)),
                                ('q-l3-plugin', L3Endpoint(self))):
            target = oslo_messaging.Target(exchange='neutron', topic=topic,
                                           server='fake-neutron')
            server = oslo_messaging.get_rpc_server(self.transport, target,
                                                   [endpoint])
            server.start()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
        for server in self._servers:
            server.wait()
        if self.transport is not None:
            self.transport.cleanup()
        if self._vhost_created:
            subprocess.run(['rabbitmqctl', '-q', 'delete_vhost', self.vhost],
                           capture_output=True)

    # -- building the server's view -------------------------------------
    def add_network(self, mtu: int = 1450, project_id: str = 'demo'
                    ) -> dict[str, Any]:
        net = {'id': str(uuid.uuid4()), 'name': '', 'project_id': project_id,
               'tenant_id': project_id, 'admin_state_up': True, 'mtu': mtu,
               'subnets': [], 'ports': [], 'non_local_subnets': []}
        with self.lock:
            self.networks[net['id']] = net
        return net

    def add_subnet(self, network_id: str, cidr: str, gateway_ip: str | None,
                   enable_dhcp: bool = True, **extra: Any) -> dict[str, Any]:
        import ipaddress
        net = ipaddress.ip_network(cidr)
        subnet = {'id': str(uuid.uuid4()), 'name': '', 'network_id': network_id,
                  'ip_version': net.version, 'cidr': cidr,
                  'gateway_ip': gateway_ip, 'enable_dhcp': enable_dhcp,
                  'allocation_pools': [], 'host_routes': [],
                  'dns_nameservers': [], 'ipv6_ra_mode': None,
                  'ipv6_address_mode': None, 'subnetpool_id': None,
                  'project_id': 'demo'}
        subnet.update(extra)
        with self.lock:
            self.networks[network_id]['subnets'].append(subnet)
        return subnet

    def add_port(self, network_id: str, mac: str, fixed_ips: list[tuple[str, str]],
                 device_owner: str = 'compute:nova', device_id: str | None = None,
                 project_id: str = 'demo') -> dict[str, Any]:
        """``fixed_ips``: [(subnet_id, ip_address), ...]; ``device_id``: the
        instance (default a new one) or, for a router interface, the router."""
        port = {'id': str(uuid.uuid4()), 'network_id': network_id,
                'mac_address': mac, 'admin_state_up': True,
                'device_owner': device_owner, 'device_id': device_id or str(uuid.uuid4()),
                'fixed_ips': [{'subnet_id': s, 'ip_address': ip}
                              for s, ip in fixed_ips],
                'extra_dhcp_opts': [], 'binding:host_id': 'compute1',
                'project_id': project_id}
        with self.lock:
            self.networks[network_id]['ports'].append(port)
        return port

    def add_router(self, gateway_network: dict[str, Any] | str | None = None,
                   interfaces: Sequence[dict[str, Any] | str] = (),
                   floating_ips: Sequence[dict[str, Any]] = (),
                   routes: Sequence[dict[str, str]] = (), **kwargs: Any) -> dict[str, Any]:
        """A router shaped as neutron 29's sync_routers returns it; see
        :meth:`L3Model.add_router` (``enable_snat``, ``admin_state_up``,
        ``ha``, ``distributed``, ``host``, ``name``, ``project_id``).
        Returns the router as a host-less sync_routers view (ids of its
        ports in ``gw_port``/``_interfaces``, floating IPs in
        ``_floatingips``)."""
        with self.lock:
            return self.l3.add_router(gateway_network, interfaces, floating_ips,
                                      routes, **kwargs)

    def add_floating_ip(self, router_id: str | None, port: dict[str, Any] | None = None,
                        **kwargs: Any) -> dict[str, Any]:
        """See :meth:`L3Model.add_floating_ip`."""
        with self.lock:
            return copy.deepcopy(self.l3.add_floating_ip(router_id, port, **kwargs))

    def update_router(self, router_id: str, **attrs: Any) -> None:
        """Change REST attributes of a router (admin_state_up, routes, ...)."""
        with self.lock:
            self.l3.update_router(router_id, **attrs)

    def delete_port(self, network_id: str, port_id: str) -> None:
        with self.lock:
            net = self.networks[network_id]
            net['ports'] = [p for p in net['ports'] if p['id'] != port_id]

    def cast_to_agent(self, topic: str, host: str | None, method: str,
                      version: str = '1.0', **kwargs: Any) -> None:
        """What neutron-server sends: a cast to ``topic.host`` or a fanout."""
        target = oslo_messaging.Target(exchange='neutron', topic=topic,
                                       version=version)
        client = oslo_messaging.get_rpc_client(self.transport, target)
        if host is None:
            client.prepare(fanout=True).cast({'is_admin': True}, method, **kwargs)
        else:
            client.prepare(server=host).cast({'is_admin': True}, method, **kwargs)

    def send_to_agent(self, message: AgentMessage, timeout: float = 30.0) -> Any:
        """Send ``message`` (e.g. :class:`L3Notifications`) as neutron-server
        does: to ``topic.<server>`` or fanout, a call when the server calls
        (then the agent's answer is returned)."""
        target = oslo_messaging.Target(exchange='neutron', topic=message.topic,
                                       version=message.version)
        client = oslo_messaging.get_rpc_client(self.transport, target, timeout=timeout)
        cctxt = (client.prepare(fanout=True) if message.fanout
                 else client.prepare(server=message.server))
        if message.call:
            return cctxt.call({'is_admin': True}, message.method, **message.args)
        cctxt.cast({'is_admin': True}, message.method, **message.args)
        return None

    def send_network_update(self, network_id: str, **rest: Any) -> None:
        """``network_update`` of a fake network as it is now (e.g. after
        changing its ``mtu``); ``rest``: see :func:`rest_network`."""
        with self.lock:
            network = rest_network(self.networks[network_id], **rest)
        self.send_to_agent(L3Notifications.network_update(network))

    def _free_address(self, network: dict[str, Any], subnet: dict[str, Any]) -> str:
        import ipaddress
        used = {ip['ip_address'] for p in network.get('ports', [])
                for ip in p.get('fixed_ips', []) if 'ip_address' in ip}
        used.add(subnet.get('gateway_ip'))
        return next(str(h) for h in ipaddress.ip_network(subnet['cidr']).hosts()
                    if str(h) not in used)

    def update_dhcp_port(self, port_id: str, update: dict[str, Any]
                         ) -> dict[str, Any] | None:
        """Fixed IPs given only by subnet_id get the next free address."""
        with self.lock:
            network = self.networks.get(update.get('network_id'), {})
            subnets = {s['id']: s for s in network.get('subnets', [])}
            for port in network.get('ports', []):
                if port['id'] == port_id:
                    fixed = []
                    for ip in update.get('fixed_ips', port['fixed_ips']):
                        if 'ip_address' not in ip:
                            ip = {'subnet_id': ip['subnet_id'],
                                  'ip_address': self._free_address(
                                      network, subnets[ip['subnet_id']])}
                        fixed.append(ip)
                    port['fixed_ips'] = fixed
                    return copy.deepcopy(port)
        return None

    def make_dhcp_port(self, port: dict[str, Any], host: str | None = None
                       ) -> dict[str, Any]:
        """Answer create_dhcp_port like the server: an address of each DHCP
        subnet (the first free host address, as the default pool gives),
        bound to the asking host (neutron's dhcp_rpc sets binding:host_id)."""
        import ipaddress
        with self.lock:
            network = self.networks.get(port['network_id'], {})
            used = {ip['ip_address'] for p in network.get('ports', [])
                    for ip in p.get('fixed_ips', [])}
            fixed_ips = []
            for subnet in network.get('subnets', []):
                if subnet.get('enable_dhcp') and subnet.get('ip_version', 4) == 4:
                    used_here = used | {subnet.get('gateway_ip')}
                    address = next(str(h) for h in
                                   ipaddress.ip_network(subnet['cidr']).hosts()
                                   if str(h) not in used_here)
                    fixed_ips.append({'subnet_id': subnet['id'],
                                      'ip_address': address})
            new_port = {
                'id': str(uuid.uuid4()), 'network_id': port['network_id'],
                'mac_address': next(self.dhcp_port_macs),
                'device_id': port.get('device_id', ''),
                'device_owner': 'network:dhcp', 'fixed_ips': fixed_ips,
                'admin_state_up': True, 'binding:vif_type': 'ovs',
                'binding:host_id': host or '',
            }
            network.setdefault('ports', []).append(new_port)
            return copy.deepcopy(new_port)

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        with self.lock:
            return [kw for m, kw in self.calls if m == method]

    def mark(self) -> int:
        """A position in the call log, for ``wait_for_call(since=...)``."""
        with self.lock:
            return len(self.calls)

    def wait_for_call(self, method: str, predicate=lambda kw: True,
                      timeout: float = 20.0, since: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for m, kw in self.calls[since:]:
                    if m == method and predicate(kw):
                        return kw
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f'no {method} call matched in {timeout}s')
                self.changed.wait(min(remaining, 0.5))
