"""Forwarding a VM's metadata request to Nova's metadata API.

What neutron-metadata-agent sends (MetadataProxyHandlerBase._proxy_request):
the VM's path and query with its method and body, and four headers that
Nova trusts only because of the signature: ``X-Forwarded-For`` (the VM's
address), ``X-Instance-ID`` (the port's device_id), ``X-Tenant-ID`` (its
project) and ``X-Instance-ID-Signature``, the hex HMAC-SHA256 of the
instance id keyed with ``metadata_proxy_shared_secret``. Nothing else from
the VM's request is passed on.

Unlike Neutron (60 s per request through ``requests``), the whole exchange
is bounded by ``nova_metadata_timeout``: connect, send, response and body
together. A Nova that is down or stuck costs the VM a quick 503 and a retry,
not a server thread held for a minute.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import http.client
import logging
import socket
import ssl
import time
from oslo_config import cfg

LOG = logging.getLogger(__name__)

#: Response headers that describe Nova's connection, not the content.
HOP_BY_HOP = frozenset({
    'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te',
    'trailer', 'trailers', 'transfer-encoding', 'upgrade', 'content-length',
    'date', 'server'})
_CHUNK = 65536


class NovaUnavailable(Exception):
    """Nova could not be reached or did not answer in time (HTTP 503)."""


def sign_instance_id(secret: str, instance_id: str) -> str:
    """neutron.common.utils.sign_instance_id: what Nova recomputes and
    compares before it believes ``X-Instance-ID``."""
    return hmac.new(secret.encode('utf-8'), instance_id.encode('utf-8'),
                    hashlib.sha256).hexdigest()


@dataclasses.dataclass
class NovaResponse:
    """Nova's answer, to be passed through to the VM unchanged."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    #: Nova's Content-Length (what a HEAD answer announces)
    length: int | None = None


class NovaMetadataClient:
    """One HTTP(S) request to Nova per VM request (no pooling: Nova's
    metadata API is usually local and a stale kept-alive connection would
    turn into a spurious 503)."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf
        self.ssl_context = self._ssl_context() if conf.nova_metadata_protocol == 'https' else None

    def _ssl_context(self) -> ssl.SSLContext:
        """Neutron's choices: ``nova_metadata_insecure`` skips verification,
        else ``auth_ca_cert`` (or the system CAs) verifies Nova; a client
        certificate is presented when both its files are set."""
        conf = self.conf
        if conf.nova_metadata_insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(cafile=conf.auth_ca_cert or None)
        if conf.nova_client_cert and conf.nova_client_priv_key:
            ctx.load_cert_chain(conf.nova_client_cert, conf.nova_client_priv_key)
        return ctx

    def headers_for(self, instance_id: str, project_id: str,
                    forwarded_for: str) -> dict[str, str]:
        """The only headers Nova gets: built here, never copied from the VM."""
        return {
            'X-Forwarded-For': forwarded_for,
            'X-Instance-ID': instance_id,
            'X-Tenant-ID': project_id,
            'X-Instance-ID-Signature': sign_instance_id(
                self.conf.metadata_proxy_shared_secret, instance_id),
        }

    def forward(self, method: str, path: str, body: bytes | None, instance_id: str,
                project_id: str, forwarded_for: str) -> NovaResponse:
        """Ask Nova; raise :class:`NovaUnavailable` when it cannot answer
        within ``nova_metadata_timeout`` seconds."""
        timeout = self.conf.nova_metadata_timeout
        deadline = time.monotonic() + timeout
        headers = self.headers_for(instance_id, project_id, forwarded_for)
        host, port = self.conf.nova_metadata_host, self.conf.nova_metadata_port
        if self.ssl_context is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=self.ssl_context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            # Kept: http.client drops conn.sock once Nova says "close",
            # while the response still reads from it.
            sock = conn.sock
            _remaining(sock, deadline)
            resp = conn.getresponse()
            chunks = []
            while True:
                _remaining(sock, deadline)
                chunk = resp.read1(_CHUNK) if method != 'HEAD' else b''
                if not chunk:
                    break
                chunks.append(chunk)
            length = resp.getheader('Content-Length')
            return NovaResponse(
                resp.status, resp.reason,
                [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP],
                b''.join(chunks), int(length) if length and length.isdigit() else None)
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            # socket.timeout and ConnectionError are OSErrors. The message
            # names the failure, never a header value (the signature).
            raise NovaUnavailable(f'{self.url_base()}: {type(exc).__name__}: '
                                  f'{exc}') from None
        finally:
            conn.close()

    def url_base(self) -> str:
        host = self.conf.nova_metadata_host
        if ':' in host:
            host = f'[{host}]'
        return f'{self.conf.nova_metadata_protocol}://{host}:{self.conf.nova_metadata_port}'


def _remaining(sock: socket.socket | None, deadline: float) -> None:
    """Give the next socket operation only what is left of the deadline."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout('nova_metadata_timeout exceeded')
    if sock is not None:
        sock.settimeout(left)
