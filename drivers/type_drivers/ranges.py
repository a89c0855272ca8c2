"""Parsing of ``min:max`` range options shared by the type drivers (in
agentkit.lib, which the agents' start-up checks use as well)."""

from agentkit.lib.option_values import in_ranges, parse_ranges

__all__ = ['in_ranges', 'parse_ranges']
