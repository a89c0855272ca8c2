"""What neutron-server last told the L3 agent about each router, on disk.

Why: no side-effect-free call of neutron-server returns a router's
``enable_snat`` or floating IPs (``sync_routers`` schedules routers and sets
the host of their ports), so agentkit-doctor could only show the host's NAT
rules, not judge them. The L3 agent records, per router, the validated
:class:`~agentkit.api.l3.Router` it is about to apply (serialised by the
type itself), and removes the record when it removes the router; the doctor
reads it as "what agentkit was told" and says where that came from.

The records are root's (directory 0700, files 0600 under ``state_path``):
they name tenants' addresses.
"""

import dataclasses
import datetime
import json
import os

from agentkit import exceptions
from agentkit.api import l3 as l3_api
from agentkit.lib import fileutils
from agentkit.lib import naming

#: Under ``state_path``: one ``<router id>.json`` per router the agent applies.
DIRECTORY = 'l3-intent'
#: The RPC call the recorded router came from.
SOURCE = 'sync_routers'
SUFFIX = '.json'


@dataclasses.dataclass(frozen=True)
class Recorded:
    """A router as the L3 agent last received it, and where that is said."""
    router: l3_api.Router
    received: str        # ISO 8601, UTC
    source: str
    path: str


def path(state_path: str, router_id: str) -> str:
    return os.path.join(state_path, DIRECTORY,
                        naming.validate_id(router_id, 'router') + SUFFIX)


def write(state_path: str, router: l3_api.Router) -> None:
    """Record ``router`` (replacing the previous record atomically).

    :raises OSError: the record could not be written.
    """
    directory = os.path.join(state_path, DIRECTORY)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    received = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    fileutils.write_atomic(path(state_path, router.id), json.dumps(
        {'source': SOURCE, 'received': received, 'router': router.to_record()},
        sort_keys=True), mode=0o600)


def remove(state_path: str, router_id: str) -> None:
    try:
        os.unlink(path(state_path, router_id))
    except FileNotFoundError:
        pass


def read(state_path: str, router_id: str) -> Recorded | None:
    """The record of ``router_id``, None if there is none.

    :raises InvalidPayload: the file exists but is not a record.
    """
    where = path(state_path, router_id)
    text = fileutils.read_text(where)
    if text is None:
        return None
    try:
        data = json.loads(text)
        router = l3_api.Router.from_record(data['router'])
        received, source = str(data['received']), str(data['source'])
    except (ValueError, TypeError, KeyError) as exc:
        raise exceptions.InvalidPayload(f'{where} is not a router record: {exc}') from None
    if router.id != router_id:
        raise exceptions.InvalidPayload(f'{where} records router {router.id}')
    return Recorded(router, received, source, where)


def recorded_ids(state_path: str) -> set[str]:
    """Routers with a record (a stale one is removed with its router)."""
    try:
        names = os.listdir(os.path.join(state_path, DIRECTORY))
    except FileNotFoundError:
        return set()
    ids = {n[:-len(SUFFIX)] for n in names if n.endswith(SUFFIX)}
    return {i for i in ids if naming.is_valid_id(i)}
