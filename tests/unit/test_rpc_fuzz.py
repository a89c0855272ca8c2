"""Property-based fuzzing of every RPC endpoint method of every agent.

Each agent is the real class (``L2Agent``, ``DhcpAgent``, ``L3Agent``) with
its real endpoints, work queue, port cache, security-group agent and type
drivers; only the drivers that change the host are recording fakes, and
neutron-server is tests/functional/fake_neutron.py's model answering the
agent's real RPC clients in-process. Fuzzed payloads (tests/fuzz.py) go
through oslo.messaging's own ``RPCDispatcher`` after a JSON round trip, as
they would arrive from RabbitMQ.

For every example: the dispatcher never sees an exception (nothing raises
into the RPC layer); a refused payload is logged in exactly one line that
names the method and the reason; nothing anywhere logs a traceback (an
unexpected exception is a bug, even when caught). Every few examples, and
at the end, a canary resource (a port, a network, a router) gets an
ordinary event and must be handled again, and the agent's workers must be
alive. Examples are derandomized, so CI runs the same ones every time.
(The metadata agent has no RPC endpoint: it serves HTTP only.)
"""

import copy
import ipaddress
import logging
import threading
import time
import uuid
from typing import Any
from unittest import mock

import fixtures

import oslo_messaging
from hypothesis import given
from hypothesis import strategies as st
from oslo_config import cfg
from oslo_messaging.rpc import dispatcher as rpc_dispatcher

from agentkit import loader
from agentkit.agent import dhcp as dhcp_agent
from agentkit.agent import l2 as l2_agent
from agentkit.agent import l3 as l3_agent
from agentkit.conf import common as common_conf
from agentkit.conf import dhcp as dhcp_conf
from agentkit.conf import l2 as l2_conf
from agentkit.conf import l3 as l3_conf
from agentkit.lib import ip_lib
from agentkit.lib import naming
from agentkit.rpc import client as rpc_client
from tests import base
from tests import fuzz
from tests import reliability
from tests.functional import fake_neutron

HOST = 'fuzzhost'
#: examples per agent; with the canary every CANARY_EVERY examples
EXAMPLES = {'l2': 400, 'dhcp': 300, 'l3': 300}
CANARY_EVERY = 50
#: ids the fuzz payloads are built around (known to the agent or server)
FUZZ_PORT, FUZZ_NET, FUZZ_SG, FUZZ_ROUTER = (str(uuid.UUID(int=0xF0 + i)) for i in range(4))


class LoopbackClient:
    """Stands in for oslo.messaging's RPC client: a call goes to the fake
    server's endpoints in-process, through a JSON round trip each way."""

    def __init__(self, server: fake_neutron.FakeNeutron) -> None:
        self.endpoints = [fake_neutron.ReportsEndpoint(server),
                          fake_neutron.PluginEndpoint(server),
                          fake_neutron.L3Endpoint(server)]

    def prepare(self, **kwargs: Any) -> 'LoopbackClient':
        return self

    def call(self, context: Any, method: str, **kwargs: Any) -> Any:
        for endpoint in self.endpoints:
            if hasattr(endpoint, method):
                try:
                    reply = getattr(endpoint, method)(context, **fuzz.wire_copy(kwargs))
                except Exception as exc:  # as the server's RPC layer returns it
                    raise oslo_messaging.RemoteError(type(exc).__name__, str(exc)) from None
                return fuzz.wire_copy(reply)
        raise oslo_messaging.RemoteError('NoSuchMethod', method)

    cast = call


class _Records(logging.Handler):
    """Every log record, for the checks; the test thread's ones per example."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.all: list[logging.LogRecord] = []
        self._lock_ = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_:
            self.all.append(record)

    def since(self, mark: int, thread: int | None = None) -> list[logging.LogRecord]:
        with self._lock_:
            return [r for r in self.all[mark:] if thread is None or r.thread == thread]


class FuzzCase(base.TestCase):
    """Builds one real agent around fakes and fuzzes its endpoints."""

    agent_name = ''

    def setUp(self) -> None:
        super().setUp()
        self.server = fake_neutron.FakeNeutron()
        self.records = _Records()
        logging.getLogger().addHandler(self.records)
        self.addCleanup(logging.getLogger().removeHandler, self.records)
        self.useFixture(fixtures.MockPatchObject(
            rpc_client.oslo_messaging, 'get_rpc_client',
            lambda *a, **kw: LoopbackClient(self.server)))
        self.conf = cfg.ConfigOpts()
        common_conf.register_common_opts(self.conf)
        self.stats = {'examples': 0, 'refused': 0, 'accepted': 0, 'canary checks': 0}
        self._checked: dict[int, int] = {}
        self._summarised = 0
        self.lines: dict[str, int] = {}
        self.examples: dict[str, str] = {}

    # -- the agent ------------------------------------------------------------
    def start_agent(self, agent_class: type, register: Any, fakes: dict[str, Any],
                    **overrides: Any) -> Any:
        register(self.conf)
        self.conf([], project='agentkit', default_config_files=[])
        self.conf.set_override('host', HOST)
        self.conf.set_override('worker_threads', 2, group='agent')
        for key, value in overrides.items():
            group, _, name = key.rpartition('.')
            self.conf.set_override(name, value, group=group or None)
        real_load = loader.load_driver

        def load_driver(namespace: str, name: str, base_class: type,
                        *args: Any, **kwargs: Any) -> Any:
            if namespace in fakes:
                return fakes[namespace]
            return real_load(namespace, name, base_class, *args, **kwargs)

        self.useFixture(fixtures.MockPatchObject(loader, 'load_driver', load_driver))
        agent = agent_class(self.conf)
        agent.setup_rpc_clients()
        agent.queue.start()
        self.addCleanup(agent.queue.stop, 2.0)
        stop = getattr(agent, 'ready_reports', None)
        if stop is not None:
            self.addCleanup(stop.stop, 1.0)
        self.agent = agent
        self.dispatchers = {
            topic: rpc_dispatcher.RPCDispatcher(endpoints, oslo_messaging.NoOpSerializer())
            for topic, endpoints in agent.rpc_topics().items()}
        return agent

    def dispatch(self, key: str, args: dict[str, Any]) -> list[logging.LogRecord]:
        """Deliver one message as the RPC server would; the test thread's
        log records of its handling. The dispatcher must not raise."""
        topic, method = key.rsplit(' ', 1)
        mark = len(self.records.all)
        incoming = fuzz.Incoming(method, fuzz.wire_copy(args), '1.0')
        try:
            self.dispatchers[topic].dispatch(incoming)
        except Exception as exc:  # noqa: BLE001 - what the RPC layer would see
            self.fail(f'{method}({args!r:.300}) raised into the RPC layer: {exc!r}')
        return [r for r in self.records.since(mark, threading.get_ident())
                if r.levelno >= logging.WARNING]

    def wait_idle(self) -> None:
        self.assertTrue(self.agent.queue.wait_idle(20), 'work queue never idle')

    # -- the property ---------------------------------------------------------
    def check_example(self, key: str, args: dict[str, Any]) -> None:
        method = key.rsplit(' ', 1)[1]
        lines = self.dispatch(key, args)
        self.stats['examples'] += 1
        refusals = [r for r in lines if r.getMessage().startswith('Rejected ')]
        if refusals:
            self.stats['refused'] += 1
            self.assertEqual(1, len(lines), [r.getMessage() for r in lines])
            self.assertIn(method, refusals[0].getMessage())
        else:
            self.stats['accepted'] += 1
        self.assertNoTracebacks()
        self.check_driver_inputs()
        if self.stats['examples'] % CANARY_EVERY == 0:
            self.check_canary()

    def assertNoTracebacks(self) -> None:
        broken = [r for r in self.records.all if r.exc_info or
                  r.getMessage().startswith('Failed handling')]
        self.assertEqual([], [r.getMessage() + '\n' + logging.Formatter().formatException(
            r.exc_info) if r.exc_info else r.getMessage() for r in broken[:3]])

    def check_canary(self) -> None:
        self.wait_idle()
        self.check_driver_inputs()
        self.summarise()
        before = self.canary_handled()
        self.poke_canary()
        self.assertTrue(base.eventually(lambda: self.canary_handled() > before, 20),
                        f'{self.agent_name}: the canary was not handled after '
                        f'{self.stats["examples"]} fuzzed messages')
        self.assertTrue(self.agent.queue.workers_alive())
        self.stats['canary checks'] += 1

    def finish(self, started: float) -> None:
        self.check_canary()
        self.assertNoTracebacks()
        # Both kinds happened: a fuzz that refused everything (or nothing)
        # would prove little.
        self.assertGreater(self.stats['refused'], 0)
        self.assertGreater(self.stats['accepted'], 0)
        result = dict(self.stats, **{'canary events lost': 0,
                                     'time s': round(time.monotonic() - started, 1)})
        print(f'{self.agent_name} fuzz: {result}')
        for line, count in sorted(self.lines.items(), key=lambda kv: -kv[1]):
            print(f'  {count:5d}  {self.examples[line]}')
        reliability.record(
            f'input-rpc-fuzz-{self.agent_name}-unit', kind='input',
            fault=f'fuzzed RPC payloads ({self.agent_name} agent, unit)',
            injected=f'hypothesis: {result["examples"]} derandomized casts to every '
                     f'endpoint method (wrong types, missing/extra keys, huge and '
                     f'duplicate lists, unsafe ids, out-of-range numbers)',
            checked='no exception into the RPC layer, one log line per refusal, '
                    'no traceback anywhere, workers alive, canary handled every '
                    f'{CANARY_EVERY} messages', result=result, order=200)

    def new_calls(self, method: Any) -> list[Any]:
        """The calls of a driver method since the last check."""
        seen = self._checked.get(id(method), 0)
        calls = method.call_args_list[seen:]
        self._checked[id(method)] = seen + len(calls)
        return calls

    def summarise(self) -> None:
        """Count what the agent logged at WARNING and above, by its text's start."""
        for record in self.records.since(self._summarised):
            if record.levelno >= logging.WARNING:
                key = str(record.msg)[:50]
                self.lines[key] = self.lines.get(key, 0) + 1
                self.examples.setdefault(key, record.getMessage()[:300])
        self._summarised = len(self.records.all)

    def canary_handled(self) -> int:
        raise NotImplementedError

    def check_driver_inputs(self) -> None:
        """What reached the host-changing drivers was validated first."""

    def poke_canary(self) -> None:
        raise NotImplementedError


class _Recorder(mock.MagicMock):
    pass


# -- L2 ----------------------------------------------------------------------

def _l2_templates() -> dict[str, Any]:
    notifier = l2_agent.topics.agent_notifier_topic
    t = l2_agent.topics
    push_port = {'resource_list': [fuzz.port_object(FUZZ_PORT, FUZZ_NET, HOST)],
                 'event_type': 'updated'}
    return {
        f'{notifier(t.PORT, t.UPDATE)} port_update': {
            'port': {'id': FUZZ_PORT, 'network_id': FUZZ_NET, 'revision_number': 5,
                     'mac_address': 'fa:16:3e:12:34:56', 'fixed_ips': []}},
        f'{notifier(t.PORT, t.DELETE)} port_delete': {'port_id': FUZZ_PORT},
        f'{notifier(t.NETWORK, t.UPDATE)} network_update': {
            'network': {'id': FUZZ_NET, 'mtu': 1500, 'revision_number': 6,
                        'provider:network_type': 'vlan',
                        'provider:segmentation_id': 150}},
        f'{notifier(t.NETWORK, t.DELETE)} network_delete': {'network_id': FUZZ_NET},
        f'{notifier(t.TUNNEL, t.UPDATE)} tunnel_update': {
            'tunnel_ip': '192.0.2.77', 'tunnel_type': 'vxlan'},
        f'{notifier(t.TUNNEL, t.DELETE)} tunnel_delete': {
            'tunnel_ip': '192.0.2.77', 'tunnel_type': 'vxlan'},
        f'{notifier(t.SECURITY_GROUP, t.UPDATE)} security_groups_rule_updated': {
            'security_groups': [FUZZ_SG]},
        f'{notifier(t.SECURITY_GROUP, t.UPDATE)} security_groups_member_updated': {
            'security_groups': [FUZZ_SG]},
        f'{t.PORT_PUSH} push': push_port,
        f'{t.NETWORK_PUSH} push': {'resource_list': [fuzz.network_object(FUZZ_NET)],
                                   'event_type': 'updated'},
        f'{t.ADDRESS_GROUP_PUSH} push': {'resource_list': [fuzz.ovo('AddressGroup', {
            'id': FUZZ_SG, 'addresses': ['192.0.2.0/28']}, '1.2')],
            'event_type': 'updated'},
    }


class L2FuzzTest(FuzzCase):
    agent_name = 'l2'

    def setUp(self) -> None:
        super().setUp()
        self.mech = _Recorder(agent_type='Open vSwitch agent',
                              supported_network_types={'flat', 'vlan', 'vxlan', 'gre'},
                              resource_versions=None)
        self.mech.filter_bridge.return_value = None
        self.mech.list_plugged_ports.return_value = set()
        firewall = _Recorder(needs_security_group_info=True)
        agent = self.start_agent(
            l2_agent.L2Agent, l2_conf.register_l2_opts,
            {loader.MECHANISM_DRIVERS: self.mech, loader.FIREWALL_DRIVERS: firewall},
            **{'l2.type_drivers': ['flat', 'vlan', 'vxlan'],
               'l2.network_vlan_ranges': ['physnet1:100:200'],
               'l2.vni_ranges': ['1:5000'], 'l2.tunnel_types': ['vxlan'],
               'l2.local_ip': '192.0.2.1',
               'securitygroup.firewall_driver': 'iptables_hybrid'})
        self.canary = str(uuid.uuid4())
        self.server.port_details[self.canary] = {
            'device': self.canary, 'port_id': self.canary, 'network_id': str(uuid.uuid4()),
            'mac_address': 'fa:16:3e:00:00:01', 'admin_state_up': True,
            'network_type': 'vxlan', 'physical_network': None, 'segmentation_id': 1001,
            'fixed_ips': [], 'port_security_enabled': False, 'device_owner': 'compute:nova'}
        # The canary and the fuzzed port are plugged on the host.
        self.mech.list_plugged_ports.return_value = {self.canary, FUZZ_PORT}
        agent.sync_state()
        self.wait_idle()
        # What the server pushed about the fuzzed port's network (the MTU a
        # port's details need); fuzzed pushes may change it.
        agent.port_cache.push_networks([fuzz.network_object(FUZZ_NET)], 'updated')
        self.assertEqual(1, self.canary_handled())
        self.revision = 1

    def canary_handled(self) -> int:
        return sum(1 for c in self.mech.wire_port.call_args_list
                   if c.args[0].port_id == self.canary)

    def check_driver_inputs(self) -> None:
        for call in self.new_calls(self.mech.wire_port):
            binding = call.args[0]
            self.assertTrue(naming.is_valid_id(binding.port_id), binding)
            self.assertTrue(naming.is_valid_id(binding.network_id), binding)
            segment = binding.segment
            self.assertIn(segment.network_type, ('flat', 'vlan', 'vxlan'))
            if segment.network_type == 'vlan':
                self.assertIn(segment.vlan_id, range(100, 201), binding)
            if segment.network_type == 'vxlan':
                self.assertIn(segment.tunnel_key, range(1, 5001), binding)
            mtu = binding.details.get('mtu')
            self.assertTrue(mtu is None or ip_lib.MIN_MTU <= mtu <= ip_lib.MAX_MTU,
                            f'MTU {mtu!r} reached the mechanism driver')
        for method in (self.mech.tunnel_update, self.mech.tunnel_delete):
            for call in self.new_calls(method):
                ip, kind = call.args
                ipaddress.ip_address(ip)  # raises for anything else
                self.assertEqual('vxlan', kind)
        self.stats['fuzzed port wired'] = sum(
            1 for c in self.mech.wire_port.call_args_list if c.args[0].port_id == FUZZ_PORT)
        refusals = ('Port %s failed', 'Port %s refused')
        self.stats['fuzzed port refused or failed'] = sum(
            1 for r in self.records.all if str(r.msg).startswith(refusals))

    def poke_canary(self) -> None:
        self.revision += 1
        lines = self.dispatch(f'{l2_agent.topics.agent_notifier_topic("port", "update")} '
                              'port_update', {'port': {'id': self.canary,
                                                       'revision_number': self.revision}})
        self.assertEqual([], [r.getMessage() for r in lines])

    @given(fuzz.cases(_l2_templates()), st.data())
    @fuzz.fuzz_settings(EXAMPLES['l2'])
    def _fuzz(self, case: tuple[str, dict[str, Any]], data: st.DataObject) -> None:
        if data.draw(st.integers(0, 2)) == 0:
            # A fuzzed Port push, then the port_update that wires the port
            # from it: the bad values reach the wiring (segments, MTU).
            # Forgetting what earlier pushes and updates announced (as a
            # full sync does) keeps earlier junk revisions from hiding it.
            self.agent.port_cache.clear()
            templates = _l2_templates()
            net_push = next(k for k in templates if k.startswith(l2_agent.topics.NETWORK_PUSH))
            push = next(k for k in templates if k.startswith(l2_agent.topics.PORT_PUSH))
            update = next(k for k in templates if k.endswith(' port_update'))
            self.check_example(net_push, {'event_type': 'updated', 'resource_list': [
                fuzz.network_object(FUZZ_NET, mtu=data.draw(fuzz.mtus))]})
            port = fuzz.port_object(FUZZ_PORT, FUZZ_NET, HOST, *data.draw(fuzz.segments))
            self.check_example(push, data.draw(fuzz.mutated(
                {'resource_list': [port], 'event_type': 'updated'})))
            self.check_example(update, templates[update])
            self.wait_idle()
        self.check_example(*case)

    def test_fuzz_every_endpoint(self) -> None:
        started = time.monotonic()
        self._fuzz()
        self.finish(started)

    def test_templates_are_accepted(self) -> None:
        """The positive control: unmodified, every template is accepted
        without a line, and the fuzzed port is wired from its push."""
        order = sorted(_l2_templates(), key=lambda k: ('push' not in k, 'delete' in k))
        for key in order:
            self.assertEqual([], [r.getMessage() for r in
                                  self.dispatch(key, _l2_templates()[key])], key)
            self.wait_idle()
            if key.endswith('port_update'):
                self.check_driver_inputs()
                self.assertEqual(1, self.stats['fuzzed port wired'])


# -- DHCP --------------------------------------------------------------------

def _dhcp_templates() -> dict[str, Any]:
    return {f'{dhcp_agent.topics.DHCP_AGENT} {method}': payload for method, payload
            in fuzz.dhcp_templates(FUZZ_NET, FUZZ_PORT, FUZZ_SG).items()}


def dhcp_network(server: fake_neutron.FakeNeutron, network_id: str | None = None,
                 mtu: int = 1450) -> dict[str, Any]:
    """A network with a DHCP subnet and a VM port in ``server``'s model."""
    net = server.add_network(mtu=mtu)
    if network_id is not None:
        with server.lock:
            del server.networks[net['id']]
            net['id'] = network_id
            server.networks[network_id] = net
    subnet = server.add_subnet(net['id'], '10.9.0.0/24', '10.9.0.1')
    server.add_port(net['id'], 'fa:16:3e:00:09:05', [(subnet['id'], '10.9.0.5')])
    return net


class DhcpFuzzTest(FuzzCase):
    agent_name = 'dhcp'

    def setUp(self) -> None:
        super().setUp()
        self.driver = _Recorder()
        self.driver.active_networks.return_value = []
        self.driver.get_configurations.return_value = {}
        interface = _Recorder()
        interface.get_configurations.return_value = {}
        self.start_agent(dhcp_agent.DhcpAgent, dhcp_conf.register_dhcp_opts,
                         {loader.INTERFACE_DRIVERS: interface,
                          loader.DHCP_DRIVERS: self.driver},
                         dhcp_reload_coalesce_seconds=0.0)
        self.canary = dhcp_network(self.server)['id']
        # The server's view of the fuzzed network is fuzzed too.
        self.fuzz_network = copy.deepcopy(dhcp_network(fake_neutron.FakeNeutron(), FUZZ_NET))
        self.agent.sync_state()
        self.wait_idle()
        self.assertEqual(1, self.canary_handled())

    def canary_handled(self) -> int:
        return sum(1 for c in self.driver.enable.call_args_list
                   if c.args[0].id == self.canary)

    def check_driver_inputs(self) -> None:
        for call in self.new_calls(self.driver.enable):
            network, port = call.args
            self.assertIn(network.id, (self.canary, FUZZ_NET))
            self.assertTrue(network.mtu is None or
                            ip_lib.MIN_MTU <= network.mtu <= ip_lib.MAX_MTU, network)
            self.assertTrue(naming.is_valid_id(port.id), port)
        self.stats['fuzzed network served'] = sum(
            1 for c in self.driver.enable.call_args_list if c.args[0].id == FUZZ_NET)

    def poke_canary(self) -> None:
        lines = self.dispatch(f'{dhcp_agent.topics.DHCP_AGENT} port_update_end',
                              {'payload': {'port': {'network_id': self.canary}}})
        self.assertEqual([], [r.getMessage() for r in lines])

    @given(fuzz.cases(_dhcp_templates()), st.data())
    @fuzz.fuzz_settings(EXAMPLES['dhcp'])
    def _fuzz(self, case: tuple[str, dict[str, Any]], data: st.DataObject) -> None:
        view = data.draw(fuzz.mutated(self.fuzz_network))
        with self.server.lock:
            self.server.networks[FUZZ_NET] = view
        self.check_example(*case)

    def test_fuzz_every_endpoint(self) -> None:
        started = time.monotonic()
        self._fuzz()
        self.finish(started)


# -- L3 ----------------------------------------------------------------------

def _l3_templates() -> dict[str, Any]:
    topic = l3_agent.topics.L3_AGENT
    net_update = l3_agent.topics.agent_notifier_topic('network', 'update')
    return {
        f'{topic} routers_updated': {'routers': [FUZZ_ROUTER]},
        f'{topic} routers_updated_on_host': {'routers': [FUZZ_ROUTER]},
        f'{topic} router_added_to_agent': {'payload': [FUZZ_ROUTER]},
        f'{topic} router_deleted': {'router_id': FUZZ_ROUTER},
        f'{topic} router_removed_from_agent': {'payload': {'router_id': FUZZ_ROUTER}},
        f'{topic} fipnamespace_delete_on_ext_net': {'ext_net_id': FUZZ_NET},
        f'{topic} agent_updated': {'payload': {'admin_state_up': True}},
        f'{net_update} network_update': {'network': {'id': FUZZ_NET, 'mtu': 1500}},
    }


class L3FuzzTest(FuzzCase):
    agent_name = 'l3'

    def setUp(self) -> None:
        super().setUp()
        self.driver = _Recorder()
        self.driver.unsupported_reason.return_value = None
        self.driver.process_router.return_value = {}
        self.driver.existing_routers.return_value = set()
        self.driver.get_configurations.return_value = {}
        interface = _Recorder()
        interface.get_configurations.return_value = {}
        self.start_agent(l3_agent.L3Agent, l3_conf.register_l3_opts,
                         {loader.INTERFACE_DRIVERS: interface,
                          loader.L3_DRIVERS: self.driver},
                         enable_metadata_proxy=False)
        with self.server.lock:
            self.server.l3.routers.clear()
        external = self.server.add_network()
        self.server.add_subnet(external['id'], '203.0.113.0/24', '203.0.113.1')
        self.canary = self.server.add_router(external['id'], host=HOST)['id']
        # The server's view of the fuzzed router is fuzzed too.
        with self.server.lock:
            view = self.server.l3.sync_routers(HOST, [self.canary])[0]
        self.fuzz_router = dict(copy.deepcopy(view), id=FUZZ_ROUTER)
        self.fuzz_view: Any = None
        answer = self.agent.plugin.sync_routers

        def sync_routers(router_ids: list[str] | None = None) -> Any:
            routers = answer(router_ids)
            if router_ids and FUZZ_ROUTER in router_ids and self.fuzz_view is not None:
                routers = list(routers) + [fuzz.wire_copy(self.fuzz_view)]
            return routers

        self.agent.plugin.sync_routers = sync_routers
        self.agent.sync_state()
        self.wait_idle()
        self.assertEqual(1, self.canary_handled())

    def canary_handled(self) -> int:
        return sum(1 for c in self.driver.process_router.call_args_list
                   if c.args[0].id == self.canary)

    def check_driver_inputs(self) -> None:
        for method in (self.driver.process_router, self.driver.delete_router):
            for call in self.new_calls(method):
                router = call.args[0]
                self.assertTrue(naming.is_valid_id(getattr(router, 'id', router)), router)
        self.stats['fuzzed router built'] = sum(
            1 for c in self.driver.process_router.call_args_list
            if c.args[0].id == FUZZ_ROUTER)

    def poke_canary(self) -> None:
        lines = self.dispatch(f'{l3_agent.topics.L3_AGENT} routers_updated',
                              {'routers': [self.canary]})
        self.assertEqual([], [r.getMessage() for r in lines])

    @given(fuzz.cases(_l3_templates()), st.data())
    @fuzz.fuzz_settings(EXAMPLES['l3'])
    def _fuzz(self, case: tuple[str, dict[str, Any]], data: st.DataObject) -> None:
        self.fuzz_view = data.draw(fuzz.mutated(self.fuzz_router))
        self.check_example(*case)

    def test_fuzz_every_endpoint(self) -> None:
        started = time.monotonic()
        self._fuzz()
        self.finish(started)
