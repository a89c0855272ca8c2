"""One hop's verdict, a whole report, and how both are shown.

Three verdicts, because a doctor that guesses is worse than none: ``ok``
(the evidence matches what neutron-server wants), ``broken`` (it does not:
the report says the likely cause and the command that shows it) and
``unknown`` (this host cannot tell, e.g. the DHCP server of the network runs
on another host). Only ``broken`` makes the exit code 1.
"""

import dataclasses
import json
from typing import Any

OK = 'ok'
BROKEN = 'broken'
UNKNOWN = 'unknown'

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_USAGE = 2

_MARKS = {OK: '\u2713', BROKEN: '\u2717', UNKNOWN: '?'}


@dataclasses.dataclass(frozen=True)
class Hop:
    """One step of the path: what was checked and what was found."""
    name: str
    status: str
    evidence: str
    cause: str | None = None
    command: str | None = None


def ok(name: str, evidence: str) -> Hop:
    return Hop(name, OK, evidence)


def broken(name: str, evidence: str, cause: str, command: str) -> Hop:
    return Hop(name, BROKEN, evidence, cause, command)


def unknown(name: str, evidence: str, command: str | None = None) -> Hop:
    return Hop(name, UNKNOWN, evidence, None, command)


@dataclasses.dataclass
class Report:
    """The hops of one subject (``port <id>``, ``network <id>``), in path order."""
    kind: str
    resource_id: str
    host: str
    hops: list[Hop] = dataclasses.field(default_factory=list)

    @property
    def broken_hops(self) -> list[Hop]:
        return [h for h in self.hops if h.status == BROKEN]

    @property
    def exit_code(self) -> int:
        return EXIT_BROKEN if self.broken_hops else EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {'kind': self.kind, 'id': self.resource_id, 'host': self.host,
                'healthy': not self.broken_hops,
                'hops': [dataclasses.asdict(h) for h in self.hops]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=True)

    def to_text(self) -> str:
        lines = [f'{self.kind} {self.resource_id} on host {self.host}:']
        for hop in self.hops:
            lines.append(f'  {_MARKS[hop.status]} {hop.name}: {hop.evidence}')
            if hop.cause:
                lines.append(f'      likely cause: {hop.cause}')
            if hop.command:
                lines.append(f'      see: {hop.command}')
        broken_names = ', '.join(h.name for h in self.broken_hops)
        lines.append(f'broken: {broken_names}' if broken_names else 'all hops hold')
        return '\n'.join(lines)
