"""wattwise agent: measures node energy from hardware counters and exports it."""


def __getattr__(name: str) -> str:
    # The version is read from the installed metadata only when asked for: importlib.metadata
    # costs ~30 ms, which every command (`--help` included) would otherwise pay at start.
    if name != "__version__":
        raise AttributeError(name)
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("wattwise")
    except PackageNotFoundError:  # running from a source tree that was never installed
        found = "0.0.0+unknown"
    globals()["__version__"] = found
    return found
