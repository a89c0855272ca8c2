"""A stand-in for Nova's metadata API, for tests and benchmarks.

A real threaded HTTP server on 127.0.0.1 that checks requests the way Nova's
metadata handler checks a request from neutron's metadata agent
(nova/api/metadata/handler.py, ``_handle_instance_id_request``): the three
headers must be there (400), ``X-Instance-ID-Signature`` must be the
HMAC-SHA256 of the instance id with the shared secret (403), the instance
must exist (404) and belong to ``X-Tenant-ID`` (404). Then it answers a few
metadata paths for that instance and records every request.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from typing import Any


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops SYNs under a burst: each
    # costs a 1 s TCP retransmit, which would be measured as agent latency.
    request_queue_size = 1024


class FakeNova:
    """``start()``, register ``instances``, point ``nova_metadata_port`` at ``port``."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        #: instance id -> project id
        self.instances: dict[str, str] = {}
        #: seconds to wait before answering (a slow Nova)
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self.passwords: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self._httpd: _Server | None = None
        self.port = 0

    def start(self, port: int = 0) -> FakeNova:
        nova = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def do_GET(self) -> None:
                nova._serve(self)

            do_HEAD = do_GET
            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = _Server(('127.0.0.1', port), Handler)
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True,
                         name='fake-nova').start()
        return self

    def stop(self) -> None:
        """Stop listening: connections to ``port`` are refused from now on."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def signature(self, instance_id: str) -> str:
        return hmac.new(self.secret.encode(), instance_id.encode(),
                        hashlib.sha256).hexdigest()

    def _serve(self, req: http.server.BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get('Content-Length') or 0)
        body = req.rfile.read(length) if length else b''
        record = {'method': req.command, 'path': req.path,
                  'headers': dict(req.headers.items()), 'body': body}
        with self.lock:
            self.requests.append(record)
        if self.delay:
            time.sleep(self.delay)
        status, content, ctype = self._answer(req.command, req.path, req.headers, body)
        data = content.encode() if isinstance(content, str) else content
        try:
            req.send_response(status)
            req.send_header('Content-Type', ctype)
            req.send_header('Content-Length', str(len(data)))
            req.send_header('Connection', 'close')
            req.end_headers()
            if req.command != 'HEAD':
                req.wfile.write(data)
        except OSError:
            pass  # the agent gave up on us (its timeout)
        req.close_connection = True

    def _answer(self, method: str, path: str, headers: Any, body: bytes
                ) -> tuple[int, str | bytes, str]:
        instance_id = headers.get('X-Instance-ID')
        tenant_id = headers.get('X-Tenant-ID')
        signature = headers.get('X-Instance-ID-Signature')
        text = 'text/plain; charset=UTF-8'
        if not instance_id or not tenant_id or not signature:
            return 400, 'X-Instance-ID, X-Tenant-ID and X-Instance-ID-Signature required', text
        if not hmac.compare_digest(self.signature(instance_id), signature):
            return 403, 'Invalid proxy request signature.', text
        with self.lock:
            project = self.instances.get(instance_id)
        if project is None or project != tenant_id:
            return 404, 'Not Found', text
        path, _, query = path.partition('?')
        if path in ('/', ''):
            return 200, '2009-04-04\nlatest', text
        if path == '/latest/meta-data/':
            return 200, 'hostname\ninstance-id\nlocal-ipv4', text
        if path == '/latest/meta-data/instance-id':
            return 200, instance_id, text
        if path == '/openstack/latest/meta_data.json':
            return 200, json.dumps({'uuid': instance_id, 'project_id': project,
                                    'query': query}), 'application/json'
        if path == '/openstack/latest/password':
            if method == 'POST':
                with self.lock:
                    self.passwords[instance_id] = body
                return 200, '', text
            with self.lock:
                return 200, self.passwords.get(instance_id, b''), text
        return 404, 'Not Found', text

    def requests_for(self, instance_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests
                    if r['headers'].get('X-Instance-ID') == instance_id]
