"""Parsing of ``min:max`` range options shared by the type drivers (in
agentkit.lib, which the agents' start-up checks use as well)."""

from agentkit.lib.option_values import (TUNNEL_KEY_RANGES, in_ranges, parse_ranges,
                                        parse_tunnel_ranges)

__all__ = ['TUNNEL_KEY_RANGES', 'in_ranges', 'parse_ranges', 'parse_tunnel_ranges']
