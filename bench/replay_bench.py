"""Prioritization replay through SQL: how much of the perfect-foresight gain in access-weighted
availability (AWA) the replication queue captures, on real traces, driving shardcast the way an
operator would (import history, refresh, enqueue, read the queue).

Prints markdown tables; asserts nothing. `make bench-replay` runs it, or after
`make install-release`:  python3 bench/replay_bench.py [--cuts 16] [--m4-groups 4] [--seed 1]

Definitions (docs: DESIGN.md, "How we measure prioritization"):
- One copy channel; shard j is ready at C_j = (bytes of j and of everything before it) / B, with B
  chosen so that copying all shards takes exactly the window W (B = total bytes / W).
- AWA of an order over [cut, cut + W) = share of the window's true accesses (5-minute loads after
  the cut, each spread evenly over its 5 minutes) that hit a shard already ready.
- FIFO = the enqueue (catalog) order, a seeded shuffle per cut; oracle = WSPT on the true window
  load. capture = (AWA - AWA_FIFO) / (AWA_oracle - AWA_FIFO); per window the mean and median over
  cuts (cuts where the oracle gains less than --min-gain, 0.01, over FIFO are left out: their ratio
  is noise) and the pooled figure over all cuts, sum of gains / sum of oracle gains.
- Baselines: last-hour WSPT (load of the 60 minutes before the cut / bytes) and yesterday WSPT
  (load of [cut - 24 h, cut - 24 h + W) / bytes). shardcast: (a) the order of
  `shardcast.prioritized_queue`, (b) WSPT on `predicted_load` of `shardcast.priority_scores`, both
  after `shardcast.refresh_forecasts()` with `shardcast.horizon` = W in the session. WSPT ties keep
  FIFO order.

Data (bench/data): the six NAB traces as one group of shards (5-minute steps; nyc_taxi's 30-minute
values are spread over six 5-minute steps; rows are taken as consecutive steps, timestamps are only
used for the clock minute), and groups of 10 M4 hourly series (train + test; each hourly value
spread as 12 equal 5-minute steps). Series of a group are aligned at their ends, so that longer
series bring more history. Each series is a table; each group is replayed alone (its tables are
dropped and its shards deleted before the next group).

Per cut (a random 5-minute step of the group's timeline leaving >= 14 days of history, see
--min-history-days, and >= 12 h after it) and in one transaction, so that now() is one instant:
all shardcast history and tasks are deleted; the last 28 days before the cut are imported with the
bulk `shardcast.record_access(regclass[], timestamptz[], float8[])`, shifted so that the cut is
now() (the cut's minute on the series' hour grid is random; each 5-minute value is split between
the two real 5-minute buckets it overlaps, the way the sampler's buckets would hold it); table
sizes are drawn (log-uniform, 1-32 MiB) and written to the tasks' `size_bytes`; every shard
is enqueued in FIFO order; then per window: horizon set, forecasts and scores of the previous
window deleted (so that score hysteresis does not carry a score across horizons), refresh, queue
and scores read.

The worker runs with shardcast.enabled = off: it samples nothing, so the only history is the
imported one. With --worker it runs (sampling every 5 s), as it would for a DBA who installed
shardcast and imports history for tables just created: every cut creates its tables afresh,
waits until the worker has registered and sampled them, and keeps the worker's sampling periods,
so that the last hour is observed for seconds and imported for the rest. --fill is closer still to
a test harness: each cut creates its tables and loads them to their sizes (so the worker may read
them empty and then see the load), then imports at once, with the worker at its default interval.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pg_test"))

from cluster import running_cluster  # noqa: E402

DB = "replay"
DATA = Path(__file__).resolve().parent / "data"  # the default of --data
STEP_SECS = 300
STEPS_PER_HOUR = 12
DAY = 24 * STEPS_PER_HOUR
WINDOWS = (1, 4, 12)
IMPORT_DAYS = 28  # shardcast.history_retention's default, and what a forecast reads
MIB = 1 << 20
METHODS = (
    ("fifo", "FIFO (enqueue order)"),
    ("last_hour", "last-hour WSPT"),
    ("yesterday", "yesterday WSPT"),
    ("queue", "shardcast prioritized_queue"),
    ("predicted", "WSPT on shardcast predicted_load"),
    ("oracle", "oracle (WSPT on true window load)"),
)


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


@dataclass
class Series:
    table: str
    values: np.ndarray  # load per 5-minute step
    minutes: np.ndarray  # minute of the hour at which each step starts, on the series' own grid


@dataclass
class Group:
    name: str
    kind: str  # "NAB" or "M4"
    series: list[Series]
    min_history_days: float = 14.0
    cuts: list[int] = field(default_factory=list)  # indices on the group's timeline

    @property
    def length(self) -> int:
        return min(len(s.values) for s in self.series)

    def offset(self, s: Series) -> int:
        """Series are aligned at their ends: timeline index c is index c + offset of s."""
        return len(s.values) - self.length


def table_name(raw: str) -> str:
    return "s_" + re.sub(r"[^a-z0-9_]", "_", raw.lower())


def load_nab(data: Path) -> list[Series]:
    out = []
    for path in sorted((data / "nab").glob("*.csv")):
        with path.open() as f:
            rows = list(csv.reader(f))[1:]
        stamps = [datetime.datetime.fromisoformat(r[0]) for r in rows]
        values = [float(r[1]) for r in rows]
        step = sorted((b - a).total_seconds() for a, b in zip(stamps, stamps[1:]))[len(stamps) // 2]
        per_row = max(1, round(step / STEP_SECS))
        vals = np.repeat(np.array(values) / per_row, per_row)
        minutes = np.array([(t.minute // 5 * 5 + 5 * k) % 60 for t in stamps for k in range(per_row)])
        out.append(Series(table_name(path.stem), vals, minutes))
    return out


def load_m4(data: Path, min_hours: int) -> list[tuple[str, np.ndarray]]:
    def read(path: Path) -> dict[str, list[float]]:
        with path.open() as f:
            rows = list(csv.reader(f))[1:]
        return {r[0]: [float(v) for v in r[1:] if v != ""] for r in rows}

    train = read(data / "m4-hourly" / "Hourly-train.csv")
    test = read(data / "m4-hourly" / "Hourly-test.csv")
    out = []
    for name, values in train.items():
        hourly = values + test.get(name, [])
        if len(hourly) >= min_hours:
            out.append((name, np.array(hourly)))
    return out


def m4_series(name: str, hourly: np.ndarray, equal_levels: bool) -> Series:
    # No timestamps: the series starts on the hour; each hourly value is 12 equal 5-minute steps.
    if equal_levels:
        hourly = hourly * (1000.0 / max(float(hourly.mean()), 1e-9))
    vals = np.repeat(hourly / STEPS_PER_HOUR, STEPS_PER_HOUR)
    minutes = np.tile(np.arange(STEPS_PER_HOUR) * 5, len(hourly))
    return Series(table_name(name), vals, minutes)


def choose_cuts(group: Group, count: int, rng: random.Random, fallback_days: float) -> None:
    after = max(WINDOWS) * STEPS_PER_HOUR
    for days in (group.min_history_days, fallback_days):
        lo, hi = int(days * DAY), group.length - after
        if hi - lo + 1 >= count:
            group.min_history_days = days
            group.cuts = sorted(rng.sample(range(lo, hi + 1), count))
            return
    raise SystemExit(f"group {group.name}: too short ({group.length} steps) for {count} cuts")


# --- AWA ---------------------------------------------------------------------------------------

def awa(order: list[int], sizes: list[int], truth: list[np.ndarray], hours: int) -> float:
    """Access-weighted availability of `order` over the window (see the module docstring)."""
    total_load = sum(float(t.sum()) for t in truth)
    if total_load <= 0:
        return math.nan
    window_min = hours * 60.0
    total_bytes = float(sum(sizes))
    done, hit = 0.0, 0.0
    ends = (np.arange(hours * STEPS_PER_HOUR) + 1) * 5.0
    for j in order:
        done += sizes[j]
        ready = done / total_bytes * window_min
        hit += float((truth[j] * np.clip((ends - ready) / 5.0, 0.0, 1.0)).sum())
    return hit / total_load


def wspt(fifo: list[int], load: list[float], sizes: list[int]) -> list[int]:
    """Highest load per byte first; ties keep FIFO order (sorted() is stable)."""
    return sorted(fifo, key=lambda j: -(load[j] / sizes[j]))


# --- SQL driver --------------------------------------------------------------------------------

def reset_history(conn, keep_periods: bool = False) -> None:
    conn.execute("DELETE FROM shardcast.replication_tasks")
    conn.execute("DELETE FROM shardcast.copy_credits")
    conn.execute("TRUNCATE shardcast.recent_access, shardcast.daily_access, shardcast.forecast_state,"
                 " shardcast.scores" + ("" if keep_periods else ", shardcast.sampling_periods"))


def fresh_tables(conn, group: "Group") -> dict:
    """Drops and creates the group's tables and waits until the running worker has registered
    them and sampled them for a few seconds. Returns their OIDs."""
    for s in group.series:
        conn.execute(f"DROP TABLE IF EXISTS public.{s.table}")
        conn.execute(f"CREATE TABLE public.{s.table} (id int)")
    relids = {s.table: conn.execute("SELECT %s::regclass::oid", [s.table]).fetchone()[0] for s in group.series}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready = conn.execute(
            "SELECT count(*) = %s AND coalesce((SELECT max(ended_at) FROM shardcast.sampling_periods)"
            " > max(first_seen) + interval '6 seconds', false)"
            " FROM shardcast.shards WHERE relid = ANY(%s) AND retired_at IS NULL",
            [len(relids), list(relids.values())]).fetchone()[0]
        if ready:
            return relids
        time.sleep(0.5)
    raise RuntimeError("the worker did not register and sample the new tables within 2 minutes")


def filled_tables(conn, group: "Group", sizes: list[int]) -> dict:
    """Drops and creates the group's tables and loads each with rows up to its size at once, as
    a harness that builds tables of given sizes would, whether or not the worker has read them
    yet. Returns their OIDs."""
    relids = {}
    for s, size in zip(group.series, sizes):
        conn.execute(f"DROP TABLE IF EXISTS public.{s.table}")
        conn.execute(f"CREATE TABLE public.{s.table} (id int, pad text)")
        # About 1 kB a row, stored uncompressed (md5 text does not compress).
        conn.execute(f"INSERT INTO public.{s.table} SELECT i, (SELECT string_agg(md5((i * 64 + k)::text), '')"
                     f" FROM generate_series(1, 30) k) FROM generate_series(1, %s) i",
                     [max(1, size // 1100)])
        relids[s.table] = conn.execute("SELECT %s::regclass::oid", [s.table]).fetchone()[0]
    return relids


def import_history(conn, group: Group, cut: int, mark_zeros: bool, stamps: str = "split") -> tuple[int, int]:
    """Imports the last IMPORT_DAYS before the cut, the cut being now(). Returns (samples, hours
    of history of the shortest series)."""
    tables = [s.table for s in group.series]
    shard_index, offsets, values = [], [], []
    # now() sits `o` seconds into its real 5-minute bucket, and so does the start of every step:
    # a step's value is split, (300 - o) / 300 into the bucket where it starts and o / 300 into
    # the next one, which is what the sampler's buckets would hold. One sample per real bucket
    # (record_access sums samples per bucket anyway), stamped a second after the bucket starts.
    o = float(conn.execute("SELECT extract(epoch FROM now())::numeric % 300").fetchone()[0])
    shortest = None
    for i, s in enumerate(group.series):
        idx = cut + group.offset(s)
        # One step short of IMPORT_DAYS: split stamps reach a bucket before the oldest step's
        # start, which would fall just outside shardcast.history_retention (and be refused
        # with a WARNING).
        hist = s.values[max(0, idx - IMPORT_DAYS * DAY + 1):idx]
        shortest = len(hist) if shortest is None else min(shortest, len(hist))
        if mark_zeros:
            hist = np.where(hist > 0, hist, 1e-9)
        n = len(hist)
        if stamps == "split":
            bucket = np.zeros(n + 1)  # bucket k starts o + (n - k) * 300 seconds before now()
            bucket[:n] += hist * (STEP_SECS - o) / STEP_SECS
            bucket[1:] += hist * o / STEP_SECS
            off = o + (n - np.arange(n + 1)) * STEP_SECS - min(1.0, o / 2)
        else:
            # One sample per step, stamped when the step starts (now() - 5 min for the last) or
            # ends (now() for the last), as a simple import script would.
            bucket = hist.astype(float)
            off = (n - np.arange(n)) * STEP_SECS - (STEP_SECS if stamps == "end" else 0)
        keep = np.isfinite(bucket)  # a zero is a known idle step; a gap is left unknown
        shard_index += [i + 1] * int(keep.sum())
        offsets += off[keep].tolist()
        values += bucket[keep].tolist()
    n = conn.execute(
        "SELECT shardcast.record_access(array_agg((%s::regclass[])[u.i]),"
        " array_agg(now() - make_interval(secs => u.off)), array_agg(u.v))"
        " FROM unnest(%s::int4[], %s::float8[], %s::float8[]) AS u(i, off, v)",
        [tables, shard_index, offsets, values]).fetchone()[0]
    return int(n or 0), (shortest or 0) // STEPS_PER_HOUR


@dataclass
class CutResult:
    group: str
    kind: str
    cut: int
    awa: dict  # (method, hours) -> AWA
    minutes: list  # minute of the hour of the cut on each series' grid
    real_minute: int
    history_hours: int
    prefetch: dict  # hours -> tasks in the express lane
    models: dict  # hours -> {model: count}
    detail: dict = field(default_factory=dict)  # for --dump: what each order was made from


def replay_cut(conn, group: Group, cut: int, rng: random.Random, relids: dict | None, mark_zeros: bool,
               keep_periods: bool = False, stamps: str = "split") -> CutResult:
    """Replays one cut. `relids` None: the tables are created and loaded to their sizes first
    (--fill), and the queue's sizes are theirs."""
    n = len(group.series)
    sizes = [int(2 ** rng.uniform(0, 5) * MIB) for _ in range(n)]
    fifo = list(range(n))
    rng.shuffle(fifo)
    idx = [cut + group.offset(s) for s in group.series]
    filled = relids is None
    if filled:
        relids = filled_tables(conn, group, sizes)
    with conn.transaction():
        reset_history(conn, keep_periods)
        samples, history_hours = import_history(conn, group, cut, mark_zeros, stamps)
        task_of = {}
        for j in fifo:
            task_of[conn.execute("SELECT shardcast.enqueue(%s::regclass)", [group.series[j].table]).fetchone()[0]] = j
        if filled:
            sizes = [0] * n
            for task, size in conn.execute("SELECT task_id, size_bytes FROM shardcast.replication_tasks"
                                           " WHERE task_id = ANY(%s)", [list(task_of)]):
                sizes[task_of[task]] = int(size)
        else:
            # The bench's tables are empty, and enqueue() takes a task's size from the table:
            # the bench says how big each one is instead of loading it (the queue is ordered at
            # the refresh below).
            conn.execute("UPDATE shardcast.replication_tasks t SET size_bytes = u.size"
                         " FROM unnest(%s::int8[], %s::int8[]) AS u(task_id, size) WHERE t.task_id = u.task_id",
                         [list(task_of), [sizes[j] for j in task_of.values()]])
        real_minute = int(conn.execute("SELECT extract(minute FROM now())::int").fetchone()[0])
        result = CutResult(group.name, group.kind, cut, {}, [int(s.minutes[i]) for s, i in zip(group.series, idx)],
                           real_minute, history_hours, {}, {})
        by_relid = {relids[s.table]: j for j, s in enumerate(group.series)}
        for hours in WINDOWS:
            steps = hours * STEPS_PER_HOUR
            conn.execute(f"SET shardcast.horizon = '{hours}h'")
            conn.execute("DELETE FROM shardcast.scores")
            conn.execute("DELETE FROM shardcast.forecast_state")
            conn.execute("SELECT shardcast.refresh_forecasts()")
            rows = conn.execute("SELECT task_id, size_bytes, prefetch FROM shardcast.prioritized_queue"
                                " ORDER BY position").fetchall()
            queue = [task_of[r[0]] for r in rows]
            if sorted(queue) != list(range(n)):
                raise RuntimeError(f"prioritized_queue lists {len(queue)} of {n} tasks")
            if any(r[1] != sizes[task_of[r[0]]] for r in rows):
                raise RuntimeError("a task's size_bytes differs from the size the bench gave it")
            result.prefetch[hours] = sum(1 for r in rows if r[2])
            predicted = [0.0] * n
            for relid, load in conn.execute("SELECT shard::oid, predicted_load FROM shardcast.priority_scores"):
                predicted[by_relid[relid]] = float(load)
            result.models[hours] = dict(conn.execute("SELECT model, count(*) FROM shardcast.forecasts GROUP BY model").fetchall())

            truth = [s.values[i:i + steps] for s, i in zip(group.series, idx)]
            last_hour = [float(s.values[i - STEPS_PER_HOUR:i].sum()) for s, i in zip(group.series, idx)]
            yesterday = [float(s.values[i - DAY:i - DAY + steps].sum()) for s, i in zip(group.series, idx)]
            orders = {
                "fifo": fifo,
                "last_hour": wspt(fifo, last_hour, sizes),
                "yesterday": wspt(fifo, yesterday, sizes),
                "queue": queue,
                "predicted": wspt(fifo, predicted, sizes),
                "oracle": wspt(fifo, [float(t.sum()) for t in truth], sizes),
            }
            for method, order in orders.items():
                result.awa[(method, hours)] = awa(order, sizes, truth, hours)
            result.detail[hours] = {"predicted": predicted, "truth": [float(t.sum()) for t in truth],
                                    "last_hour": last_hour, "queue": queue}
    result.detail.update(steps=[int(i) for i in idx], sizes=sizes, fifo=fifo)
    return result


# --- report ------------------------------------------------------------------------------------

def summarize(results: list[CutResult], min_gain: float, methods=METHODS) -> dict:
    """Per (method, window): capture mean, median and pooled, and mean AWA, over the results (any
    objects with an `awa` dict keyed by (method, hours), "fifo" and "oracle" among the methods)."""
    out = {}
    for hours in WINDOWS:
        usable = [r for r in results
                  if not (math.isnan(r.awa[("fifo", hours)]) or math.isnan(r.awa[("oracle", hours)]))]
        for method, _ in methods:
            captures, num, den, awas = [], 0.0, 0.0, []
            for r in usable:
                f, o, a = r.awa[("fifo", hours)], r.awa[("oracle", hours)], r.awa[(method, hours)]
                awas.append(a)
                num += a - f
                den += o - f
                # A cut where the oracle gains almost nothing over FIFO makes the ratio noise
                # (a loss of 0.001 over a gain of 0.00001 is -100): it counts in the pooled figure only.
                if o - f >= min_gain:
                    captures.append((a - f) / (o - f))
            out[(method, hours)] = {
                "mean": float(np.mean(captures)) if captures else math.nan,
                "median": float(np.median(captures)) if captures else math.nan,
                "pooled": num / den if den > 1e-12 else math.nan,
                "awa": float(np.mean(awas)) if awas else math.nan,
                "cuts": len(captures),
                "usable": len(usable),
            }
    return out


def table(title: str, results: list[CutResult], min_gain: float) -> None:
    s = summarize(results, min_gain)
    cuts = len(results)
    groups = len({r.group for r in results})
    print(f"### {title}: {cuts} cuts in {groups} group(s)")
    print()
    head = " | ".join(f"{h} h capture mean | median | pooled | AWA" for h in WINDOWS)
    print(f"| method | {head} |")
    print("|---|" + "---:|" * (4 * len(WINDOWS)))
    fmt = lambda v: "n/a" if math.isnan(v) else f"{v:.3f}"  # noqa: E731
    for method, label in METHODS:
        cells = " | ".join(f"{fmt(s[(method, h)]['mean'])} | {fmt(s[(method, h)]['median'])} | "
                           f"{fmt(s[(method, h)]['pooled'])} | {fmt(s[(method, h)]['awa'])}" for h in WINDOWS)
        print(f"| {label} | {cells} |")
    print()
    print(f"Mean and median over the cuts where the oracle gains >= {min_gain:g} AWA over FIFO: "
          + ", ".join(f"{h} h {s[('fifo', h)]['cuts']} of {s[('fifo', h)]['usable']}" for h in WINDOWS)
          + "; pooled and AWA over all.")
    verdict = []
    for h in WINDOWS:
        q, last, yday = (s[(m, h)]["mean"] for m in ("queue", "last_hour", "yesterday"))
        ok = q >= 0.95 and q > last and q > yday
        verdict.append(f"{h} h {'met' if ok else 'NOT met'} ({fmt(q)} vs {fmt(last)} and {fmt(yday)})")
    print(f"Goal (prioritized_queue mean capture >= 0.95 and above both baselines' means): {'; '.join(verdict)}.")
    print()


def histogram(label: str, minutes: list[int]) -> str:
    counts = [0] * 12
    for m in minutes:
        counts[(m // 5) % 12] += 1
    return f"{label}: " + ", ".join(f":{5 * i:02d} {c}" for i, c in enumerate(counts))


# --- main --------------------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cuts", type=int, default=16, help="cut points per group (default 16)")
    p.add_argument("--m4-groups", type=int, default=4, help="groups of M4 hourly series (default 4)")
    p.add_argument("--group-size", type=int, default=10, help="series per M4 group (default 10)")
    p.add_argument("--min-history-days", type=float, default=14.0,
                   help="history before every cut (default 14 days)")
    p.add_argument("--short-group-history-days", type=float, default=7.0,
                   help="for a group too short for --min-history-days (NAB: its 5-minute traces are "
                        "14 days long): history before every cut (default 7 days)")
    p.add_argument("--mark-zeros", action="store_true",
                   help="import zero steps as 1e-9 reads (record_access keeps zero samples as "
                        "known idle steps since 0.2.0; this flag is kept to compare)")
    p.add_argument("--m4-equal-levels", action="store_true",
                   help="scale every M4 series to a mean of 1000 per hour: their levels differ by orders of "
                        "magnitude, which makes ranking a group by load easy for every method")
    p.add_argument("--min-gain", type=float, default=0.01,
                   help="cuts where the oracle gains less AWA than this over FIFO are left out of the "
                        "mean and median capture (default 0.01)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--worker", action="store_true",
                   help="run the worker (sampling every 5 s) and create each cut's tables afresh, as a "
                        "DBA importing history for new tables would")
    p.add_argument("--fill", action="store_true",
                   help="with --worker: each cut creates its tables and loads them to their sizes at once, "
                        "without waiting for the worker (which samples at its default interval, 1 min, "
                        "unless --sample-interval says otherwise), and the queue's sizes are the tables' own")
    p.add_argument("--sample-interval", default=None,
                   help="the worker's shardcast.sample_interval (default: 5s, or the server's default "
                        "with --fill)")
    p.add_argument("--stamps", choices=["split", "start", "end"], default="split",
                   help="how imported 5-minute values are stamped: split over the two real 5-minute "
                        "buckets they overlap (default), or one sample per step at its start or end")
    p.add_argument("--dump", type=Path,
                   help="write one JSON line per cut: each shard's step index, size, predicted load and "
                        "true load per window, the orders' AWA (to compare the extension's forecasts "
                        "with forecast_cli's on the same history)")
    p.add_argument("--data", type=Path, default=DATA,
                   help="directory holding nab/ (5-minute traces, timestamp,value CSVs: one group) and "
                        "m4-hourly/ (default: bench/data)")
    args = p.parse_args()

    started = time.monotonic()
    # One random stream per purpose and group, so that a group's cuts, sizes and FIFO orders do
    # not depend on how many other groups are replayed.
    groups = [Group("nab", "NAB", load_nab(args.data), args.min_history_days)]
    m4 = load_m4(args.data, min_hours=700) if args.m4_groups > 0 else []
    picked = random.Random(f"{args.seed}-m4").sample(m4, args.m4_groups * args.group_size)
    for g in range(args.m4_groups):
        members = picked[g * args.group_size:(g + 1) * args.group_size]
        groups.append(Group(f"m4-{g + 1}", "M4", [m4_series(n, v, args.m4_equal_levels) for n, v in members], args.min_history_days))
    for g in groups:
        choose_cuts(g, args.cuts, random.Random(f"{args.seed}-{g.name}-cuts"), args.short_group_history_days)

    results: list[CutResult] = []
    settings = {"shardcast.database": f"'{DB}'", "shardcast.enabled": "off"}
    if (args.fill or args.sample_interval) and not args.worker:
        p.error("--fill and --sample-interval need --worker")
    if args.worker:
        settings["shardcast.enabled"] = "on"
        interval = args.sample_interval or (None if args.fill else "5s")
        if interval:
            settings["shardcast.sample_interval"] = f"'{interval}'"
    with running_cluster(settings, "shardcast-replay") as cluster:
        with cluster.connect() as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        with cluster.connect(DB) as conn:
            conn.execute("CREATE EXTENSION shardcast")
            version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'shardcast'").fetchone()[0]
            run_date = conn.execute("SELECT now()").fetchone()[0]
            settings_seen = conn.execute(
                "SELECT current_setting('shardcast.ordering', true), current_setting('shardcast.overtake_window', true),"
                " current_setting('shardcast.load_measure', true), current_setting('shardcast.score_hysteresis', true),"
                " current_setting('shardcast.prefetch_quantile', true)").fetchone()
            for g in groups:
                log(f"[{time.monotonic() - started:6.0f} s] group {g.name}: {len(g.series)} shards, "
                    f"{g.length} steps, {len(g.cuts)} cuts, >= {g.min_history_days:g} days of history")
                for s in g.series:
                    conn.execute(f"CREATE TABLE public.{s.table} (id int)")
                relids = {s.table: conn.execute("SELECT %s::regclass::oid", [s.table]).fetchone()[0] for s in g.series}
                cut_rng = random.Random(f"{args.seed}-{g.name}-sizes")
                for k, cut in enumerate(g.cuts):
                    t0 = time.monotonic()
                    if args.worker and not args.fill:
                        relids = fresh_tables(conn, g)
                    r = replay_cut(conn, g, cut, cut_rng, None if args.fill else relids, args.mark_zeros,
                                   args.worker, args.stamps)
                    results.append(r)
                    log(f"   cut {k + 1}/{len(g.cuts)} at step {cut} ({r.history_hours} h of history): "
                        + ", ".join(f"{h} h queue {r.awa[('queue', h)]:.3f} fifo {r.awa[('fifo', h)]:.3f} "
                                    f"oracle {r.awa[('oracle', h)]:.3f}" for h in WINDOWS)
                        + f"  [{time.monotonic() - t0:.1f} s]")
                with conn.transaction():
                    reset_history(conn)
                    for s in g.series:
                        conn.execute(f"DROP TABLE public.{s.table}")
                    conn.execute("DELETE FROM shardcast.shards")
    elapsed = time.monotonic() - started
    if args.dump:
        with args.dump.open("w") as f:
            for r in results:
                f.write(json.dumps({"group": r.group, "cut": r.cut, "real_minute": r.real_minute,
                                    "tables": [s.table for g in groups if g.name == r.group for s in g.series],
                                    "awa": {f"{m}@{h}": v for (m, h), v in r.awa.items()},
                                    **{str(k): v for k, v in r.detail.items()}}) + "\n")

    print("## Prioritization replay through SQL (bench/replay_bench.py)")
    print()
    print(f"Run {run_date:%Y-%m-%d %H:%M UTC}, shardcast {version}, seed {args.seed}, {elapsed / 60:.1f} min. "
          f"Windows {', '.join(f'{h} h' for h in WINDOWS)}; one copy channel sized so that all shards take "
          f"the window; sizes log-uniform 1-32 MiB per shard per cut.")
    print(f"Server settings: ordering {settings_seen[0]}, overtake_window {settings_seen[1]}, load_measure "
          f"{settings_seen[2]}, score_hysteresis {settings_seen[3]}, prefetch_quantile {settings_seen[4]}"
          f"{'; zero steps imported as 1e-9' if args.mark_zeros else ''}"
          f"{'; M4 series scaled to equal mean levels' if args.m4_equal_levels else ''}.")
    print(f"Worker: {'on, sampling every ' + (args.sample_interval or ('1min (the default)' if args.fill else '5s')) if args.worker else 'off'}"
          f"{'; tables created and loaded to their sizes at each cut' if args.fill else ''}; imported steps "
          + {"split": "split over the real 5-minute buckets they overlap", "start": "stamped at their start",
             "end": "stamped at their end"}[args.stamps] + ".")
    for g in groups:
        print(f"- {g.name}: {len(g.series)} shards ({', '.join(s.table for s in g.series)}), {len(g.cuts)} cuts, "
              f">= {g.min_history_days:g} days of history before each (at most {IMPORT_DAYS} imported)")
    print()
    print("Minute of the hour of the refreshes on each series' own grid (cut x shard):")
    print()
    for kind in ("NAB", "M4"):
        print("- " + histogram(kind, [m for r in results if r.kind == kind for m in r.minutes]))
    print("- " + histogram("real clock (per cut)", [r.real_minute for r in results]))
    print()
    prefetch = {h: sum(r.prefetch[h] for r in results) for h in WINDOWS}
    print("Tasks in the express lane (prefetch), summed over cuts: "
          + ", ".join(f"{h} h {prefetch[h]}" for h in WINDOWS) + ".")
    models: dict = {}
    for r in results:
        for h in WINDOWS:
            for m, c in r.models[h].items():
                models[m] = models.get(m, 0) + c
    print("Forecast models published (all windows): "
          + ", ".join(f"{m} {c}" for m, c in sorted(models.items(), key=lambda x: -x[1])) + ".")
    print()
    for title, kind in (("NAB", "NAB"), ("M4 hourly groups", "M4"), ("Overall", None)):
        subset = [r for r in results if kind is None or r.kind == kind]
        if subset:
            table(title, subset, args.min_gain)
    log(f"done in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
