"""The queue's order without a database: a quick check of a forecaster change on many cuts.

bench/replay_bench.py is the judge: it drives the extension through SQL (import, refresh,
enqueue, read the queue) and takes minutes for 16 cuts. This script replays the same measure
(capture of the perfect-foresight order's gain in access-weighted availability over FIFO, see
replay_bench.py's docstring) on the core's forecasts alone, through `forecast_cli` on each
shard's now-aligned hourly history, so that 200 cuts take about 10 seconds and every
5-minute step of a data set can be a cut (--cuts larger than the steps takes them all). It
orders by WSPT on the expected load (the sum of the forecast's path)
(what `prioritized_queue` does when no shard waits long), beside the last hour's and
yesterday's rules on the same cuts, sizes and FIFO orders. Prints a markdown table; asserts
nothing.

    python3 bench/order_check.py --data bench/data [--cuts 200] [--seed 5] [--shardcast-bin BIN]
    python3 bench/order_check.py --data bench/data --shardcast-bin NEW --baseline-bin OLD
    python3 bench/synthetic_events.py 12 /tmp/bursty/nab --bursty
    python3 bench/order_check.py --data /tmp/bursty

Series of DATA/nab/*.csv are the shards of one group, aligned at their ends as in
replay_bench.py (a longer series brings more history, up to 28 days); cuts fall at random
5-minute steps of the group's timeline leaving --min-history-days (14, or 7 when the shortest
series is too short for 14, as replay_bench.py does) before them and 12 hours after. A cut
whose window holds no load at all is left out.

With --baseline-bin, a second forecast_cli orders the same cuts too, and the table below the
first gives the difference of pooled capture (--shardcast-bin minus the baseline) with a 95%
interval from resampling the cuts in blocks of the longest window (12 hours of the timeline):
cuts that close together share their outcomes and are not independent draws, so they are
resampled together, and both orders of a cut with them (paired). A change whose interval
straddles zero has not been told from the noise of these cuts. Cuts drawn from one timeline
overlap: on the six NAB series (6.5 days of cuts) the interval is 0.07-0.10 wide with 200 cuts
and 0.02-0.06 with all of them, and two seeds of 200 cuts can disagree by more than that, so
compare on all the steps.
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import forecast_accuracy
from replay_bench import DAY, MIB, STEPS_PER_HOUR, WINDOWS, awa, load_nab, summarize, wspt

HISTORY_HOURS = 28 * 24


def now_aligned(values: np.ndarray, cut: int) -> list[float]:
    """Hourly sums over hours that end at the cut, oldest first, as the extension sees them."""
    hours = min(HISTORY_HOURS, cut // STEPS_PER_HOUR)
    return [float(values[cut - STEPS_PER_HOUR * (k + 1): cut - STEPS_PER_HOUR * k].sum())
            for k in range(hours - 1, -1, -1)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="directory holding nab/*.csv")
    p.add_argument("--cuts", type=int, default=200)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--min-history-days", type=float, default=14.0,
                   help="history before the first cut; falls back to 7 when the data is too short")
    p.add_argument("--min-gain", type=float, default=0.01,
                   help="cuts where the oracle gains less over FIFO count in the pooled figure only")
    p.add_argument("--shardcast-bin", help="a built forecast_cli (default: build it)")
    p.add_argument("--baseline-bin",
                   help="another forecast_cli to compare with on the same cuts (paired difference)")
    p.add_argument("--resamples", type=int, default=2000,
                   help="bootstrap resamples of the cuts for the difference's interval")
    args = p.parse_args()

    if args.min_history_days < 1:
        raise SystemExit("--min-history-days must be at least 1 (yesterday's rule reads a day back)")
    series = load_nab(args.data)
    if not series:
        raise SystemExit(f"no series in {args.data / 'nab'}")
    # Series are aligned at their ends: timeline step c is step c + offset of each series.
    length = min(len(s.values) for s in series)
    values = [s.values for s in series]
    offsets = [len(v) - length for v in values]
    after = max(WINDOWS) * STEPS_PER_HOUR
    for days in (args.min_history_days, 7.0):
        steps = range(int(days * DAY), length - after + 1)
        if steps:
            break
    else:
        raise SystemExit(f"series too short: the shortest has {length} steps")
    rng = random.Random(args.seed)
    cuts = sorted(rng.sample(steps, min(args.cuts, len(steps))))
    forecasters = {"forecast": forecast_accuracy.Shardcast.locate(args.shardcast_bin, 0.8)}
    if args.baseline_bin:
        forecasters["baseline"] = forecast_accuracy.Shardcast.locate(args.baseline_bin, 0.8)
    for shardcast in forecasters.values():
        if not shardcast.available:
            raise SystemExit(f"forecast_cli unavailable: {shardcast.reason}")

    methods = (("fifo", "FIFO"), ("last_hour", "last-hour WSPT"), ("yesterday", "yesterday WSPT"),
               ("forecast", "shardcast forecast WSPT"))
    if args.baseline_bin:
        methods += (("baseline", "baseline forecast WSPT"),)
    methods += (("oracle", "oracle"),)
    results = [SimpleNamespace(awa={}) for _ in cuts]
    for hours in WINDOWS:
        # The recent rate of the last three 5-minute buckets and the last hour's load per hour,
        # which the extension compares beside the hours (cuts fall on 5-minute steps: both end
        # at the cut).
        recent = forecast_accuracy.RECENT_BUCKETS
        requests = [(f"{j}.{i}", now_aligned(v, c + o), 0,
                     (forecast_accuracy.recent_rate(v[c + o - recent: c + o]),
                      v[c + o - STEPS_PER_HOUR: c + o].sum()))
                    for j, c in enumerate(cuts) for i, (v, o) in enumerate(zip(values, offsets))]
        points = {}
        for name, shardcast in forecasters.items():
            forecasts = shardcast.forecast("order", hours, requests, {})
            if forecasts is None:
                raise SystemExit(f"forecast_cli failed: {shardcast.reason}")
            # WSPT on the expected load, as the queue orders (the path sums to it).
            points[name] = iter(sum(path) for _, _, _, _, path in forecasts)
        for j, c in enumerate(cuts):
            predicted = {name: [next(p) for _ in values] for name, p in points.items()}
            # The same draws as replay_bench.replay_cut: sizes, then the FIFO order.
            cut_rng = random.Random(args.seed * 1000 + j)
            sizes = [int(2 ** cut_rng.uniform(0, 5) * MIB) for _ in values]
            fifo = list(range(len(values)))
            cut_rng.shuffle(fifo)
            ends = [c + o for o in offsets]
            steps = hours * STEPS_PER_HOUR
            truth = [v[e: e + steps] for v, e in zip(values, ends)]
            loads = {
                "last_hour": [v[e - STEPS_PER_HOUR: e].sum() for v, e in zip(values, ends)],
                "yesterday": [v[e - DAY: e - DAY + steps].sum() for v, e in zip(values, ends)],
                **predicted,
                "oracle": [t.sum() for t in truth],
            }
            results[j].awa[("fifo", hours)] = awa(fifo, sizes, truth, hours)
            for method, load in loads.items():
                results[j].awa[(method, hours)] = awa(wspt(fifo, load, sizes), sizes, truth, hours)
    summary = summarize(results, args.min_gain, methods)

    print(f"## Order check: {args.data}, {len(series)} shards, {len(cuts)} cuts (seed {args.seed})\n")
    print("Capture of the oracle's gain over FIFO, mean over cuts / pooled; no database.\n")
    print("| order | " + " | ".join(f"{h} h" for h in WINDOWS) + " |")
    print("|---|" + "---:|" * len(WINDOWS))
    for method, label in methods[1:-1]:
        print(f"| {label} | " + " | ".join(f"{summary[(method, h)]['mean']:.3f} / {summary[(method, h)]['pooled']:.3f}"
                                           for h in WINDOWS) + " |")
    if args.baseline_bin:
        blocks = [c // (max(WINDOWS) * STEPS_PER_HOUR) for c in cuts]
        print("\nPooled capture, --shardcast-bin minus --baseline-bin, with a 95% interval over "
              f"{args.resamples} resamples of the cuts in {len(set(blocks))} blocks of "
              f"{max(WINDOWS)} hours:\n")
        print("| window | shardcast | baseline | difference | 95% interval |")
        print("|---|---:|---:|---:|---|")
        rng = np.random.default_rng(args.seed)
        for hours in WINDOWS:
            new, old = summary[("forecast", hours)]["pooled"], summary[("baseline", hours)]["pooled"]
            low, high = difference_interval(results, blocks, hours, args.resamples, rng)
            print(f"| {hours} h | {new:.3f} | {old:.3f} | {new - old:+.3f} | [{low:+.3f}, {high:+.3f}] |")


def difference_interval(results, blocks: list[int], hours: int, resamples: int,
                        rng: np.random.Generator) -> tuple[float, float]:
    """The 2.5 and 97.5 percentiles of the difference in pooled capture ("forecast" minus
    "baseline", as `summarize` pools it) at one window over bootstrap resamples of the blocks
    of cuts (each block drawn whole)."""
    rows = np.array([[r.awa[(m, hours)] for m in ("fifo", "oracle", "forecast", "baseline")]
                     for r in results])
    usable = ~np.isnan(rows).any(axis=1)
    members = {}
    for i, (block, ok) in enumerate(zip(blocks, usable)):
        if ok:
            members.setdefault(block, []).append(i)
    groups = list(members.values())

    def pooled(sample: np.ndarray) -> tuple[float, float]:
        gain = (sample[:, 1] - sample[:, 0]).sum()
        if gain <= 1e-12:
            return math.nan, math.nan
        return ((sample[:, 2] - sample[:, 0]).sum() / gain, (sample[:, 3] - sample[:, 0]).sum() / gain)

    differences = []
    for _ in range(resamples):
        picks = rng.integers(0, len(groups), size=len(groups))
        f, b = pooled(rows[[i for g in picks for i in groups[g]]])
        if not math.isnan(f):
            differences.append(f - b)
    if not differences:
        return math.nan, math.nan
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high)

if __name__ == "__main__":
    main()
