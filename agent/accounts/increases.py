"""Exact counter increases over a Prometheus-compatible query API: what a counter counted in
[since, until) is its last value in the window minus its last value before it, not
increase()'s extrapolation, with every reset added back (docs/fleet.md)."""

from __future__ import annotations

import math

from wattwise.net.promql import PromQL, Series, matcher

BASELINE_S = 3600  # how far before the window its baseline value is looked for first
BASELINE_FAR_S = 7 * 86400  # and then, for the counters not found in that hour

# What names one counter, whatever else a scrape adds: a DaemonSet's rolled pod, a service
# discovery's labels. Series are matched and summed on these only.
IDENTITY = "cluster, instance, scheduler, job_id, domain, source, state, scope"
SEEN = "wattwise_seen"  # tells apart the two answers of one query (_went_down)
# A value below this share of the one before is a reset; a smaller dip is two copies of one
# counter (HA replicas, a target scraped twice) whose samples interleave out of order.
RESET_BELOW = 0.9


def counter_increases(
    api: PromQL,
    metric: str,
    since: float,
    until: float,
    warnings: list[str],
    selector: str = "",
    carried: dict | None = None,
) -> list[tuple[dict[str, str], float]]:
    """Each counter (by IDENTITY) with what it counted over [since, until); `selector` is a
    label matcher (`{job_id="12"}`) that bounds what the store reads. `carried`: each
    counter's value at `since` from the period before (`--per`), updated to its value at
    `until`. A counter with no value in the hour before `since` is looked for over the
    BASELINE_FAR_S before it (a node unscraped for a while), and only then counted from zero
    (a job that started inside the window)."""
    chosen = f"{metric}{selector}"
    window, reach = promql_range(until - since), promql_range(until - since + BASELINE_S)
    end = ask(api, f"max by ({IDENTITY}) (last_over_time({chosen}[{window}]))", until, warnings)
    baseline = _baseline(api, chosen, since, BASELINE_S, warnings)
    baseline |= carried or {}
    if any(series.key() not in baseline for series in end):
        baseline = _baseline(api, chosen, since, BASELINE_FAR_S, warnings) | baseline
    went_down = _went_down(api, chosen, window, reach, until, baseline, warnings)
    found = []
    for series in end:
        before = baseline.get(series.key(), 0.0)
        if series.key() in went_down or series.value < before:  # walk it, resets and all
            amount = _sample_by_sample(api, metric, series.labels, since, until, warnings)
        else:
            amount = series.value - before
        found.append((series.labels, amount))
    if carried is not None:
        carried.update({series.key(): series.value for series in end})
    return found


def _went_down(
    api: PromQL, chosen: str, window: str, reach: str, until: float, baseline: dict, warnings: list
) -> set:
    """The counters that went down: a reset within one series, or a value in the window below
    the baseline. The second is a reset between two series of one counter, which resets()
    cannot see: an agent that lost its ledger and came back under a new pod label, counting
    from zero. Both in one query, told apart by a label."""
    resets = f"max by ({IDENTITY}) (resets({chosen}[{reach}])) > 0"
    lowest = f"min by ({IDENTITY}) (min_over_time({chosen}[{window}]))"
    query = " or ".join(
        f'label_replace({q}, "{SEEN}", "{kind}", "", "")'
        for q, kind in ((resets, "reset"), (lowest, "lowest"))
    )
    down = set()
    for series in ask(api, query, until, warnings):
        kind = series.labels.pop(SEEN, "")
        below = series.value < RESET_BELOW * baseline.get(series.key(), 0)
        if kind == "reset" or (kind == "lowest" and below):
            down.add(series.key())
    return down


def _baseline(api: PromQL, chosen: str, at: float, reach_s: float, warnings: list) -> dict:
    query = f"max by ({IDENTITY}) (last_over_time({chosen}[{promql_range(reach_s)}]))"
    return {s.key(): s.value for s in ask(api, query, at, warnings)}


def _sample_by_sample(
    api: PromQL, metric: str, labels: dict[str, str], since: float, until: float, warnings: list
) -> float:
    """A counter that went down, from its raw samples: every series with its identity (one
    per pod it was scraped from, or per replica), in time order, each reset added back and a
    copy's slightly lower sample skipped."""
    reach = promql_range(until - since + BASELINE_S)
    found = ask(api, f"{metric}{matcher(labels)}[{reach}]", until, warnings)
    if not found:
        warnings.append(f"the samples of {metric}{matcher(labels)} could not be read")
        return 0.0
    samples = sorted({at: value for series in found for at, value in series.samples}.items())
    previous, counted = 0.0, 0.0
    for at, value in samples:  # those up to `since` only set the baseline
        if value >= previous:
            step = value - previous
        elif value < RESET_BELOW * previous:  # a reset: from zero
            step = value
        else:
            continue  # a copy's sample out of order, not a reset: skipped
        counted += step if at > since else 0.0
        previous = value
    return counted


def ask(api: PromQL, query: str, at: float, warnings: list[str]) -> list[Series]:
    """The instant query's series; the storage's warnings (a partial answer) are added to
    `warnings`."""
    answer = api.instant(query, at)
    warnings += answer.warnings
    return answer.series


def promql_range(seconds: float) -> str:
    """A range selector's duration, whole seconds and never zero."""
    return f"{max(math.ceil(seconds), 1)}s"
