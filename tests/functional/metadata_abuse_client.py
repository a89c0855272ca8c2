"""A misbehaving metadata client, run inside a VM namespace.

``python metadata_abuse_client.py < spec.json`` prints one JSON line with
what happened. Kinds (``spec['kind']``), all against ``spec['address']``
port 80:

* ``raw``: each of ``spec['payloads']`` (latin-1 text) on a connection of
  its own; the status code answered (None: closed without an answer);
* ``slow``: ``spec['connections']`` connections that send a request's
  first line and then one header byte every ``spec['interval']`` seconds
  for ``spec['duration']`` seconds (slowloris); per connection its outcome
  and when (see ``_slow``);
* ``flood``: ``spec['connections']`` complete GETs of ``spec['path']`` sent
  at once on as many connections, ``spec['rounds']`` times; per round the
  answers (a status code, ``'refused'``: closed or reset with no answer,
  ``'timeout'``), and the time until the last answer.
"""

import asyncio
import json
import resource
import sys
import time


async def _status(reader: asyncio.StreamReader, timeout: float) -> int | None:
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (asyncio.TimeoutError, OSError):
        return None
    parts = line.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


async def _raw(address: str, payload: bytes, timeout: float) -> int | None:
    try:
        reader, writer = await asyncio.open_connection(address, 80)
    except OSError:
        return None
    try:
        writer.write(payload)
        await writer.drain()
        return await _status(reader, timeout)
    except OSError:
        return None
    finally:
        writer.close()


async def _ended(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """What the server sent before closing within ``timeout`` (b'' if it
    closed or reset without a byte); None while the connection stays open."""
    try:
        data = await asyncio.wait_for(reader.read(1024), timeout)
    except asyncio.TimeoutError:
        return None
    except OSError:
        return b''  # reset
    if not data:
        return b''
    try:  # an answer (haproxy's 408): read up to its close
        return data + await asyncio.wait_for(reader.read(), 5)
    except (asyncio.TimeoutError, OSError):
        return data


async def _slow(address: str, interval: float, duration: float) -> list:
    """``[outcome, seconds]``: ``'refused'`` (closed or reset with no answer
    before a header byte was sent: the per-client cap), ``'closed-by-server'``
    (held, then ended by the proxy, with its first answer line appended),
    ``'held'`` (still open after ``duration``).

    The outcome comes from what the server did, not from a time limit on
    the result: haproxy rejects over the cap at accept, so the read right
    after the first line (before any sleep) sees that EOF or reset, while a
    held connection is ended by the proxy's timeout much later, with a 408.
    """
    started = time.monotonic()

    def took() -> float:
        return round(time.monotonic() - started, 3)
    try:
        reader, writer = await asyncio.open_connection(address, 80)
    except OSError:
        return ['refused', took()]
    try:
        writer.write(b'GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Slow: ')
        await writer.drain()
        ended = await _ended(reader, min(interval, 0.5))
    except OSError:
        ended = b''  # reset while the first line went out
    if ended is not None:
        writer.close()
        return ['refused' if not ended else 'closed-by-server', took(),
                ended.split(b'\r\n', 1)[0].decode('latin-1')]
    try:
        while time.monotonic() - started < duration:
            writer.write(b'a')
            await writer.drain()
            ended = await _ended(reader, interval)
            if ended is not None:
                return ['closed-by-server', took(),
                        ended.split(b'\r\n', 1)[0].decode('latin-1')]
    except OSError:
        return ['closed-by-server', took(), 'reset']
    finally:
        writer.close()
    return ['held', took()]


async def _get(address: str, path: str, timeout: float) -> int | str:
    """The status of one GET; ``'refused'`` if the connection was refused,
    closed or reset with no answer, ``'timeout'`` if nothing came."""
    request = (f'GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n'
               'Connection: close\r\n\r\n').encode()
    try:
        reader, writer = await asyncio.open_connection(address, 80)
    except OSError:
        return 'refused'
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    except asyncio.TimeoutError:
        return 'timeout'
    except OSError:
        return 'refused'
    finally:
        writer.close()
    parts = line.split()
    if not line:
        return 'refused'
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else line.decode('latin-1')


async def main(spec: dict) -> dict:
    kind, address = spec['kind'], spec['address']
    started = time.monotonic()
    if kind == 'raw':
        statuses = [await _raw(address, p.encode('latin-1'), spec.get('timeout', 10))
                    for p in spec['payloads']]
        return {'statuses': statuses, 'seconds': time.monotonic() - started}
    if kind == 'slow':
        outcomes = await asyncio.gather(*[
            _slow(address, spec['interval'], spec['duration'])
            for _ in range(spec['connections'])])
        return {'outcomes': outcomes, 'seconds': time.monotonic() - started}
    if kind == 'flood':
        rounds = []
        for _ in range(spec.get('rounds', 1)):
            rounds.append(await asyncio.gather(*[
                _get(address, spec['path'], spec.get('timeout', 60))
                for _ in range(spec['connections'])]))
        return {'rounds': rounds, 'seconds': time.monotonic() - started}
    raise SystemExit(f'unknown kind {kind}')


if __name__ == '__main__':
    # 1,000 connections need more descriptors than the usual soft limit.
    _soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
    print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))
