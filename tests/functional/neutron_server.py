"""A real neutron-server for functional tests, and a tiny REST client for it.

``get_server()`` runs ``tools/neutron-server.sh`` once per test process: it
starts a private MariaDB, the Neutron API (WSGI app under uWSGI),
neutron-rpc-server and neutron-periodic-workers, or confirms that they are
already running, and returns their endpoints. A server this process started
is stopped again when the process exits (its database stays, so the next
start is quick); ``AGENTKIT_NEUTRON_KEEP=1`` leaves it running. Tests using
it must therefore run in one test process: the fullstack suite
(``tests/fullstack``, ``tox -e fullstack``) runs with ``--concurrency 1``.

The test skips only when the script cannot provide the prerequisites
(exit 75: MariaDB cannot be installed; 76: the neutron venv cannot be
built); any other failure to start is an error.
"""

from __future__ import annotations

import atexit
import dataclasses
import http.client
import json
import os
import subprocess
import threading
import time
import urllib.parse
from typing import Any

import fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, 'tools', 'neutron-server.sh')
EXIT_NO_MARIADB = 75
EXIT_NO_VENV = 76
START_TIMEOUT = 600


class Unavailable(Exception):
    """The server's prerequisites cannot be installed here: skip, not fail."""


class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f'{method} {path}: HTTP {status}: {body[:2000]}')
        self.status = status


@dataclasses.dataclass(frozen=True)
class Server:
    api_url: str
    transport_url: str
    state_dir: str
    started: bool
    setup_seconds: float
    script_log: str

    def log_tail(self, name: str, lines: int = 60) -> str:
        """The last lines of one of the server's logs (api, rpc, periodic)."""
        path = os.path.join(self.state_dir, 'log', f'{name}.log')
        try:
            with open(path, errors='replace') as f:
                return ''.join(f.readlines()[-lines:])
        except OSError as exc:
            return f'({path}: {exc})'


_lock = threading.Lock()
_server: Server | None = None
_unavailable: str | None = None


def _run_script(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', SCRIPT, *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _stop() -> None:
    try:
        _run_script('stop', timeout=120)
    except Exception:  # noqa: BLE001 - best effort at interpreter exit
        pass


def get_server() -> Server:
    """The running server, started by this call if needed.

    :raises Unavailable: MariaDB or the neutron venv cannot be installed.
    :raises RuntimeError: anything else went wrong (with the script's output).
    """
    global _server, _unavailable
    with _lock:
        if _server is not None:
            return _server
        if _unavailable is not None:
            raise Unavailable(_unavailable)
        t0 = time.monotonic()
        proc = _run_script('start', timeout=START_TIMEOUT)
        elapsed = time.monotonic() - t0
        if proc.returncode in (EXIT_NO_MARIADB, EXIT_NO_VENV):
            what = ('MariaDB cannot be installed' if proc.returncode == EXIT_NO_MARIADB
                    else 'the neutron venv cannot be built')
            _unavailable = f'real neutron-server unavailable: {what}: {proc.stderr.strip()[-500:]}'
            raise Unavailable(_unavailable)
        if proc.returncode != 0:
            raise RuntimeError(f'{SCRIPT} failed ({proc.returncode}):\n'
                               f'{proc.stdout}\n{proc.stderr}')
        values = dict(line.split('=', 1) for line in proc.stdout.splitlines()
                      if '=' in line)
        _server = Server(api_url=values['api_url'],
                         transport_url=values['transport_url'],
                         state_dir=values['state_dir'],
                         started=values.get('started') == '1',
                         setup_seconds=elapsed, script_log=proc.stderr)
        if _server.started and os.environ.get('AGENTKIT_NEUTRON_KEEP') != '1':
            atexit.register(_stop)
        return _server


def stop_neutron() -> None:
    """Take the server away (API, RPC, periodic workers), as a crash would.

    MariaDB, the RabbitMQ vhost with the agents' queues and the API's port
    stay; :func:`restart` brings the processes back on them. A test calling
    this must have :func:`restart` in its cleanups: the other tests of the
    process share the server.
    """
    proc = _run_script('stop-neutron', timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f'{SCRIPT} stop-neutron failed ({proc.returncode}):\n'
                           f'{proc.stdout}\n{proc.stderr}')


def restart() -> float:
    """Start whatever of the server is not running; seconds it took.

    Idempotent (a running server is confirmed), so it doubles as the
    cleanup of :func:`stop_neutron`. The endpoints must stay those of
    :func:`get_server`: every test of the process holds them.
    """
    t0 = time.monotonic()
    proc = _run_script('start', timeout=START_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f'{SCRIPT} start failed ({proc.returncode}):\n'
                           f'{proc.stdout}\n{proc.stderr}')
    values = dict(line.split('=', 1) for line in proc.stdout.splitlines() if '=' in line)
    if _server is not None and values.get('api_url') != _server.api_url:
        raise RuntimeError(f'the restarted server moved from {_server.api_url} to '
                           f'{values.get("api_url")}')
    return time.monotonic() - t0


class NeutronServerFixture(fixtures.Fixture):
    """The shared server (see :func:`get_server`) for one test.

    :ivar server: its :class:`Server` record (endpoints, logs).

    Call :func:`get_server` first to turn :class:`Unavailable` into a skip:
    an exception raised inside a fixture's setUp reaches the test wrapped in
    ``MultipleExceptions``.
    """

    def _setUp(self) -> None:
        self.server = get_server()
        self.api_url = self.server.api_url
        self.transport_url = self.server.transport_url

    def client(self, project_id: str) -> 'Client':
        return Client(self.api_url, project_id)


class Client:
    """Neutron's REST API, one connection per request.

    uWSGI's ``--http-socket`` closes the connection after every response,
    so a kept-alive connection would be reset on the next request. With
    ``auth_strategy = noauth`` the caller is admin and says which project it
    acts for by ``project_id`` in the bodies of POSTs.
    """

    def __init__(self, url: str, project_id: str, timeout: float = 60.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host = parsed.hostname or '127.0.0.1'
        self.port = parsed.port or 80
        self.project_id = project_id
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {'Accept': 'application/json', 'Connection': 'close'}
        if data is not None:
            headers['Content-Type'] = 'application/json'
        # Only idempotent requests are retried on a reset connection.
        attempts = 3 if method in ('GET', 'DELETE') else 1
        for attempt in range(attempts):
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read().decode(errors='replace')
                status = resp.status
                break
            except (ConnectionResetError, http.client.RemoteDisconnected):
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2)
            finally:
                conn.close()
        if status not in ok:
            raise ApiError(method, path, status, raw)
        return json.loads(raw) if raw else None

    # -- resources --------------------------------------------------------
    def _create(self, collection: str, resource: str, **attrs: Any) -> dict[str, Any]:
        attrs.setdefault('project_id', self.project_id)
        return self.request('POST', f'/v2.0/{collection}', {resource: attrs})[resource]

    def _show(self, collection: str, resource: str, id_: str) -> dict[str, Any]:
        return self.request('GET', f'/v2.0/{collection}/{id_}')[resource]

    def _list(self, collection: str, **filters: Any) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode(filters, doseq=True)
        path = f'/v2.0/{collection}' + (f'?{query}' if query else '')
        return self.request('GET', path)[collection]

    def delete(self, collection: str, id_: str, missing_ok: bool = True) -> None:
        self.request('DELETE', f'/v2.0/{collection}/{id_}',
                     ok=(204, 404) if missing_ok else (204,))

    def create_network(self, **attrs: Any) -> dict[str, Any]:
        return self._create('networks', 'network', **attrs)

    def show_network(self, id_: str) -> dict[str, Any]:
        return self._show('networks', 'network', id_)

    def create_subnet(self, **attrs: Any) -> dict[str, Any]:
        attrs.setdefault('ip_version', 4)
        return self._create('subnets', 'subnet', **attrs)

    def create_port(self, **attrs: Any) -> dict[str, Any]:
        return self._create('ports', 'port', **attrs)

    def show_port(self, id_: str) -> dict[str, Any]:
        return self._show('ports', 'port', id_)

    def list_ports(self, **filters: Any) -> list[dict[str, Any]]:
        return self._list('ports', **filters)

    def list_agents(self, **filters: Any) -> list[dict[str, Any]]:
        return self._list('agents', **filters)

    def create_router(self, **attrs: Any) -> dict[str, Any]:
        return self._create('routers', 'router', **attrs)

    def show_router(self, id_: str) -> dict[str, Any]:
        return self._show('routers', 'router', id_)

    def update_router(self, id_: str, **attrs: Any) -> dict[str, Any]:
        return self.request('PUT', f'/v2.0/routers/{id_}', {'router': attrs})['router']

    def add_router_interface(self, router_id: str, subnet_id: str) -> dict[str, Any]:
        return self.request('PUT', f'/v2.0/routers/{router_id}/add_router_interface',
                            {'subnet_id': subnet_id})

    def remove_router_interface(self, router_id: str, subnet_id: str) -> None:
        self.request('PUT', f'/v2.0/routers/{router_id}/remove_router_interface',
                     {'subnet_id': subnet_id}, ok=(200, 404))

    def create_floatingip(self, **attrs: Any) -> dict[str, Any]:
        return self._create('floatingips', 'floatingip', **attrs)

    def show_floatingip(self, id_: str) -> dict[str, Any]:
        return self._show('floatingips', 'floatingip', id_)

    def update_floatingip(self, id_: str, **attrs: Any) -> dict[str, Any]:
        return self.request('PUT', f'/v2.0/floatingips/{id_}',
                            {'floatingip': attrs})['floatingip']

    def create_security_group_rule(self, **attrs: Any) -> dict[str, Any]:
        return self._create('security-group-rules', 'security_group_rule', **attrs)

    def dhcp_agents_hosting(self, network_id: str) -> list[dict[str, Any]]:
        return self.request('GET', f'/v2.0/networks/{network_id}/dhcp-agents')['agents']

    def l3_agents_hosting(self, router_id: str) -> list[dict[str, Any]]:
        return self.request('GET', f'/v2.0/routers/{router_id}/l3-agents')['agents']
