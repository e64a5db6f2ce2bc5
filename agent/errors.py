"""Small exception tree; each message says how to fix the problem."""


class WattwiseError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(WattwiseError):
    """The configuration is invalid; the CLI exits with status 2."""


class ListenError(WattwiseError):
    """The metrics port cannot be bound."""
