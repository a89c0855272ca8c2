"""ip_lib validation: bad values are refused before anything crosses to root.

Every privileged entrypoint is replaced by a mock; a test that expects a
refusal also asserts that no privileged call was made at all.
"""

import threading
from concurrent import futures
from unittest import mock

import msgpack

from agentkit import exceptions
from agentkit.lib import ip_lib
from agentkit.privileged import netlink as priv
from agentkit.privileged import network
from tests import base

ENTRYPOINTS = sorted(name for name, obj in vars(priv).items()
                     if network.is_entrypoint(obj))

NS = 'qdhcp-3f8a4b7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b'


class IpLibTestCase(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.priv: dict[str, mock.MagicMock] = self.patch_entrypoints(priv)

    def assert_refused(self, exc: type[Exception], func, *args, **kwargs) -> Exception:
        for m in self.priv.values():
            m.reset_mock()  # only calls made by ``func`` count
        e = self.assertRaises(exc, func, *args, **kwargs)
        self.assertIsInstance(e, ValueError)
        self.assertIsInstance(e, exceptions.AgentkitError)
        called = [name for name, m in self.priv.items() if m.called]
        self.assertEqual([], called, 'privileged call made despite invalid input')
        return e


class TestEntrypointsMocked(IpLibTestCase):

    def test_all_entrypoints_found(self):
        # Guards the fixture: a new entrypoint is mocked automatically, and
        # the core ones are really entrypoints (run in the daemon).
        for name in ('create_namespace', 'create_veth', 'add_address', 'add_route',
                     'add_neighbour', 'set_sysctl', 'list_routes', 'move_link'):
            self.assertIn(name, ENTRYPOINTS)


class TestDeviceNames(IpLibTestCase):

    def test_valid(self):
        for name in ('eth0', 'a', 'tap1234567890a', 'x' * 15, 'eth0.100', 'br-int',
                     'vxlan-16777215', 'qr-3f8a4b7e-1c'):
            self.assertEqual(name, ip_lib.validate_device_name(name))

    def test_invalid(self):
        for name in ('', 'x' * 16, 'a/b', 'a b', 'a\tb', 'a\nb', 'a\0b', 'eth0:1',
                     '.', '..', 'caf\u00e9', None, 5, b'eth0'):
            e = self.assert_refused(exceptions.InvalidIdentifier,
                                    ip_lib.validate_device_name, name)
            self.assertIn('device name', str(e))

    def test_too_long_message_says_why(self):
        e = self.assert_refused(exceptions.InvalidIdentifier,
                                ip_lib.IPWrapper().add_bridge, 'b' * 16)
        self.assertIn('16 characters', str(e))
        self.assertIn('15', str(e))

    def test_checked_before_privileged_call(self):
        wrapper = ip_lib.IPWrapper(NS)
        self.assert_refused(exceptions.InvalidIdentifier, wrapper.add_veth,
                            'good', 'bad/peer')
        self.assert_refused(exceptions.InvalidIdentifier, wrapper.add_veth,
                            'x' * 16, 'peer')
        self.assert_refused(exceptions.InvalidIdentifier, ip_lib.IPDevice, 'a b', NS)
        self.assert_refused(exceptions.InvalidIdentifier, ip_lib.device_exists, '')
        dev = ip_lib.IPDevice('tap0', NS)
        self.assert_refused(exceptions.InvalidIdentifier, dev.link.set_master, 'br/0')
        self.assert_refused(exceptions.InvalidIdentifier, wrapper.add_vxlan, 'vx0', 5,
                            group='239.0.0.1', dev='eth 0')
        self.assert_refused(exceptions.InvalidIdentifier, ip_lib.add_route, '10.0.0.0/8',
                            NS, device='x' * 20)


class TestNamespaceNames(IpLibTestCase):

    def test_valid(self):
        for name in (NS, 'qrouter-x', 'ns_1', 'aki-0a1b', 'A.b-c_d', 'x' * 255):
            self.assertEqual(name, ip_lib.validate_namespace(name))
        self.assertIsNone(ip_lib.validate_namespace(None))

    def test_invalid(self):
        for name in ('', '.', '..', '../etc', 'a/b', '/run/netns/x', '.hidden', '-x',
                     'a b', 'a\0b', 'x' * 256, 'caf\u00e9', 7):
            e = self.assert_refused(exceptions.InvalidIdentifier, ip_lib.IPWrapper, name)
            self.assertIn('namespace', str(e))

    def test_checked_before_privileged_call(self):
        for call in (lambda: ip_lib.create_namespace('../x'),
                     lambda: ip_lib.delete_namespace('a/b'),
                     lambda: ip_lib.namespace_exists(''),
                     lambda: ip_lib.IPDevice('eth0', 'bad ns'),
                     lambda: ip_lib.IPWrapper(NS).add_veth('a', 'b', peer_namespace='../x'),
                     lambda: ip_lib.IPDevice('eth0', NS).link.set_netns('x/y'),
                     lambda: ip_lib.set_sysctl('net.ipv4.ip_forward', 1, '..')):
            self.assert_refused(exceptions.InvalidIdentifier, call)

    def test_root_namespace_cannot_be_created_or_deleted(self):
        self.assert_refused(exceptions.InvalidIdentifier, ip_lib.IPWrapper().ensure_namespace)
        self.assert_refused(exceptions.InvalidIdentifier, ip_lib.IPWrapper().delete_namespace)
        self.assert_refused(exceptions.InvalidIdentifier, ip_lib.create_namespace, None)


class TestAddresses(IpLibTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.dev = ip_lib.IPDevice('tap0', NS)

    def test_bad_cidrs(self):
        for cidr in ('10.0.0.1', '10.0.0.1/33', '10.0.0.256/24', '10.0.0.1/-1',
                     'fd00::1/129', 'fd00::g/64', 'garbage', '', '/24', None, 10):
            e = self.assert_refused(ip_lib.InvalidNetworkValue, self.dev.addr.add, cidr)
            self.assertIn('address', str(e))
            self.assert_refused(ip_lib.InvalidNetworkValue, self.dev.addr.delete, cidr)

    def test_missing_prefix_is_explained(self):
        e = self.assert_refused(ip_lib.InvalidNetworkValue, self.dev.addr.add, '10.0.0.1')
        self.assertIn('address/prefixlen', str(e))

    def test_bad_scope_and_broadcast(self):
        self.assert_refused(ip_lib.InvalidNetworkValue, self.dev.addr.add, '10.0.0.1/24',
                            scope='galactic')
        self.assert_refused(ip_lib.InvalidNetworkValue, self.dev.addr.add, '10.0.0.1/24',
                            broadcast='10.0.0.300')
        self.assert_refused(ip_lib.InvalidNetworkValue, self.dev.addr.add, 'fd00::1/64',
                            broadcast='fd00::ff')

    def test_ipv6_scope_must_match_the_address(self):
        e = self.assert_refused(ip_lib.InvalidNetworkValue, self.dev.addr.add,
                                'fd00::1/64', scope='link')
        self.assertIn('scope global', str(e))
        self.dev.addr.add('fe80::1/64', scope='link')
        self.priv['add_address'].assert_called_once_with(
            'tap0', 'fe80::1', 64, 6, NS, broadcast=None, scope=253)

    def test_v4_gets_subnet_broadcast(self):
        self.priv['add_address'].return_value = True
        self.assertTrue(self.dev.addr.add('10.1.2.3/22'))
        self.priv['add_address'].assert_called_once_with(
            'tap0', '10.1.2.3', 22, 4, NS, broadcast='10.1.3.255', scope=0)

    def test_broadcast_variants(self):
        add = self.priv['add_address']
        self.dev.addr.add('10.1.2.3/31')
        self.assertIsNone(add.call_args.kwargs['broadcast'])
        self.dev.addr.add('10.1.2.3/24', add_broadcast=False)
        self.assertIsNone(add.call_args.kwargs['broadcast'])
        self.dev.addr.add('10.1.2.3/24', broadcast='10.1.2.200')
        self.assertEqual('10.1.2.200', add.call_args.kwargs['broadcast'])
        self.dev.addr.add('FD00::0001/64')
        self.assertEqual(('tap0', 'fd00::1', 64, 6, NS), add.call_args.args)
        self.assertIsNone(add.call_args.kwargs['broadcast'])

    def test_delete_and_flush_args(self):
        self.dev.addr.delete('fd00::1/64')
        self.priv['delete_address'].assert_called_once_with('tap0', 'fd00::1', 64, 6, NS)
        self.dev.addr.flush(ip_version=4)
        self.priv['flush_addresses'].assert_called_once_with('tap0', NS, 4)
        self.assert_refused(ip_lib.InvalidNetworkValue, self.dev.addr.flush, ip_version=5)

    def test_list_filters_scope_locally(self):
        self.priv['list_addresses'].return_value = (
            {'cidr': '10.0.0.1/24', 'scope': 'global'},
            {'cidr': 'fe80::1/64', 'scope': 'link'})
        self.assertEqual(['fe80::1/64'],
                         [a['cidr'] for a in self.dev.addr.list(scope='link')])
        self.assertEqual(2, len(self.dev.addr.list()))
        self.assertIsInstance(self.dev.addr.list(), list)


class TestRoutes(IpLibTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.dev = ip_lib.IPDevice('qr-1', NS)

    def test_destination_with_host_bits_refused(self):
        e = self.assert_refused(ip_lib.InvalidNetworkValue, self.dev.route.add_route,
                                '10.0.0.5/24', via='10.0.0.1')
        self.assertIn('host bits', str(e))

    def test_bad_values(self):
        route = self.dev.route
        for call in (lambda: route.add_route('10.0.0.0/33'),
                     lambda: route.add_route('nonsense'),
                     lambda: route.add_route('10.0.0.0/8', via='10.0.0.300'),
                     lambda: route.add_route('10.0.0.0/8', via='fd00::1'),
                     lambda: route.add_route('fd00::/64', via='10.0.0.1'),
                     lambda: route.add_route('10.0.0.0/8', metric=-1),
                     lambda: route.add_route('10.0.0.0/8', metric=2 ** 32),
                     lambda: route.add_route('10.0.0.0/8', metric=True),
                     lambda: route.add_route('10.0.0.0/8', table='nosuch'),
                     lambda: route.add_route('10.0.0.0/8', table=0),
                     lambda: route.add_route('10.0.0.0/8', scope='far'),
                     lambda: route.add_gateway('not-an-ip'),
                     lambda: ip_lib.add_route('default', NS, device='eth0'),
                     lambda: ip_lib.add_route('10.0.0.0/8', NS),
                     lambda: ip_lib.add_route('0.0.0.0/0', NS, gateway='10.0.0.1',
                                              onlink=True),
                     lambda: ip_lib.list_routes(NS, ip_version=5),
                     lambda: ip_lib.list_routes(NS, table='nosuch')):
            self.assert_refused(ip_lib.InvalidNetworkValue, call)

    def test_default_route_family_from_gateway(self):
        self.dev.route.add_gateway('fd00::1', metric=10)
        self.priv['add_route'].assert_called_once_with(
            '::/0', 6, NS, gateway='fd00::1', device='qr-1', table=None, metric=10,
            scope=None, onlink=False, replace=True)
        self.dev.route.add_gateway('10.0.0.1', table='main', onlink=True)
        args, kwargs = self.priv['add_route'].call_args
        self.assertEqual(('0.0.0.0/0', 4, NS), args)
        self.assertEqual((254, True), (kwargs['table'], kwargs['onlink']))

    def test_host_route_and_names(self):
        self.dev.route.add_route('10.9.8.7', scope='link', table=100, replace=False)
        args, kwargs = self.priv['add_route'].call_args
        self.assertEqual(('10.9.8.7/32', 4, NS), args)
        self.assertEqual((253, 100, False), (kwargs['scope'], kwargs['table'],
                                             kwargs['replace']))

    def test_get_gateway_picks_lowest_metric_default(self):
        self.priv['list_routes'].return_value = (
            {'dst': '10.0.0.0/24', 'metric': 0},
            {'dst': '0.0.0.0/0', 'metric': 200, 'gateway': '10.0.0.2'},
            {'dst': '0.0.0.0/0', 'metric': 100, 'gateway': '10.0.0.1'})
        self.assertEqual('10.0.0.1', self.dev.route.get_gateway()['gateway'])
        self.priv['list_routes'].assert_called_with(NS, 4, 254, 'qr-1')
        self.priv['list_routes'].return_value = ()
        self.assertIsNone(self.dev.route.get_gateway(6))


class TestLinks(IpLibTestCase):

    def test_veth_args_normalised(self):
        a, b = ip_lib.IPWrapper().add_veth('tap0', 'ns-0', peer_namespace=NS, mtu=1450,
                                           mac='FA:16:3E:00:00:01')
        self.priv['create_veth'].assert_called_once_with(
            'tap0', 'ns-0', namespace=None, peer_namespace=NS, mtu=1450,
            address='fa:16:3e:00:00:01', peer_mtu=1450, peer_address=None)
        self.assertEqual((ip_lib.IPDevice('tap0'), ip_lib.IPDevice('ns-0', NS)), (a, b))

    def test_veth_peer_defaults_to_wrapper_namespace(self):
        _, b = ip_lib.IPWrapper(NS).add_veth('a0', 'b0')
        self.assertEqual(NS, b.namespace)
        self.assertEqual(NS, self.priv['create_veth'].call_args.kwargs['peer_namespace'])

    def test_bad_mtu_and_mac(self):
        wrapper = ip_lib.IPWrapper(NS)
        dev = ip_lib.IPDevice('tap0', NS)
        for call in (lambda: dev.link.set_mtu(67), lambda: dev.link.set_mtu(65536),
                     lambda: dev.link.set_mtu('1500'), lambda: dev.link.set_mtu(True),
                     lambda: dev.link.set_address('fa:16:3e:00:00'),
                     lambda: dev.link.set_address('fa-16-3e-00-00-01'),
                     lambda: dev.link.set_address('fa:16:3e:00:00:0g'),
                     lambda: dev.link.set_address('01:00:5e:00:00:01'),  # multicast
                     lambda: wrapper.add_veth('a', 'b', mtu=10),
                     lambda: wrapper.add_veth('a', 'b', peer_mac='zz:16:3e:00:00:01'),
                     lambda: wrapper.add_bridge('br0', mtu=0)):
            self.assert_refused(ip_lib.InvalidNetworkValue, call)

    def test_vxlan_validation(self):
        wrapper = ip_lib.IPWrapper()
        for call in (lambda: wrapper.add_vxlan('vx', 0),
                     lambda: wrapper.add_vxlan('vx', 2 ** 24),
                     lambda: wrapper.add_vxlan('vx', '5')):
            self.assert_refused(exceptions.InvalidIdentifier, call)
        for call in (lambda: wrapper.add_vxlan('vx', 5, group='10.0.0.1', dev='eth0'),
                     lambda: wrapper.add_vxlan('vx', 5, group='239.0.0.1'),
                     lambda: wrapper.add_vxlan('vx', 5, local_ip='fd00::1',
                                               group='239.0.0.1', dev='eth0'),
                     lambda: wrapper.add_vxlan('vx', 5, local_ip='10.0.0.999'),
                     lambda: wrapper.add_vxlan('vx', 5, dstport=0),
                     lambda: wrapper.add_vxlan('vx', 5, ttl=256)):
            self.assert_refused(ip_lib.InvalidNetworkValue, call)
        wrapper.add_vxlan('vx', 5, local_ip='192.0.2.1', group='239.0.0.1', dev='eth0',
                          learning=0)
        self.priv['create_vxlan'].assert_called_once_with(
            'vx', 5, None, local_ip='192.0.2.1', group='239.0.0.1', dev='eth0',
            dstport=4789, learning=False, ttl=None, mtu=None, exist_ok=False)

    def test_set_master_and_nomaster(self):
        dev = ip_lib.IPDevice('tap0')
        dev.link.set_master('brq1')
        self.priv['set_link'].assert_called_with('tap0', None, master='brq1')
        dev.link.set_nomaster()
        self.priv['set_link'].assert_called_with('tap0', None, master='')

    def test_set_netns_follows_device(self):
        dev = ip_lib.IPDevice('tap0')
        dev.link.set_netns(NS)
        self.priv['move_link'].assert_called_once_with('tap0', NS, None)
        self.assertEqual(NS, dev.namespace)
        dev.addr.add('10.0.0.1/24')
        self.assertEqual(NS, self.priv['add_address'].call_args.args[4])

    def test_move_failure_keeps_namespace(self):
        self.priv['move_link'].side_effect = priv.NetworkNamespaceNotFound(NS)
        dev = ip_lib.IPDevice('tap0')
        self.assertRaises(ip_lib.NetworkNamespaceNotFound, dev.link.set_netns, NS)
        self.assertIsNone(dev.namespace)


class TestNeighbours(IpLibTestCase):

    def test_args(self):
        dev = ip_lib.IPDevice('tap0', NS)
        dev.neigh.add('FD00::5', '33:33:00:00:00:01')  # multicast MAC allowed here
        self.priv['add_neighbour'].assert_called_once_with(
            'tap0', 'fd00::5', '33:33:00:00:00:01', 6, NS)
        self.assert_refused(ip_lib.InvalidNetworkValue, dev.neigh.add, '10.0.0.1', 'nope')

    def test_bad_ip(self):
        dev = ip_lib.IPDevice('tap0', NS)
        self.assert_refused(ip_lib.InvalidNetworkValue, dev.neigh.add,
                            '10.0.0.1/24', '02:00:00:00:00:01')
        self.assert_refused(ip_lib.InvalidNetworkValue, dev.neigh.delete, 'x')


class TestSysctl(IpLibTestCase):

    def test_key_parsing(self):
        ip_lib.set_sysctl('net.ipv4.ip_forward', 1, NS)
        self.priv['set_sysctl'].assert_called_once_with(['net', 'ipv4', 'ip_forward'],
                                                        '1', NS)
        # A device name with a dot must be passed as components.
        ip_lib.IPDevice('eth0.100', NS).disable_ipv6()
        self.priv['set_sysctl'].assert_called_with(
            ['net', 'ipv6', 'conf', 'eth0.100', 'disable_ipv6'], '1', NS)
        ip_lib.set_sysctl(('net', 'ipv4', 'conf', 'all', 'rp_filter'), False)
        self.priv['set_sysctl'].assert_called_with(
            ['net', 'ipv4', 'conf', 'all', 'rp_filter'], '0', None)

    def test_refused(self):
        for key in ('kernel.panic', 'net', 'net..ipv4', 'net.ipv4/../../x',
                    ['net', '..', 'x'], ['net', 'ipv4', ''], 'net.ipv4.conf.a b.x', ''):
            e = self.assert_refused(ip_lib.InvalidNetworkValue, ip_lib.set_sysctl, key, 1)
            self.assertIn('sysctl', str(e))
        for value in ('1\n2', '', None, 1.5, 'a\0'):
            self.assert_refused(ip_lib.InvalidNetworkValue, ip_lib.set_sysctl,
                                'net.ipv4.ip_forward', value)

    def test_root_side_rechecks_path(self):
        # Defence in depth in the daemon itself (runs unmocked here: pure).
        self.assertEqual('/proc/sys/net/ipv4/conf/eth0.100/rp_filter',
                         priv._sysctl_path(['net', 'ipv4', 'conf', 'eth0.100', 'rp_filter']))
        for parts in (['kernel', 'panic'], ['net', '..', 'x'], ['net', 'a/b'], ['net']):
            self.assertRaises(ValueError, priv._sysctl_path, parts)


class TestExceptions(base.TestCase):
    """Errors must survive privsep: it re-raises ``cls(*args)`` after msgpack."""

    def test_round_trip(self):
        for exc in (priv.NetworkNamespaceNotFound(NS),
                    priv.NetworkInterfaceNotFound('tap0', NS),
                    priv.NetworkInterfaceNotFound('tap0'),
                    priv.NetworkInterfaceExists('tap0', None, 'it is a veth device'),
                    priv.NetlinkOperationError(17, 'adding route in the root namespace')):
            args = msgpack.unpackb(msgpack.packb(exc.args), use_list=False)
            again = type(exc)(*args)
            self.assertEqual(str(exc), str(again))
            self.assertIsInstance(again, exceptions.AgentkitError)

    def test_messages(self):
        self.assertEqual("network device 'tap0' does not exist in namespace 'ns1'",
                         str(priv.NetworkInterfaceNotFound('tap0', 'ns1')))
        self.assertEqual("network device 'tap0' does not exist in the root namespace",
                         str(priv.NetworkInterfaceNotFound('tap0')))
        self.assertEqual("network namespace 'ns1' does not exist",
                         str(priv.NetworkNamespaceNotFound('ns1')))
        e = priv.NetlinkOperationError(17, 'adding x')
        self.assertEqual(17, e.errno)
        self.assertIn('File exists', str(e))
        self.assertIs(ip_lib.NetworkInterfaceNotFound, priv.NetworkInterfaceNotFound)


class FakeIPRoute:
    def __init__(self, namespace, inode):
        self.namespace, self.inode, self.closed = namespace, inode, False

    def close(self):
        self.closed = True


class TestSocketCache(base.TestCase):
    """The daemon-side socket cache, run in-process with fake sockets."""

    def setUp(self) -> None:
        super().setUp()
        self.inodes = {'ns1': 101, 'ns2': 102, 'ns3': 103}
        self.opened: list[FakeIPRoute] = []

        def fake_inode(namespace):
            if namespace not in self.inodes:
                raise priv.NetworkNamespaceNotFound(namespace)
            return self.inodes[namespace]

        def fake_open(namespace):
            ipr = FakeIPRoute(namespace, None if namespace is None
                              else self.inodes[namespace])
            self.opened.append(ipr)
            return priv._Entry(ipr, ipr.inode)

        for name, new in (('_ns_inode', fake_inode), ('_open', fake_open),
                          ('_cache', priv.collections.OrderedDict()),
                          ('_cache_limit', 2)):
            patcher = mock.patch.object(priv, name, new)
            patcher.start()
            self.addCleanup(patcher.stop)

    def run_in(self, namespace):
        return priv._run(namespace, lambda ipr: ipr)

    def test_socket_reused(self):
        first = self.run_in('ns1')
        self.assertIs(first, self.run_in('ns1'))
        self.assertEqual(1, len(self.opened))
        self.assertIs(self.run_in(None), self.run_in(None))
        self.assertEqual(2, len(self.opened))

    def test_recreated_namespace_gets_a_new_socket(self):
        old = self.run_in('ns1')
        self.inodes['ns1'] = 999
        new = self.run_in('ns1')
        self.assertIsNot(old, new)
        self.assertTrue(old.closed)
        self.assertEqual(999, new.inode)

    def test_deleted_namespace_is_released(self):
        old = self.run_in('ns1')
        del self.inodes['ns1']
        self.assertRaises(priv.NetworkNamespaceNotFound, self.run_in, 'ns1')
        self.assertTrue(old.closed)  # no longer pins the dead namespace
        self.assertNotIn('ns1', priv._cache)

    def test_least_recently_used_socket_closed_beyond_limit(self):
        s1, s2 = self.run_in('ns1'), self.run_in('ns2')
        self.run_in('ns1')
        s3 = self.run_in('ns3')
        self.assertEqual(['ns1', 'ns3'], list(priv._cache))
        self.assertTrue(s2.closed)
        self.assertFalse(s1.closed or s3.closed)

    def test_closed_socket_retried_once(self):
        calls = []

        def op(ipr):
            calls.append(ipr)
            if len(calls) == 1:
                raise OSError(9, 'Bad file descriptor')
            return 'done'

        self.assertEqual('done', priv._run('ns1', op))
        self.assertTrue(calls[0].closed)
        self.assertIsNot(calls[0], calls[1])

        def always_bad(ipr):
            raise OSError(9, 'Bad file descriptor')

        self.assertRaises(OSError, priv._run, 'ns1', always_bad)

    def test_other_errors_not_retried(self):
        op = mock.Mock(side_effect=OSError(13, 'Permission denied'))
        self.assertRaises(PermissionError, priv._run, 'ns1', op)
        self.assertEqual(1, op.call_count)

    def test_all_work_runs_on_one_thread(self):
        names = set()

        def op(ipr):
            names.add(threading.current_thread().name)
            return threading.get_ident()

        with futures.ThreadPoolExecutor(4) as pool:
            idents = set(pool.map(lambda _: priv._run('ns1', op), range(20)))
        self.assertEqual(1, len(idents))
        self.assertEqual({'netlink'}, names)
        self.assertNotIn(threading.get_ident(), idents)
