"""Send requests to the metadata agent's unix socket as haproxy forwards them.

haproxy (Neutron's metadata proxy config) deletes the other id header, sets
``X-Neutron-Router-ID`` or ``X-Neutron-Network-ID`` and, with ``option
forwardfor``, appends ``X-Forwarded-For: <VM address>`` after whatever
headers the VM sent, forged ones included.
"""

from __future__ import annotations

import dataclasses
import http.client
import socket


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float = 10.0) -> None:
        super().__init__('169.254.169.254', timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


@dataclasses.dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


def proxy_request(socket_path: str, path: str, source: str, *,
                  router_id: str | None = None, network_id: str | None = None,
                  method: str = 'GET', body: bytes | None = None,
                  vm_headers: list[tuple[str, str]] | None = None,
                  timeout: float = 10.0) -> Answer:
    """One request as haproxy would forward it (``vm_headers``: what the VM
    itself sent, kept in front of haproxy's own)."""
    conn = UnixHTTPConnection(socket_path, timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in vm_headers or []:
            conn.putheader(name, value)
        if router_id:
            conn.putheader('X-Neutron-Router-ID', router_id)
        if network_id:
            conn.putheader('X-Neutron-Network-ID', network_id)
        conn.putheader('X-Forwarded-For', source)
        if body is not None:
            conn.putheader('Content-Length', str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        return Answer(resp.status, data, {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()
