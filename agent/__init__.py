"""wattwise agent: measures node energy from hardware counters and exports it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wattwise")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
