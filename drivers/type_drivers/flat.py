"""``flat``: untagged traffic on a physical network."""

from agentkit.api import type_driver as api

FLAT = 'flat'


class FlatTypeDriver(api.TypeDriver):
    """Accepts segments on the physical networks of ``[l2] flat_networks``."""

    network_type = FLAT

    def _allowed(self) -> list[str]:
        return [n.strip() for n in self.conf.l2.flat_networks if n.strip()]

    def validate_segment(self, segment: api.Segment) -> None:
        if segment.network_type != FLAT:
            raise api.InvalidSegment(f'not a flat segment: {segment.network_type}')
        if not segment.physical_network:
            raise api.InvalidSegment('flat segment needs a physical_network')
        if segment.segmentation_id is not None:
            raise api.InvalidSegment('flat segment must not have a segmentation_id')
        allowed = self._allowed()
        if '*' not in allowed and segment.physical_network not in allowed:
            raise api.InvalidSegment(
                f'physical_network {segment.physical_network!r} is not in '
                f'flat_networks ({", ".join(allowed) or "none"})')

    def realise(self, segment: api.Segment) -> api.SegmentRealisation:
        return api.SegmentRealisation(FLAT,
                                      physical_network=segment.physical_network)
