"""``vlan``: 802.1Q-tagged traffic on a physical network."""

from oslo_config import cfg

from agentkit.api import type_driver as api
from agentkit.lib import option_values
from agentkit.lib.option_values import parse_network_vlan_ranges
from drivers.type_drivers import ranges

VLAN = 'vlan'
MIN_VLAN, MAX_VLAN = option_values.MIN_VLAN, option_values.MAX_VLAN


class VlanTypeDriver(api.TypeDriver):
    """Accepts VLAN ids inside ``[l2] network_vlan_ranges`` of their physnet."""

    network_type = VLAN

    def __init__(self, conf: cfg.ConfigOpts, host: str) -> None:
        super().__init__(conf, host)
        self.vlan_ranges = parse_network_vlan_ranges(conf.l2.network_vlan_ranges)

    def validate_segment(self, segment: api.Segment) -> None:
        if segment.network_type != VLAN:
            raise api.InvalidSegment(f'not a vlan segment: {segment.network_type}')
        if not segment.physical_network:
            raise api.InvalidSegment('vlan segment needs a physical_network')
        vid = segment.segmentation_id
        if vid is None or not MIN_VLAN <= vid <= MAX_VLAN:
            raise api.InvalidSegment(
                f'vlan segmentation_id {vid!r} is not in {MIN_VLAN}..{MAX_VLAN}')
        spans = self.vlan_ranges.get(segment.physical_network)
        if spans is None:
            raise api.InvalidSegment(
                f'physical_network {segment.physical_network!r} is not in '
                f'network_vlan_ranges ({", ".join(self.vlan_ranges) or "none"})')
        if not ranges.in_ranges(vid, spans):
            raise api.InvalidSegment(
                f'VLAN {vid} is outside the ranges {spans} of '
                f'{segment.physical_network!r}')

    def realise(self, segment: api.Segment) -> api.SegmentRealisation:
        return api.SegmentRealisation(VLAN,
                                      physical_network=segment.physical_network,
                                      vlan_id=segment.segmentation_id)
