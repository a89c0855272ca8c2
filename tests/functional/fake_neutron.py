"""A stand-in for neutron-server's RPC side, for functional tests and benchmarks.

It serves ``q-reports-plugin``, ``q-plugin`` and ``q-l3-plugin`` with the
versions Neutron 29 uses, from in-memory state the test controls, and records
every call. Each instance gets its own RabbitMQ vhost: queue names such as
``q-plugin`` are global to a vhost, so concurrent tests sharing one would
answer each other's agents.
"""

import copy
import subprocess
import threading
import time
import uuid
import zlib
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
        return self.server.make_dhcp_port(port['port'])

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
    target = oslo_messaging.Target(version='1.12')

    def get_router_ids(self, context, host):
        self._record('get_router_ids', host=host)
        with self.server.lock:
            return list(self.server.routers)

    def sync_routers(self, context, host, router_ids=None):
        self._record('sync_routers', host=host, router_ids=router_ids)
        with self.server.lock:
            return [copy.deepcopy(r) for rid, r in self.server.routers.items()
                    if router_ids is None or rid in router_ids]

    def get_host_ha_router_count(self, context, host):
        return 0

    def update_floatingip_statuses(self, context, router_id, fip_statuses):
        self._record('update_floatingip_statuses', router_id=router_id,
                     fip_statuses=fip_statuses)


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


class FakeNeutron:
    """Start with :meth:`start`, point agents at ``exchange``, inspect ``calls``."""

    def __init__(self, base_url: str | None = None) -> None:
        from tests.functional import amqp
        base_url = base_url or amqp.RABBIT_URL
        self.vhost = f'agentkit-test-{uuid.uuid4().hex[:12]}'
        prefix, _, _ = base_url.rpartition('/')
        self.transport_url = f'{prefix}/{self.vhost}'
        user = base_url.split('://', 1)[1].split(':', 1)[0]
        subprocess.run(['rabbitmqctl', '-q', 'add_vhost', self.vhost],
                       check=True, capture_output=True)
        subprocess.run(['rabbitmqctl', '-q', 'set_permissions', '-p', self.vhost,
                        user, '.*', '.*', '.*'], check=True, capture_output=True)
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.security_groups = SecurityGroupModel()
        self.port_details = self.security_groups.ports
        self.networks: dict[str, dict[str, Any]] = {}
        self.routers: dict[str, dict[str, Any]] = {}
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

    def make_dhcp_port(self, port: dict[str, Any]) -> dict[str, Any]:
        """Answer create_dhcp_port like the server: an address of each DHCP
        subnet (the first free host address, as the default pool gives)."""
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
