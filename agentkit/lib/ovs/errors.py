"""What OVSDB operations raise: one family, so callers catch OvsdbError."""

from __future__ import annotations

from agentkit import exceptions


class OvsdbError(exceptions.AgentkitError):
    """An OVSDB operation failed; the message names the operation."""


class OvsdbUnavailable(OvsdbError):
    """The OVSDB endpoint could not be reached or its schema not read."""


class OvsdbNotFound(OvsdbError, LookupError):
    """A named bridge, port or interface does not exist."""


class OfportTimeout(OvsdbError, TimeoutError):
    """ovs-vswitchd did not give an interface a usable ofport in time."""
