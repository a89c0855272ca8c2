#!/usr/bin/env python3
"""Record what the REAL neutron-server 29 answers and casts to L2 agents.

The fixtures this writes (``tests/fixtures/neutron29/``) are the ground truth
for the project's fake server (``tests/functional/fake_neutron.py``): every
reply and cast in them comes from neutron-server itself, never from agentkit.

    .venv/bin/python tools/capture-neutron-contract.py [--out DIR]

As root. What it does:

1. Starts (or reuses) a real neutron-server with ``tools/neutron-server.sh``
   on a state directory and RabbitMQ vhost of its own (defaults
   ``/var/tmp/akns-neutron-capture`` / ``akns-neutron-capture``), so it never
   shares, stops or restarts the server other tests use. A server it started
   is stopped again at the end (``--keep-server`` leaves it running).
2. Reports state as two fake agents (``Open vSwitch agent`` and ``Linux
   bridge agent``, each on a host of its own) with agentkit's report_state
   client, so ML2 binds the scenario's ports to those hosts.
3. Builds the scenario through the REST API (noauth: project_id in the
   bodies): a vxlan network, an IPv4 subnet (DHCP) and an IPv6 subnet
   (SLAAC), the project's ``default`` group, a custom group full of rule
   shapes, a stateless group, an address group and ports A-E plus a DHCP
   port and a router interface.
4. Calls the q-plugin RPCs exactly as Neutron's own agents do (topic
   ``q-plugin``, exchange ``neutron``, the same versions and arguments) and
   records the replies as oslo.messaging returns them.
5. Listens on exclusive queues bound to the agents' fanout exchanges and
   records every cast the server sends while it changes groups and ports.
6. Calls ``get_ports`` as neutron-metadata-agent's MetadataPluginAPI does
   (topic ``q-plugin``, version 1.0, no namespace, kwarg ``filters``): the
   router-interface lookup and the network + fixed_ips lookup, on a second
   network behind the router and a third one (not behind it) that reuses
   the first network's CIDR.
7. The L3 agent's contract (:class:`L3Capture`), on a host of its own: a
   legacy ``L3 agent`` and an OVS agent (with a bridge mapping for the flat
   external network) report state; an external network, a tenant network
   (IPv4, IPv6 slaac and IPv6 dhcpv6-stateful subnets), a router with
   gateway, interfaces, extra routes and two floating IPs, plus an HA, a
   distributed and an admin-down router are built; ``get_router_ids``,
   ``sync_routers``, ``get_host_ha_router_count`` and
   ``update_floatingip_statuses`` are called on ``q-l3-plugin`` as
   Neutron's L3PluginApi calls them; and every message the server sends the
   L3 agent (``l3_agent``, ``l3_agent.<host>``, ``l3_agent_fanout``, network
   updates) is recorded while routers, interfaces, floating IPs, routes,
   the external network and the agent's scheduling change. An oslo.messaging
   server consumes the agent's topic and answers, as the agent would
   (``router_added_to_agent`` is a call).
8. Deletes everything it created (also leftovers of an interrupted earlier
   run, recognised by the ``akcap-`` name prefix) and writes one JSON file
   per item.

Files are only written when the whole capture succeeded. ``--only
get_ports`` builds the scenario without listening for casts, captures only
step 6 and writes only ``get_ports.json`` (about a minute; the other files
keep their ids). ``--only l3`` runs only step 7 and writes only its files
(``scenario-l3.json``, ``sync_routers.json``,
``update_floatingip_statuses.json``, ``casts-l3.json``; about 3.5 minutes).
"""

from __future__ import annotations

import argparse
import configparser
import copy
import datetime
import json
import os
import random
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# agentkit selects its concurrency backend before oslo.messaging is imported
# (oslo.messaging imports oslo.service, which locks the backend in).
from agentkit import concurrency  # noqa: E402

concurrency.select()

import kombu  # noqa: E402
import oslo_messaging  # noqa: E402
from oslo_config import cfg  # noqa: E402

from agentkit.agent import state_report  # noqa: E402
from agentkit.rpc import report_api  # noqa: E402
from agentkit.rpc import transport as rpc_transport  # noqa: E402
from tests.functional import neutron_server  # noqa: E402

SCRIPT = os.path.join(ROOT, 'tools', 'neutron-server.sh')
DEFAULT_OUT = os.path.join(ROOT, 'tests', 'fixtures', 'neutron29')
DEFAULT_STATE = '/var/tmp/akns-neutron-capture'
DEFAULT_VHOST = 'akns-neutron-capture'
NAME_PREFIX = 'akcap-'
PLUGIN_TOPIC = 'q-plugin'
# Neutron's agent notifier topic is 'q-agent-notifier'; oslo.messaging
# publishes a fanout cast on '<topic>_fanout' exchanges.
FANOUT_TOPICS = [
    'q-agent-notifier-security_group-update',
    'q-agent-notifier-port-update',
    'q-agent-notifier-port-delete',
    'q-agent-notifier-network-delete',
    # Not asked for, but an L2 agent consumes them too: listened to so a
    # cast there would not go unnoticed.
    'q-agent-notifier-network-update',
    'q-agent-notifier-tunnel-update',
    'q-agent-notifier-tunnel-delete',
    'q-agent-notifier-port_binding-activate',
    'q-agent-notifier-port_binding-deactivate',
]
# neutron_lib.constants.ROUTER_INTERFACE_OWNERS, the device_owner filter of
# neutron-metadata-agent's router lookup (MetadataProxyHandler._get_port_filters).
ROUTER_INTERFACE_OWNERS = ['network:router_interface',
                           'network:ha_router_replicated_interface',
                           'network:router_interface_distributed']
SETTLE = 2.0        # a cast window ends after this long without a message
MIN_WINDOW = 3.0    # ... but lasts at least this long
MAX_WINDOW = 15.0


def log(msg: str) -> None:
    print(f'[capture {time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


# -- the server ------------------------------------------------------------------
class ServerControl:
    def __init__(self, state_dir: str, vhost: str) -> None:
        self.env = dict(os.environ, AGENTKIT_NEUTRON_STATE=state_dir,
                        AGENTKIT_NEUTRON_VHOST=vhost)
        self.state_dir = state_dir
        self.started = False
        self.values: dict[str, str] = {}

    def _run(self, cmd: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(['bash', SCRIPT, cmd], env=self.env, text=True,
                              capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def start(self) -> None:
        log(f'tools/neutron-server.sh start (state {self.state_dir})')
        proc = self._run('start', 900)
        if proc.returncode != 0:
            raise RuntimeError(f'neutron-server.sh start failed ({proc.returncode}):\n'
                               f'{proc.stdout}\n{proc.stderr}')
        self.values = dict(line.split('=', 1) for line in proc.stdout.splitlines()
                           if '=' in line)
        self.started = self.values.get('started') == '1'
        log(f'server at {self.values["api_url"]} (started by us: {self.started})')

    def stop(self) -> None:
        log('tools/neutron-server.sh stop')
        proc = self._run('stop', 180)
        if proc.returncode != 0:
            log(f'stop failed: {proc.stderr.strip()}')

    def flat_networks(self) -> list[str]:
        """The physical networks ML2 allows flat networks on."""
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(os.path.join(self.state_dir, 'ml2_conf.ini'))
        return [v.strip() for v in parser.get('ml2_type_flat', 'flat_networks',
                                              fallback='').split(',') if v.strip()]

    def ml2_config(self) -> dict[str, Any]:
        """The ML2 options tools/neutron-server.sh wrote for this server."""
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(os.path.join(self.state_dir, 'ml2_conf.ini'))

        def split(section: str, key: str) -> list[str]:
            return [v.strip() for v in parser.get(section, key, fallback='').split(',')
                    if v.strip()]
        return {'type_drivers': split('ml2', 'type_drivers'),
                'project_network_types': split('ml2', 'project_network_types'),
                'mechanism_drivers': split('ml2', 'mechanism_drivers'),
                'extension_drivers': split('ml2', 'extension_drivers'),
                'securitygroup': dict(parser['securitygroup'])
                if parser.has_section('securitygroup') else {}}


def neutron_facts() -> dict[str, Any]:
    """Versions of the installed neutron, and the versioned-object versions
    its own agents report (``resources.LOCAL_RESOURCE_VERSIONS``)."""
    py = os.path.join(ROOT, '.venv-neutron', 'bin', 'python')
    code = ('import importlib.metadata as m, json\n'
            'from neutron.api.rpc.callbacks import resources\n'
            'print(json.dumps({"neutron": m.version("neutron"), '
            '"neutron_lib": m.version("neutron-lib"), '
            '"resource_versions": resources.LOCAL_RESOURCE_VERSIONS}))')
    out = subprocess.run([py, '-c', code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- casts -----------------------------------------------------------------------
class CastListener:
    """Exclusive queues on the agents' fanout exchanges, one thread draining them."""

    def __init__(self, transport_url: str, resource_versions: dict[str, str],
                 fanout_topics: list[str] | None = None,
                 topic_keys: list[str] = ()) -> None:
        """``fanout_topics``: topics whose ``<topic>_fanout`` exchange is
        listened on (default: the L2 agents' ones); ``topic_keys``: routing
        keys bound on the ``neutron`` topic exchange (``topic`` and
        ``topic.<host>`` casts and calls, which go to one consumer)."""
        self.conn = kombu.Connection(transport_url.replace('rabbit://', 'amqp://', 1))
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.step = 'listener start'
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.queues = []
        # Versioned-object pushes (resources_rpc.ResourcesPushRpcApi): topic
        # neutron-vo-<type>-<version>, one per version the server pushes.
        self.topics = list(FANOUT_TOPICS if fanout_topics is None else fanout_topics) + [
            f'neutron-vo-{t}-{v}' for t, v in sorted(resource_versions.items())]
        for topic in self.topics:
            # As oslo.messaging declares them (impl_rabbit fanout_send and
            # declare_fanout_consumer): fanout, non-durable, auto-delete.
            exchange = kombu.Exchange(f'{topic}_fanout', type='fanout',
                                      durable=False, auto_delete=True)
            self.queues.append(kombu.Queue(
                f'akcap-{topic}-{uuid.uuid4().hex[:8]}', exchange=exchange,
                routing_key=topic, exclusive=True, auto_delete=True, durable=False))
        # The control exchange, as oslo.messaging declares it (topic,
        # non-durable, not auto-delete); a queue of ours bound with the same
        # key gets a copy of what the agent's own queue gets.
        control = kombu.Exchange('neutron', type='topic', durable=False, auto_delete=False)
        self.topic_keys = list(topic_keys)
        for key in self.topic_keys:
            self.queues.append(kombu.Queue(
                f'akcap-{key}-{uuid.uuid4().hex[:8]}', exchange=control,
                routing_key=key, exclusive=True, auto_delete=True, durable=False))
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='cast-listener')
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError(f'cast queues not declared: {self._error}')

    def _run(self) -> None:
        try:
            with self.conn.Consumer(self.queues, callbacks=[self._on_message],
                                    accept=['json']):
                self._ready.set()
                while not self._stop.is_set():
                    try:
                        self.conn.drain_events(timeout=0.2)
                    except TimeoutError:
                        pass
        except BaseException as exc:  # noqa: BLE001 - reported by check()
            self._error = exc
            self._ready.set()

    def _on_message(self, body: Any, message: kombu.Message) -> None:
        if isinstance(body, (bytes, str)):
            body = json.loads(body)
        inner = json.loads(body['oslo.message'])
        record = {
            'exchange': message.delivery_info.get('exchange'),
            'routing_key': message.delivery_info.get('routing_key'),
            'content_type': message.content_type,
            'delivery_mode': message.properties.get('delivery_mode'),
            'oslo.version': body.get('oslo.version'),
            'method': inner.get('method'),
            'version': inner.get('version'),
        }
        if 'namespace' in inner:  # only present when the sender set one
            record['namespace'] = inner['namespace']
        record['args'] = inner.get('args')
        # A call carries _msg_id and _reply_q; a cast does not.
        record['kind'] = 'call' if '_reply_q' in inner else 'cast'
        record['context'] = {k: v for k, v in inner.items() if k.startswith('_')}
        unexpected = set(inner) - {'method', 'version', 'namespace', 'args'} - set(
            record['context'])
        if unexpected:
            record['other_keys'] = {k: inner[k] for k in sorted(unexpected)}
        with self.lock:
            record['_t'] = time.monotonic()
            self.received.append(record)
        message.ack()

    def check(self) -> None:
        if self._error is not None:
            raise RuntimeError(f'cast listener failed: {self._error!r}')

    def begin(self, step: str) -> int:
        self.check()
        with self.lock:
            self.step = step
            return len(self.received)

    def collect(self, start: int) -> list[dict[str, Any]]:
        """Messages since ``start``, once the server has been quiet a while."""
        t0 = time.monotonic()
        while True:
            time.sleep(0.2)
            self.check()
            with self.lock:
                msgs = self.received[start:]
                last = msgs[-1]['_t'] if msgs else t0
            now = time.monotonic()
            if now - t0 >= MAX_WINDOW:
                break
            if now - t0 >= MIN_WINDOW and now - last >= SETTLE:
                break
        with self.lock:
            return [{k: v for k, v in m.items() if k != '_t'}
                    for m in self.received[start:]]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.conn.release()


def is_ovo(msg: dict[str, Any]) -> bool:
    return (msg.get('exchange') or '').startswith('neutron-vo-')


def ovo_summary(msg: dict[str, Any]) -> dict[str, Any]:
    args = msg.get('args') or {}
    resources = []
    for r in args.get('resource_list') or []:
        data = r.get('versioned_object.data', {}) if isinstance(r, dict) else {}
        resources.append({'versioned_object.name': r.get('versioned_object.name'),
                          'versioned_object.version': r.get('versioned_object.version'),
                          'id': data.get('id'), 'revision_number': data.get('revision_number')})
    return {'exchange': msg.get('exchange'), 'method': msg.get('method'),
            'version': msg.get('version'), 'event_type': args.get('event_type'),
            'resources': resources}


# -- RPC -------------------------------------------------------------------------
class PluginRpc:
    def __init__(self, transport: oslo_messaging.Transport, topic: str = PLUGIN_TOPIC) -> None:
        self.topic = topic
        target = oslo_messaging.Target(topic=topic, version='1.0')
        self.client = oslo_messaging.get_rpc_client(transport, target, timeout=60)

    def call(self, version: str, method: str, **kwargs: Any) -> dict[str, Any]:
        request = {'topic': self.topic, 'exchange': 'neutron', 'version': version,
                   'method': method, 'kwargs': copy.deepcopy(kwargs)}
        try:
            reply = self.client.prepare(version=version).call(
                rpc_transport.admin_context(), method, **kwargs)
            return {'request': request, 'reply': reply}
        except oslo_messaging.RemoteError as exc:
            # The exception's class and message; not the server's traceback.
            return {'request': request,
                    'error': {'type': 'RemoteError', 'exc_type': exc.exc_type,
                              'value': exc.value}}
        except Exception as exc:  # noqa: BLE001 - recorded as the server's answer
            return {'request': request,
                    'error': {'type': type(exc).__name__, 'message': str(exc)[:2000]}}


# -- the capture -----------------------------------------------------------------
class Capture:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.server = ServerControl(args.state_dir, args.vhost)
        self.tag = NAME_PREFIX + uuid.uuid4().hex[:6]
        self.project_id = uuid.uuid4().hex
        self.ovs_host = f'{self.tag}-ovs'
        self.lb_host = f'{self.tag}-lb'
        self.other_host = f'{self.tag}-other'  # no agent: a host a port is not bound to
        a, b = random.randint(1, 250), random.randint(1, 250)
        self.v4_cidr = f'10.{a}.{b}.0/24'
        self.v4_base = f'10.{a}.{b}'
        self.v6_cidr = f'fd00:{a:x}:{b:x}::/64'
        self.ids: dict[str, Any] = {'hosts': {'ovs': self.ovs_host, 'linuxbridge': self.lb_host,
                                              'unbound_other': self.other_host},
                                    'project_id': self.project_id, 'ports': {}}
        self.rest: dict[str, Any] = {'ports': {}, 'security_groups': {},
                                     'security_group_rules': {}}
        self.created: list[tuple[str, str]] = []  # (collection, id), deleted in reverse
        self.router_id: str | None = None
        self.results: dict[str, Any] = {}
        self.casts: dict[str, list[dict[str, Any]]] = {}
        self.port_status: dict[str, Any] = {}
        self.reporters: list[state_report.StateReporter] = []
        self.listener: CastListener | None = None
        self.transport = None

    # -- REST helpers ---------------------------------------------------------
    def post(self, collection: str, resource: str, **attrs: Any) -> dict[str, Any]:
        attrs.setdefault('project_id', self.project_id)
        obj = self.api.request('POST', f'/v2.0/{collection}', {resource: attrs})[resource]
        self.created.append((collection, obj['id']))
        return obj

    def list(self, collection: str, **filters: Any) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode(filters, doseq=True)
        path = f'/v2.0/{collection}' + (f'?{query}' if query else '')
        return self.api.request('GET', path)[collection.replace('-', '_')]

    def show(self, collection: str, id_: str) -> dict[str, Any]:
        body = self.api.request('GET', f'/v2.0/{collection}/{id_}')
        return next(iter(body.values()))

    def put(self, collection: str, resource: str, id_: str, **attrs: Any) -> dict[str, Any]:
        return self.api.request('PUT', f'/v2.0/{collection}/{id_}', {resource: attrs})[resource]

    def delete(self, collection: str, id_: str) -> None:
        self.api.delete(collection, id_)
        if (collection, id_) in self.created:
            self.created.remove((collection, id_))

    def casts_of(self, step: str, action) -> Any:
        """Run ``action`` and record the casts the server sends for it
        (just run it when no listener runs: ``--only``)."""
        if self.listener is None:
            return action()
        start = self.listener.begin(step)
        result = action()
        self.casts[step] = self.listener.collect(start)
        log(f'{step}: {len(self.casts[step])} cast(s): '
            + ', '.join(f'{m["method"]}@{m["exchange"]}' for m in self.casts[step]))
        return result

    # -- phases -----------------------------------------------------------------
    def run(self) -> None:
        self.server.start()
        self.api = neutron_server.Client(self.server.values['api_url'], self.project_id)
        self.transport_url = self.server.values['transport_url']
        self.rpc_log = os.path.join(self.server.values['state_dir'], 'log', 'rpc.log')
        facts = neutron_facts()
        self.nversion, self.nlib_version = facts['neutron'], facts['neutron_lib']
        self.resource_versions = facts['resource_versions']
        self.ml2 = self.server.ml2_config()
        self.mech_drivers = self.ml2['mechanism_drivers']
        self.physnet = self.server.flat_networks()[0]
        try:
            self.cleanup_leftovers()
            self.setup_rpc()
            if self.args.only == 'l3':
                self.l3 = L3Capture(self)
                self.l3.run()
                self.write_files()
                return
            self.start_agents()
            if self.args.only == 'get_ports':
                self.build_scenario()
                self.capture_get_ports()
                self.teardown_scenario()
                self.write_files()
                return
            self.listener = CastListener(self.transport_url, self.resource_versions)
            self.build_scenario()
            self.capture_details()
            self.capture_sg_info()
            self.capture_device_list()
            # Its set-up and teardown casts are kept out of the next steps.
            self.casts_of('get_ports scenario (extra networks and ports; not analysed)',
                          self.capture_get_ports)
            self.capture_cast_scenario()
            self.teardown_scenario()
            self.exchanges_after = self.list_exchanges()
            self.l3 = L3Capture(self)
            self.l3.run()
            self.write_files()
        finally:
            self.cleanup()
            if self.server.started and not self.args.keep_server:
                self.server.stop()

    def list_exchanges(self) -> list[str]:
        proc = subprocess.run(['rabbitmqctl', '-q', 'list_exchanges', '-p', self.args.vhost,
                               'name', 'type'], capture_output=True, text=True)
        return sorted(line.split()[0] for line in proc.stdout.splitlines()
                      if line.split() and not line.startswith('amq.')
                      and line.split()[0] not in ('name', 'direct', 'topic', 'fanout'))

    def cleanup_leftovers(self) -> None:
        """Resources and agents of an interrupted earlier run (``akcap-`` names)."""
        old = [n for n in self.list('networks') if n['name'].startswith(NAME_PREFIX)]
        routers = [r for r in self.list('routers') if r['name'].startswith(NAME_PREFIX)]
        old_ids = {n['id'] for n in old}
        for fip in self.list('floatingips'):
            if fip['floating_network_id'] in old_ids or (
                    fip.get('description') or '').startswith(NAME_PREFIX):
                self.api.delete('floatingips', fip['id'])
        for r in routers:
            self._delete_router(r['id'])
        # The HA network the server made for an HA router's project.
        ha_names = {f'HA network tenant {r["project_id"]}' for r in routers}
        old += [n for n in self.list('networks') if n['name'] in ha_names]
        for n in old:
            for p in self.api.list_ports(network_id=n['id']):
                self.api.delete('ports', p['id'])
            self.api.delete('networks', n['id'])
        for sg in self.list('security-groups'):
            if sg['name'].startswith(NAME_PREFIX):
                self.api.delete('security-groups', sg['id'])
        for ag in self.list('address-groups'):
            if ag['name'].startswith(NAME_PREFIX):
                self.api.delete('address-groups', ag['id'])
        for agent in self.api.list_agents():
            if agent['host'].startswith(NAME_PREFIX):
                self.api.delete('agents', agent['id'])
        if old or routers:
            log(f'removed leftovers of an earlier run: {len(old)} network(s), '
                f'{len(routers)} router(s)')

    def setup_rpc(self) -> None:
        cfg.CONF([], project='agentkit-capture', default_config_files=[])
        rpc_transport.set_defaults(cfg.CONF)  # control_exchange 'neutron'
        self.transport = oslo_messaging.get_rpc_transport(cfg.CONF, url=self.transport_url)
        self.rpc = PluginRpc(self.transport)

    def ovs_agent_state(self, host: str, bridge_mappings: dict[str, str] | None = None
                        ) -> dict[str, Any]:
        """An ``Open vSwitch agent`` report as agentkit's L2 agent sends it."""
        return {
            'binary': 'agentkit-l2', 'host': host, 'topic': 'N/A',
            'agent_type': 'Open vSwitch agent', 'availability_zone': 'nova',
            'configurations': {**self._l2_common(), 'mechanism_driver': 'openvswitch',
                               'bridge_mappings': dict(bridge_mappings or {}),
                               'integration_bridge': 'br-int',
                               'datapath_type': 'system', 'ovs_hybrid_plug': True,
                               'arp_responder_enabled': False,
                               'enable_distributed_routing': False,
                               'in_distributed_mode': False,
                               'baremetal_smartnic': False,
                               'vhostuser_socket_dir': '/var/run/openvswitch',
                               'ovs_capabilities': {
                                   'datapath_types': ['netdev', 'system'],
                                   'iface_types': ['geneve', 'gre', 'internal',
                                                   'patch', 'vxlan']}},
            # What neutron's own OVS agent reports: so the server also
            # pushes versioned objects (neutron-vo-*) to it.
            'resource_versions': dict(self.resource_versions)}

    @staticmethod
    def _l2_common() -> dict[str, Any]:
        return {'tunnel_types': ['vxlan'], 'tunneling_ip': '127.0.0.1',
                'network_types': ['flat', 'vlan', 'vxlan'], 'extensions': [],
                'devices': 0, 'log_agent_heartbeats': False, 'l2_population': False}

    def start_agents(self) -> None:
        """Report state as agentkit's L2 agent would, for both switch types."""
        states = {
            self.ovs_host: self.ovs_agent_state(self.ovs_host),
            self.lb_host: {
                'binary': 'agentkit-l2', 'host': self.lb_host, 'topic': 'N/A',
                'agent_type': 'Linux bridge agent', 'availability_zone': 'nova',
                'configurations': {**self._l2_common(), 'mechanism_driver': 'linuxbridge',
                                   'interface_mappings': {}, 'bridge_mappings': {}}},
        }
        self.agent_states = states
        agents = self.report_agents(list(states.values()))
        self.ids['agents'] = {h: {'id': a['id'], 'agent_type': a['agent_type']}
                              for (h, _), a in agents.items()}
        log(f'fake agents alive: {self.ovs_host} (OVS), {self.lb_host} (Linux bridge)')

    def report_agents(self, states: list[dict[str, Any]]
                      ) -> dict[tuple[str, str], dict[str, Any]]:
        """Report each ``agent_state`` every 10 s from now on; returns the
        server's agents by (host, agent_type) once all are alive."""
        for state in states:
            reporter = state_report.StateReporter(
                report_api.ReportStateApi(self.transport, state['host']),
                lambda state=state: state, interval=lambda: 10)
            if not reporter.report_once():
                raise RuntimeError(f'report_state for {state["host"]} failed')
            reporter.start()
            self.reporters.append(reporter)
        wanted = {(s['host'], s['agent_type']) for s in states}
        deadline = time.monotonic() + 60
        while True:
            agents = {(a['host'], a['agent_type']): a for a in self.api.list_agents()
                      if (a['host'], a['agent_type']) in wanted}
            if len(agents) == len(wanted) and all(a['alive'] for a in agents.values()):
                return agents
            if time.monotonic() > deadline:
                raise RuntimeError(f'fake agents not alive: {agents}')
            time.sleep(0.5)

    def build_scenario(self) -> None:
        t = self.tag
        net = self.casts_of('network create', lambda: self.post(
            'networks', 'network', name=f'{t}-net'))
        self.ids['network_id'] = net['id']
        self.rest['network'] = net
        s4 = self.casts_of('network: IPv4 subnet create', lambda: self.post(
            'subnets', 'subnet', name=f'{t}-v4', network_id=net['id'], ip_version=4,
            cidr=self.v4_cidr, enable_dhcp=True))
        s6 = self.casts_of('network: IPv6 subnet create', lambda: self.post(
            'subnets', 'subnet', name=f'{t}-v6', network_id=net['id'], ip_version=6,
            cidr=self.v6_cidr, ipv6_address_mode='slaac', ipv6_ra_mode='slaac'))
        self.ids['subnet_v4_id'], self.ids['subnet_v6_id'] = s4['id'], s6['id']
        self.rest['subnets'] = {'v4': s4, 'v6': s6}

        # Groups. Creating the first group of a project also creates its
        # 'default' group.
        custom = self.casts_of('security group create', lambda: self.post(
            'security-groups', 'security_group', name=f'{t}-custom'))
        stateless = self.post('security-groups', 'security_group',
                              name=f'{t}-stateless', stateful=False)
        defaults = self.list('security-groups', project_id=self.project_id, name='default')
        if len(defaults) != 1:
            raise RuntimeError(f'expected one default group, got {defaults}')
        default = defaults[0]
        self.created.append(('security-groups', default['id']))
        self.ids['security_groups'] = {'default': default['id'], 'custom': custom['id'],
                                       'stateless': stateless['id']}
        ag = self.post('address-groups', 'address_group', name=f'{t}-ag',
                       addresses=['192.0.2.0/28', '198.51.100.7/32'])
        self.ids['address_group_id'] = ag['id']
        self.rest['address_group'] = ag

        def rule(name: str, sg: str, **attrs: Any) -> dict[str, Any]:
            attrs.setdefault('ethertype', 'IPv4')
            r = self.casts_of(f'rule create: {name}', lambda: self.post(
                'security-group-rules', 'security_group_rule',
                security_group_id=sg, **attrs))
            self.ids.setdefault('rules', {})[name] = r['id']
            self.rest['security_group_rules'][name] = r
            return r

        c, d, s = custom['id'], default['id'], stateless['id']
        rule('tcp 22 from 0.0.0.0/0', c, direction='ingress', protocol='tcp',
             port_range_min=22, port_range_max=22, remote_ip_prefix='0.0.0.0/0')
        rule('tcp 8000-8080 from 10.20.0.0/16', c, direction='ingress', protocol='tcp',
             port_range_min=8000, port_range_max=8080, remote_ip_prefix='10.20.0.0/16')
        rule('tcp 9000 from 10.30.1.7/16 (not normalised)', c, direction='ingress',
             protocol='tcp', port_range_min=9000, port_range_max=9000,
             remote_ip_prefix='10.30.1.7/16')
        rule('icmp from default group', c, direction='ingress', protocol='icmp',
             remote_group_id=d)
        rule('icmp type 8 code 0', c, direction='ingress', protocol='icmp',
             port_range_min=8, port_range_max=0)
        rule('egress udp 53 to 10.0.0.0/8', c, direction='egress', protocol='udp',
             port_range_min=53, port_range_max=53, remote_ip_prefix='10.0.0.0/8')
        rule('ipv6-icmp ingress', c, direction='ingress', ethertype='IPv6',
             protocol='ipv6-icmp')
        rule('protocol 132 (sctp) by number', c, direction='ingress', protocol='132',
             port_range_min=3868, port_range_max=3868)
        rule('tcp 443 from address group', c, direction='ingress', protocol='tcp',
             port_range_min=443, port_range_max=443, remote_address_group_id=ag['id'])
        rule('stateless ingress tcp 80', s, direction='ingress', protocol='tcp',
             port_range_min=80, port_range_max=80, remote_ip_prefix='0.0.0.0/0')
        rule('stateless egress udp 123', s, direction='egress', protocol='udp',
             port_range_min=123, port_range_max=123, remote_ip_prefix='192.0.2.0/24')
        for name, sg_id in self.ids['security_groups'].items():
            self.rest['security_groups'][name] = self.show(
                'security-groups', sg_id)

        # Ports.
        def port(name: str, **attrs: Any) -> dict[str, Any]:
            attrs.setdefault('network_id', net['id'])
            attrs.setdefault('device_owner', 'compute:nova')
            attrs.setdefault('device_id', str(uuid.uuid4()))
            attrs.setdefault('binding:host_id', self.ovs_host)
            p = self.casts_of(f'port create: {name}', lambda: self.post(
                'ports', 'port', name=f'{t}-{name}', **attrs))
            self.ids['ports'][name] = p['id']
            return p

        port('A', security_groups=[d], allowed_address_pairs=[
            {'ip_address': f'{self.v4_base}.200'},
            {'ip_address': f'{self.v4_base}.128/28', 'mac_address': 'fa:16:3e:aa:bb:cc'}])
        port('B', security_groups=[c, d])
        port('C', port_security_enabled=False, security_groups=[])
        port('D', security_groups=[s])
        port('E_linuxbridge', security_groups=[d], **{'binding:host_id': self.lb_host})
        port('dhcp', device_owner='network:dhcp',
             device_id=f'dhcp{uuid.uuid5(uuid.NAMESPACE_DNS, self.ovs_host)}-{net["id"]}')
        # A router interface, bound to the OVS host as the L3 agent's
        # scheduling would do.
        router = self.post('routers', 'router', name=f'{t}-router')
        self.router_id = router['id']
        self.created.remove(('routers', router['id']))  # removed by _delete_router
        self.ids['router_id'] = router['id']
        iface = self.casts_of('router interface add', lambda: self.api.add_router_interface(
            router['id'], s4['id']))
        self.ids['ports']['router_interface'] = iface['port_id']
        self.casts_of('router interface port bound to the OVS host', lambda: self.put(
            'ports', 'port', iface['port_id'], **{'binding:host_id': self.ovs_host}))

        for name, pid in self.ids['ports'].items():
            self.rest['ports'][name] = self.api.show_port(pid)
        bad = {n: p['binding:vif_type'] for n, p in self.rest['ports'].items()
               if p['binding:vif_type'] in ('binding_failed', 'unbound')}
        if bad:
            raise RuntimeError(f'ports not bound: {bad} (mechanism drivers '
                               f'{self.mech_drivers})')
        log('scenario built: ' + ', '.join(f'{n}={p["binding:vif_type"]}'
                                           for n, p in self.rest['ports'].items()))

    def _log_mark(self) -> int:
        try:
            return os.path.getsize(self.rpc_log)
        except OSError:
            return 0

    def _log_since(self, offset: int) -> list[str]:
        """neutron's own INFO/WARNING/ERROR lines in rpc.log since ``offset``
        (timestamp, pid and request context cut off)."""
        try:
            with open(self.rpc_log, errors='replace') as f:
                f.seek(offset)
                lines = f.read().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            parts = line.split(' ', 4)  # date time pid LEVEL rest
            if len(parts) == 5 and parts[3] in ('INFO', 'WARNING', 'ERROR') \
                    and parts[4].startswith('neutron.'):
                logger, _, rest = parts[4].partition(' ')
                if rest.startswith('['):
                    rest = rest.split('] ', 1)[-1]
                out.append(f'{parts[3]} {logger} {rest}')
        return out

    def _casts_during(self, start: int) -> list[dict[str, Any]]:
        msgs = self.listener.collect(start)
        self.casts[self.listener.step] = msgs
        return [ovo_summary(m) if is_ovo(m) else
                {k: v for k, v in m.items() if k != 'context'} for m in msgs]

    def statuses(self) -> dict[str, str]:
        return {n: self.api.show_port(pid)['status'] for n, pid in self.ids['ports'].items()}

    def _details(self, label: str, devices: list[str], host: str) -> None:
        agent_id = f'agentkit-l2-{host}'
        start = self.listener.begin(f'RPC details: {label}')
        mark = self._log_mark()
        rec = self.rpc.call('1.5', 'get_devices_details_list_and_failed_devices',
                            devices=devices, agent_id=agent_id, host=host)
        rec['casts_during_call'] = self._casts_during(start)
        rec['server_log'] = self._log_since(mark)
        rec['port_status_after'] = self.statuses()
        self.results.setdefault('details', {})[label] = rec

    def capture_details(self) -> None:
        p = self.ids['ports']
        self.port_status['before any RPC'] = self.statuses()
        ovs_ports = ['A', 'B', 'C', 'D', 'dhcp', 'router_interface']
        self._details('full port ids, OVS host', [p[n] for n in ovs_ports], self.ovs_host)
        self._details('11-char port id prefixes (id[:11]), OVS host',
                      [p[n][:11] for n in ('A', 'B')], self.ovs_host)
        self._details('tap<id[:11]> device names, OVS host',
                      ['tap' + p[n][:11] for n in ('A', 'B')], self.ovs_host)
        self._details('unknown port id', [str(uuid.uuid4())], self.ovs_host)
        self._details('compute port asked by a host it is not bound to',
                      [p['A']], self.other_host)
        self._details('Linux bridge port: full id, id[:11] and tap<id[:11]>, LB host',
                      [p['E_linuxbridge'], p['E_linuxbridge'][:11],
                       'tap' + p['E_linuxbridge'][:11]], self.lb_host)

    def _sg_info(self, label: str, devices: list[str], call_version: str | None) -> None:
        kwargs: dict[str, Any] = {'devices': devices}
        if call_version:
            kwargs['call_version'] = call_version
        # SecurityGroupServerRpcApi: prepare(version='1.3') + call_version='1.3'.
        rpc_version = call_version or '1.2'
        mark = self._log_mark()
        rec = self.rpc.call(rpc_version, 'security_group_info_for_devices', **kwargs)
        time.sleep(0.5)  # let the server flush its log
        rec['server_log'] = self._log_since(mark)
        key = 'sg_info_1.3' if call_version == '1.3' else 'sg_info_1.2'
        self.results.setdefault(key, {})[label] = rec

    def capture_sg_info(self) -> None:
        p = self.ids['ports']
        names = ['A', 'B', 'C', 'D', 'dhcp']
        self._sg_info('full port ids: A, B, C, D, dhcp', [p[n] for n in names], '1.3')
        self._sg_info('tap<id[:11]> device names: A, B, C, D, dhcp, E_linuxbridge',
                      ['tap' + p[n][:11] for n in names + ['E_linuxbridge']], '1.3')
        self._sg_info('bare id[:11] prefixes: A, B', [p[n][:11] for n in ('A', 'B')], '1.3')
        self._sg_info('router interface port and an unknown port id',
                      [p['router_interface'], str(uuid.uuid4())], '1.3')
        self._sg_info('full port ids: A, B, C, D, dhcp (1.2: no call_version)',
                      [p[n] for n in names], None)

    def _device_list(self, label: str, host: str, up: list[str], down: list[str]) -> None:
        start = self.listener.begin(f'RPC update_device_list: {label}')
        mark = self._log_mark()
        rec = self.rpc.call('1.9', 'update_device_list', devices_up=up, devices_down=down,
                            agent_id=f'agentkit-l2-{host}', host=host,
                            refresh_tunnels=False)
        rec['casts_during_call'] = self._casts_during(start)
        rec['server_log'] = self._log_since(mark)
        rec['port_status_after'] = self.statuses()
        self.results.setdefault('device_list', {})[label] = rec

    def capture_device_list(self) -> None:
        p = self.ids['ports']
        unknown = str(uuid.uuid4())
        self._device_list('up: A, B, D (full ids) and an unknown id', self.ovs_host,
                          [p['A'], p['B'], p['D'], unknown], [])
        self._device_list('down: A (full id) and an unknown id', self.ovs_host,
                          [], [p['A'], unknown])
        self._device_list('up: A by a host it is not bound to', self.other_host,
                          [p['A']], [])
        self._device_list('down: B by a host it is not bound to', self.other_host,
                          [], [p['B']])
        self._device_list('up: Linux bridge port as id[:11], LB host', self.lb_host,
                          [p['E_linuxbridge'][:11]], [])
        self._device_list('up and down in one call: A up, D down', self.ovs_host,
                          [p['A']], [p['D']])

    def _get_ports(self, label: str, filters: dict[str, Any]) -> None:
        # MetadataPluginAPI (BasePluginApi.get_ports): prepare(version='1.0'),
        # call 'get_ports' with the one kwarg 'filters'.
        mark = self._log_mark()
        rec = self.rpc.call('1.0', 'get_ports', filters=filters)
        time.sleep(0.3)  # let the server flush its log
        rec['server_log'] = self._log_since(mark)
        self.results.setdefault('get_ports', {})[label] = rec

    def capture_get_ports(self) -> None:
        """neutron-metadata-agent's two lookups and their edge cases.

        A second network (net2) is attached to the router, so the router
        lookup finds two interfaces; a third one (net3), not attached, reuses
        the first network's CIDR and has a port with A's IPv4 address, so the
        network filter is what tells the two apart.
        """
        t = self.tag
        p = self.ids['ports']
        net1 = self.ids['network_id']
        a = self.api.show_port(p['A'])
        a_v4 = next(ip['ip_address'] for ip in a['fixed_ips'] if ':' not in ip['ip_address'])
        a_v6 = next(ip['ip_address'] for ip in a['fixed_ips'] if ':' in ip['ip_address'])
        dhcp = self.api.show_port(p['dhcp'])
        dhcp_v4 = next(ip['ip_address'] for ip in dhcp['fixed_ips']
                       if ':' not in ip['ip_address'])
        c2 = random.randint(1, 250)
        v4_cidr2 = f'172.{16 + c2 % 16}.{c2}.0/24'
        net2 = self.post('networks', 'network', name=f'{t}-md-net2')
        s2 = self.post('subnets', 'subnet', name=f'{t}-md-v4b', network_id=net2['id'],
                       ip_version=4, cidr=v4_cidr2, enable_dhcp=False)
        iface2 = self.api.add_router_interface(self.router_id, s2['id'])
        net3 = self.post('networks', 'network', name=f'{t}-md-net3')
        s3 = self.post('subnets', 'subnet', name=f'{t}-md-v4c', network_id=net3['id'],
                       ip_version=4, cidr=self.v4_cidr, enable_dhcp=False)
        g = self.post('ports', 'port', name=f'{t}-md-G', network_id=net2['id'],
                      device_owner='compute:nova', device_id=str(uuid.uuid4()))
        twin = self.post('ports', 'port', name=f'{t}-md-twin', network_id=net3['id'],
                         device_owner='compute:nova', device_id=str(uuid.uuid4()),
                         fixed_ips=[{'subnet_id': s3['id'], 'ip_address': a_v4}])
        g_v4 = g['fixed_ips'][0]['ip_address']
        ids = {'network_2': net2['id'], 'subnet_2': s2['id'], 'network_3': net3['id'],
               'subnet_3': s3['id'], 'router_interface_2': iface2['port_id'],
               'G': g['id'], 'twin_of_A_on_network_3': twin['id'],
               'addresses': {'A_v4': a_v4, 'A_v6': a_v6, 'A_mac': a['mac_address'],
                             'G_v4': g_v4, 'dhcp_v4': dhcp_v4}}
        self.ids['get_ports'] = ids
        router = self.router_id
        routed = [net1, net2['id']]
        self._get_ports('router interfaces (device_id + ROUTER_INTERFACE_OWNERS)',
                        {'device_id': [router], 'device_owner': ROUTER_INTERFACE_OWNERS})
        self._get_ports('router interfaces of an unknown router',
                        {'device_id': [str(uuid.uuid4())],
                         'device_owner': ROUTER_INTERFACE_OWNERS})
        self._get_ports('router networks + fixed_ips: A\'s IPv4 address',
                        {'network_id': routed, 'fixed_ips': {'ip_address': [a_v4]}})
        self._get_ports('router networks + fixed_ips: G\'s address (second network)',
                        {'network_id': routed, 'fixed_ips': {'ip_address': [g_v4]}})
        self._get_ports('network + fixed_ips: A\'s IPv4 address',
                        {'network_id': [net1], 'fixed_ips': {'ip_address': [a_v4]}})
        self._get_ports('network + fixed_ips: A\'s IPv6 (SLAAC) address',
                        {'network_id': [net1], 'fixed_ips': {'ip_address': [a_v6]}})
        self._get_ports('network + fixed_ips: the DHCP port\'s address',
                        {'network_id': [net1], 'fixed_ips': {'ip_address': [dhcp_v4]}})
        self._get_ports('network + fixed_ips: an address no port has (matches nothing)',
                        {'network_id': [net1],
                         'fixed_ips': {'ip_address': [f'{self.v4_base}.251']}})
        self._get_ports('network + fixed_ips: A\'s allowed address pair .200',
                        {'network_id': [net1],
                         'fixed_ips': {'ip_address': [f'{self.v4_base}.200']}})
        self._get_ports('network 3 + fixed_ips: A\'s IPv4 address (the twin)',
                        {'network_id': [net3['id']], 'fixed_ips': {'ip_address': [a_v4]}})
        self._get_ports('fixed_ips: A\'s IPv4 address, no network filter',
                        {'fixed_ips': {'ip_address': [a_v4]}})
        self._get_ports('empty network_id list + fixed_ips: A\'s IPv4 address',
                        {'network_id': [], 'fixed_ips': {'ip_address': [a_v4]}})
        self._get_ports('network + mac_address: A\'s MAC (IPv6 link-local lookup)',
                        {'network_id': [net1], 'mac_address': [a['mac_address']]})
        self._get_ports('network + mac_address: A\'s MAC in upper case',
                        {'network_id': [net1], 'mac_address': [a['mac_address'].upper()]})
        # Every port the filters above could have matched, as REST shows it.
        self.rest['get_ports'] = sorted(
            (port for net in (net1, net2['id'], net3['id'])
             for port in self.api.list_ports(network_id=net)), key=lambda q: q['id'])
        for port_id in (g['id'], twin['id']):
            self.delete('ports', port_id)
        self.api.remove_router_interface(router, s2['id'])
        for collection, id_ in (('subnets', s2['id']), ('networks', net2['id']),
                                ('subnets', s3['id']), ('networks', net3['id'])):
            self.delete(collection, id_)

    def capture_cast_scenario(self) -> None:
        t = self.tag
        sgs = self.ids['security_groups']
        c = sgs['custom']
        r = self.casts_of('rule create (custom group, ports bound)', lambda: self.post(
            'security-group-rules', 'security_group_rule', security_group_id=c,
            direction='ingress', ethertype='IPv4', protocol='tcp', port_range_min=5000,
            port_range_max=5001, remote_ip_prefix='203.0.113.0/24'))
        self.ids.setdefault('rules', {})['cast scenario: tcp 5000-5001'] = r['id']
        self.casts_of('rule delete (custom group)',
                      lambda: self.delete('security-group-rules', r['id']))
        f = self.casts_of('port create: F compute port in the custom group', lambda: self.post(
            'ports', 'port', name=f'{t}-F', network_id=self.ids['network_id'],
            device_owner='compute:nova', device_id=str(uuid.uuid4()),
            security_groups=[c], **{'binding:host_id': self.ovs_host}))
        self.ids['ports']['F'] = f['id']
        self.rest['ports']['F (as created)'] = f
        self.casts_of('port update: F security_groups [custom] -> [custom, default]',
                      lambda: self.put('ports', 'port', f['id'],
                                       security_groups=[c, sgs['default']]))
        self.casts_of('port update: F allowed_address_pairs [] -> [one]',
                      lambda: self.put('ports', 'port', f['id'], allowed_address_pairs=[
                          {'ip_address': f'{self.v4_base}.210'}]))
        self.casts_of('port update: F name only', lambda: self.put(
            'ports', 'port', f['id'], name=f'{t}-F-renamed'))
        self.casts_of('port update: F admin_state_up false',
                      lambda: self.put('ports', 'port', f['id'], admin_state_up=False))
        self.casts_of('port delete: F', lambda: self.delete('ports', f['id']))
        self.ids['ports']['F (deleted)'] = self.ids['ports'].pop('F')
        ag = self.ids['address_group_id']
        self.casts_of('address group add_addresses', lambda: self.api.request(
            'PUT', f'/v2.0/address-groups/{ag}/add_addresses',
            {'addresses': ['203.0.113.9/32']}))
        tmp = self.casts_of('security group create (unused group)', lambda: self.post(
            'security-groups', 'security_group', name=f'{t}-tmp'))
        self.ids['security_groups']['tmp (deleted)'] = tmp['id']
        self.casts_of('security group delete (unused group)',
                      lambda: self.delete('security-groups', tmp['id']))

    def teardown_scenario(self) -> None:
        """Delete the scenario; network delete's cast is recorded."""
        for name in ('A', 'B', 'C', 'D', 'E_linuxbridge', 'dhcp'):
            self.casts_of(f'teardown: port delete {name}',
                          lambda: self.delete('ports', self.ids['ports'][name]))
        self.casts_of('teardown: router interface remove', lambda: self._delete_router(
            self.router_id))
        self.router_id = None
        self.casts_of('network delete', lambda: self.delete('networks',
                                                            self.ids['network_id']))

    def _delete_router(self, router_id: str) -> None:
        router = self.api.request('GET', f'/v2.0/routers/{router_id}', ok=(200, 404))
        if not router:
            return
        for p in self.api.list_ports(device_id=router_id):
            if p['device_owner'] in ROUTER_INTERFACE_OWNERS:
                for ip in p['fixed_ips']:
                    self.api.remove_router_interface(router_id, ip['subnet_id'])
        self.api.delete('routers', router_id)

    def cleanup(self) -> None:
        errors = []
        try:
            if self.router_id:
                self._delete_router(self.router_id)
            order = ['ports', 'routers', 'subnets', 'networks', 'security-group-rules',
                     'security-groups', 'address-groups']
            for collection in order:
                for col, id_ in reversed(list(self.created)):
                    if col == collection:
                        try:
                            self.api.delete(col, id_)
                        except Exception as exc:  # noqa: BLE001
                            errors.append(f'{col}/{id_}: {exc}')
            for agent in self.api.list_agents():
                if agent['host'] in (self.ovs_host, self.lb_host):
                    self.api.delete('agents', agent['id'])
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))
        for reporter in self.reporters:
            reporter.stop()
        # Last: the server publishes to the exchanges our queues keep alive
        # (auto-delete) as long as it has something to say.
        if self.listener is not None:
            self.listener.close()
        if self.transport is not None:
            self.transport.cleanup()
        if errors:
            log('cleanup problems: ' + '; '.join(errors))
        else:
            log('cleaned up everything created through the REST API')

    # -- output -------------------------------------------------------------------
    def meta(self, what: str, **extra: Any) -> dict[str, Any]:
        return {
            'what': what,
            'neutron_version': self.nversion,
            'neutron_lib_version': self.nlib_version,
            'captured_at': self.captured_at,
            'produced_by': '.venv/bin/python tools/capture-neutron-contract.py',
            'server': {'ml2_conf.ini': self.ml2,
                       'rpc': 'oslo.messaging rabbit, control exchange "neutron"',
                       'started_by': 'tools/neutron-server.sh (noauth, rpc_workers 1)'},
            **extra,
            'ids': self.ids,
        }

    def write_files(self) -> None:
        self.captured_at = now_iso()
        out = self.args.out
        os.makedirs(out, exist_ok=True)
        if self.args.only == 'get_ports':
            self._write(out, {'get_ports.json': self.get_ports_file()})
            return
        if self.args.only == 'l3':
            self._write(out, self.l3.files())
            return
        port_desc = {
            'A': 'compute:nova on the OVS host; default group; allowed_address_pairs '
                 '[.200, .128/28 with mac fa:16:3e:aa:bb:cc]',
            'B': 'compute:nova on the OVS host; custom + default groups',
            'C': 'compute:nova on the OVS host; port_security_enabled false, no groups',
            'D': 'compute:nova on the OVS host; stateless group',
            'E_linuxbridge': 'compute:nova on the Linux bridge host; default group',
            'dhcp': 'network:dhcp on the OVS host (a trusted port)',
            'router_interface': 'network:router_interface of the router on the IPv4 '
                                'subnet, binding:host_id set to the OVS host (trusted)',
            'F (deleted)': 'compute:nova, created/updated/deleted in the cast scenario',
        }
        files: dict[str, Any] = {}
        files['scenario.json'] = {
            '_capture': self.meta(
                'The scenario the other files were captured from: REST representations '
                '(GET after creation) of the network, subnets, groups, rules, address '
                'group and ports, and the fake agents\' report_state agent_state.',
                port_roles=port_desc),
            'agent_states': self.agent_states,
            'port_status_before_any_rpc': self.port_status['before any RPC'],
            'rest': self.rest,
        }

        def calls_file(what: str, key: str, method: str, version: str, note: str) -> dict:
            return {'_capture': self.meta(what, method=method, rpc_version=version,
                                          topic=PLUGIN_TOPIC, note=note, port_roles=port_desc),
                    'calls': self.results[key]}

        files['get_devices_details_list_and_failed_devices.json'] = calls_file(
            'Replies of get_devices_details_list_and_failed_devices', 'details',
            'get_devices_details_list_and_failed_devices', '1.5',
            'Called as neutron-openvswitch-agent does: prepare(version="1.5"), kwargs '
            'devices, agent_id, host. port_status_after: the ports\' REST status after '
            'the call; casts_during_call: casts the server sent meanwhile; server_log: '
            'neutron\'s INFO/WARNING/ERROR lines in neutron-rpc-server\'s log meanwhile.')
        files['security_group_info_for_devices-1.3.json'] = calls_file(
            'Replies of security_group_info_for_devices, RPC 1.3', 'sg_info_1.3',
            'security_group_info_for_devices', '1.3',
            'Called as neutron.api.rpc.handlers.securitygroups_rpc.SecurityGroupServerRpcApi '
            'does: prepare(version="1.3"), kwargs devices and call_version="1.3". '
            'server_log: neutron\'s INFO/WARNING/ERROR lines in neutron-rpc-server\'s '
            'log meanwhile.')
        files['security_group_info_for_devices-1.2.json'] = calls_file(
            'Reply of security_group_info_for_devices, RPC 1.2 (no call_version)',
            'sg_info_1.2', 'security_group_info_for_devices', '1.2',
            'prepare(version="1.2"), kwargs devices only: the server treats the caller '
            'as 1.2 and logs a WARNING about inconsistent versions.')
        files['update_device_list.json'] = calls_file(
            'Replies of update_device_list', 'device_list', 'update_device_list', '1.9',
            'Called as neutron-openvswitch-agent does: prepare(version="1.9"), kwargs '
            'devices_up, devices_down, agent_id, host, refresh_tunnels. '
            'port_status_after, casts_during_call, server_log as in '
            'get_devices_details_list_and_failed_devices.json.')

        how = ('exclusive queues bound to the fanout exchanges (declared fanout, '
               'non-durable, auto-delete, as oslo.messaging does); each cast is the '
               'oslo.messaging 2.0 envelope\'s inner message: method, version, '
               'namespace (only when the message has one), args, and its _context_* and '
               '_unique_id keys under "context". A step holds '
               'every cast received from the start of the action until the server had '
               f'been quiet for {SETTLE:.0f} s (at least {MIN_WINDOW:.0f} s).')
        listened = [f'{t}_fanout' for t in self.listener.topics]

        def casts_file(what: str, pred) -> dict:
            steps = {k: {'casts': [m for m in v if not is_ovo(m)],
                         'ovo_pushes (summary; full in casts-ovo-push.json)':
                             [ovo_summary(m) for m in v if is_ovo(m)]}
                     for k, v in self.casts.items() if pred(k)}
            return {'_capture': self.meta(what, listened_exchanges=listened, how=how,
                                          port_roles=port_desc),
                    'steps': steps}

        sg_steps = ('rule create', 'rule delete', 'security group', 'address group')
        files['casts-security-groups.json'] = casts_file(
            'Casts for security group, rule and address group changes (incl. the '
            'scenario set-up)', lambda k: k.startswith(sg_steps))
        files['casts-ports.json'] = casts_file(
            'Casts for port create/update/delete and the router interface',
            lambda k: k.startswith(('port ', 'router', 'teardown: port',
                                    'teardown: router')))
        files['casts-network.json'] = casts_file(
            'Casts for network and subnet create, and network delete',
            lambda k: k.startswith('network'))
        files['casts-ovo-push.json'] = {
            '_capture': self.meta(
                'Versioned-object pushes (method "push" on neutron-vo-<type>-<version>'
                '_fanout) per step, in full', listened_exchanges=listened, how=how,
                port_roles=port_desc),
            'steps': {k: [m for m in v if is_ovo(m)] for k, v in self.casts.items()}}
        files['casts-all-steps.json'] = {
            '_capture': self.meta(
                'Every step of the run in order with a summary of the casts received in '
                'it, and the exchanges on the vhost at the end that this script did not '
                'declare (the server declares a fanout exchange when it publishes to it, '
                'so one it published to but nobody listened on shows there).',
                listened_exchanges=listened, other_exchanges_after=sorted(
                    set(self.exchanges_after) - set(listened))),
            'steps': {k: [ovo_summary(m) if is_ovo(m) else
                          {'exchange': m['exchange'], 'method': m['method'],
                           'version': m['version'], 'args': m['args']} for m in v]
                      for k, v in self.casts.items()}}
        files['get_ports.json'] = self.get_ports_file()
        files.update(self.l3.files())
        self._write(out, files)

    def get_ports_file(self) -> dict[str, Any]:
        return {
            '_capture': self.meta(
                'Replies of get_ports as neutron-metadata-agent calls it', method='get_ports',
                rpc_version='1.0', topic=PLUGIN_TOPIC,
                note='Called as neutron.agent.metadata.agent.MetadataPluginAPI does '
                     '(BasePluginApi.get_ports): topic q-plugin, no namespace, '
                     'prepare(version="1.0"), the one kwarg "filters". Router lookup: '
                     'device_id [router] + device_owner ROUTER_INTERFACE_OWNERS; port '
                     'lookup: network_id [networks] + fixed_ips {ip_address: [ip]} (or '
                     'mac_address [mac] for an IPv6 link-local source). ids.get_ports: '
                     'network_2 is behind the router too; network_3 is not and reuses the '
                     'first network\'s CIDR, with a port ("twin") holding A\'s IPv4 '
                     'address. rest_ports: every port of the three networks (GET '
                     '/v2.0/ports?network_id=...) right after the calls. server_log: '
                     'neutron\'s INFO/WARNING/ERROR lines in neutron-rpc-server\'s log '
                     'meanwhile.'),
            'calls': self.results['get_ports'],
            'rest_ports': self.rest['get_ports'],
        }

    def _write(self, out: str, files: dict[str, Any]) -> None:
        for name, content in files.items():
            path = os.path.join(out, name)
            with open(path, 'w') as f:
                json.dump(content, f, indent=2, ensure_ascii=False)
                f.write('\n')
            log(f'wrote {os.path.relpath(path, ROOT)}')


# -- the L3 agent's contract ---------------------------------------------------------
L3_PLUGIN_TOPIC = 'q-l3-plugin'
L3_AGENT_TOPIC = 'l3_agent'
NETWORK_UPDATE_TOPIC = 'q-agent-notifier-network-update'
# The methods Neutron's L3 agent serves on l3_agent (L3NATAgent, API 1.x).
L3_AGENT_METHODS = ('routers_updated', 'router_deleted', 'router_added_to_agent',
                    'router_removed_from_agent', 'agent_updated',
                    'fipnamespace_delete_on_ext_net', 'add_arp_entry', 'del_arp_entry',
                    'network_update')


def is_l3_message(msg: dict[str, Any]) -> bool:
    """A message for the L3 agent: on its topic (any form) or network_update."""
    return ((msg.get('routing_key') or '').startswith(L3_AGENT_TOPIC)
            or msg.get('exchange') in (f'{L3_AGENT_TOPIC}_fanout',
                                       f'{NETWORK_UPDATE_TOPIC}_fanout'))


class FakeL3AgentEndpoint:
    """Answers what the server sends the fake L3 agent's queues.

    router_added_to_agent is an RPC *call* (the server waits for the answer
    and retries), so something must consume ``l3_agent.<host>`` and reply;
    the raw messages are recorded by the CastListener's own queues.
    """

    # Any 1.x: what the server sends is recorded, not judged, here.
    target = oslo_messaging.Target(version='1.99')

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []

    def _got(self, method: str, kwargs: dict[str, Any]) -> None:
        self.received.append((method, kwargs))


def _endpoint_method(name: str):
    def method(self, context, **kwargs):
        self._got(name, kwargs)
    method.__name__ = name
    return method


for _name in L3_AGENT_METHODS:
    setattr(FakeL3AgentEndpoint, _name, _endpoint_method(_name))


class L3Capture:
    """What the real server answers and sends a legacy L3 agent.

    Its own hosts, networks and routers (names ``<tag>-l3...``); uses the
    :class:`Capture`'s REST client, transport and output helpers.
    """

    def __init__(self, cap: 'Capture') -> None:
        self.cap = cap
        t = cap.tag
        self.host = f'{t}-l3'
        self.other_host = f'{t}-l3-none'  # no agent at all
        a, b, c = (random.randint(1, 250) for _ in range(3))
        self.ext_cidr, self.ext_base = f'198.18.{c}.0/24', f'198.18.{c}'
        self.v4_cidr, self.v4_base = f'10.{a}.{b}.0/24', f'10.{a}.{b}'
        self.slaac_cidr = f'fd00:{a:x}:{b:x}::/64'
        self.stateful_cidr = f'fd00:{a:x}:{b:x}:1::/64'
        self.side_cidrs = {'ha': f'172.20.{c}.0/24', 'dvr': f'172.21.{c}.0/24',
                           'down': f'172.22.{c}.0/24'}
        self.ids: dict[str, Any] = {'hosts': {'l3': self.host,
                                              'no_l3_agent': self.other_host},
                                    'project_id': cap.project_id, 'routers': {},
                                    'subnets': {}, 'ports': {}, 'floatingips': {}}
        self.rest: dict[str, Any] = {'routers': {}, 'floatingips': {}, 'l3_agents': {}}
        self.results: dict[str, dict[str, Any]] = {'sync': {}, 'fip_statuses': {}}
        self.casts: dict[str, list[dict[str, Any]]] = {}
        self.refused: dict[str, Any] = {}
        self.listener: CastListener | None = None
        self.rpc_server = None
        self.endpoint = FakeL3AgentEndpoint()
        self.fips: list[str] = []
        self.routers: list[str] = []
        self.created: list[tuple[str, str]] = []

    # -- helpers ----------------------------------------------------------------
    def post(self, collection: str, resource: str, **attrs: Any) -> dict[str, Any]:
        obj = self.cap.post(collection, resource, **attrs)
        # The Capture's cleanup does not know the order routers need.
        self.cap.created.remove((collection, obj['id']))
        self.created.append((collection, obj['id']))
        return obj

    def casts_of(self, step: str, action) -> Any:
        start = self.listener.begin(step)
        try:
            result = action()
        finally:
            self.casts[step] = self.listener.collect(start)
        l3 = [m for m in self.casts[step] if is_l3_message(m)]
        log(f'{step}: {len(l3)} L3 message(s): '
            + ', '.join(f'{m["method"]}@{m["routing_key"] or m["exchange"]}' for m in l3))
        return result

    def try_casts_of(self, step: str, action) -> Any:
        """As casts_of, but a refusal by the API is recorded, not raised."""
        try:
            return self.casts_of(step, action)
        except neutron_server.ApiError as exc:
            self.refused[step] = {'status': exc.status, 'error': str(exc)}
            log(f'{step}: refused: {exc}')
            return None

    def rpc(self, label: str, version: str, method: str, with_casts: bool = False,
            **kwargs: Any) -> dict[str, Any]:
        """One L3 plugin RPC as Neutron's L3PluginApi makes it, recorded under
        ``results['sync']`` (or ``fip_statuses``)."""
        start = self.listener.begin(f'RPC {method}: {label}') if with_casts else None
        mark = self.cap._log_mark()
        rec = self.l3rpc.call(version, method, **kwargs)
        if start is not None:
            msgs = self.listener.collect(start)
            self.casts[f'RPC {method}: {label}'] = msgs
            rec['casts_during_call'] = [
                {k: v for k, v in m.items() if k != 'context'} for m in msgs
                if is_l3_message(m)]
        else:
            time.sleep(0.5)  # let the server flush its log
        rec['server_log'] = self.cap._log_since(mark)
        key = 'fip_statuses' if method == 'update_floatingip_statuses' else 'sync'
        self.results[key][label] = rec
        shown = rec.get('reply', rec.get('error'))
        if isinstance(shown, list):
            shown = f'{len(shown)} item(s)'
        log(f'RPC {method} ({label}): {shown}')
        return rec

    def sync(self, label: str, router_ids: list[str] | None, host: str | None = None,
             **kw: Any) -> dict[str, Any]:
        # L3PluginApi.get_routers: prepare() (1.0), 'sync_routers', host, router_ids.
        return self.rpc(label, '1.0', 'sync_routers', host=host or self.host,
                        router_ids=router_ids, **kw)

    def router_put(self, router_id: str, **attrs: Any) -> dict[str, Any]:
        return self.cap.put('routers', 'router', router_id, **attrs)

    def fip_put(self, fip_id: str, **attrs: Any) -> dict[str, Any]:
        return self.cap.put('floatingips', 'floatingip', fip_id, **attrs)

    def fip_statuses(self) -> dict[str, str]:
        return {n: self.cap.show('floatingips', i)['status']
                for n, i in self.ids['floatingips'].items()}

    def agent_path(self) -> str:
        return f'/v2.0/agents/{self.ids["agents"]["l3"]}/l3-routers'

    # -- phases -----------------------------------------------------------------
    def run(self) -> None:
        try:
            self.l3rpc = PluginRpc(self.cap.transport, L3_PLUGIN_TOPIC)
            self.listener = CastListener(
                self.cap.transport_url, {},
                fanout_topics=[L3_AGENT_TOPIC] + FANOUT_TOPICS,
                topic_keys=[L3_AGENT_TOPIC, f'{L3_AGENT_TOPIC}.{self.host}'])
            self.start_agents()
            self.rpc('get_host_ha_router_count: no router yet', '1.11',
                     'get_host_ha_router_count', host=self.host)
            self.build_scenario()
            self.capture_rpcs()
            self.capture_cast_scenario()
            self.teardown()
        finally:
            self.cleanup()

    def start_agents(self) -> None:
        """A legacy L3 agent as Neutron's reports itself, and an OVS agent on
        the same host (ML2 binds the router ports to the L3 agent's host)."""
        l3 = {
            'binary': 'agentkit-l3', 'host': self.host, 'topic': L3_AGENT_TOPIC,
            'agent_type': 'L3 agent', 'availability_zone': 'nova',
            'configurations': {'agent_mode': 'legacy',
                               'handle_internal_only_routers': True,
                               'interface_driver': 'openvswitch',
                               'log_agent_heartbeats': False, 'extensions': [],
                               'routers': 0, 'ex_gw_ports': 0, 'interfaces': 0,
                               'floating_ips': 0}}
        physnet = self.cap.physnet
        ovs = self.cap.ovs_agent_state(self.host, {physnet: 'br-ex'})
        self.agent_states = {'l3': l3, 'ovs': ovs}
        # The agent's own consumers: l3_agent, l3_agent.<host>, l3_agent_fanout.
        target = oslo_messaging.Target(topic=L3_AGENT_TOPIC, server=self.host)
        self.rpc_server = oslo_messaging.get_rpc_server(
            self.cap.transport, target, [self.endpoint], executor='threading')
        self.rpc_server.start()
        agents = self.cap.report_agents([l3, ovs])
        self.ids['agents'] = {'l3': agents[(self.host, 'L3 agent')]['id'],
                              'ovs': agents[(self.host, 'Open vSwitch agent')]['id']}
        self.rest['agents'] = {k: a for (_, k), a in agents.items()}
        log(f'fake agents alive on {self.host}: L3 (legacy), OVS')

    def build_scenario(self) -> None:
        t = self.cap.tag
        physnet = self.cap.physnet
        ext = self.casts_of('external network create', lambda: self.post(
            'networks', 'network', name=f'{t}-l3-ext', **{
                'router:external': True, 'provider:network_type': 'flat',
                'provider:physical_network': physnet}))
        ext_sub = self.casts_of('external subnet create', lambda: self.post(
            'subnets', 'subnet', name=f'{t}-l3-ext-v4', network_id=ext['id'],
            ip_version=4, cidr=self.ext_cidr, enable_dhcp=False,
            gateway_ip=f'{self.ext_base}.1',
            allocation_pools=[{'start': f'{self.ext_base}.10',
                               'end': f'{self.ext_base}.200'}]))
        net = self.post('networks', 'network', name=f'{t}-l3-net')
        v4 = self.post('subnets', 'subnet', name=f'{t}-l3-v4', network_id=net['id'],
                       ip_version=4, cidr=self.v4_cidr, enable_dhcp=True)
        slaac = self.post('subnets', 'subnet', name=f'{t}-l3-v6-slaac',
                          network_id=net['id'], ip_version=6, cidr=self.slaac_cidr,
                          ipv6_ra_mode='slaac', ipv6_address_mode='slaac')
        stateful = self.post('subnets', 'subnet', name=f'{t}-l3-v6-stateful',
                             network_id=net['id'], ip_version=6, cidr=self.stateful_cidr,
                             ipv6_ra_mode='dhcpv6-stateful',
                             ipv6_address_mode='dhcpv6-stateful')
        self.ids.update(external_network=ext['id'], network=net['id'])
        self.ids['subnets'].update(external=ext_sub['id'], v4=v4['id'],
                                   v6_slaac=slaac['id'], v6_stateful=stateful['id'])
        self.rest.update(external_network=ext, external_subnet=ext_sub, network=net,
                         subnets={'v4': v4, 'v6_slaac': slaac, 'v6_stateful': stateful})
        vms = {}
        for name in ('vm1', 'vm2'):
            vms[name] = self.post('ports', 'port', name=f'{t}-l3-{name}',
                                  network_id=net['id'], device_owner='compute:nova',
                                  device_id=str(uuid.uuid4()),
                                  **{'binding:host_id': self.host})
            self.ids['ports'][name] = vms[name]['id']

        main = self.casts_of('router create with external gateway (enable_snat default)',
                             lambda: self.post('routers', 'router', name=f'{t}-l3-main',
                                               external_gateway_info={
                                                   'network_id': ext['id']}))
        self.ids['routers']['main'] = main['id']
        self.rest['routers']['main (as created)'] = main
        for key, label in (('v4', 'IPv4'), ('v6_slaac', 'IPv6 slaac'),
                           ('v6_stateful', 'IPv6 dhcpv6-stateful')):
            iface = self.casts_of(f'router interface add: {label} subnet',
                                  lambda key=key: self.cap.api.add_router_interface(
                                      main['id'], self.ids['subnets'][key]))
            self.ids['ports'][f'main interface ({label})'] = iface['port_id']
            self.rest.setdefault('add_router_interface replies', {})[label] = iface
        routes = [{'destination': '192.0.2.0/24', 'nexthop': f'{self.v4_base}.254'},
                  {'destination': 'fd00:ffff::/64',
                   'nexthop': self.slaac_cidr.replace('::/64', '::fe')}]
        self.casts_of('router update: routes set (one IPv4, one IPv6)',
                      lambda: self.router_put(main['id'], routes=routes))
        fip1 = self.casts_of('floating IP create associated to vm1', lambda: self.post(
            'floatingips', 'floatingip', floating_network_id=ext['id'],
            port_id=vms['vm1']['id'], description=f'{t}-l3-fip1'))
        fip2 = self.casts_of('floating IP create, not associated', lambda: self.post(
            'floatingips', 'floatingip', floating_network_id=ext['id'],
            description=f'{t}-l3-fip2'))
        self.ids['floatingips'].update(fip1=fip1['id'], fip2=fip2['id'])
        self.rest['floatingips'].update({'fip1 (as created)': fip1,
                                         'fip2 (as created)': fip2})

        # Side routers: HA, distributed (both as admin) and admin-down, each
        # with the gateway and one interface on a network of its own.
        for kind, attrs in (('ha', {'ha': True}), ('dvr', {'distributed': True}),
                            ('down', {'admin_state_up': False})):
            side = self.post('networks', 'network', name=f'{t}-l3-{kind}-net')
            sub = self.post('subnets', 'subnet', name=f'{t}-l3-{kind}-v4',
                            network_id=side['id'], ip_version=4,
                            cidr=self.side_cidrs[kind], enable_dhcp=False)
            self.ids['subnets'][kind] = sub['id']
            self.rest.setdefault('side_subnets', {})[kind] = sub
            router = self.try_casts_of(
                f'router create: {kind} ({attrs}, with gateway)', lambda attrs=attrs,
                kind=kind: self.post('routers', 'router', name=f'{t}-l3-{kind}',
                                     external_gateway_info={'network_id': ext['id']},
                                     **attrs))
            if router is None:
                continue
            self.ids['routers'][kind] = router['id']
            self.rest['routers'][f'{kind} (as created)'] = router
            self.try_casts_of(f'router interface add: {kind} router',
                              lambda rid=router['id'], sid=sub['id']:
                              self.cap.api.add_router_interface(rid, sid))
        for name, rid in self.ids['routers'].items():
            self.rest['routers'][name] = self.cap.show('routers', rid)
            self.rest['l3_agents'][name] = [
                {k: a[k] for k in ('id', 'host', 'agent_type', 'alive', 'admin_state_up')}
                for a in self.cap.api.l3_agents_hosting(rid)]
        log('L3 scenario built; hosting agents: ' + ', '.join(
            f'{n}={[a["host"] for a in h]}' for n, h in self.rest['l3_agents'].items()))

    def capture_rpcs(self) -> None:
        r = self.ids['routers']
        self.rpc('get_host_ha_router_count: after the routers were created', '1.11',
                 'get_host_ha_router_count', host=self.host)
        ids = self.rpc('get_router_ids: the L3 host', '1.9', 'get_router_ids',
                       host=self.host).get('reply') or []
        self.rpc('get_router_ids: a host without an L3 agent', '1.9', 'get_router_ids',
                 host=self.other_host)
        # As the agent's full sync: every scheduled id in one call (chunks of
        # up to 256). The first call also binds the router ports to the host.
        self.sync('every id get_router_ids returned (full sync)', list(ids),
                  with_casts=True)
        self.sync('the same again (ports now bound)', list(ids))
        self.sync('main router only (as after routers_updated)', [r['main']])
        for kind in ('ha', 'dvr', 'down'):
            if kind in r:
                self.sync(f'{kind} router only', [r[kind]])
        self.sync('an id that does not exist', [str(uuid.uuid4())])
        self.sync('main router and an id that does not exist', [r['main'], str(uuid.uuid4())])
        self.sync('router_ids None', None)
        self.sync('router_ids [] (empty list)', [])
        self.sync('a host without an L3 agent asks for the main router', [r['main']],
                  host=self.other_host)
        self.rest['ports_after_sync'] = {
            name: self.cap.api.show_port(pid) for name, pid in self.ids['ports'].items()}
        for name, rid in r.items():
            for p in self.cap.api.list_ports(device_id=rid):
                self.rest['ports_after_sync'][f'{name} router: {p["device_owner"]} '
                                              f'{p["id"]}'] = p
        self.rest['ha_count_after_sync'] = self.rpc(
            'get_host_ha_router_count: after the syncs', '1.11', 'get_host_ha_router_count',
            host=self.host).get('reply')

        fips = self.ids['floatingips']
        self.results['fip_statuses_rest'] = {'before': self.fip_statuses()}

        def statuses(label: str, fip_statuses: dict[str, str]) -> None:
            # L3PluginApi.update_floatingip_statuses: prepare(version='1.1').
            rec = self.rpc(label, '1.1', 'update_floatingip_statuses',
                           router_id=r['main'], fip_statuses=fip_statuses)
            rec['rest_status_after'] = self.fip_statuses()
        statuses('fip1 ACTIVE', {fips['fip1']: 'ACTIVE'})
        statuses('fip1 ERROR and an unknown id DOWN', {fips['fip1']: 'ERROR',
                                                       str(uuid.uuid4()): 'DOWN'})
        statuses('fip1 ACTIVE again', {fips['fip1']: 'ACTIVE'})
        statuses('empty dict', {})

    def capture_cast_scenario(self) -> None:
        r, fips, ports = self.ids['routers'], self.ids['floatingips'], self.ids['ports']
        main = r['main']
        self.casts_of('floating IP associate: fip2 -> vm2',
                      lambda: self.fip_put(fips['fip2'], port_id=ports['vm2']))
        self.rest['floatingips']['fip2 (associated)'] = self.cap.show(
            'floatingips', fips['fip2'])
        self.sync('main router with both floating IPs associated', [main])
        self.casts_of('floating IP disassociate: fip2',
                      lambda: self.fip_put(fips['fip2'], port_id=None))
        self.casts_of('floating IP move: fip1 vm1 -> vm2',
                      lambda: self.fip_put(fips['fip1'], port_id=ports['vm2']))
        self.casts_of('router update: routes changed (one route replaced)',
                      lambda: self.router_put(main, routes=[
                          {'destination': '198.51.100.0/24',
                           'nexthop': f'{self.v4_base}.253'}]))
        self.casts_of('router update: routes cleared',
                      lambda: self.router_put(main, routes=[]))
        self.casts_of('router update: name only',
                      lambda: self.router_put(main, name=f'{self.cap.tag}-l3-main-renamed'))
        self.casts_of('router update: admin_state_up false',
                      lambda: self.router_put(main, admin_state_up=False))
        self.sync('main router while admin_state_up is false', [main])
        self.rpc('get_router_ids: main router admin down', '1.9', 'get_router_ids',
                 host=self.host)
        self.casts_of('router update: admin_state_up true',
                      lambda: self.router_put(main, admin_state_up=True))
        self.casts_of('external network update: mtu 1400', lambda: self.cap.put(
            'networks', 'network', self.ids['external_network'], mtu=1400))
        self.sync('main router after the external network mtu change', [main])
        self.casts_of('tenant network update: name only', lambda: self.cap.put(
            'networks', 'network', self.ids['network'], name=f'{self.cap.tag}-l3-net-2'))
        self.casts_of('router interface remove: IPv6 dhcpv6-stateful subnet',
                      lambda: self.cap.api.remove_router_interface(
                          main, self.ids['subnets']['v6_stateful']))
        self.casts_of('router removed from agent (DELETE agents/<l3>/l3-routers/<router>)',
                      lambda: self.cap.api.request('DELETE', f'{self.agent_path()}/{main}'))
        self.sync('main router after it was removed from the agent', [main])
        self.casts_of('router added to agent (POST agents/<l3>/l3-routers)',
                      lambda: self.cap.api.request('POST', self.agent_path(),
                                                   {'router_id': main}))
        self.casts_of('router removed from agent again',
                      lambda: self.cap.api.request('DELETE', f'{self.agent_path()}/{main}'))
        self.rpc('get_router_ids: after the main router was removed from the agent '
                 '(auto-scheduling)', '1.9', 'get_router_ids', host=self.host,
                 with_casts=True)
        self.rest['l3_agents']['main (after get_router_ids)'] = [
            a['host'] for a in self.cap.api.l3_agents_hosting(main)]
        agent = f'/v2.0/agents/{self.ids["agents"]["l3"]}'
        self.casts_of('L3 agent admin_state_up false (PUT agents/<l3>)',
                      lambda: self.cap.api.request('PUT', agent,
                                                   {'agent': {'admin_state_up': False}}))
        self.sync('main router while the L3 agent is admin down', [main])
        self.rpc('get_router_ids: L3 agent admin down', '1.9', 'get_router_ids',
                 host=self.host)
        self.casts_of('L3 agent admin_state_up true',
                      lambda: self.cap.api.request('PUT', agent,
                                                   {'agent': {'admin_state_up': True}}))
        self.casts_of('floating IP delete: fip2 (not associated)',
                      lambda: self.cap.delete('floatingips', fips['fip2']))
        self.casts_of('floating IP delete: fip1 (associated)',
                      lambda: self.cap.delete('floatingips', fips['fip1']))
        self.casts_of('router gateway clear (external_gateway_info {})',
                      lambda: self.router_put(main, external_gateway_info={}))
        self.sync('main router without a gateway', [main])
        self.casts_of('router gateway set, enable_snat false',
                      lambda: self.router_put(main, external_gateway_info={
                          'network_id': self.ids['external_network'],
                          'enable_snat': False}))
        self.sync('main router with enable_snat false', [main])

    def teardown(self) -> None:
        r = self.ids['routers']
        main = r['main']
        for key, label in (('v4', 'IPv4'), ('v6_slaac', 'IPv6 slaac')):
            self.casts_of(f'teardown: router interface remove: {label} subnet',
                          lambda key=key: self.cap.api.remove_router_interface(
                              main, self.ids['subnets'][key]))
        self.sync('main router with no interfaces left (gateway only)', [main])
        self.casts_of('router delete: main (gateway, no interfaces)',
                      lambda: self.cap.delete('routers', main))
        for kind in ('down', 'ha', 'dvr'):
            if kind in r:
                self.casts_of(f'router delete: {kind} (interface removed first)',
                              lambda kind=kind: self.cap._delete_router(r[kind]))
        for collection, id_ in reversed(list(self.created)):
            if collection in ('ports',):
                self.cap.delete(collection, id_)
        ext = self.ids['external_network']
        for collection, id_ in reversed(list(self.created)):
            if collection in ('subnets', 'networks') and id_ != ext:
                self.cap.delete(collection, id_)
        self.casts_of('external network delete',
                      lambda: self.cap.delete('networks', ext))
        self.created = []

    def cleanup(self) -> None:
        api = self.cap.api
        errors = []
        try:
            for fip in self.ids['floatingips'].values():
                api.delete('floatingips', fip)
            for rid in self.ids['routers'].values():
                self.cap._delete_router(rid)
            order = ['ports', 'subnets', 'networks']
            for collection in order:
                for col, id_ in reversed(list(self.created)):
                    if col == collection:
                        try:
                            api.delete(col, id_)
                        except Exception as exc:  # noqa: BLE001
                            errors.append(f'{col}/{id_}: {exc}')
            ha_net = f'HA network tenant {self.cap.project_id}'
            for net in self.cap.list('networks'):
                if net['name'] == ha_net:
                    self.rest['ha_network_left_after_delete'] = net['id']
                    api.delete('networks', net['id'])
            for agent in api.list_agents():
                if agent['host'] == self.host:
                    api.delete('agents', agent['id'])
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))
        if self.rpc_server is not None:
            self.rpc_server.stop()
            self.rpc_server.wait()
        if self.listener is not None:
            self.listener.close()
        if errors:
            log('L3 cleanup problems: ' + '; '.join(errors))
        else:
            log('L3: cleaned up everything created through the REST API')

    # -- output -----------------------------------------------------------------
    def files(self) -> dict[str, Any]:
        cap = self.cap
        desc = {
            'hosts.l3': 'the fake L3 agent (agent_mode legacy) and an OVS agent '
                        '(bridge_mappings {physnet: br-ex}) report from it',
            'hosts.no_l3_agent': 'a host no agent reports from',
            'routers.main': 'external gateway (enable_snat default) on the flat external '
                            'network; interfaces on the IPv4, the IPv6 slaac and the IPv6 '
                            'dhcpv6-stateful subnet of one tenant network; routes; fip1 '
                            'associated to vm1, fip2 not associated',
            'routers.ha': 'ha true (as admin), gateway + one interface',
            'routers.dvr': 'distributed true (as admin), gateway + one interface',
            'routers.down': 'admin_state_up false, gateway + one interface',
            'ports.vm1/vm2': 'compute:nova on the tenant network, bound to the L3 host',
        }
        ids = dict(self.ids)

        def meta(what: str, **extra: Any) -> dict[str, Any]:
            m = cap.meta(what, roles=desc, **extra)
            m['ids'] = ids
            return m

        how = ('exclusive queues bound to l3_agent_fanout and the L2 agents\' fanout '
               'exchanges, and to the neutron topic exchange with routing keys '
               f'"{L3_AGENT_TOPIC}" and "{L3_AGENT_TOPIC}.<host>" (a copy of what the '
               'agent\'s own queues get; an oslo.messaging RPC server on l3_agent / '
               'server=<host> consumes and answers as the agent would: '
               'router_added_to_agent is a call). Each message is the oslo.messaging '
               '2.0 envelope\'s inner message; "kind" is "call" when it carries '
               '_reply_q. A step holds every message from the start of the action '
               f'until the server had been quiet for {SETTLE:.0f} s (at least '
               f'{MIN_WINDOW:.0f} s).')
        listened = ([f'{t}_fanout' for t in self.listener.topics]
                    + [f'neutron (topic) routing key {k}' for k in self.listener.topic_keys])

        def summary(m: dict[str, Any]) -> dict[str, Any]:
            return {'exchange': m['exchange'], 'routing_key': m['routing_key'],
                    'method': m['method'], 'version': m['version']}
        steps = {k: {'l3_messages': [m for m in v if is_l3_message(m)],
                     'other_casts (summary)': [summary(m) for m in v
                                               if not is_l3_message(m)]}
                 for k, v in self.casts.items()}
        return {
            'scenario-l3.json': {
                '_capture': meta('The L3 scenario: REST representations of the networks, '
                                 'subnets, routers (as created, then GET), floating IPs, '
                                 'the l3-agents hosting each router, the router and VM '
                                 'ports after the first sync_routers, the fake agents\' '
                                 'report_state agent_state, and what the API refused.'),
                'agent_states': self.agent_states,
                'refused': self.refused,
                'rest': self.rest,
            },
            'sync_routers.json': {
                '_capture': meta(
                    'Replies of the L3 agent\'s q-l3-plugin calls: get_host_ha_router_count, '
                    'get_router_ids, sync_routers', topic=L3_PLUGIN_TOPIC,
                    note='Called as neutron.agent.l3.agent.L3PluginApi does: topic '
                         'q-l3-plugin, no namespace; get_router_ids prepare(version="1.9"), '
                         'kwarg host; sync_routers prepare() (1.0), kwargs host and '
                         'router_ids; get_host_ha_router_count prepare(version="1.11"), '
                         'kwarg host. casts_during_call: L3 messages the server sent '
                         'meanwhile; server_log: neutron\'s INFO/WARNING/ERROR lines in '
                         'neutron-rpc-server\'s log meanwhile.'),
                'calls': self.results['sync'],
            },
            'update_floatingip_statuses.json': {
                '_capture': meta(
                    'Replies of update_floatingip_statuses for the main router',
                    topic=L3_PLUGIN_TOPIC,
                    note='prepare(version="1.1"), kwargs router_id, fip_statuses '
                         '{fip id: status}. rest_status_after: every floating IP\'s REST '
                         'status after the call.'),
                'rest_status_before': self.results['fip_statuses_rest']['before'],
                'calls': self.results['fip_statuses'],
            },
            'casts-l3.json': {
                '_capture': meta('What the server sends the L3 agent per step',
                                 listened=listened, how=how),
                'steps': steps,
                'received_by_the_fake_agent': [
                    {'method': m, 'kwargs': kw} for m, kw in self.endpoint.received],
            },
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default=DEFAULT_OUT,
                        help='output directory (default tests/fixtures/neutron29)')
    parser.add_argument('--state-dir', default=os.environ.get(
        'AGENTKIT_CAPTURE_NEUTRON_STATE', DEFAULT_STATE),
        help=f'neutron-server.sh state directory (default {DEFAULT_STATE}; '
             'the shared test server is /var/tmp/akns-neutron-server)')
    parser.add_argument('--vhost', default=os.environ.get(
        'AGENTKIT_CAPTURE_NEUTRON_VHOST', DEFAULT_VHOST),
        help=f'RabbitMQ vhost of that server (default {DEFAULT_VHOST})')
    parser.add_argument('--keep-server', action='store_true',
                        help='leave a server this run started running')
    parser.add_argument('--only', choices=['get_ports', 'l3'],
                        help='capture only this part and write only its files '
                             '(get_ports: no casts; l3: the L3 agent\'s RPCs and casts)')
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error('run as root (tools/neutron-server.sh needs it)')
    try:
        Capture(args).run()
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
