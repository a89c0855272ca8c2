"""Exceptions shared across agentkit. Each carries a message an operator can act on."""


class AgentkitError(Exception):
    """Base class: every error agentkit raises on purpose derives from it."""


class InvalidIdentifier(AgentkitError, ValueError):
    """An id from the server is not safe to use as a device or file name."""


class DriverNotFound(AgentkitError):
    """A configured driver alias has no entry point; lists the valid ones."""


class DriverLoadError(AgentkitError):
    """A driver was found but failed to import or initialise."""


class InvalidPayload(AgentkitError, ValueError):
    """An RPC payload is missing keys or has the wrong types."""


class InvalidConfiguration(AgentkitError):
    """A combination of options the agent refuses to start with."""


class InvalidOptionValue(InvalidConfiguration):
    """An option's value cannot be read (wrong type, out of range).

    Raised where a driver checks the options it registers itself, so a bad
    value there stops the agent as a bad value of the agent's own options
    does (exit code 2, naming the option).
    """


class ProcessError(AgentkitError):
    """A managed external process (dnsmasq, haproxy) could not be handled."""


class Conflict(AgentkitError):
    """The server's state moved on under us (e.g. the network is being
    deleted); the next event settles it, so this is not retried."""


class StateWriteError(AgentkitError):
    """A resource's files under ``state_path`` cannot be written (disk
    full, read-only): names the resource; it is retried, the others go on."""
