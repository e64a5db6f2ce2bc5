"""Small exception tree; each message says how to fix the problem."""


class WattwiseError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(WattwiseError):
    """The configuration is invalid; the CLI exits with status 2."""


class ListenError(WattwiseError):
    """The metrics port cannot be bound."""


class BadNumber(WattwiseError):
    """A number from outside that is not usable; the message names its origin."""


class LedgerError(WattwiseError):
    """The ledger file cannot be used; the message says which file and what to do."""


class LedgerUnavailable(LedgerError):
    """The file could not be read just now (a lock held elsewhere); suspend() and it is tried
    again, like a file that could not be opened."""


class ProviderError(WattwiseError):
    """A provider could not give a usable value; the message says why."""


class FeedError(WattwiseError):
    """The facility's /metrics gave no usable PUE."""


class MeterError(WattwiseError):
    """A meter gave no usable reading; the message says which meter and why."""


class KubeletError(WattwiseError):
    """The kubelet's pods API gave no usable answer."""


class HttpError(WattwiseError):
    """A request that gave no usable answer; callers usually ask for their own class."""


class QueryError(WattwiseError):
    """A Prometheus-compatible query API that failed, or answered something unusable."""


class ScrapeError(WattwiseError):
    """An endpoint or annotation that gives no usable counter; the message says why."""


class VendorError(WattwiseError):
    """An NVML call failed, however the binding raised it; `name` is the NVML error name
    (NVML_ERROR_NOT_SUPPORTED, ...) or, for anything else, the exception's class."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{text} ({name})")
        self.name = name


class CounterFileError(WattwiseError):
    """A counter file that could not be read or parsed; the message is the reason."""


class WorkError(WattwiseError):
    """A request that cannot be taken; the message goes back to the caller."""


class WorkReportError(WattwiseError):
    """The agent refused the report, or could not be reached."""


class Unhealthy(WattwiseError):
    """The agent did not answer, or its sampling loop has not ticked recently; the message says
    which."""
