"""The metadata agent's unix-socket HTTP server (what haproxy forwards to).

Per-namespace proxies (haproxy in ``qrouter-``/``qdhcp-``) accept a VM's
request on 169.254.169.254, delete and set ``X-Neutron-Router-ID`` or
``X-Neutron-Network-ID`` themselves, append ``X-Forwarded-For: <VM address>``
(``option forwardfor``) and forward it to ``metadata_proxy_socket``. Here:

* :class:`MetadataProxy` turns such a request into Nova's answer: only the
  proxy's headers are trusted (the *last* X-Forwarded-For, which haproxy
  appended after any the VM sent; one router or network id), the instance
  comes from neutron-server (:mod:`agentkit.agent.metadata_lookup`), Nova
  gets a signed request (:mod:`agentkit.agent.nova_metadata`) and its status
  and body go back unchanged.
* :class:`MetadataProxyServer` serves the socket on native threads (stdlib
  ``socketserver``, no eventlet): at most ``metadata_workers`` requests at a
  time, the rest queued in the kernel's ``metadata_backlog``. The socket
  replaces a stale one at start, gets the permissions the proxy user needs
  and is removed at stop, so a proxy's connect fails at once (ENOENT or
  ECONNREFUSED) while no agent serves it, instead of hanging.
"""

from __future__ import annotations

import dataclasses
import email.message
import grp
import http.server
import logging
import os
import pwd
import socket
import socketserver
import stat
import threading
import time
import urllib.parse
import uuid
from typing import Any

from oslo_config import cfg

from agentkit.agent import metadata_lookup
from agentkit.agent import nova_metadata
from agentkit.conf import metadata as metadata_conf

LOG = logging.getLogger(__name__)

FORWARDED_FOR = 'X-Forwarded-For'
ROUTER_ID_HEADER = 'X-Neutron-Router-ID'
NETWORK_ID_HEADER = 'X-Neutron-Network-ID'
#: Largest POST body passed to Nova (its password POST takes 256 bytes).
MAX_BODY = 1024 * 1024
#: Seconds a connection may take to deliver its request before it is dropped.
REQUEST_READ_TIMEOUT = 10.0

MODE_BITS = {
    metadata_conf.USER_MODE: 0o644,
    metadata_conf.GROUP_MODE: 0o664,
    metadata_conf.ALL_MODE: 0o666,
}


class BadRequest(Exception):
    """The request did not come from a metadata proxy as expected (HTTP 400)."""


@dataclasses.dataclass
class Reply:
    """What goes back to the proxy."""

    status: int
    body: bytes = b''
    reason: str | None = None
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    #: Content-Length to announce when it is not len(body) (a HEAD answer)
    length: int | None = None

    @classmethod
    def text(cls, status: int, message: str) -> Reply:
        return cls(status, f'{message}\n'.encode(),
                   headers=[('Content-Type', 'text/plain; charset=UTF-8')])


def trusted_source(headers: email.message.Message) -> metadata_lookup.Source:
    """The requester as the proxy states it; every other header is ignored.

    haproxy's ``option forwardfor`` appends its own X-Forwarded-For after any
    the VM sent, so the last value is the proxy's. The id headers are
    deleted and set by the proxy, so exactly one of them, once, is expected.
    """
    forwarded = headers.get_all(FORWARDED_FOR) or []
    if not forwarded:
        raise BadRequest(f'no {FORWARDED_FOR} header')
    address = forwarded[-1].split(',')[-1].strip()
    routers = headers.get_all(ROUTER_ID_HEADER) or []
    networks = headers.get_all(NETWORK_ID_HEADER) or []
    if len(routers) + len(networks) != 1:
        raise BadRequest(f'expected exactly one {ROUTER_ID_HEADER} or {NETWORK_ID_HEADER} '
                         f'header, got {len(routers)} and {len(networks)}')
    resource_id = (routers or networks)[0].strip()
    try:
        if str(uuid.UUID(resource_id)) != resource_id.lower():
            raise ValueError(resource_id)
    except ValueError:
        raise BadRequest('the router/network id is not a UUID') from None
    try:
        return metadata_lookup.Source.parse(
            address, router_id=resource_id if routers else None,
            network_id=resource_id if networks else None)
    except ValueError as exc:
        raise BadRequest(f'bad {FORWARDED_FOR}: {exc}') from None


def request_target(path: str) -> str:
    """Path and query for Nova (an absolute-form target is reduced to them)."""
    if path.startswith('/'):
        return path
    parts = urllib.parse.urlsplit(path)
    return urllib.parse.urlunsplit(('', '', parts.path or '/', parts.query, ''))


class MetadataProxy:
    """Request -> instance -> Nova, independent of the socket it came on."""

    def __init__(self, lookup: metadata_lookup.InstanceLookup,
                 nova: nova_metadata.NovaMetadataClient) -> None:
        self.lookup = lookup
        self.nova = nova

    def handle(self, method: str, path: str, headers: email.message.Message,
               body: bytes | None = None) -> Reply:
        try:
            source = trusted_source(headers)
        except BadRequest as exc:
            LOG.warning('Rejected a metadata request: %s', exc)
            return Reply.text(400, f'Bad request: {exc}')
        where = (f'router {source.router_id}' if source.router_id
                 else f'network {source.network_id}')
        try:
            instance = self.lookup.lookup(source)
        except metadata_lookup.LookupUnavailable as exc:
            LOG.warning('Metadata request from %s on %s: %s', source.address, where, exc)
            return Reply.text(503, 'The metadata service is temporarily unavailable. '
                                   'Please try again later.')
        except Exception:
            LOG.exception('Metadata request from %s on %s: port lookup failed',
                          source.address, where)
            return Reply.text(500, 'An unknown error has occurred. '
                                   'Please try your request again.')
        if instance is None:
            return Reply.text(404, f'Instance was not found on {where}.')
        try:
            resp = self.nova.forward(method, request_target(path), body,
                                     instance.instance_id, instance.project_id,
                                     source.address)
        except nova_metadata.NovaUnavailable as exc:
            LOG.warning('Nova metadata API unavailable for instance %s: %s',
                        instance.instance_id, exc)
            return Reply.text(503, 'The remote metadata server is temporarily '
                                   'unavailable. Please try again later.')
        except Exception:
            LOG.exception('Forwarding the metadata request of instance %s failed',
                          instance.instance_id)
            return Reply.text(500, 'An unknown error has occurred. '
                                   'Please try your request again.')
        if resp.status == 403:
            LOG.warning('Nova answered 403 Forbidden for instance %s: this usually '
                        'means metadata_proxy_shared_secret differs from Nova\'s',
                        instance.instance_id)
        elif resp.status >= 500:
            LOG.warning('Nova answered %s for instance %s', resp.status,
                        instance.instance_id)
        LOG.debug('%s %s for instance %s (%s on %s): %s', method, path,
                  instance.instance_id, source.address, where, resp.status)
        return Reply(resp.status, resp.body, resp.reason, resp.headers,
                     resp.length if method == 'HEAD' else None)


class MetadataRequestHandler(http.server.BaseHTTPRequestHandler):
    """One request per connection (haproxy's ``http-server-close``), so an
    idle kept-alive connection never holds a worker."""

    protocol_version = 'HTTP/1.1'
    server_version = 'agentkit-metadata'
    sys_version = ''
    timeout = REQUEST_READ_TIMEOUT
    server: _UnixHTTPServer

    def do_GET(self) -> None:
        self.close_connection = True
        body = None
        if self.command == 'POST':
            body = self._read_body()
            if body is None:
                return
        self._send(self.server.proxy.handle(self.command, self.path, self.headers, body))

    do_HEAD = do_GET
    do_POST = do_GET

    def _read_body(self) -> bytes | None:
        if 'chunked' in (self.headers.get('Transfer-Encoding') or '').lower():
            self._send(Reply.text(411, 'Length required'))
            return None
        try:
            length = int(self.headers.get('Content-Length') or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._send(Reply.text(413 if length > 0 else 400, 'Bad request body'))
            return None
        return self.rfile.read(length) if length else b''

    def _send(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status, reply.reason)
            for name, value in reply.headers:
                self.send_header(name, value)
            length = reply.length if reply.length is not None else len(reply.body)
            self.send_header('Content-Length', str(length))
            self.send_header('Connection', 'close')
            self.end_headers()
            if self.command != 'HEAD' and reply.body:
                self.wfile.write(reply.body)
        except OSError as exc:
            LOG.debug('The metadata proxy went away before the answer: %s', exc)

    # No peer address on a unix socket; logging goes to oslo.log.
    def address_string(self) -> str:
        return 'metadata-proxy'

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        LOG.debug('%s', format % args)

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002
        LOG.info('Metadata proxy connection: %s', format % args)


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """ThreadingMixIn with a bound: a connection is accepted only when one of
    ``workers`` slots is free (0: one at a time, in the serving thread)."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, path: str, proxy: MetadataProxy, workers: int,
                 backlog: int) -> None:
        self.proxy = proxy
        self.workers = workers
        self.request_queue_size = backlog
        self._slots = threading.Semaphore(max(workers, 1))
        self.closing = threading.Event()
        self._active = 0
        self._idle = threading.Condition()
        super().__init__(path, MetadataRequestHandler, bind_and_activate=False)

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.workers == 0:
            self._serve_one(request, client_address)
            return
        while not self._slots.acquire(timeout=0.2):
            if self.closing.is_set():
                self.shutdown_request(request)
                return
        with self._idle:
            self._active += 1
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            self._serve_one(request, client_address)
        finally:
            self._done()

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def _done(self) -> None:
        self._slots.release()
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being served; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        LOG.exception('Unexpected error serving a metadata request')


# -- socket permissions ------------------------------------------------------------
def _uid(user: str) -> int | None:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def _gid(group: str) -> int | None:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def socket_permissions(conf: cfg.ConfigOpts) -> tuple[int, int | None, str]:
    """(mode bits, group to give the socket or None, mode name).

    Neutron's modes; "deduce" and "group" also give the socket
    ``metadata_proxy_group`` when the agent may (root, or a member), so a
    proxy running as nobody:nogroup connects without a world-writable socket.
    """
    mode = conf.metadata_proxy_socket_mode
    user, group = conf.metadata_proxy_user, conf.metadata_proxy_group
    gid = _gid(group) if group else None
    own_group = not group or gid == os.getegid()
    may_chown = gid is not None and (os.geteuid() == 0 or gid in os.getgroups())
    if mode == metadata_conf.DEDUCE_MODE:
        if not user or user in ('0', 'root') or _uid(user) == os.geteuid():
            mode = metadata_conf.USER_MODE
        elif own_group or may_chown:
            mode = metadata_conf.GROUP_MODE
        else:
            mode = metadata_conf.ALL_MODE
    chown = gid if (mode == metadata_conf.GROUP_MODE and not own_group and may_chown) else None
    return MODE_BITS[mode], chown, mode


# -- the server's lifecycle ------------------------------------------------------
class MetadataProxyServer:
    """Serves ``metadata_proxy_socket`` from :meth:`start` to :meth:`stop`."""

    def __init__(self, conf: cfg.ConfigOpts, proxy: MetadataProxy) -> None:
        self.conf = conf
        self.proxy = proxy
        self.path: str = conf.metadata_proxy_socket
        workers = conf.metadata_workers
        self.workers = metadata_conf.default_workers() if workers is None else workers
        self._server: _UnixHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._inode: tuple[int, int] | None = None

    def start(self) -> None:
        """Bind (replacing a stale socket), set permissions, then listen."""
        self._prepare_path()
        server = _UnixHTTPServer(self.path, self.proxy, self.workers,
                                 self.conf.metadata_backlog)
        try:
            server.server_bind()
            st = os.lstat(self.path)
            self._inode = (st.st_dev, st.st_ino)
            mode, gid, name = socket_permissions(self.conf)
            if gid is not None:
                os.chown(self.path, -1, gid)
            os.chmod(self.path, mode)
            # Only now can a proxy connect: never to a socket with the
            # wrong permissions.
            server.server_activate()
        except BaseException:
            server.server_close()
            self._remove_socket()
            raise
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={'poll_interval': 0.2},
                                        name='metadata-server', daemon=True)
        self._thread.start()
        LOG.info('Serving metadata on %s (mode %s %o%s, %s workers, backlog %s)',
                 self.path, name, mode, f', group {gid}' if gid is not None else '',
                 self.workers or 'no extra', self.conf.metadata_backlog)

    def _prepare_path(self) -> None:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise RuntimeError(f'{self.path} exists and is not a socket; not replacing it')
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(self.path)
            LOG.warning('Another process still serves %s; taking the socket over',
                        self.path)
        except OSError:
            LOG.info('Replacing the stale socket %s (its agent is gone)', self.path)
        finally:
            probe.close()
        os.unlink(self.path)

    def _remove_socket(self) -> None:
        """Remove our socket file, never one a newer agent made since."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if self._inode is not None and (st.st_dev, st.st_ino) == self._inode:
            os.unlink(self.path)

    def stop(self, grace: float = 1.0) -> None:
        """Stop accepting at once (the file goes first, so a proxy's connect
        fails instead of queueing), then give requests in flight ``grace``
        seconds; threads still busy after that are left to finish or die
        with the process."""
        server, self._server = self._server, None
        if server is None:
            return
        self._remove_socket()
        server.closing.set()
        server.shutdown()
        server.server_close()
        if not server.wait_idle(grace):
            LOG.info('Metadata requests still in flight after %.1fs; not waiting', grace)
        if self._thread is not None:
            self._thread.join(1.0)
        LOG.info('Stopped serving metadata on %s', self.path)

    @property
    def serving(self) -> bool:
        return self._server is not None
