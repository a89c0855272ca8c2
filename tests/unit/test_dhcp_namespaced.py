"""NamespacedDhcpDriver: the DHCP driver, not the agent, builds the host side."""

from __future__ import annotations

import uuid
from typing import Any
from unittest import mock

from agentkit.api import dhcp as dhcp_api
from agentkit.api import dhcp_payload
from agentkit.api import metadata
from agentkit.lib import ip_lib
from drivers.dhcp import namespaced
from tests import base

NET_ID = str(uuid.uuid4())
SUBNET_ID = str(uuid.uuid4())
PORT_ID = str(uuid.uuid4())
NAMESPACE = f'qdhcp-{NET_ID}'
DEVICE = 'tap' + PORT_ID[:11]


class RecordingDriver(namespaced.NamespacedDhcpDriver):
    """Records what the server part is asked to do."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[Any, ...]] = []

    def serve(self, network: dhcp_api.Network, namespace: str, interface_name: str) -> None:
        self.calls.append(('serve', network.id, namespace, interface_name))

    def stop_serving(self, network_id: str) -> None:
        self.calls.append(('stop_serving', network_id))

    def active_networks(self) -> set[str]:
        return set()


def network(gateway: str | None = '10.0.0.1') -> dhcp_api.Network:
    return dhcp_payload.parse_network({
        'id': NET_ID, 'mtu': 1450,
        'subnets': [{'id': SUBNET_ID, 'cidr': '10.0.0.0/24', 'ip_version': 4,
                     'enable_dhcp': True, 'gateway_ip': gateway}],
        'ports': []})


PORT = dhcp_payload.parse_port({'id': PORT_ID, 'mac_address': 'fa:16:3e:00:00:01',
                                'fixed_ips': [{'subnet_id': SUBNET_ID,
                                               'ip_address': '10.0.0.2'}]}, network())


class NamespacedDhcpDriverTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.wrapper = mock.Mock()
        self.wrapper.device.return_value.route.get_gateway.return_value = None
        patcher = mock.patch.object(namespaced.ip_lib, 'IPWrapper',
                                    return_value=self.wrapper)
        self.ip_wrapper = patcher.start()
        self.addCleanup(patcher.stop)
        self.interface = mock.Mock()
        self.interface.get_device_name.return_value = DEVICE
        self.interface.read_state.return_value = None  # no namespace yet
        self.conf = mock.Mock(enable_isolated_metadata=False)
        self.driver = RecordingDriver(self.conf, 'host1', self.interface)

    def test_enable_builds_namespace_port_addresses_route_then_serves(self) -> None:
        self.driver.enable(network(), PORT)
        self.ip_wrapper.assert_called_with(NAMESPACE)
        self.wrapper.ensure_namespace.assert_called_once_with()
        self.interface.plug.assert_called_once_with(
            NET_ID, PORT_ID, DEVICE, PORT.mac_address, NAMESPACE, mtu=1450,
            current=None)
        self.interface.set_addresses.assert_called_once_with(
            DEVICE, NAMESPACE, ['10.0.0.2/24'], current=None)
        self.wrapper.device.return_value.route.add_gateway.assert_called_once_with(
            '10.0.0.1')
        self.assertEqual([('serve', NET_ID, NAMESPACE, DEVICE)], self.driver.calls)

    def test_enable_of_a_port_in_place_reads_once_and_writes_nothing(self) -> None:
        state = ip_lib.DeviceState(
            loopback_up=True, link={'state': 'up'}, addresses=(),
            routes=({'dst': '0.0.0.0/0', 'gateway': '10.0.0.1', 'metric': 0},))
        self.interface.read_state.return_value = state
        self.driver.enable(network(), PORT)
        self.interface.read_state.assert_called_once_with(NET_ID, DEVICE, NAMESPACE)
        self.wrapper.ensure_namespace.assert_not_called()
        self.assertIs(state, self.interface.plug.call_args.kwargs['current'])
        self.assertIs(state, self.interface.set_addresses.call_args.kwargs['current'])
        self.wrapper.device.return_value.route.get_gateway.assert_not_called()
        self.wrapper.device.return_value.route.add_gateway.assert_not_called()

    def test_isolated_metadata_puts_the_dhcp_port_metadata_address(self) -> None:
        self.conf.enable_isolated_metadata = True
        self.driver.enable(network(gateway=None), PORT)
        cidrs = self.interface.set_addresses.call_args.args[2]
        self.assertIn(metadata.METADATA_V4_DHCP_PORT_CIDR, cidrs)
        self.assertEqual('169.254.169.254/16', metadata.METADATA_V4_DHCP_PORT_CIDR)
        self.wrapper.device.return_value.route.add_gateway.assert_not_called()

    def test_disable_stops_the_server_unplugs_and_deletes_the_namespace(self) -> None:
        self.wrapper.namespace_exists.return_value = True
        self.wrapper.get_devices.return_value = [mock.Mock(), mock.Mock()]
        self.wrapper.get_devices.return_value[0].name = DEVICE
        self.wrapper.get_devices.return_value[1].name = 'other'
        self.interface.unplug.side_effect = [RuntimeError('gone'), None]
        self.driver.disable(NET_ID)
        self.assertEqual([('stop_serving', NET_ID)], self.driver.calls)
        self.assertEqual([mock.call(DEVICE, NAMESPACE), mock.call('other', NAMESPACE)],
                         self.interface.unplug.call_args_list)
        self.wrapper.delete_namespace.assert_called_once_with()
        self.assertIn('unplugging %s' % DEVICE, self.log.output)

    def test_disable_without_namespace_only_stops_the_server(self) -> None:
        self.wrapper.namespace_exists.return_value = False
        self.driver.disable(NET_ID)
        self.assertEqual([('stop_serving', NET_ID)], self.driver.calls)
        self.wrapper.delete_namespace.assert_not_called()
        self.assertFalse(self.driver.present(NET_ID))
        self.wrapper.namespace_exists.return_value = True
        self.assertTrue(self.driver.present(NET_ID))
