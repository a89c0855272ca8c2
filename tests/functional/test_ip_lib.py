"""ip_lib against the real kernel, through the real privsep daemon.

Every result is checked independently with iproute2 (``ip -j``) or /proc,
never only with ip_lib's own view. Objects are named ``aki<hex>`` and are
removed by cleanups, so these tests can run next to anything else.
"""

import errno
import json
import os
import random
import subprocess
import uuid

from agentkit import exceptions
from agentkit.lib import ip_lib
from tests.functional import base


def ip_json(*args: str, namespace: str | None = None) -> list:
    cmd = ['ip', '-j']
    if namespace:
        cmd += ['-n', namespace]
    out = subprocess.run(cmd + list(args), check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out) if out.strip() else []


def ip_link(name: str, namespace: str | None = None) -> dict | None:
    """``ip -d -j link show NAME`` or None if the device is absent."""
    cmd = ['ip', '-d', '-j'] + (['-n', namespace] if namespace else [])
    proc = subprocess.run(cmd + ['link', 'show', 'dev', name],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)[0]


def read_root_sysctl(path: str) -> str:
    with open(os.path.join('/proc/sys', path.replace('.', '/'))) as f:
        return f.read().strip()


def write_root_sysctl(path: str, value: str) -> None:
    with open(os.path.join('/proc/sys', path.replace('.', '/')), 'w') as f:
        f.write(value)


class IpLibTestCase(base.FunctionalTestCase):

    def namespace(self) -> str:
        name = 'aki-' + uuid.uuid4().hex
        self.assertTrue(ip_lib.create_namespace(name))
        self.addCleanup(ip_lib.delete_namespace, name)
        return name

    def devname(self) -> str:
        return self.short_name('aki')

    def veth(self, namespace: str | None, peer_namespace: str | None,
             **kwargs) -> tuple[ip_lib.IPDevice, ip_lib.IPDevice]:
        a, b = ip_lib.IPWrapper(namespace).add_veth(
            self.devname(), self.devname(), peer_namespace=peer_namespace, **kwargs)
        self.addCleanup(a.delete)
        return a, b


class TestNamespaces(IpLibTestCase):

    def test_create_delete_idempotent(self):
        name = 'aki-' + uuid.uuid4().hex
        self.addCleanup(ip_lib.delete_namespace, name)
        self.assertFalse(ip_lib.namespace_exists(name))

        self.assertTrue(ip_lib.create_namespace(name))
        self.assertFalse(ip_lib.create_namespace(name))
        self.assertTrue(ip_lib.namespace_exists(name))
        self.assertIn(name, ip_lib.list_namespaces())
        self.assertIn(name, subprocess.check_output(['ip', 'netns', 'list'], text=True))
        # A real, separate namespace with its loopback up.
        self.assertNotEqual(os.stat('/run/netns/' + name).st_ino,
                            os.stat('/proc/self/ns/net').st_ino)
        self.assertIn('UP', ip_link('lo', name)['flags'])

        self.assertTrue(ip_lib.delete_namespace(name))
        self.assertFalse(ip_lib.delete_namespace(name))
        self.assertFalse(os.path.exists('/run/netns/' + name))
        self.assertFalse(ip_lib.namespace_exists(name))
        self.assertNotIn(name, ip_lib.list_namespaces())

    def test_wrapper_ensure_namespace(self):
        wrapper = ip_lib.IPWrapper('aki-' + uuid.uuid4().hex)
        self.addCleanup(wrapper.delete_namespace)
        self.assertFalse(wrapper.namespace_exists())
        self.assertTrue(wrapper.ensure_namespace())
        self.assertFalse(wrapper.ensure_namespace())
        self.assertTrue(wrapper.namespace_exists())
        self.assertEqual(['lo'], [link['name'] for link in wrapper.list_links()])
        self.assertEqual([], wrapper.get_devices())

    def test_missing_namespace_is_a_clear_error_and_not_created(self):
        missing = 'aki-' + uuid.uuid4().hex
        dev = ip_lib.IPDevice('lo', missing)
        for call in (dev.link.set_up, lambda: dev.addr.add('10.0.0.1/24'),
                     lambda: dev.link.attributes, dev.addr.list,
                     lambda: ip_lib.list_routes(missing),
                     lambda: ip_lib.set_sysctl('net.ipv4.ip_forward', 1, missing)):
            e = self.assertRaises(ip_lib.NetworkNamespaceNotFound, call)
            self.assertIn(missing, str(e))
            self.assertEqual(missing, e.namespace)
        self.assertFalse(dev.exists())
        # A typo must never create the namespace (pyroute2's default would).
        self.assertFalse(os.path.exists('/run/netns/' + missing))

    def test_veth_into_missing_namespace_creates_nothing(self):
        missing = 'aki-' + uuid.uuid4().hex
        name, peer = self.devname(), self.devname()
        self.addCleanup(ip_lib.IPDevice(name).delete)
        self.assertRaises(ip_lib.NetworkNamespaceNotFound, ip_lib.IPWrapper().add_veth,
                          name, peer, peer_namespace=missing)
        self.assertIsNone(ip_link(name))
        self.assertFalse(os.path.exists('/run/netns/' + missing))

    def test_socket_cache_follows_recreated_namespace(self):
        # The daemon caches one socket per namespace; a namespace deleted
        # and recreated behind its back (here with iproute2) must not be
        # served by the old socket, which would still point at the old one.
        name = self.namespace()
        br1 = self.devname()
        ip_lib.IPWrapper(name).add_bridge(br1)
        subprocess.run(['ip', 'netns', 'del', name], check=True)
        subprocess.run(['ip', 'netns', 'add', name], check=True)
        br2 = self.devname()
        ip_lib.IPWrapper(name).add_bridge(br2)
        self.assertIsNotNone(ip_link(br2, name))
        self.assertIsNone(ip_link(br1, name))
        self.assertFalse(ip_lib.device_exists(br1, name))
        self.assertTrue(ip_lib.device_exists(br2, name))

        # And after our own delete + create.
        self.assertTrue(ip_lib.delete_namespace(name))
        self.assertFalse(ip_lib.device_exists(br2, name))
        self.assertTrue(ip_lib.create_namespace(name))
        self.assertFalse(ip_lib.device_exists(br2, name))
        self.assertEqual(['lo'], [link['name'] for link in ip_lib.list_links(name)])


class TestLinks(IpLibTestCase):

    def test_veth_with_peer_born_in_namespace(self):
        ns = self.namespace()
        a, b = self.veth(None, ns, mtu=1400, mac='02:aa:00:00:00:01',
                         peer_mac='02:aa:00:00:00:02')
        self.assertEqual((None, ns), (a.namespace, b.namespace))

        root_end = ip_link(a.name)
        ns_end = ip_link(b.name, ns)
        self.assertEqual('veth', root_end['linkinfo']['info_kind'])
        self.assertEqual(1400, root_end['mtu'])
        self.assertEqual(1400, ns_end['mtu'])  # peer MTU follows mtu
        self.assertEqual('02:aa:00:00:00:01', root_end['address'])
        self.assertEqual('02:aa:00:00:00:02', ns_end['address'])
        self.assertIsNone(ip_link(b.name))  # not in the root namespace
        self.assertIsNone(ip_link(a.name, ns))

        info = a.link.attributes
        self.assertEqual(a.name, info['name'])
        self.assertEqual(root_end['ifindex'], info['index'])
        self.assertEqual('veth', info['kind'])
        self.assertEqual('down', info['state'])
        self.assertTrue(info['peer_in_other_namespace'])
        self.assertEqual(ns_end['ifindex'], info['peer_index'])
        self.assertEqual(1400, b.link.mtu)
        self.assertEqual('02:aa:00:00:00:02', b.link.address)

    def test_veth_both_ends_in_one_namespace_names_peer(self):
        ns = self.namespace()
        a, b = self.veth(ns, None)
        self.assertEqual(ns, b.namespace)
        self.assertEqual(b.name, a.link.attributes['peer'])
        self.assertFalse(a.link.attributes['peer_in_other_namespace'])
        self.assertCountEqual([a.name, b.name],
                              [d.name for d in ip_lib.IPWrapper(ns).get_devices('veth')])

    def test_veth_name_clash_names_the_clashing_end(self):
        ns = self.namespace()
        a, b = self.veth(None, ns)
        e = self.assertRaises(ip_lib.NetworkInterfaceExists, ip_lib.IPWrapper().add_veth,
                              a.name, self.devname(), peer_namespace=ns)
        self.assertEqual((a.name, None), (e.device, e.namespace))
        other = self.devname()
        self.addCleanup(ip_lib.IPDevice(other).delete)
        e = self.assertRaises(ip_lib.NetworkInterfaceExists, ip_lib.IPWrapper().add_veth,
                              other, b.name, peer_namespace=ns)
        self.assertEqual((b.name, ns), (e.device, e.namespace))
        self.assertIsNone(ip_link(other))

    def test_set_state_mtu_mac(self):
        ns = self.namespace()
        a, b = self.veth(ns, None)
        b.link.set_up()
        self.assertIn('UP', ip_link(b.name, ns)['flags'])
        self.assertEqual('up', b.link.state)
        b.link.set_mtu(1280)
        b.link.set_address('02:bb:00:00:00:07')
        seen = ip_link(b.name, ns)
        self.assertEqual(1280, seen['mtu'])
        self.assertEqual('02:bb:00:00:00:07', seen['address'])
        b.link.set_down()
        self.assertNotIn('UP', ip_link(b.name, ns)['flags'])
        self.assertEqual('down', b.link.state)

    def test_delete_link_idempotent(self):
        ns = self.namespace()
        a, b = self.veth(ns, None)
        self.assertTrue(a.link.exists())
        self.assertTrue(a.delete())
        self.assertFalse(a.delete())
        self.assertIsNone(ip_link(a.name, ns))
        self.assertIsNone(ip_link(b.name, ns))  # the peer goes with it
        self.assertFalse(b.exists())

    def test_missing_device_is_a_clear_error(self):
        ns = self.namespace()
        dev = ip_lib.IPDevice(self.devname(), ns)
        for call in (dev.link.set_up, lambda: dev.link.set_mtu(1400),
                     lambda: dev.link.attributes, lambda: dev.addr.add('10.1.2.3/24'),
                     dev.addr.list, lambda: dev.route.add_gateway('10.1.2.1'),
                     lambda: dev.neigh.add('10.1.2.9', '02:00:00:00:00:01'),
                     lambda: dev.link.set_netns(None)):
            e = self.assertRaises(ip_lib.NetworkInterfaceNotFound, call)
            self.assertEqual((dev.name, ns), (e.device, e.namespace))
            self.assertIn(dev.name, str(e))
        self.assertFalse(dev.exists())
        self.assertFalse(dev.delete())
        # Setting a missing master is reported against the bridge name.
        a, _ = self.veth(ns, None)
        e = self.assertRaises(ip_lib.NetworkInterfaceNotFound, a.link.set_master, 'akinobridge')
        self.assertEqual('akinobridge', e.device)

    def test_bridge_enslave_and_release(self):
        ns = self.namespace()
        wrapper = ip_lib.IPWrapper(ns)
        br = wrapper.add_bridge(self.devname(), mtu=1450)
        self.assertEqual('bridge', ip_link(br.name, ns)['linkinfo']['info_kind'])
        # Idempotent only when asked, and never over a device of another kind.
        wrapper.add_bridge(br.name, exist_ok=True)
        self.assertRaises(ip_lib.NetworkInterfaceExists, wrapper.add_bridge, br.name)
        a, b = self.veth(ns, None)
        e = self.assertRaises(ip_lib.NetworkInterfaceExists, wrapper.add_bridge,
                              a.name, exist_ok=True)
        self.assertIn('veth', str(e))

        a.link.set_master(br.name)
        self.assertEqual(br.name, ip_link(a.name, ns)['master'])
        self.assertEqual(br.name, a.link.attributes['master'])
        a.link.set_nomaster()
        self.assertNotIn('master', ip_link(a.name, ns))
        self.assertIsNone(a.link.attributes['master'])

    def test_vxlan_unicast_and_multicast(self):
        ns = self.namespace()
        wrapper = ip_lib.IPWrapper(ns)
        a, b = self.veth(ns, None)
        a.addr.add('192.0.2.10/24')
        a.link.set_up()
        vx = wrapper.add_vxlan(self.devname(), 4242, local_ip='192.0.2.10',
                               dstport=8472, learning=False, ttl=16)
        data = ip_link(vx.name, ns)['linkinfo']['info_data']
        self.assertEqual(4242, data['id'])
        self.assertEqual('192.0.2.10', data['local'])
        self.assertEqual(8472, data['port'])
        self.assertFalse(data['learning'])
        self.assertEqual(16, data['ttl'])
        self.assertNotIn('group', data)
        info = vx.link.attributes['vxlan']
        self.assertEqual((4242, '192.0.2.10', 8472, False),
                         (info['vni'], info['local'], info['port'], info['learning']))

        mvx = wrapper.add_vxlan(self.devname(), 77, group='239.1.1.7', dev=a.name)
        data = ip_link(mvx.name, ns)['linkinfo']['info_data']
        self.assertEqual((77, '239.1.1.7', a.name, True),
                         (data['id'], data['group'], data['link'], data['learning']))
        self.assertEqual(4789, data['port'])
        self.assertEqual(a.name, mvx.link.attributes['vxlan']['dev'])
        self.assertEqual('239.1.1.7', mvx.link.attributes['vxlan']['group'])
        wrapper.add_vxlan(mvx.name, 77, group='239.1.1.7', dev=a.name, exist_ok=True)
        self.assertRaises(ip_lib.NetworkInterfaceExists, wrapper.add_vxlan, mvx.name, 77)

    def test_move_link_between_namespaces(self):
        ns1, ns2 = self.namespace(), self.namespace()
        a, b = self.veth(ns1, None)
        b.link.set_netns(ns2)
        self.assertEqual(ns2, b.namespace)
        self.assertIsNone(ip_link(b.name, ns1))
        self.assertIsNotNone(ip_link(b.name, ns2))
        self.assertTrue(b.exists())
        # A clash in the target namespace is reported, the device stays put.
        clash = ip_lib.IPWrapper(ns1).add_bridge(b.name)
        e = self.assertRaises(ip_lib.NetworkInterfaceExists, b.link.set_netns, ns1)
        self.assertEqual((b.name, ns1), (e.device, e.namespace))
        self.assertIsNotNone(ip_link(b.name, ns2))
        clash.delete()
        b.link.set_netns(ns1)
        self.assertIsNotNone(ip_link(b.name, ns1))
        self.assertRaises(ip_lib.NetworkNamespaceNotFound, b.link.set_netns,
                          'aki-' + uuid.uuid4().hex)


class TestAddresses(IpLibTestCase):

    def _addrs(self, dev: ip_lib.IPDevice) -> dict[str, dict]:
        [link] = ip_json('addr', 'show', 'dev', dev.name, namespace=dev.namespace)
        return {'%s/%d' % (a['local'], a['prefixlen']): a for a in link['addr_info']}

    def test_add_list_delete_v4_v6(self):
        ns = self.namespace()
        a, _ = self.veth(ns, None)
        self.assertTrue(a.addr.add('10.20.30.4/24'))
        self.assertFalse(a.addr.add('10.20.30.4/24'))  # idempotent
        self.assertTrue(a.addr.add('10.20.31.4/24', broadcast='10.20.31.200'))
        self.assertTrue(a.addr.add('fd20::4/64'))
        self.assertTrue(a.addr.add('10.20.32.4/24', scope='link'))
        self.assertTrue(a.addr.add('fe80::5/64', scope='link'))
        # The kernel would silently make this one global.
        self.assertRaises(ip_lib.InvalidNetworkValue, a.addr.add, 'fd20::5/64', scope='link')

        seen = self._addrs(a)
        self.assertEqual('10.20.30.255', seen['10.20.30.4/24']['broadcast'])
        self.assertEqual('10.20.31.200', seen['10.20.31.4/24']['broadcast'])
        self.assertEqual('global', seen['fd20::4/64']['scope'])
        self.assertEqual('link', seen['fe80::5/64']['scope'])
        self.assertEqual('link', seen['10.20.32.4/24']['scope'])
        self.assertNotIn('fd20::5/64', seen)

        listed = {x['cidr']: x for x in a.addr.list()}
        for cidr in ('10.20.30.4/24', '10.20.31.4/24', '10.20.32.4/24', 'fd20::4/64',
                     'fe80::5/64'):
            self.assertIn(cidr, listed)
            self.assertFalse(listed[cidr]['dynamic'])
            self.assertEqual(a.name, listed[cidr]['device'])
        self.assertEqual(4, listed['10.20.30.4/24']['ip_version'])
        self.assertEqual(6, listed['fd20::4/64']['ip_version'])
        self.assertEqual('link', listed['fe80::5/64']['scope'])
        self.assertEqual('link', listed['10.20.32.4/24']['scope'])
        self.assertEqual('global', listed['10.20.30.4/24']['scope'])
        self.assertEqual({'10.20.30.4/24', '10.20.31.4/24', '10.20.32.4/24'},
                         {x['cidr'] for x in a.addr.list(ip_version=4)})
        self.assertEqual({'10.20.32.4/24', 'fe80::5/64'},
                         {x['cidr'] for x in a.addr.list(scope='link')})

        self.assertTrue(a.addr.delete('10.20.30.4/24'))
        self.assertFalse(a.addr.delete('10.20.30.4/24'))
        self.assertTrue(a.addr.delete('fd20::4/64'))
        self.assertFalse(a.addr.delete('fd20::4/64'))
        seen = self._addrs(a)
        self.assertNotIn('10.20.30.4/24', seen)
        self.assertNotIn('fd20::4/64', seen)
        self.assertIn('10.20.31.4/24', seen)

    def test_dynamic_flag(self):
        # An address with a finite lifetime (as SLAAC/DHCP would add it) is
        # not permanent; ip_lib must tell it apart from static ones.
        ns = self.namespace()
        a, _ = self.veth(ns, None)
        a.addr.add('10.25.0.1/24')
        subprocess.run(['ip', '-n', ns, 'addr', 'add', '10.25.1.1/24', 'dev', a.name,
                        'valid_lft', '300', 'preferred_lft', '300'], check=True)
        listed = {x['cidr']: x['dynamic'] for x in a.addr.list(ip_version=4)}
        self.assertEqual({'10.25.0.1/24': False, '10.25.1.1/24': True}, listed)

    def test_same_ipv6_address_other_prefix_is_an_error(self):
        ns = self.namespace()
        a, _ = self.veth(ns, None)
        a.addr.add('fd21::1/64')
        e = self.assertRaises(ip_lib.NetlinkOperationError, a.addr.add, 'fd21::1/80')
        self.assertEqual(errno.EEXIST, e.errno)
        self.assertIn('fd21::1/64', self._addrs(a))

    def test_flush(self):
        ns = self.namespace()
        a, _ = self.veth(ns, None)
        for cidr in ('10.40.0.1/24', '10.40.1.1/24', '10.40.2.1/32', 'fd40::1/64'):
            a.addr.add(cidr)
        self.assertEqual(3, a.addr.flush(ip_version=4))
        self.assertEqual(['fd40::1/64'], list(self._addrs(a)))
        self.assertEqual(1, a.addr.flush())
        self.assertEqual({}, self._addrs(a))
        self.assertEqual(0, a.addr.flush())


class TestRoutes(IpLibTestCase):

    def setUp(self):
        super().setUp()
        self.ns = self.namespace()
        self.dev, _ = self.veth(self.ns, None)
        self.dev.link.set_up()
        self.dev.addr.add('10.50.0.2/24')
        self.dev.addr.add('fd50::2/64')

    def _routes(self, version: str) -> dict[str, dict]:
        return {r['dst']: r for r in ip_json(version, 'route', 'show', namespace=self.ns)}

    def test_default_routes_v4_v6(self):
        self.assertTrue(self.dev.route.add_gateway('10.50.0.1'))
        self.assertTrue(self.dev.route.add_gateway('fd50::1', metric=50))
        v4, v6 = self._routes('-4'), self._routes('-6')
        self.assertEqual('10.50.0.1', v4['default']['gateway'])
        self.assertEqual(self.dev.name, v4['default']['dev'])
        self.assertEqual('fd50::1', v6['default']['gateway'])
        self.assertEqual(50, v6['default']['metric'])

        gw4 = self.dev.route.get_gateway(4)
        self.assertEqual(('0.0.0.0/0', '10.50.0.1', self.dev.name, 254),
                         (gw4['dst'], gw4['gateway'], gw4['device'], gw4['table']))
        gw6 = self.dev.route.get_gateway(6)
        self.assertEqual(('::/0', 'fd50::1', 50), (gw6['dst'], gw6['gateway'], gw6['metric']))

        # add_gateway converges (replace): a new gateway replaces the old one.
        self.dev.route.add_gateway('10.50.0.254')
        self.assertEqual('10.50.0.254', self._routes('-4')['default']['gateway'])
        self.assertTrue(self.dev.route.delete_gateway('10.50.0.254'))
        self.assertFalse(self.dev.route.delete_gateway('10.50.0.254'))
        self.assertNotIn('default', self._routes('-4'))
        self.assertIsNone(self.dev.route.get_gateway(4))

    def test_who_installed_a_route(self):
        """``protocol``: routes agentkit adds are ``static``; a route the kernel
        learned from a router advertisement is ``ra`` (what the L3 driver
        and the doctor leave alone)."""
        self.assertTrue(self.dev.route.add_gateway('10.50.0.1'))
        subprocess.run(['ip', 'netns', 'exec', self.ns, 'ip', '-6', 'route', 'add', 'default',
                        'via', 'fe80::1', 'dev', self.dev.name, 'proto', 'ra'], check=True)
        routes = {(r['dst'], r['gateway']): r['protocol']
                  for r in ip_lib.list_routes(self.ns) if r['gateway']}
        self.assertEqual({('0.0.0.0/0', '10.50.0.1'): 'static', ('::/0', 'fe80::1'): 'ra'},
                         routes)

    def test_static_route_table_metric(self):
        self.assertTrue(self.dev.route.add_route('10.60.0.0/16', via='10.50.0.9', metric=100))
        self.assertFalse(self.dev.route.add_route('10.60.0.0/16', via='10.50.0.8',
                                                  metric=100, replace=False))
        route = self._routes('-4')['10.60.0.0/16']
        self.assertEqual(('10.50.0.9', 100), (route['gateway'], route['metric']))
        self.assertTrue(ip_lib.add_route('10.61.0.0/16', self.ns, gateway='10.50.0.9',
                                         table=100))
        seen = ip_json('route', 'show', 'table', '100', namespace=self.ns)
        self.assertEqual(['10.61.0.0/16'], [r['dst'] for r in seen])
        self.assertNotIn('10.61.0.0/16', self._routes('-4'))

        listed = {r['dst']: r for r in self.dev.route.list_routes(4)}
        self.assertEqual(('10.50.0.9', 100, 'global'),
                         (listed['10.60.0.0/16']['gateway'], listed['10.60.0.0/16']['metric'],
                          listed['10.60.0.0/16']['scope']))
        self.assertEqual('link', listed['10.50.0.0/24']['scope'])  # the kernel's
        self.assertNotIn('10.61.0.0/16', listed)
        in100 = ip_lib.list_routes(self.ns, table=100)
        self.assertEqual([('10.61.0.0/16', 100)], [(r['dst'], r['table']) for r in in100])
        everywhere = {(r['dst'], r['table']) for r in ip_lib.list_routes(self.ns, table=None)}
        self.assertIn(('10.50.0.2/32', 255), everywhere)  # local table

        self.assertTrue(self.dev.route.delete_route('10.60.0.0/16', via='10.50.0.9',
                                                    metric=100))
        self.assertFalse(self.dev.route.delete_route('10.60.0.0/16', via='10.50.0.9',
                                                     metric=100))
        self.assertNotIn('10.60.0.0/16', self._routes('-4'))
        self.assertTrue(ip_lib.delete_route('10.61.0.0/16', self.ns, table=100))
        self.assertEqual([], ip_json('route', 'show', 'table', '100', namespace=self.ns))

    def test_device_route_and_host_route(self):
        self.dev.route.add_route('10.70.0.0/24', scope='link')
        self.dev.route.add_route('fd70::/64')
        self.dev.route.add_route('10.71.0.5/32', via='10.50.0.1')
        v4 = self._routes('-4')
        self.assertEqual('link', v4['10.70.0.0/24']['scope'])
        self.assertNotIn('gateway', v4['10.70.0.0/24'])
        self.assertEqual('10.50.0.1', v4['10.71.0.5']['gateway'])
        self.assertIn('fd70::/64', self._routes('-6'))

    def test_onlink_gateway(self):
        # Gateway outside every on-link subnet: refused unless onlink.
        self.assertRaises(ip_lib.NetlinkOperationError, self.dev.route.add_gateway,
                          '198.51.100.1')
        self.dev.route.add_gateway('198.51.100.1', onlink=True)
        route = self._routes('-4')['default']
        self.assertEqual('198.51.100.1', route['gateway'])
        self.assertIn('onlink', route['flags'])
        self.assertTrue(self.dev.route.get_gateway(4)['onlink'])


class TestDeviceState(IpLibTestCase):
    """One-call reads that a re-plug of a service port checks against."""

    def test_read_device_state(self):
        self.assertIsNone(ip_lib.read_device_state('ns-missing', 'aki-' + uuid.uuid4().hex))
        ns = self.namespace()
        missing = ip_lib.read_device_state('ns-missing', ns)
        self.assertEqual((True, None, (), ()), (missing.loopback_up, missing.link,
                                                missing.addresses, missing.routes))
        dev, other = self.veth(ns, ns)
        dev.link.set_up()
        other.link.set_up()
        dev.addr.add('10.51.0.2/24')
        other.addr.add('10.52.0.2/24')  # another device's: not in the read
        dev.route.add_gateway('10.51.0.1')
        state = ip_lib.read_device_state(dev.name, ns)
        self.assertEqual(dev.link.attributes, state.link)
        self.assertEqual(['10.51.0.2/24'],
                         [a['cidr'] for a in state.addresses if a['scope'] == 'global'])
        self.assertEqual(dev.addr.list(), list(state.addresses))
        self.assertEqual(dev.route.get_gateway(), state.gateway())
        self.assertEqual('10.51.0.1', state.gateway()['gateway'])
        self.assertIsNone(state.gateway(6))
        self.assertIsNone(state.root_links)  # none asked for
        with_root = ip_lib.read_device_state(dev.name, ns, ['lo', 'nosuchdev'])
        self.assertEqual({'lo': ip_lib.get_link('lo')}, with_root.root_links)
        self.assertEqual(state.link, with_root.link)
        ip_lib.IPDevice('lo', ns).link.set_down()
        self.assertFalse(ip_lib.read_device_state(dev.name, ns).loopback_up)

    def test_get_links_returns_those_that_exist(self):
        ns = self.namespace()
        dev, peer = self.veth(ns, ns)
        links = ip_lib.get_links([dev.name, 'nosuchdev', peer.name], ns)
        self.assertEqual({dev.name: dev.link.attributes, peer.name: peer.link.attributes},
                         links)
        self.assertEqual({}, ip_lib.get_links(['nosuchdev'], ns))
        self.assertRaises(exceptions.InvalidIdentifier, ip_lib.get_links, ['a/b'], ns)


class TestNeighbours(IpLibTestCase):

    def test_add_replace_delete(self):
        ns = self.namespace()
        a, _ = self.veth(ns, None)
        a.link.set_up()
        a.neigh.add('10.80.0.9', '02:cc:00:00:00:09')
        a.neigh.add('fd80::9', '02:cc:00:00:00:0a')
        seen = {n['dst']: n for n in ip_json('neigh', 'show', 'dev', a.name, namespace=ns)}
        self.assertEqual('02:cc:00:00:00:09', seen['10.80.0.9']['lladdr'])
        self.assertEqual(['PERMANENT'], seen['10.80.0.9']['state'])
        self.assertEqual('02:cc:00:00:00:0a', seen['fd80::9']['lladdr'])

        a.neigh.add('10.80.0.9', '02:CC:00:00:00:0B')  # replace, MAC normalised
        listed = {n['ip']: n for n in a.neigh.list()}
        self.assertEqual(('02:cc:00:00:00:0b', 'permanent', a.name, 4),
                         (listed['10.80.0.9']['mac'], listed['10.80.0.9']['state'],
                          listed['10.80.0.9']['device'], listed['10.80.0.9']['ip_version']))
        self.assertEqual(['fd80::9'], [n['ip'] for n in a.neigh.list(ip_version=6)])

        self.assertTrue(a.neigh.delete('10.80.0.9'))
        self.assertFalse(a.neigh.delete('10.80.0.9'))
        seen = {n['dst'] for n in ip_json('neigh', 'show', 'dev', a.name, namespace=ns)}
        self.assertNotIn('10.80.0.9', seen)
        self.assertIn('fd80::9', seen)


class TestSysctl(IpLibTestCase):

    GUARDED = ('net.ipv4.ip_default_ttl', 'net.ipv4.conf.all.rp_filter',
               'net.ipv4.ip_forward')

    def setUp(self):
        super().setUp()
        # Should a regression write into the root namespace, put the host
        # back as it was (the assertions below still fail the test).
        saved = {key: read_root_sysctl(key) for key in self.GUARDED}
        self.addCleanup(self._restore_root, saved)

    @staticmethod
    def _restore_root(saved: dict[str, str]) -> None:
        for key, value in saved.items():
            if read_root_sysctl(key) != value:
                write_root_sysctl(key, value)

    def test_written_in_namespace_not_in_root(self):
        ns = self.namespace()
        root_ttl = read_root_sysctl('net.ipv4.ip_default_ttl')
        root_rp = read_root_sysctl('net.ipv4.conf.all.rp_filter')
        ttl = random.choice([v for v in range(20, 250) if str(v) != root_ttl])
        rp = '2' if root_rp != '2' else '1'

        ip_lib.set_sysctl('net.ipv4.ip_default_ttl', ttl, ns)
        ip_lib.IPWrapper(ns).set_sysctl('net.ipv4.conf.all.rp_filter', rp)
        out = subprocess.check_output(
            ['ip', 'netns', 'exec', ns, 'sysctl', '-n', 'net.ipv4.ip_default_ttl',
             'net.ipv4.conf.all.rp_filter'], text=True).split()
        self.assertEqual([str(ttl), rp], out)
        self.assertEqual(str(ttl), ip_lib.get_sysctl('net.ipv4.ip_default_ttl', ns))
        # The root namespace (and the daemon's pooled threads) are untouched.
        self.assertEqual(root_ttl, read_root_sysctl('net.ipv4.ip_default_ttl'))
        self.assertEqual(root_rp, read_root_sysctl('net.ipv4.conf.all.rp_filter'))
        self.assertEqual(root_ttl, ip_lib.get_sysctl('net.ipv4.ip_default_ttl'))

    def test_ip_forward_and_device_disable_ipv6(self):
        ns = self.namespace()
        wrapper = ip_lib.IPWrapper(ns)
        # (A new namespace may inherit ip_forward from the root one, so
        # both directions are checked rather than assuming a default.)
        for value, expected in ((True, '1'), (0, '0'), ('1', '1')):
            wrapper.set_sysctl('net.ipv4.ip_forward', value)
            self.assertEqual(expected, subprocess.check_output(
                ['ip', 'netns', 'exec', ns, 'cat', '/proc/sys/net/ipv4/ip_forward'],
                text=True).strip())
            self.assertEqual(expected, wrapper.get_sysctl('net.ipv4.ip_forward'))

        a, _ = self.veth(ns, None)
        a.disable_ipv6()
        a.link.set_up()
        self.assertEqual('1', wrapper.get_sysctl(['net', 'ipv6', 'conf', a.name,
                                                  'disable_ipv6']))
        [link] = ip_json('-6', 'addr', 'show', 'dev', a.name, namespace=ns) or [{}]
        self.assertEqual([], link.get('addr_info', []))  # no link-local
        a.disable_ipv6(False)
        self.assertEqual('0', wrapper.get_sysctl(['net', 'ipv6', 'conf', a.name,
                                                  'disable_ipv6']))

    def test_errors(self):
        ns = self.namespace()
        self.assertRaises(ip_lib.NetworkNamespaceNotFound, ip_lib.set_sysctl,
                          'net.ipv4.ip_forward', 1, 'aki-' + uuid.uuid4().hex)
        self.assertRaises(FileNotFoundError, ip_lib.set_sysctl,
                          ['net', 'ipv6', 'conf', 'akinodev', 'disable_ipv6'], 1, ns)


class TestConnectivity(IpLibTestCase):

    def ping(self, namespace: str, address: str) -> bool:
        return subprocess.run(['ip', 'netns', 'exec', namespace, 'ping', '-c1', '-W1',
                               address], capture_output=True).returncode == 0

    def test_ping_across_veth_between_namespaces(self):
        ns1, ns2 = self.namespace(), self.namespace()
        a, b = self.veth(ns1, ns2, mtu=1450)
        for dev, cidr in ((a, '10.90.0.1/30'), (b, '10.90.0.2/30')):
            dev.addr.add(cidr)
            dev.link.set_up()
        self.assertTrue(self.ping(ns1, '10.90.0.2'))
        self.assertTrue(self.ping(ns2, '10.90.0.1'))
        # An address beyond the link's subnet needs ns1's default route.
        b.addr.add('10.91.0.1/24')
        self.assertFalse(self.ping(ns1, '10.91.0.1'))
        a.route.add_gateway('10.90.0.2')
        self.assertTrue(self.ping(ns1, '10.91.0.1'))
        # And it really is this link: down means no reply.
        b.link.set_down()
        self.assertFalse(self.ping(ns1, '10.90.0.2'))
