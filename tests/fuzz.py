"""Hypothesis strategies for the RPC payloads neutron-server sends agents.

Each RPC method an agent serves has a *template*: a payload of the shape
neutron-server 29 sends (tests/fixtures/neutron29/), built around ids the
test chooses. :func:`mutated` derives bad payloads from it the way a buggy
or hostile sender would: values of the wrong type, keys missing or added
(also ``context``/``self``, which collide with the endpoints' own
parameters), huge and duplicated lists, non-ASCII text, unsafe ids (``../``,
NUL, 300 characters), out-of-range VLAN ids, VNIs and MTUs. The unit fuzz
(tests/unit/test_rpc_fuzz.py) and the functional one over RabbitMQ
(tests/functional/test_rpc_fuzz_dhcp.py) share them.
"""

import uuid
from typing import Any

from oslo_serialization import jsonutils
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st

#: Ids no agent may turn into a device, namespace or file name.
UNSAFE_IDS: tuple[Any, ...] = (
    '../../etc/passwd', '..', 'a\x00b', 'x' * 300, '', ' ', '\u00e9' * 36,
    '-rf', '$(reboot)', 'tap\n', '\u202e' + str(uuid.UUID(int=1)), 12345, None,
    str(uuid.UUID(int=2)).upper() + ' ', str(uuid.UUID(int=3)) + '/..')
#: Numbers outside the ranges of VLAN ids, VNIs, GRE keys, MTUs and ports.
OUT_OF_RANGE: tuple[Any, ...] = (
    -1, 0, 4095, 4096, 2 ** 24, 2 ** 32, 2 ** 63, 10 ** 30, 67, 65536, 9216,
    True, 1.5, float('inf'), '100')
#: Lists far larger than any real notification.
HUGE = 5000

_scalars = (st.none() | st.booleans()
            | st.integers(min_value=-2 ** 70, max_value=2 ** 70)
            | st.floats(allow_nan=False) | st.text(max_size=40)
            | st.sampled_from(UNSAFE_IDS) | st.sampled_from(OUT_OF_RANGE))
#: Any JSON-able value: what ends up where a payload field should be.
junk = st.recursive(
    _scalars,
    lambda inner: (st.lists(inner, max_size=5)
                   | st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=12)
_extra_keys = st.dictionaries(
    st.sampled_from(['context', 'self', 'extra', 'id ', '\u00fcml\u00e4ut',
                     'x' * 300, 'versioned_object.data', 'host']) | st.text(max_size=8),
    junk, min_size=1, max_size=3)


def wire_copy(value: Any) -> Any:
    """``value`` as it comes out of RabbitMQ (oslo.messaging's JSON)."""
    return jsonutils.loads(jsonutils.dumps(value))


class Incoming:
    """What oslo.messaging's RPC server hands its dispatcher."""

    def __init__(self, method: str, args: dict[str, Any], version: str = '1.0') -> None:
        self.ctxt = {'is_admin': True}
        self.message = {'method': method, 'args': args, 'version': version}
        self.client_timeout = None


def fuzz_settings(examples: int) -> settings:
    """Deterministic and bounded: the same examples on every run (CI-stable),
    no example database, no per-example deadline (a machine shared with
    other tests is slow at times)."""
    return settings(max_examples=examples, derandomize=True, database=None,
                    deadline=None, print_blob=True,
                    suppress_health_check=list(HealthCheck))


@st.composite
def mutated(draw: Any, value: Any, depth: int = 0) -> Any:
    """``value`` with some of its parts (perhaps none) made bad."""
    choice = draw(st.integers(0, 9))
    if choice == 0 and depth > 0:
        return draw(junk)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            action = draw(st.integers(0, 9))  # mostly kept: bad deep inside
            if action == 0:
                continue  # key missing
            out[key] = (draw(mutated(item, depth + 1)) if action <= 2 else item)
        if draw(st.integers(0, 4)) == 0:
            out.update(draw(_extra_keys))
        return out
    if isinstance(value, list):
        if choice == 1 and value:
            return value * (HUGE // len(value))  # huge, all duplicates
        if choice == 2 and value:
            return value + value  # duplicates
        if choice == 3:
            return []
        return [draw(mutated(item, depth + 1)) for item in value]
    if isinstance(value, str):
        if choice in (1, 2):
            return draw(st.sampled_from(UNSAFE_IDS))
        if choice == 3:
            return draw(st.text(min_size=1, max_size=40))  # any unicode
        return value
    if isinstance(value, bool) or value is None:
        return draw(junk) if choice in (1, 2) else value
    if isinstance(value, (int, float)):
        if choice in (1, 2, 3):
            return draw(st.sampled_from(OUT_OF_RANGE))
        return value
    return value


def cases(templates: dict[str, Any]) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """(method, kwargs): a template of ``templates`` (method -> payload or a
    strategy of payloads), mutated, or kwargs that are junk altogether."""
    def of(method: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
        template = templates[method]
        base = template if isinstance(template, st.SearchStrategy) else st.just(template)
        payloads = (base.flatmap(mutated)
                    | st.dictionaries(st.text(max_size=12), junk, max_size=4))
        return st.tuples(st.just(method), payloads)
    return st.sampled_from(sorted(templates)).flatmap(of)


#: Segments as a Port push may carry them: types enabled or not, ids in
#: and out of range, physical networks known or not.
segments = st.tuples(
    st.sampled_from(['vlan', 'vxlan', 'flat', 'gre', 'geneve', 'local']) | junk,
    st.sampled_from([1, 100, 150, 200, 201, 4094, 5000, 5001]) | st.sampled_from(OUT_OF_RANGE)
    | junk,
    st.sampled_from(['physnet1', 'physnet2', None, '']) | junk)
#: Network MTUs, most of them impossible.
mtus = st.sampled_from([1500, 1450, 68, 65535, 9000]) | st.sampled_from(OUT_OF_RANGE) | junk


def ovo(name: str, data: dict[str, Any], version: str = '1.0') -> dict[str, Any]:
    """A serialised oslo.versionedobject as neutron-server sends it."""
    return {'versioned_object.name': name, 'versioned_object.version': version,
            'versioned_object.namespace': 'versionedobjects',
            'versioned_object.data': data}


def port_object(port_id: str, network_id: str, host: str, network_type: str = 'vlan',
                segmentation_id: int = 150, physical_network: str | None = 'physnet1',
                revision: int = 5) -> dict[str, Any]:
    """A Port push object bound to ``host`` (neutron-vo-Port-1.11)."""
    return ovo('Port', {
        'id': port_id, 'network_id': network_id, 'status': 'DOWN',
        'mac_address': 'fa:16:3e:12:34:56', 'admin_state_up': True,
        'device_owner': 'compute:nova', 'revision_number': revision,
        'fixed_ips': [ovo('IPAllocation', {'subnet_id': str(uuid.UUID(int=7)),
                                           'ip_address': '10.0.0.5'})],
        'allowed_address_pairs': [], 'security': ovo('PortSecurity',
                                                     {'port_security_enabled': False}),
        'bindings': [ovo('PortBinding', {'host': host, 'vif_type': 'ovs',
                                         'status': 'ACTIVE', 'profile': '{}'})],
        'binding_levels': [ovo('PortBindingLevel', {
            'host': host, 'level': 0, 'segment': ovo('NetworkSegment', {
                'network_type': network_type, 'segmentation_id': segmentation_id,
                'physical_network': physical_network})})],
    }, '1.11')


def network_object(network_id: str, mtu: int = 1500, revision: int = 5) -> dict[str, Any]:
    """A Network push object (neutron-vo-Network-1.3)."""
    return ovo('Network', {'id': network_id, 'mtu': mtu, 'revision_number': revision,
                           'admin_state_up': True, 'name': 'n'}, '1.3')


def dhcp_templates(network_id: str, port_id: str, subnet_id: str) -> dict[str, Any]:
    """Method -> kwargs of the ``dhcp_agent`` casts, as neutron-server 29
    sends them (a network, subnet or port event, the agent's admin state)."""
    return {
        'network_create_end': {'payload': {'network': {'id': network_id}}},
        'network_update_end': {'payload': {'network': {'id': network_id}}},
        'network_delete_end': {'payload': {'network_id': network_id}},
        'subnet_create_end': {'payload': {'subnet': {'network_id': network_id,
                                                     'id': subnet_id}}},
        'subnet_update_end': {'payload': {'subnet': {'network_id': network_id,
                                                     'id': subnet_id}}},
        'subnet_delete_end': {'payload': {'network_id': network_id, 'subnet_id': subnet_id}},
        'port_create_end': {'payload': {'port': {'network_id': network_id, 'id': port_id},
                                        'priority': 0}},
        'port_update_end': {'payload': {'port': {'network_id': network_id, 'id': port_id},
                                        'priority': 0}},
        'port_delete_end': {'payload': {'network_id': network_id, 'port_id': port_id}},
        'agent_updated': {'payload': {'admin_state_up': True}},
    }
