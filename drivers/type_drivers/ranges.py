"""Parsing of ``min:max`` range options shared by the type drivers."""

from agentkit import exceptions


def parse_ranges(entries: list[str], low: int, high: int,
                 option: str) -> list[tuple[int, int]]:
    """Parse ``['1:100', '200:300']`` within [low, high].

    :raises InvalidConfiguration: naming ``option`` and the bad entry.
    """
    ranges = []
    for entry in entries:
        parts = entry.strip().split(':')
        try:
            if len(parts) != 2:
                raise ValueError('expected <min>:<max>')
            first, last = int(parts[0]), int(parts[1])
            if not low <= first <= last <= high:
                raise ValueError(f'must satisfy {low} <= min <= max <= {high}')
        except ValueError as exc:
            raise exceptions.InvalidConfiguration(
                f'{option}: invalid range {entry!r}: {exc}') from None
        ranges.append((first, last))
    return ranges


def in_ranges(value: int, ranges: list[tuple[int, int]]) -> bool:
    return any(first <= value <= last for first, last in ranges)
