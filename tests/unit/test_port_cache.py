"""The push-fed port cache against what neutron 29 really sent.

The Port/Network pushes (casts-ovo-push.json) and the details replies
(get_devices_details_list_and_failed_devices.json) were recorded from the
real server in one run, for the same ports: the details the cache builds
from the pushes must be the server's own answer, field for field.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import fixtures

from agentkit.agent import port_cache
from tests import base

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'fixtures', 'neutron29')
OVS_HOST = 'akcap-244b0c-ovs'
LB_HOST = 'akcap-244b0c-lb'
PORT_A = 'eae4f8f8-79ef-4e64-b26d-c03a19724722'
LB_PORT = 'ebd75ee2-8254-4551-9fa7-690754a8d95b'
# The steps before the server was first asked for details: what an agent
# had been pushed by the time its ports were plugged.
STEPS_BEFORE_DETAILS = 'RPC details: full port ids, OVS host'


def load(name: str) -> dict[str, Any]:
    with open(os.path.join(FIXTURES, name)) as f:
        return json.load(f)


def pushes(until: str | None = None) -> list[tuple[str, str, list[Any]]]:
    """(resource type, event type, objects) of every push, in order."""
    out = []
    for step, casts in load('casts-ovo-push.json')['steps'].items():
        if step == until:
            break
        for cast in casts:
            kind = cast['exchange'].split('-')[2]
            if cast['method'] == 'push' and kind in ('Port', 'Network'):
                out.append((kind, cast['args']['event_type'],
                            cast['args']['resource_list']))
    return out


def fed(host: str, until: str | None = STEPS_BEFORE_DETAILS) -> port_cache.PortCache:
    cache = port_cache.PortCache(host)
    for kind, event, objects in pushes(until):
        if kind == 'Port':
            cache.push_ports(objects, event)
        else:
            cache.push_networks(objects, event)
    return cache


def server_reply(call: str) -> dict[str, dict[str, Any]]:
    reply = load('get_devices_details_list_and_failed_devices.json')['calls'][call]['reply']
    return {d['device']: d for d in reply['devices']}


class DetailsFromPushesTest(base.TestCase):

    def test_ovs_ports_get_the_servers_own_details(self) -> None:
        cache = fed(OVS_HOST)
        replies = server_reply('full port ids, OVS host')
        self.assertEqual(6, len(replies))
        for device, expected in replies.items():
            self.assertEqual(expected, cache.details(device), device)
        self.assertEqual(6, cache.hits)

    def test_short_ids_resolve_like_the_server(self) -> None:
        cache = fed(OVS_HOST)
        for device, expected in server_reply('11-char port id prefixes (id[:11]), '
                                             'OVS host').items():
            self.assertEqual(expected, cache.details(device), device)

    def test_linux_bridge_port_by_full_and_short_id(self) -> None:
        step = 'RPC details: Linux bridge port: full id, id[:11] and tap<id[:11]>, LB host'
        cache = fed(LB_HOST, until=step)
        replies = server_reply('Linux bridge port: full id, id[:11] and tap<id[:11]>, '
                               'LB host')
        for device in (LB_PORT, LB_PORT[:11]):
            self.assertEqual(replies[device], cache.details(device), device)
        # Only this host's ports are kept: the OVS host's are not.
        self.assertIsNone(cache.details(PORT_A))
        self.assertEqual(1, len(cache))

    def test_other_hosts_ports_are_not_kept(self) -> None:
        cache = fed('akcap-244b0c-other')
        self.assertEqual(0, len(cache))
        self.assertIsNone(cache.details(PORT_A))


class FallsBackToTheServerTest(base.TestCase):
    """None whenever the server's answer could differ: the agent then asks."""

    def test_unbound_port(self) -> None:
        # Only the first push of port A: bound to the host, not yet by a driver.
        cache = port_cache.PortCache(OVS_HOST)
        kinds = pushes('port create: B')
        network = next(objs for kind, _e, objs in kinds if kind == 'Network')
        first_a = next(objs for kind, _e, objs in kinds if kind == 'Port')
        cache.push_networks(network, 'updated')
        cache.push_ports(first_a, 'updated')
        self.assertEqual('unbound', port_cache.object_data(port_cache.object_data(
            first_a[0])['bindings'][0])['vif_type'])
        self.assertIsNone(cache.details(PORT_A))
        self.assertEqual(1, cache.misses)

    def test_network_mtu_unknown(self) -> None:
        cache = port_cache.PortCache(OVS_HOST)
        for kind, event, objects in pushes(STEPS_BEFORE_DETAILS):
            if kind == 'Port':
                cache.push_ports(objects, event)
        self.assertIsNone(cache.details(PORT_A))

    def test_port_update_newer_than_the_push(self) -> None:
        cache = fed(OVS_HOST)
        self.assertIsNotNone(cache.details(PORT_A))
        cache.want_revision(PORT_A, 99)
        self.assertIsNone(cache.details(PORT_A))

    def test_network_update_newer_than_the_push(self) -> None:
        cache = fed(OVS_HOST)
        network_id = server_reply('full port ids, OVS host')[PORT_A]['network_id']
        cache.want_revision(network_id, 1)  # the revision pushed
        self.assertIsNotNone(cache.details(PORT_A))
        cache.want_revision(network_id, 2)
        self.assertIsNone(cache.details(PORT_A))

    def test_an_older_push_never_replaces_a_newer_one(self) -> None:
        cache = fed(OVS_HOST)
        port_a = [objs for kind, _e, objs in pushes(STEPS_BEFORE_DETAILS)
                  if kind == 'Port' and objs[0]['versioned_object.data']['id'] == PORT_A]
        newest, oldest = port_a[-1], port_a[0]
        cache.push_ports(oldest, 'updated')  # rev 1, unbound: arrives late
        self.assertIsNotNone(cache.details(PORT_A))
        renamed = copy.deepcopy(newest)
        renamed[0]['versioned_object.data']['revision_number'] += 1
        renamed[0]['versioned_object.data']['mac_address'] = 'fa:16:3e:00:00:01'
        cache.push_ports(renamed, 'updated')
        self.assertEqual('fa:16:3e:00:00:01', cache.details(PORT_A)['mac_address'])

    def test_deleted_port_and_port_moved_away(self) -> None:
        cache = fed(OVS_HOST, until=None)  # the whole capture: every port deleted
        self.assertEqual(0, len(cache))
        cache = fed(OVS_HOST)
        moved = copy.deepcopy([objs for kind, _e, objs in pushes(STEPS_BEFORE_DETAILS)
                               if kind == 'Port'
                               and objs[0]['versioned_object.data']['id'] == PORT_A][-1])
        data = moved[0]['versioned_object.data']
        data['revision_number'] += 1
        for binding in data['bindings']:
            binding['versioned_object.data']['host'] = 'elsewhere'
        cache.push_ports(moved, 'updated')
        self.assertIsNone(cache.details(PORT_A))

    def test_announced_revisions_are_bounded(self) -> None:
        self.useFixture(fixtures.MockPatchObject(port_cache, 'MAX_WANTED_REVISIONS', 3))
        cache = fed(OVS_HOST)
        cache.want_revision(PORT_A, 99)  # the oldest announcement: forgotten first
        for i in range(3):
            cache.want_revision(f'{i:08x}-0000-0000-0000-000000000000', 1)
        self.assertIsNotNone(cache.details(PORT_A))
        cache.want_revision(PORT_A, 99)
        self.assertIsNone(cache.details(PORT_A))

    def test_malformed_objects_are_skipped(self) -> None:
        cache = fed(OVS_HOST)
        cache.push_ports([None, {'versioned_object.data': {'id': '../etc'}}, 'x'], 'updated')
        cache.push_networks([{'versioned_object.data': {'id': 7, 'mtu': 'big'}}], 'updated')
        self.assertEqual(server_reply('full port ids, OVS host')[PORT_A],
                         cache.details(PORT_A))
