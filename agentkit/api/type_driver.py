"""Type drivers: the semantics of one ``provider:network_type``.

A type driver validates a segment against its configured ranges and turns it
into a :class:`SegmentRealisation` — what the mechanism driver must build on
this host. Mechanism drivers never interpret ``network_type`` themselves.
"""

import abc
import dataclasses
from typing import Any

from agentkit.api import driver
from agentkit import exceptions


class InvalidSegment(exceptions.AgentkitError, ValueError):
    """A segment the type driver cannot accept (bad range, missing field)."""


@dataclasses.dataclass(frozen=True)
class Segment:
    """A network segment as neutron-server describes it."""

    network_type: str
    physical_network: str | None = None
    segmentation_id: int | None = None
    mtu: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'Segment':
        """Build from a server dict (``provider:*`` keys or bare names)."""
        if not isinstance(data, dict):
            raise InvalidSegment(f'segment must be a dict, got {type(data).__name__}')

        def pick(key: str) -> Any:
            return data.get(f'provider:{key}', data.get(key))

        network_type = pick('network_type')
        if not isinstance(network_type, str) or not network_type:
            raise InvalidSegment(f'segment has no network_type: {data!r}')
        seg_id = pick('segmentation_id')
        if seg_id is not None:
            if isinstance(seg_id, bool) or not isinstance(seg_id, (int, str)):
                raise InvalidSegment(f'segmentation_id {seg_id!r} is not an integer')
            try:
                seg_id = int(seg_id)
            except ValueError:
                raise InvalidSegment(
                    f'segmentation_id {seg_id!r} is not an integer') from None
        physnet = pick('physical_network')
        if physnet is not None and not isinstance(physnet, str):
            raise InvalidSegment(f'physical_network {physnet!r} is not a string')
        mtu = data.get('mtu')
        return cls(network_type, physnet or None, seg_id,
                   int(mtu) if isinstance(mtu, int) else None)


@dataclasses.dataclass(frozen=True)
class SegmentRealisation:
    """What a mechanism driver must build on the host for one segment.

    :ivar network_type: the validated type.
    :ivar physical_network: provider network to attach to (flat/vlan).
    :ivar vlan_id: 802.1Q tag on the physical network (vlan), else None.
    :ivar tunnel_type: ``gre``/``vxlan`` for overlay segments, else None.
    :ivar tunnel_key: GRE key or VXLAN VNI for overlay segments.
    """

    network_type: str
    physical_network: str | None = None
    vlan_id: int | None = None
    tunnel_type: str | None = None
    tunnel_key: int | None = None

    @property
    def is_tunnel(self) -> bool:
        return self.tunnel_type is not None


class TypeDriver(driver.Driver):
    """Validation and host realisation of one network type."""

    @property
    @abc.abstractmethod
    def network_type(self) -> str:
        """The ``provider:network_type`` value this driver owns."""

    @abc.abstractmethod
    def validate_segment(self, segment: Segment) -> None:
        """Check ``segment`` against the configured ranges.

        :raises InvalidSegment: with a message naming the offending field.
        """

    @abc.abstractmethod
    def realise(self, segment: Segment) -> SegmentRealisation:
        """Describe what the host needs for a *validated* segment."""
