"""``gre`` and ``vxlan``: overlay segments keyed by a GRE key or a VNI."""

from oslo_config import cfg

from agentkit.api import type_driver as api
from drivers.type_drivers import ranges


class _TunnelTypeDriver(api.TypeDriver):
    """Accepts keys inside the configured ranges; no physical network."""

    def __init__(self, conf: cfg.ConfigOpts, host: str) -> None:
        super().__init__(conf, host)
        self.ranges_option, _ = ranges.TUNNEL_KEY_RANGES[self.network_type]
        self.key_ranges = ranges.parse_tunnel_ranges(
            self.network_type, getattr(conf.l2, self.ranges_option))

    def validate_segment(self, segment: api.Segment) -> None:
        if segment.network_type != self.network_type:
            raise api.InvalidSegment(
                f'not a {self.network_type} segment: {segment.network_type}')
        if segment.physical_network:
            raise api.InvalidSegment(
                f'{self.network_type} segment must not have a physical_network')
        key = segment.segmentation_id
        if key is None or not ranges.in_ranges(key, self.key_ranges):
            raise api.InvalidSegment(
                f'{self.network_type} segmentation_id {key!r} is outside '
                f'{self.ranges_option} {self.key_ranges}')

    def realise(self, segment: api.Segment) -> api.SegmentRealisation:
        return api.SegmentRealisation(self.network_type,
                                      tunnel_type=self.network_type,
                                      tunnel_key=segment.segmentation_id)


class GreTypeDriver(_TunnelTypeDriver):
    network_type = 'gre'


class VxlanTypeDriver(_TunnelTypeDriver):
    network_type = 'vxlan'
