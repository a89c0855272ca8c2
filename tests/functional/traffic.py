"""Real traffic between namespaces for functional tests: TCP services and sessions.

Why processes: each endpoint lives in a network namespace, so it runs as
``ip netns exec <ns> python -c ...``; the test talks to it over pipes and
never assumes — every check waits for an answer that either comes or not.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

_ECHO_SERVER = '''
import socket, sys, threading
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[2], int(sys.argv[1])))
s.listen(16)
print("ready", flush=True)
def serve(c):
    with c:
        while True:
            data = c.recv(64)
            if not data:
                return
            c.sendall(data)
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
'''

# One connection kept open; each line on stdin sends one byte and prints
# "ok" when it comes back, "timeout" or "closed" otherwise.
_SESSION = '''
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
except OSError as exc:
    print("failed", exc, flush=True)
    sys.exit(1)
print("connected", flush=True)
for line in sys.stdin:
    try:
        c.sendall(b"x")
        print("ok" if c.recv(1) == b"x" else "closed", flush=True)
    except socket.timeout:
        print("timeout", flush=True)
    except OSError:
        print("closed", flush=True)
'''

_CONNECT = '''
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    c.sendall(b"y")
    sys.exit(0 if c.recv(1) == b"y" else 1)
except OSError:
    sys.exit(1)
'''


# Exit 0 once one datagram arrived on the port, 1 after the timeout.
_UDP_RECEIVER = '''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
try:
    s.recvfrom(64)
except socket.timeout:
    sys.exit(1)
'''

_UDP_SENDER = '''
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[3])))
for _ in range(5):
    s.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.1)
'''


def _in_namespace(namespace: str, code: str, *args: str) -> list[str]:
    return ['ip', 'netns', 'exec', namespace, sys.executable, '-c', code, *args]


class EchoServer:
    """A TCP echo service in ``namespace`` (stop it with :meth:`stop`)."""

    def __init__(self, namespace: str, port: int, address: str = '0.0.0.0') -> None:
        self.proc = subprocess.Popen(_in_namespace(namespace, _ECHO_SERVER, str(port), address),
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != 'ready':
            self.stop()
            raise RuntimeError(f'echo server in {namespace} did not start: {line!r}')

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def tcp_connects(namespace: str, address: str, port: int, timeout: float = 1.0) -> bool:
    """One connection from ``namespace`` that gets its byte echoed."""
    return subprocess.run(_in_namespace(namespace, _CONNECT, address, str(port), str(timeout)),
                          capture_output=True, timeout=timeout + 10).returncode == 0


def wait_tcp_connects(namespace: str, address: str, port: int, timeout: float) -> float | None:
    """Seconds until a connection first succeeds, or None after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if tcp_connects(namespace, address, port, timeout=0.5):
            return time.monotonic() - start
        time.sleep(0.05)
    return None


class TcpSession:
    """An established TCP connection from ``namespace``, probed on demand."""

    def __init__(self, namespace: str, address: str, port: int, timeout: float = 1.0) -> None:
        self.proc = subprocess.Popen(
            _in_namespace(namespace, _SESSION, address, str(port), str(timeout)),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.state = self.proc.stdout.readline().strip()

    @property
    def connected(self) -> bool:
        return self.state == 'connected'

    def exchange(self) -> str:
        """Send one byte: ``ok`` (echoed), ``timeout`` or ``closed``."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if self.proc.poll() is not None:
            return 'closed'
        self.proc.stdin.write('\n')
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip() or 'closed'

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def udp_reaches(src_namespace: str, dst_namespace: str, dst_ip: str, sport: int, dport: int,
                timeout: float = 1.5) -> bool:
    """Whether datagrams from ``sport`` in one namespace reach ``dst_ip:dport``
    in the other (a receiver listens there for ``timeout`` seconds)."""
    receiver = subprocess.Popen(_in_namespace(dst_namespace, _UDP_RECEIVER, str(dport),
                                              str(timeout)),
                                stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == 'ready'
        subprocess.run(_in_namespace(src_namespace, _UDP_SENDER, dst_ip, str(dport),
                                     str(sport)), capture_output=True, timeout=30)
        return receiver.wait(timeout + 5) == 0
    finally:
        receiver.kill()
        receiver.wait(5)


_HTTP_GET = '''
import http.client, json, sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=float(sys.argv[2]))
try:
    conn.request("GET", url.path or "/", headers=json.loads(sys.argv[3]))
    resp = conn.getresponse()
    print(resp.status)
    sys.stdout.write(resp.read().decode(errors="replace"))
except OSError as exc:
    print(0)
    print(exc)
'''


def http_get(namespace: str, url: str, timeout: float = 5.0,
             headers: dict[str, str] | None = None) -> tuple[int, str]:
    """(status, body) of one GET from ``namespace``; status 0 when no answer came."""
    import json
    proc = subprocess.run(_in_namespace(namespace, _HTTP_GET, url, str(timeout),
                                        json.dumps(headers or {})),
                          capture_output=True, text=True, timeout=timeout + 10)
    status, _, body = proc.stdout.partition('\n')
    return int(status or 0), body


# Prints "<op> <sender mac> <sender ip> <target ip>" for every ARP frame seen.
_ARP_SNIFFER = '''
import socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
print("ready", flush=True)
while True:
    frame = s.recv(128)
    op, = struct.unpack("!H", frame[20:22])
    sha = ":".join("%02x" % b for b in frame[22:28])
    spa = socket.inet_ntoa(frame[28:32])
    tpa = socket.inet_ntoa(frame[38:42])
    print(op, sha, spa, tpa, flush=True)
'''


class ArpSniffer:
    """Every ARP frame arriving in ``namespace`` (what ``tcpdump arp`` would show).

    A raw ``AF_PACKET`` socket in a child process; :meth:`gratuitous` lists
    the announcements seen so far (sender IP == target IP).
    """

    def __init__(self, namespace: str) -> None:
        self.proc = subprocess.Popen(_in_namespace(namespace, _ARP_SNIFFER),
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != 'ready':
            raise RuntimeError(f'ARP sniffer in {namespace} did not start')
        self.frames: list[tuple[int, str, str, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            op, sha, spa, tpa = line.split()
            self.frames.append((int(op), sha, spa, tpa))

    def gratuitous(self, address: str) -> list[str]:
        """Sender MACs of gratuitous ARPs for ``address`` seen so far."""
        return [sha for _, sha, spa, tpa in list(self.frames)
                if spa == tpa == address]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


# Answers every datagram with the source address it arrived from.
_PEER_REPORTER = '''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(64)
    s.sendto(peer[0].encode(), peer)
'''

# Asks the reporter who it is (a new source port per run: a new conntrack entry).
_PEER_QUERY = '''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
for _ in range(int(sys.argv[3])):
    s.sendto(b"who", (sys.argv[1], int(sys.argv[2])))
    try:
        print(s.recvfrom(64)[0].decode())
        break
    except socket.timeout:
        pass
else:
    sys.exit(1)
'''


class PeerReporter:
    """A UDP service in ``namespace`` answering with the source address it saw.

    Proves NAT without tcpdump: :func:`peer_seen` from another namespace
    returns the address the packet arrived from after every NAT on the way.
    """

    def __init__(self, namespace: str, port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(_in_namespace(namespace, _PEER_REPORTER, str(port)),
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != 'ready':
            self.stop()
            raise RuntimeError(f'UDP reporter in {namespace} did not start')

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def peer_seen(client_namespace: str, address: str, port: int, tries: int = 10) -> str | None:
    """The source address a :class:`PeerReporter` at ``address`` saw; None if no answer."""
    result = subprocess.run(_in_namespace(client_namespace, _PEER_QUERY, address, str(port),
                                          str(tries)),
                            capture_output=True, text=True, timeout=tries + 10)
    return result.stdout.strip() if result.returncode == 0 else None


class ContinuousPing:
    """``ping -i 0.2`` running in ``namespace`` until :meth:`stop`; counts losses."""

    def __init__(self, namespace: str, address: str, interval: float = 0.2) -> None:
        self.interval = interval
        # The longest run of unanswered pings between two answered ones
        # times the interval: how long traffic stopped (set by stop()).
        self.longest_outage = 0.0
        self.proc = subprocess.Popen(
            ['ip', 'netns', 'exec', namespace, 'ping', '-n', '-i', str(interval),
             '-W', '1', address], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> tuple[int, int]:
        """(sent, received) as ping's summary reports them."""
        self.proc.send_signal(2)  # SIGINT: ping prints its statistics
        out, _ = self.proc.communicate(10)
        answered = sorted({int(m) for m in re.findall(r'icmp_seq=(\d+) ttl=', out)})
        runs = [b - a - 1 for a, b in zip(answered, answered[1:])]
        self.longest_outage = max(runs, default=0) * self.interval
        for line in out.splitlines():
            if 'packets transmitted' in line:
                fields = line.split(',')
                return int(fields[0].split()[0]), int(fields[1].split()[0])
        raise RuntimeError(f'no ping statistics in {out[-500:]!r}')
