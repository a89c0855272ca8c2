"""neutron 29's real answers to the L3 agent (tests/fixtures/neutron29/
sync_routers.json, casts-l3.json, scenario-l3.json; captured from the server
by ``tools/capture-neutron-contract.py --only l3``) against the fake server
and agentkit's router parser.

Pinned here: the fake server builds routers of exactly the real shape (same
keys at every level, same types; values differ), chooses the same routers
for the same questions (admin-down, unscheduled, distributed and unknown
routers), and sends the L3 agent the same messages; and agentkit's
router payload types read everything the driver needs from a real router.
"""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Any

from agentkit.api import l3 as l3_api
from agentkit.lib import naming
from drivers.l3 import namespace
from tests import base
from tests.functional import fake_neutron

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'fixtures', 'neutron29')
BOUND = 'the same again (ports now bound)'


def load(name: str) -> dict[str, Any]:
    with open(os.path.join(FIXTURES, name)) as f:
        return json.load(f)


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def shape(value: Any) -> Any:
    """Keys and types, without values; list elements in a canonical order."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((shape(v) for v in value), key=canonical)
    return type(value).__name__


def shape_differences(real: Any, fake: Any, path: str = '') -> list[str]:
    """Where ``fake`` differs from ``real`` in keys, nesting, types or list
    lengths (elements are paired after sorting both lists by their shape)."""
    if isinstance(real, dict) and isinstance(fake, dict):
        out = [f'{path}: missing key {k!r}' for k in sorted(set(real) - set(fake))]
        out += [f'{path}: extra key {k!r}' for k in sorted(set(fake) - set(real))]
        for key in sorted(set(real) & set(fake)):
            out += shape_differences(real[key], fake[key], f'{path}.{key}')
        return out
    if isinstance(real, list) and isinstance(fake, list):
        if len(real) != len(fake):
            return [f'{path}: {len(real)} element(s), fake has {len(fake)}']
        out = []
        pairs = zip(sorted(real, key=lambda v: canonical(shape(v))),
                    sorted(fake, key=lambda v: canonical(shape(v))))
        for i, (r, f) in enumerate(pairs):
            out += shape_differences(r, f, f'{path}[{i}]')
        return out
    if type(real) is not type(fake):
        return [f'{path}: {type(real).__name__} {real!r}, fake has '
                f'{type(fake).__name__} {fake!r}']
    return []


class _Scenario:
    """The captured scenario, as a fake server holding the same resources."""

    def __init__(self) -> None:
        self.capture = load('sync_routers.json')
        self.ids = self.capture['_capture']['ids']
        self.host = self.ids['hosts']['l3']
        self.rest = load('scenario-l3.json')['rest']
        self.calls = self.capture['calls']
        # Real router id -> role ('main', 'ha', 'dvr', 'down').
        self.roles = {rid: role for role, rid in self.ids['routers'].items()}
        self.server = fake_neutron.FakeNeutron()  # no broker: only its state
        self.build()

    def _subnet(self, network: dict[str, Any], rest: dict[str, Any]) -> dict[str, Any]:
        return self.server.add_subnet(
            network['id'], rest['cidr'], rest['gateway_ip'], enable_dhcp=rest['enable_dhcp'],
            ipv6_ra_mode=rest['ipv6_ra_mode'], ipv6_address_mode=rest['ipv6_address_mode'])

    def build(self) -> None:
        rest, server = self.rest, self.server
        self.ext = server.add_network(mtu=rest['external_network']['mtu'])
        self._subnet(self.ext, rest['external_subnet'])
        self.net = server.add_network(mtu=rest['network']['mtu'])
        self.subnets = {k: self._subnet(self.net, v) for k, v in rest['subnets'].items()}
        v4 = self.subnets['v4']
        self.vms = {}
        for i, name in enumerate(('vm1', 'vm2')):
            ip = str(ipaddress.ip_network(v4['cidr'])[10 + i])
            self.vms[name] = server.add_port(self.net['id'], f'fa:16:3e:00:00:0{i}',
                                             [(v4['id'], ip)])
        main = self.real_router(BOUND, 'main')
        fake = server.add_router(self.ext, interfaces=[v4, self.subnets['v6_slaac'],
                                                       self.subnets['v6_stateful']],
                                 floating_ips=[self.vms['vm1']], routes=main['routes'])
        self.fake_ids = {'main': fake['id']}
        for kind, attrs in (('ha', {'ha': True}), ('dvr', {'distributed': True}),
                            ('down', {'admin_state_up': False})):
            side = server.add_network()
            cidr = f'172.{20 + len(self.fake_ids)}.0.0/24'
            subnet = server.add_subnet(side['id'], cidr, cidr.replace('0/24', '1'),
                                       enable_dhcp=False)
            self.fake_ids[kind] = server.add_router(self.ext, interfaces=[subnet],
                                                    **attrs)['id']
        self.fake_roles = {rid: role for role, rid in self.fake_ids.items()}

    def real_router(self, label: str, role: str) -> dict[str, Any]:
        rid = self.ids['routers'][role]
        return next(r for r in self.calls[label]['reply'] if r['id'] == rid)

    def fake_router_ids(self, real_ids: list[str] | None) -> list[str] | None:
        """The fake's ids for the real request's ids; unknown ids stay."""
        if real_ids is None:
            return None
        return [self.fake_ids.get(self.roles.get(rid), rid) for rid in real_ids]

    def real_roles(self, ids: list[str]) -> list[str]:
        return sorted(self.roles.get(rid, rid) for rid in ids)

    def fake_roles_of(self, ids: list[str]) -> list[str]:
        return sorted(self.fake_roles.get(rid, rid) for rid in ids)

    def endpoint(self) -> fake_neutron.L3Endpoint:
        return fake_neutron.L3Endpoint(self.server)


class FakeRouterShapeTest(base.TestCase):
    """The fake builds what the real server syncs: same keys, nesting, types."""

    def setUp(self) -> None:
        super().setUp()
        self.s = _Scenario()
        self.endpoint = self.s.endpoint()

    def fake_sync(self, *roles: str) -> dict[str, dict[str, Any]]:
        ids = [self.s.fake_ids[r] for r in roles]
        reply = self.endpoint.sync_routers(None, host=self.s.host, router_ids=ids)
        return {self.s.fake_roles[r['id']]: r for r in reply}

    def assertSameShape(self, real: Any, fake: Any, what: str) -> None:
        differences = shape_differences(real, fake, what)
        self.assertEqual([], differences, '\n'.join(differences))

    def test_legacy_and_ha_routers(self) -> None:
        fake = self.fake_sync('main', 'ha')
        for role in ('main', 'ha'):
            with self.subTest(router=role):
                self.assertSameShape(self.s.real_router(BOUND, role), fake[role], role)

    def test_every_captured_main_router_state(self) -> None:
        """Gateway cleared, enable_snat false, interfaces all removed, both
        floating IPs associated, MTU changed: the fake follows each change
        with the shape the real server gives."""
        server, l3, main = self.s.server, self.s.server.l3, self.s.fake_ids['main']
        ext, subnets, vms = self.s.ext, self.s.subnets, self.s.vms
        fip2 = server.add_floating_ip(main, vms['vm2'])
        self.assertSameShape(
            self.s.real_router('main router with both floating IPs associated', 'main'),
            self.fake_sync('main')['main'], 'main with two floating IPs')
        l3.associate_floating_ip(fip2['id'], None)
        server.update_router(main, routes=[])  # changed, then cleared
        server.networks[ext['id']]['mtu'] = 1400
        self.assertSameShape(
            self.s.real_router('main router after the external network mtu change', 'main'),
            self.fake_sync('main')['main'], 'main after the MTU change')
        l3.remove_router_interface(main, subnets['v6_stateful'])
        for fip in list(l3.floating_ips):
            l3.delete_floating_ip(fip)
        l3.set_gateway(main, None)
        self.assertSameShape(self.s.real_router('main router without a gateway', 'main'),
                             self.fake_sync('main')['main'], 'main without a gateway')
        l3.set_gateway(main, ext, enable_snat=False)
        self.assertSameShape(
            self.s.real_router('main router with enable_snat false', 'main'),
            self.fake_sync('main')['main'], 'main with enable_snat false')
        l3.remove_router_interface(main, subnets['v4'])
        l3.remove_router_interface(main, subnets['v6_slaac'])
        self.assertSameShape(
            self.s.real_router('main router with no interfaces left (gateway only)', 'main'),
            self.fake_sync('main')['main'], 'main without interfaces')

    def test_top_level_keys_that_come_and_go(self) -> None:
        """Keys absent rather than empty: the fake leaves out the same ones."""
        real_main = self.s.real_router(BOUND, 'main')
        real_ha = self.s.real_router(BOUND, 'ha')
        fake = self.fake_sync('main', 'ha')
        self.assertNotIn('_floatingips', real_ha)
        self.assertNotIn('_floatingips', fake['ha'])
        self.assertEqual({'_ha_interface', '_ha_state'}, set(real_ha) - set(real_main))
        self.assertEqual(set(real_ha) - set(real_main), set(fake['ha']) - set(fake['main']))
        self.assertEqual(real_ha['_ha_state'], fake['ha']['_ha_state'])
        self.assertEqual({p['device_owner'] for p in real_ha['_interfaces']},
                         {p['device_owner'] for p in fake['ha']['_interfaces']})
        self.assertEqual(real_ha['_ha_interface']['device_owner'],
                         fake['ha']['_ha_interface']['device_owner'])


class FakeRouterSelectionTest(base.TestCase):
    """The fake returns the same routers as the real server for each call."""

    def setUp(self) -> None:
        super().setUp()
        self.s = _Scenario()
        self.endpoint = self.s.endpoint()

    def replay(self, label: str) -> None:
        call = self.s.calls[label]
        kwargs = call['request']['kwargs']
        real = [r['id'] for r in call['reply']]
        fake = self.endpoint.sync_routers(None, host=kwargs['host'],
                                          router_ids=self.s.fake_router_ids(
                                              kwargs['router_ids']))
        self.assertEqual(self.s.real_roles(real), self.s.fake_roles_of([r['id'] for r in fake]),
                         label)

    def test_sync_routers_before_any_change(self) -> None:
        for label in ('every id get_router_ids returned (full sync)', BOUND,
                      'main router only (as after routers_updated)', 'ha router only',
                      'dvr router only', 'down router only', 'an id that does not exist',
                      'main router and an id that does not exist', 'router_ids None',
                      'router_ids [] (empty list)'):
            with self.subTest(call=label):
                self.replay(label)

    def test_get_router_ids_and_ha_count(self) -> None:
        real = self.s.calls['get_router_ids: the L3 host']['reply']
        fake = self.endpoint.get_router_ids(None, self.s.host)
        # Admin-down routers are scheduled (listed), distributed ones not.
        self.assertEqual(['down', 'ha', 'main'], self.s.real_roles(real))
        self.assertEqual(self.s.real_roles(real), self.s.fake_roles_of(fake))
        self.assertEqual(
            self.s.calls['get_host_ha_router_count: after the routers were created']['reply'],
            self.endpoint.get_host_ha_router_count(None, self.s.host))

    def test_main_router_admin_down(self) -> None:
        self.s.server.update_router(self.s.fake_ids['main'], admin_state_up=False)
        self.replay('main router while admin_state_up is false')
        self.assertEqual(
            self.s.real_roles(self.s.calls['get_router_ids: main router admin down']['reply']),
            self.s.fake_roles_of(self.endpoint.get_router_ids(None, self.s.host)))

    def test_removed_from_the_agent_then_auto_scheduled(self) -> None:
        main = self.s.fake_ids['main']
        self.s.server.l3.unschedule_router(main)
        self.replay('main router after it was removed from the agent')
        label = ('get_router_ids: after the main router was removed from the agent '
                 '(auto-scheduling)')
        self.assertEqual(self.s.real_roles(self.s.calls[label]['reply']),
                         self.s.fake_roles_of(self.endpoint.get_router_ids(None, self.s.host)))
        self.replay('main router only (as after routers_updated)')

    def test_l3_agent_admin_down(self) -> None:
        self.s.server.l3.agents_down.add(self.s.host)
        self.replay('main router while the L3 agent is admin down')
        self.assertEqual(self.s.calls['get_router_ids: L3 agent admin down']['reply'],
                         self.endpoint.get_router_ids(None, self.s.host))

    def test_update_floatingip_statuses(self) -> None:
        capture = load('update_floatingip_statuses.json')
        for label, call in capture['calls'].items():
            self.assertIsNone(call['reply'], label)
        main = self.s.fake_ids['main']
        fip = next(iter(self.s.server.l3.floating_ips))
        statuses = {fip: 'ACTIVE', self.unique_id(): 'DOWN'}  # unknown: ignored
        self.assertIsNone(self.endpoint.update_floatingip_statuses(
            None, router_id=main, fip_statuses=statuses))
        self.assertEqual([{'router_id': main, 'fip_statuses': statuses}],
                         [{k: v for k, v in c.items() if k != '_received'}
                          for c in self.s.server.calls_of('update_floatingip_statuses')])
        synced = self.endpoint.sync_routers(None, host=self.s.host, router_ids=[main])
        self.assertEqual('ACTIVE', synced[0]['_floatingips'][0]['status'])


class ParserOnRealRoutersTest(base.TestCase):
    """agentkit.api.l3.Router (the agent's edge) and the namespace driver's
    layout read what the real server sends."""

    def setUp(self) -> None:
        super().setUp()
        self.s = _Scenario()

    @staticmethod
    def parse(raw: dict[str, Any]) -> namespace.RouterSpec:
        return namespace.plan_router(l3_api.Router.from_rpc(raw))

    def test_main_router(self) -> None:
        real = self.s.real_router(BOUND, 'main')
        spec = self.parse(real)
        self.assertEqual(real['id'], spec.id)
        self.assertEqual(naming.router_namespace(real['id']), spec.namespace)
        self.assertTrue(spec.router.enable_snat)
        self.assertTrue(spec.router.admin_state_up)
        self.assertFalse(spec.router.ha or spec.router.distributed)
        # Interfaces: the IPv4 subnet's port, and one port for both IPv6
        # subnets of the network, each address with its subnet's prefix.
        by_id = {p.port.id: p for p in spec.interfaces}
        self.assertEqual({p['id'] for p in real['_interfaces']}, set(by_id))
        for port in real['_interfaces']:
            placed = by_id[port['id']]
            parsed = placed.port
            cidrs = {f'{ip["ip_address"]}/{ipaddress.ip_network(s["cidr"]).prefixlen}'
                     for ip in port['fixed_ips'] for s in port['subnets']
                     if s['id'] == ip['subnet_id']}
            self.assertEqual(cidrs, set(parsed.cidrs))
            self.assertEqual(port['mac_address'], parsed.mac_address)
            self.assertEqual(port['mtu'], parsed.mtu)
            self.assertEqual(port['network_id'], parsed.network_id)
            self.assertEqual(naming.router_interface_name(port['id']), placed.device)
            self.assertEqual({(s['id'], s['ipv6_ra_mode']) for s in port['subnets']},
                             {(s.id, s.ipv6_ra_mode) for s in parsed.subnets})
        self.assertEqual([1, 2], sorted(len(p.port.cidrs) for p in spec.interfaces))
        v4_subnet = self.s.rest['subnets']['v4']
        self.assertIn(f'{v4_subnet["gateway_ip"]}/24', [c for p in spec.interfaces
                                                        for c in p.port.cidrs])
        # The gateway: address with the external subnet's prefix, its gateway.
        gw, ext_subnet = real['gw_port'], self.s.rest['external_subnet']
        self.assertEqual(gw['id'], spec.gateway.port.id)
        self.assertEqual(naming.router_gateway_name(gw['id']), spec.gateway.device)
        self.assertEqual((f'{gw["fixed_ips"][0]["ip_address"]}/24',),
                         spec.gateway.port.cidrs)
        self.assertEqual((ext_subnet['gateway_ip'],), spec.gateway.port.gateways)
        self.assertEqual(self.s.rest['external_network']['mtu'], spec.gateway.port.mtu)
        self.assertEqual(gw['fixed_ips'][0]['ip_address'], spec.gateway_ipv4)
        # Floating IPs: the associated one only; routes as given.
        fip = real['_floatingips'][0]
        self.assertEqual([(fip['id'], fip['floating_ip_address'], fip['fixed_ip_address'],
                           fip['port_id'], fip['status'])],
                         [(f.id, f.floating_ip, f.fixed_ip, f.port_id, f.status)
                          for f in spec.floating_ips])
        self.assertEqual([(r['destination'], r['nexthop']) for r in real['routes']],
                         [(r.destination, r.nexthop) for r in spec.routes])
        self.assertEqual({4, 6}, {ipaddress.ip_network(r.destination).version
                                  for r in spec.routes})
        self.assertEqual(frozenset(), spec.keep_devices)
        self.assertFalse(spec.router.gateway_unusable)
        self.assertEqual({}, spec.router.unusable_floating_ips)
        self.assertEqual({p['network_id'] for p in real['_interfaces'] + [gw]},
                         set(spec.router.network_ids))

    def test_later_states_of_the_main_router(self) -> None:
        both = self.parse(self.s.real_router(
            'main router with both floating IPs associated', 'main'))
        self.assertEqual(2, len(both.floating_ips))
        no_gw = self.parse(self.s.real_router('main router without a gateway', 'main'))
        self.assertIsNone(no_gw.gateway)
        self.assertFalse(no_gw.router.has_gateway)
        self.assertEqual((), no_gw.floating_ips)
        no_snat = self.parse(self.s.real_router(
            'main router with enable_snat false', 'main'))
        self.assertFalse(no_snat.router.enable_snat)
        mtu = self.parse(self.s.real_router(
            'main router after the external network mtu change', 'main'))
        self.assertEqual(1400, mtu.gateway.port.mtu)
        bare = self.parse(self.s.real_router(
            'main router with no interfaces left (gateway only)', 'main'))
        self.assertEqual((), bare.interfaces)
        self.assertIsNotNone(bare.gateway)
        self.assertNotIn('skipping', self.log.output)
        self.assertNotIn('ignoring', self.log.output)
        self.assertNotIn('left out', self.log.output)

    def test_ha_router_parses_as_its_interfaces_and_gateway(self) -> None:
        real = self.s.real_router(BOUND, 'ha')
        spec = self.parse(real)
        self.assertTrue(spec.router.ha)
        self.assertEqual([real['_interfaces'][0]['id']],
                         [p.port.id for p in spec.interfaces])
        self.assertEqual(real['gw_port']['id'], spec.gateway.port.id)

    def test_the_fake_main_router_parses_the_same(self) -> None:
        real = self.parse(self.s.real_router(BOUND, 'main'))
        view = self.s.endpoint().sync_routers(None, host=self.s.host,
                                              router_ids=[self.s.fake_ids['main']])[0]
        fake = self.parse(view)
        self.assertEqual(sorted(len(p.port.cidrs) for p in real.interfaces),
                         sorted(len(p.port.cidrs) for p in fake.interfaces))
        self.assertEqual(len(real.gateway.port.cidrs), len(fake.gateway.port.cidrs))
        self.assertEqual(len(real.floating_ips), len(fake.floating_ips))
        self.assertEqual(real.routes, fake.routes)
        self.assertEqual(frozenset(), fake.keep_devices)


class L3NotificationsTest(base.TestCase):
    """The fake sends the L3 agent what the real server sends."""

    def fake_message(self, msg: dict[str, Any], host: str | None) -> fake_neutron.AgentMessage:
        args, n = msg['args'], fake_neutron.L3Notifications
        method = msg['method']
        if method == 'routers_updated':
            return n.routers_updated(host, args['routers'])
        if method == 'router_deleted':
            return n.router_deleted(args['router_id'])
        if method == 'router_added_to_agent':
            return n.router_added_to_agent(host, args['payload'])
        if method == 'router_removed_from_agent':
            return n.router_removed_from_agent(host, args['payload']['router_id'])
        if method == 'agent_updated':
            return n.agent_updated(host, args['payload']['admin_state_up'])
        if method == 'fipnamespace_delete_on_ext_net':
            return n.fipnamespace_delete_on_ext_net(args['ext_net_id'])
        if method == 'network_update':
            net = dict(args['network'])
            fake_net = {'id': net['id'], 'name': net['name'], 'project_id': net['project_id'],
                        'mtu': net['mtu'],
                        'subnets': [{'id': s} for s in net['subnets']]}
            return n.network_update(fake_neutron.rest_network(
                fake_net, external=net['router:external'],
                network_type=net['provider:network_type'],
                physical_network=net['provider:physical_network']))
        self.fail(f'the server sent {method}, which the fake cannot send')

    def test_every_captured_message(self) -> None:
        capture = load('casts-l3.json')
        host = capture['_capture']['ids']['hosts']['l3']
        seen = set()
        for step, content in capture['steps'].items():
            for msg in content['l3_messages']:
                with self.subTest(step=step, method=msg['method']):
                    key = msg['routing_key'] or ''
                    fanout = msg['exchange'].endswith('_fanout')
                    fake = self.fake_message(msg, None if fanout else key.split('.', 1)[1])
                    self.assertEqual(msg['method'], fake.method)
                    self.assertEqual(msg['version'], fake.version)
                    self.assertEqual(msg['kind'] == 'call', fake.call)
                    self.assertEqual(fanout, fake.fanout)
                    if fanout:
                        self.assertEqual(f'{fake.topic}_fanout', msg['exchange'])
                    else:
                        self.assertEqual(('neutron', f'{fake.topic}.{host}'),
                                         (msg['exchange'], key))
                    differences = shape_differences(msg['args'], fake.args, 'args')
                    self.assertEqual([], differences, '\n'.join(differences))
                    if msg['method'] != 'network_update':
                        self.assertEqual(msg['args'], fake.args)
                    seen.add(msg['method'])
        self.assertEqual({'routers_updated', 'router_deleted', 'router_added_to_agent',
                          'router_removed_from_agent', 'agent_updated',
                          'fipnamespace_delete_on_ext_net', 'network_update'}, seen)

    def test_which_changes_send_what(self) -> None:
        """The facts the fake's L3Notifications documents."""
        steps = load('casts-l3.json')['steps']

        def methods(step: str) -> list[str]:
            return [m['method'] for m in steps[step]['l3_messages']]
        self.assertEqual(['routers_updated'], methods('router update: admin_state_up false'))
        self.assertEqual(['routers_updated'], methods('router update: name only'))
        self.assertEqual([], methods('floating IP create, not associated'))
        self.assertEqual(['router_deleted'], methods('router delete: main (gateway, no '
                                                     'interfaces)'))
        self.assertEqual(['network_update'], methods('external network update: mtu 1400'))
        self.assertEqual([], methods('tenant network update: name only'))
        self.assertEqual([], methods('router create: dvr ({\'distributed\': True}, with '
                                     'gateway)'))
