"""What a fault or bad-input test measured, for doc/reliability.md.

A test of issue 14's suite calls :func:`record` once, after its checks
passed, with what it injected, what it checked and what it measured (time to
recover, packets lost, leases lost). Each record is one JSON file in
``$AGENTKIT_RELIABILITY_DIR`` (default ``.reliability/`` at the top of the
tree), so tests running in parallel processes never share a file.
``tools/reliability-report.py`` turns the records of one run into the
table of doc/reliability.md: the document is the run's output, never
edited by hand.
"""

import json
import os
import re
import time
from typing import Any

_TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DIR = os.path.join(_TOP, '.reliability')
_CASE_ID = re.compile(r'^[a-z0-9][a-z0-9_.-]{0,80}$')


def results_dir() -> str:
    return os.environ.get('AGENTKIT_RELIABILITY_DIR') or DEFAULT_DIR


def record(case: str, *, kind: str, fault: str, injected: str, checked: str,
           result: dict[str, Any], order: int = 100) -> str:
    """Write the record of one passed case; return its path.

    ``case`` is a stable identifier (a later record of the same case
    replaces the earlier); ``kind`` is ``'fault'`` or ``'input'``;
    ``result`` maps a measured quantity (``'recovered in s'``,
    ``'pings lost'``, ``'leases lost'`` …) to its value. ``order`` sorts
    the table's rows within their kind.
    """
    if not _CASE_ID.match(case):
        raise ValueError(f'reliability case id {case!r} is not [a-z0-9_.-]')
    if kind not in ('fault', 'input'):
        raise ValueError(f'reliability kind {kind!r} is not fault or input')
    directory = results_dir()
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, case + '.json')
    entry = {'case': case, 'kind': kind, 'fault': fault, 'injected': injected,
             'checked': checked, 'result': result, 'order': order,
             'recorded_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(entry, f, indent=1, sort_keys=True, default=str)
    os.replace(tmp, path)
    return path
