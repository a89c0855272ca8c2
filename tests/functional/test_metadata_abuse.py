"""The metadata path under abuse: haproxy in a router namespace -> the real
agentkit-metadata process -> a stand-in Nova.

VM 1 misbehaves (tests/functional/metadata_abuse_client.py): malformed
HTTP, oversized headers, slow clients holding connections (slowloris),
1,000 connections at once. During each, VM 2 behind the same router keeps
asking for its instance id; every one of its requests must be answered
with its own id. Each case records the RSS of agentkit-metadata and
haproxy (before and at the peak) and VM 2's request latency.
"""

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

from drivers.metadata import haproxy
from tests import reliability
from tests.functional import base
from tests.functional import test_haproxy_metadata as haproxy_case
from tests.functional import test_metadata_agent as metadata_case

CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'metadata_abuse_client.py')
METADATA_IP = haproxy_case.METADATA_IP


def rss_mib(pid: int) -> float:
    with open(f'/proc/{pid}/status') as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith('VmRSS:'))
    return round(kib / 1024, 1)


class Watch:
    """VM 2's requests in a loop and the two processes' RSS, while an abuse runs."""

    def __init__(self, test: 'MetadataAbuseTest') -> None:
        self.test = test
        self.latencies: list[float] = []
        self.failures: list[Any] = []
        self.peak = {'agent': rss_mib(test.agent.proc.pid), 'haproxy': rss_mib(test.haproxy)}
        self.before = dict(self.peak)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            [(status, body)] = haproxy_case.http_get(
                self.test.vm2_ns, METADATA_IP, path=metadata_case.INSTANCE_ID_PATH)
            if (status, body) != (200, self.test.vm2['device_id']):
                self.failures.append((status, body[:80]))
            else:
                self.latencies.append(time.monotonic() - started)
            for name, pid in (('agent', self.test.agent.proc.pid),
                              ('haproxy', self.test.haproxy)):
                self.peak[name] = max(self.peak[name], rss_mib(pid))
            self._stop.wait(0.2)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(60)
        lat = sorted(self.latencies)
        return {'VM2 requests served': len(lat), 'VM2 requests failed': len(self.failures),
                'VM2 latency median ms': round(lat[len(lat) // 2] * 1000) if lat else None,
                'VM2 latency max ms': round(lat[-1] * 1000) if lat else None,
                'agent RSS MiB before/peak': f'{self.before["agent"]}/{self.peak["agent"]}',
                'haproxy RSS MiB before/peak':
                    f'{self.before["haproxy"]}/{self.peak["haproxy"]}'}


class MetadataAbuseTest(metadata_case.MetadataScenarioMixin,
                        haproxy_case.HaproxyMetadataTestCase, base.AgentTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.agent = self.start_agent()
        # The router of the scenario, its haproxy forwarding to the agent.
        # (The scenario's configure() re-parsed the driver's options: set
        # what the haproxy test case had set, and the agent's socket.)
        self.conf.set_override('state_path', self.state_path)
        self.conf.set_override('check_child_processes_interval', 1)
        self.conf.set_override('metadata_proxy_socket', self.socket)
        # self.router is the scenario's router id, shadowing the method.
        ns = haproxy_case.HaproxyMetadataTestCase.router(self, self.router)
        self.vm1_ns = self.vm('vm1', ns, self.prefix[:8] + 'qr1', '10.50.0.1/24',
                              '10.50.0.5/24', gateway='10.50.0.1')
        self.vm2_ns = self.vm('vm2', ns, self.prefix[:8] + 'qr2', '10.60.0.1/24',
                              '10.60.0.7/24', gateway='10.60.0.1')
        self.haproxy = self.spawn(self.new_driver(), ns, self.router, router=True)
        # Positive control: both VMs get their own instance id.
        for vm_ns, vm in ((self.vm1_ns, self.vm1), (self.vm2_ns, self.vm2)):
            self.assertEqual([(200, vm['device_id'])], haproxy_case.http_get(
                vm_ns, METADATA_IP, path=metadata_case.INSTANCE_ID_PATH))

    def abuse(self, spec: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        """Run the misbehaving client in VM 1 while VM 2 is watched."""
        watch = Watch(self)
        started = time.monotonic()
        try:
            proc = subprocess.run(
                ['ip', 'netns', 'exec', self.vm1_ns, sys.executable, CLIENT],
                input=json.dumps(dict(spec, address=METADATA_IP)),
                capture_output=True, text=True, timeout=timeout)
        finally:
            took = time.monotonic() - started
            figures = watch.stop()
        self.assertEqual(0, proc.returncode, proc.stderr)
        outcome = json.loads(proc.stdout)
        self.assertIsNone(self.agent.proc.poll(), 'agentkit-metadata died')
        self.assertTrue(os.path.exists(f'/proc/{self.haproxy}'), 'haproxy died')
        self.assertEqual([], watch.failures)
        self.assertGreater(figures['VM2 requests served'], 0)
        # VM 1 itself is served again afterwards.
        self.assertEqual([(200, self.vm1['device_id'])], haproxy_case.http_get(
            self.vm1_ns, METADATA_IP, path=metadata_case.INSTANCE_ID_PATH))
        figures['abuse s'] = round(took, 1)
        return dict(outcome, figures=figures)

    def record(self, case: str, what: str, injected: str, figures: dict[str, Any],
               order: int) -> None:
        print(f'{case}: {figures}')
        reliability.record(
            case, kind='input', fault=what, injected=injected,
            checked='VM 2 behind the same router served its own instance id throughout; '
                    'agentkit-metadata and haproxy alive; VM 1 served afterwards',
            result=figures, order=order)

    def test_malformed_http(self) -> None:
        payloads = ['GARBAGE\r\n\r\n', '\x00\x01\x02\xff' * 64 + '\r\n\r\n',
                    'GET /latest/meta-data/ HTTP/9.9\r\n\r\n',
                    'GET /latest HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n',
                    'GET /latest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n'
                    'Content-Length: 5\r\n\r\nzz\r\n',
                    'GET /latest HTTP/1.1\r\nno colon here\r\n\r\n',
                    'GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n',
                    'GET /%00%ff\u00e9 HTTP/1.1\r\nHost: x\r\n\r\n',
                    'GET /' + 'a' * 70000 + ' HTTP/1.1\r\nHost: x\r\n\r\n',
                    'POST /latest HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n'
                    + 'x' * 1000]
        rounds = 50
        outcome = self.abuse({'kind': 'raw', 'payloads': payloads * rounds, 'timeout': 10})
        statuses = outcome['statuses']
        # Every one is answered. Only the GET with an unknown HTTP version
        # (otherwise a well-formed request) gets the VM's metadata; the
        # others an error status.
        for index, payload in enumerate(payloads):
            answers = set(statuses[index::len(payloads)])
            if 'HTTP/9.9' in payload:
                self.assertEqual({200}, answers)
            else:
                self.assertTrue(answers and all(s is not None and s >= 400 for s in answers),
                                f'{payload[:40]!r}: {answers}')
        figures = dict(outcome['figures'], **{
            'requests': len(statuses),
            'answers': ', '.join(f'{s}: {statuses.count(s)}'
                                 for s in sorted(set(statuses), key=str))})
        self.record('input-metadata-malformed-http', 'malformed HTTP to the metadata proxy',
                    f'{len(statuses)} malformed requests from one VM (garbage, binary, '
                    'bad version and lengths, smuggling headers, 70 KB URI, 100 MB body)',
                    figures, 230)

    def test_oversized_headers(self) -> None:
        one_big = 'GET /latest HTTP/1.1\r\nHost: x\r\nX-Big: ' + 'b' * 65536 + '\r\n\r\n'
        many = ('GET /latest HTTP/1.1\r\nHost: x\r\n'
                + ''.join(f'X-H{i}: {"v" * 100}\r\n' for i in range(500)) + '\r\n')
        outcome = self.abuse({'kind': 'raw', 'payloads': [one_big, many] * 500,
                              'timeout': 10})
        statuses = outcome['statuses']
        self.assertEqual({400}, set(statuses))  # haproxy's buffer (tune.bufsize) ends them
        figures = dict(outcome['figures'], **{
            'requests': len(statuses),
            'answers': ', '.join(f'{s}: {statuses.count(s)}'
                                 for s in sorted(set(statuses), key=str))})
        self.record('input-metadata-oversized-headers', 'oversized HTTP headers',
                    f'{len(statuses)} requests from one VM: one 64 KiB header, or 500 '
                    'headers of 100 bytes', figures, 231)

    def test_slowloris(self) -> None:
        """More slow connections than the proxy's maxconn: without the
        per-client cap (drivers/metadata/haproxy.py) VM 2 could not connect
        until haproxy's timeout http-request ended them."""
        count = haproxy.MAX_CONNECTIONS + 76
        cap = haproxy.DEFAULT_MAX_CONNECTIONS_PER_CLIENT
        outcome = self.abuse({'kind': 'slow', 'connections': count, 'interval': 1.0,
                              'duration': 40}, timeout=120)
        kinds = [o[0] for o in outcome['outcomes']]
        closed = [o for o in outcome['outcomes'] if o[0] == 'closed-by-server']
        figures = dict(outcome['figures'], **{
            'slow connections': count,
            'refused at once (per-VM cap)': kinds.count('refused'),
            'held, then closed by the proxy': len(closed),
            'still held at the end': kinds.count('held'),
            'proxy answers when closing': ', '.join(sorted({o[2] or 'none' for o in closed})),
            'held ones closed after s (max)': max((o[1] for o in closed), default=None)})
        # Over the cap refused; the cap's worth held (positive control: the
        # proxy took them) until its timeout ended each one.
        self.assertEqual(count - cap, kinds.count('refused'), figures)
        self.assertEqual(cap, len(closed), figures)
        self.assertEqual(0, kinds.count('held'), figures)
        self.record('input-metadata-slowloris', 'slow clients holding connections',
                    f'{count} connections from one VM (more than haproxy maxconn '
                    f'{haproxy.MAX_CONNECTIONS}) sending a header byte per second',
                    figures, 232)

    def test_a_thousand_connections_at_once(self) -> None:
        """Without the per-client cap all 1,000 of a round are answered
        (haproxy's maxconn is 1,024): the refusals below are the cap's."""
        rounds = 10
        cap = haproxy.DEFAULT_MAX_CONNECTIONS_PER_CLIENT
        outcome = self.abuse({'kind': 'flood', 'connections': 1000, 'rounds': rounds,
                              'path': metadata_case.INSTANCE_ID_PATH, 'timeout': 60})
        statuses = [s for answers in outcome['rounds'] for s in answers]
        figures = dict(outcome['figures'], **{
            'connections': f'{rounds} x 1000',
            'answers': ', '.join(f'{s}: {statuses.count(s)}'
                                 for s in sorted(set(statuses), key=str)),
            'all answered in s': round(outcome['seconds'], 1)})
        for answers in outcome['rounds']:
            # The cap's worth is served (positive control: the proxy answers
            # a burst), the rest refused at once, not queued nor timed out.
            self.assertGreaterEqual(answers.count(200), cap, figures)
            self.assertGreaterEqual(answers.count('refused'), 1000 - cap, figures)
            self.assertEqual(1000, answers.count(200) + answers.count('refused'), figures)
        self.record('input-metadata-1000-connections', '1,000 connections at once',
                    f'1,000 concurrent GETs from one VM, {rounds} times', figures, 233)
