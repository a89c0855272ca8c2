"""Take the shared RabbitMQ broker away and bring it back, for fault tests.

``rabbitmqctl stop_app`` stops the broker application inside its Erlang
node: every client connection is closed, port 5672 refuses new ones, and
the non-durable queues (all of oslo.messaging's, hence every agent's and
neutron-server's) are gone until their owners declare them again.
``start_app`` brings it back with the vhosts, users and permissions.

Other tests and helpers on the host share the broker: a test stops it only
while holding ``/tmp/ak-functional.lock`` (the fullstack and fault runs do)
and always has :func:`start` in its cleanups.
"""

import subprocess
import time


def _ctl(*args: str, timeout: float = 120) -> None:
    proc = subprocess.run(['rabbitmqctl', '-q', *args], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f'rabbitmqctl {" ".join(args)} failed: '
                           f'{proc.stderr.strip() or proc.stdout.strip()}')


def stop() -> float:
    """Stop the broker application; seconds it took."""
    t0 = time.monotonic()
    _ctl('stop_app')
    return time.monotonic() - t0


def start() -> float:
    """Start it (idempotent) and wait until it accepts connections; seconds it took."""
    t0 = time.monotonic()
    _ctl('start_app')
    _ctl('await_startup')
    return time.monotonic() - t0
