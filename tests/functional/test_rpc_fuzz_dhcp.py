"""Fuzzed casts over RabbitMQ to a real agentkit-dhcp while a VM keeps renewing.

The fake neutron-server sends a few hundred derandomized, fuzzed
``dhcp_agent`` casts (tests/fuzz.py: wrong types, missing and extra keys,
huge lists, unsafe ids, non-ASCII) to the agent's own topic, half of them
about the canary network. Meanwhile the canary VM renews its lease every
two seconds from the real dnsmasq. Checked: the agent process stays alive;
its log has exactly one ``Rejected`` line per cast a local dry run of the
same endpoint refuses (none lost, none repeated); a port added after the
fuzz is served (the queue still works); no renewal was lost.
"""

import logging
import time
import uuid
from typing import Any
from unittest import mock

import oslo_messaging
from hypothesis import given
from hypothesis import strategies as st
from oslo_messaging.rpc import dispatcher as rpc_dispatcher

from agentkit.agent import dhcp as dhcp_agent
from tests import fuzz
from tests import reliability
from tests.functional import base
from tests.functional import canary as canary_mod
from tests.functional import test_dhcp_agent

CASTS = 300
#: seconds between two casts: the fuzz lasts about 15 s, seven renewals
PACE = 0.05
#: The cast call's own parameters cannot be sent as arguments (the unit
#: fuzz sends them: tests/unit/test_rpc_fuzz.py).
_CLIENT_ARGS = frozenset({'self', 'ctxt', 'method'})


def rss_kib(pid: int) -> int:
    with open(f'/proc/{pid}/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('VmRSS:'))


class _Refusals(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith('Rejected '):
            self.count += 1


class DhcpFuzzOverAmqpTest(test_dhcp_agent.OvsSwitch, test_dhcp_agent.DhcpAgentFixture,
                           base.AgentTestCase):
    interface_driver = 'openvswitch'

    def expected_refusals(self, casts: list[tuple[str, dict[str, Any]]]) -> int:
        """How many of ``casts`` the DHCP endpoint refuses: the same endpoint
        class, dispatched locally with an agent that records nothing."""
        handler = _Refusals()
        logger = logging.getLogger('agentkit.rpc.consumer')
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)
        dispatcher = rpc_dispatcher.RPCDispatcher([dhcp_agent.DhcpRpcCallbacks(mock.Mock())],
                                                  oslo_messaging.NoOpSerializer())
        for method, args in casts:
            dispatcher.dispatch(fuzz.Incoming(method, fuzz.wire_copy(args)))
        return handler.count

    def test_fuzzed_casts_while_the_canary_renews(self) -> None:
        net, subnet = self.make_network('10.254.60.0/24', '10.254.60.1')
        port, vm, client = self.make_vm(net, subnet, '10.254.60.11')
        proc = self.start_agent()
        self.wait_dhcp_ready(port['id'])
        self.assertEqual('10.254.60.11', (client.request() or {}).get('new_ip_address'))
        pid = proc.proc.pid
        rss_before = rss_kib(pid)

        # The casts: templates about the canary network or an unknown one.
        other = str(uuid.uuid4())
        templates = {m: st.sampled_from([net['id'], other]).map(
            lambda n, m=m: fuzz.dhcp_templates(n, port['id'], subnet['id'])[m])
            for m in fuzz.dhcp_templates(other, other, other)}
        casts: list[tuple[str, dict[str, Any]]] = []

        @given(fuzz.cases(templates))
        @fuzz.fuzz_settings(CASTS)
        def collect(case: tuple[str, dict[str, Any]]) -> None:
            method, args = case
            casts.append((method, {k: v for k, v in args.items() if k not in _CLIENT_ARGS}))

        collect()
        casts = casts[-CASTS:]  # the examples of the run proper
        expected = self.expected_refusals(casts)
        self.assertGreater(expected, 0)
        self.assertLess(expected, len(casts))  # some are accepted, too

        canary = canary_mod.Canary([], dhcp=client, expected_ip='10.254.60.11',
                                   renew_every=2.0)
        started = time.monotonic()
        target = oslo_messaging.Target(exchange='neutron', topic='dhcp_agent', version='1.0')
        cctxt = oslo_messaging.get_rpc_client(self.neutron.transport, target).prepare(
            server=self.host)
        for method, args in casts:
            cctxt.cast({'is_admin': True}, method, **args)
            time.sleep(PACE)  # spread over several renewals of the canary
        sent_in = time.monotonic() - started
        # A port added after the fuzz is served: the agent still works.
        mark = self.neutron.mark()
        port2, vm2, client2 = self.make_vm(net, subnet, '10.254.60.12')
        cctxt.cast({'is_admin': True}, 'port_create_end',
                   payload={'port': port2, 'priority': 0})
        self.wait_dhcp_ready(port2['id'], since=mark)
        base.wait_until(lambda: proc.output().count('Rejected ') >= expected, 60,
                        'every refusal logged')
        handled_in = time.monotonic() - started
        time.sleep(4)  # two more renewals after the last message
        result = canary.stop()
        self.assertIsNone(proc.proc.poll(), 'the agent died')
        self.assertEqual(expected, proc.output().count('Rejected '), 'one line per refusal')
        self.assertNotIn('Traceback', proc.output())
        self.assertEqual('10.254.60.12', (client2.request() or {}).get('new_ip_address'))
        self.assertGreater(result['dhcp renewals'], 0)
        self.assertEqual(0, result['leases lost'], result)
        figures = {'casts sent': len(casts), 'refusals logged': expected,
                   'canary renewals': result['dhcp renewals'],
                   'canary leases lost': result['leases lost'],
                   'sent in s': round(sent_in, 1), 'all handled in s': round(handled_in, 1),
                   'agent RSS before MiB': round(rss_before / 1024, 1),
                   'agent RSS after MiB': round(rss_kib(pid) / 1024, 1)}
        print(f'DHCP fuzz over AMQP: {figures}')
        reliability.record(
            'input-rpc-fuzz-dhcp-amqp', kind='input',
            fault='fuzzed RPC casts over RabbitMQ (agentkit-dhcp process)',
            injected=f'{len(casts)} derandomized hypothesis casts to dhcp_agent.<host> '
                     'from the fake server, half about the served network',
            checked='agent alive, one log line per refused cast (count equals a local '
                    'dry run), no traceback, a later port served, canary VM renews',
            result=figures, order=201)
