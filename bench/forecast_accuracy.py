"""Forecast accuracy: shardcast beside statsforecast peers and Prophet, on M4 hourly and NAB.

Prints markdown tables; asserts nothing. `make bench-accuracy` runs it, or:

    python3 -m pip install -r bench/requirements.txt
    python3 bench/forecast_accuracy.py [--series 40] [--shardcast-bin PATH] [--jobs 2]

Methods, all on the same series and origins in the same run:
- shardcast: the core's forecaster through its CLI (`core/examples/forecast_cli.rs`), one process
  per horizon H (and per data set): JSON lines on stdin, one per series-origin
  `{"id", "y": [hourly, oldest first, null = unknown], "next_hour": 0-23}`, one JSON line out per
  input line `{"id", "model", "point": total over H, "lower", "upper", "path": [H values]}`.
  Without --shardcast-bin the script builds it with cargo; if that fails, or the binary fails,
  the shardcast rows say "unavailable" and the peers are printed anyway.
- statsforecast SeasonalNaive(24), AutoETS(24), AutoTheta(24), MSTL([24, 168]) (MSTL([24]) when
  the history is shorter than 2 weeks), and "last hour x H" (the last observed hourly value
  times H). Peers cannot take NaN: gaps are filled by linear interpolation, within each origin's
  own history (edges: nearest value). Each peer is refitted at every origin; a model that raises
  on a series falls back to SeasonalNaive(24) there (statsforecast's fallback_model).
- Prophet (prophet 1.5.0) with its defaults: linear trend with changepoints, daily seasonality
  and weekly once the history has two weeks; it takes unknown hours as missing, so they are left
  out instead of filled. About 0.15 s per fit.

Data (`bench/data`, see its README):
- M4 hourly, 414 series, official split. Official origin (end of train), h = 48: the M4 sMAPE and
  MASE (scaled by the in-sample seasonal naive error, m = 24), mean over series; and the WAPE of
  horizon totals for H = 1, 4, 12, 24. Rolling origins in the last week of train: the same WAPE
  figures. The full protocol has 24 origins per series, 7 h apart (end of train - 7, - 14, ..,
  - 168 h: every hour of the day); refitting the peers at 414 x 24 origins takes about
  3 hours on 2 cores (AutoETS(24) alone about 0.6 s per fit), so by default each series is
  evaluated at --m4-origins = 1 of these 24 slots, rotated from series to series so that every
  slot (and hour of day) is used equally often: the same protocol, sampled. Actuals past the
  end of train come from the test file. M4 series have no timestamps:
  the hour of day is unknown, so shardcast is told next_hour = (index of the next point) % 24,
  i.e. as if every series started at 00:00. That is a proxy; the true phase is unknown.
- NAB: six real traces (5-minute or 30-minute steps, treated as UTC). Hourly sums: a window's
  value is the mean of the samples observed in it times the number of steps the window should
  hold (partial windows scaled up, as the core's own trace reader does); a window without a
  sample is unknown (NaN), never zero. Rolling cuts over the last week (--nab-origins, 7 hours
  apart), horizons 1 and 4 h, each forecast sees at most the last --nab-history-days (default 28,
  the extension's default history retention). The actual is the sum over [cut, cut + H) (a cut
  is skipped when fewer than half of that window's steps were observed). Two variants:
  * on the hour: cuts at hh:00, every method gets clock-hour sums up to the cut;
  * at a random minute (hh:mm, mm in 1..59, seeded): shardcast gets a "now-aligned" hourly series
    (each point is the sum over an hour ending at the cut, the last one being the 60 minutes
    before it), as the extension sees it; the statsforecast peers keep clock-hour sums up to the
    last complete hour, as an outside evaluator would, forecast H + 1 clock hours, and their
    forecast of [cut, cut + H) is pro-rated: (1 - mm/60) x hour 0 + hours 1..H-1 + (mm/60) x
    hour H. "last hour x H" reads the 60 minutes before the cut (the reactive rule at its best).

Metrics, for each H: "pooled" WAPE of totals = sum over (series, origin) |actual - forecast| /
sum actual; "mean" = mean over series of the per-series WAPE (sum over that series' origins of
|actual - forecast| / sum of its actuals; this is the figure the project's goal is stated in);
"median" = median over series of the same. Series whose actuals sum to zero are left out of
mean and median. 80% interval coverage (shardcast only): fraction of horizon totals inside
[lower, upper].
"""

import argparse
import atexit
import csv
import json
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
M4_HORIZONS = [1, 4, 12, 24]
M4_OFFICIAL_H = 48
NAB_HORIZONS = [1, 4]
WEEK = 168
# The recent rate the extension reads beside the hourly series (core::series): the last three
# 5-minute buckets', each capped at the largest of the buckets after it.
RECENT_BUCKETS = 3
BUCKET_SECS = 300


def recent_rate(buckets):
    """Load per hour of 5-minute buckets (oldest first) as core::series::lasting_rate reads
    them: each capped at the largest of those after it, so that a spike that is over does not
    count. None when there are none."""
    buckets = [float(b) for b in buckets]
    if not buckets:
        return None
    total, later = 0.0, -math.inf
    for k, b in enumerate(reversed(buckets)):
        total += b if k == 0 else min(b, later)
        later = max(later, b)
    return total / len(buckets) * 3600 / BUCKET_SECS
PEERS = ["SeasonalNaive", "AutoETS", "AutoTheta", "MSTL", "Prophet", "last hour x H"]
# M4 has no clock: its series are fitted by Prophet as if index 0 were this hour (the same proxy
# as shardcast's next_hour = index % 24).
M4_EPOCH = datetime(2000, 1, 3, tzinfo=timezone.utc)
SHARDCAST = "shardcast"


# ---------------------------------------------------------------------------------------------
# metrics


class Scores:
    """Horizon-total errors of one method, per H, per series."""

    def __init__(self):
        self.err = {}  # H -> series -> [abs error sum, actual sum, n]
        self.cover = {}  # H -> [inside, n]

    def add(self, h, series, actual, forecast, lower=None, upper=None):
        if not math.isfinite(forecast):
            forecast = 0.0  # a missing forecast counts as 0 (reported by the caller)
        e = self.err.setdefault(h, {}).setdefault(series, [0.0, 0.0, 0])
        e[0] += abs(actual - forecast)
        e[1] += actual
        e[2] += 1
        if lower is not None and upper is not None:
            c = self.cover.setdefault(h, [0, 0])
            c[0] += int(lower <= actual <= upper)
            c[1] += 1

    def pooled(self, h):
        rows = self.err.get(h, {}).values()
        den = sum(r[1] for r in rows)
        return sum(r[0] for r in rows) / den if den > 0 else float("nan")

    def per_series(self, h):
        return [r[0] / r[1] for r in self.err.get(h, {}).values() if r[1] > 0]

    def series_wape(self, h, series):
        r = self.err.get(h, {}).get(series)
        return r[0] / r[1] if r and r[1] > 0 else float("nan")

    def mean(self, h):
        v = self.per_series(h)
        return float(np.mean(v)) if v else float("nan")

    def median(self, h):
        v = self.per_series(h)
        return float(np.median(v)) if v else float("nan")

    def coverage(self, h):
        c = self.cover.get(h)
        return c[0] / c[1] if c and c[1] else float("nan")


def smape(actual, forecast):
    den = np.abs(actual) + np.abs(forecast)
    ratio = np.divide(2 * np.abs(actual - forecast), den, out=np.zeros_like(den), where=den > 0)
    return 100 * float(np.mean(ratio))


def mase(train, actual, forecast, m=24):
    scale = float(np.mean(np.abs(train[m:] - train[:-m])))
    return float(np.mean(np.abs(actual - forecast))) / scale if scale > 0 else float("nan")


def pct(x):
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f}%"


def num(x, digits=3):
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


# ---------------------------------------------------------------------------------------------
# peers


def fill_nan(y):
    """Linear interpolation inside the history; nearest value at its edges."""
    y = np.asarray(y, dtype=float)
    bad = ~np.isfinite(y)
    if not bad.any():
        return y
    if bad.all():
        return np.zeros_like(y)
    idx = np.arange(len(y))
    return np.interp(idx, idx[~bad], y[~bad])


def last_observed(y):
    finite = np.asarray(y, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(finite[-1]) if len(finite) else 0.0


def prophet_path(job):
    """Prophet with its defaults (linear trend, daily and weekly seasonality as the history's
    length allows) on one hourly history ending at `end` (epoch seconds of the hour after its
    last point); unknown hours are left out, as Prophet takes them. h hours ahead; None when the
    fit fails."""
    import logging
    import pandas as pd
    logging.getLogger("cmdstanpy").disabled = True
    logging.getLogger("prophet").disabled = True
    logging.getLogger("prophet.plot").disabled = True  # "Importing plotly failed": not needed
    from prophet import Prophet
    y, end, h = job
    y = np.asarray(y, dtype=float)
    ds = pd.to_datetime(end - 3600 * np.arange(len(y), 0, -1), unit="s")
    known = np.isfinite(y)
    if known.sum() < 2:
        return None
    try:
        model = Prophet()
        model.fit(pd.DataFrame({"ds": ds[known], "y": y[known]}))
        future = pd.DataFrame({"ds": pd.to_datetime(end + 3600 * np.arange(h), unit="s")})
        return model.predict(future)["yhat"].to_numpy()
    except Exception:  # noqa: BLE001 - a peer that fails falls back, as statsforecast's do
        return None


def run_peers(histories, h, jobs, peers, timings, section, ends=None):
    """Forecast h steps of every history with every peer. Returns {peer: array (n, h)}.

    Each statsforecast model runs in its own StatsForecast call over all the series-origins
    (one unique_id each), so that its wall time can be reported. Prophet needs timestamps:
    `ends` holds, per history, the epoch seconds of the hour after its last point (None: M4's
    proxy clock, index 0 at M4_EPOCH); it is fitted once per history, `jobs` at a time, and
    falls back to SeasonalNaive(24) where a fit fails."""
    import pandas as pd
    from statsforecast import StatsForecast
    from statsforecast.models import MSTL, AutoETS, AutoTheta, SeasonalNaive

    filled = [fill_nan(y) for y in histories]
    lengths = np.array([len(y) for y in filled])
    out = {}
    for peer in peers:
        started = time.monotonic()
        if peer == "last hour x H":
            out[peer] = np.array([[last_observed(y)] * h for y in histories])
        elif peer == "Prophet":
            if ends is None:
                ends = [M4_EPOCH.timestamp() + 3600 * len(y) for y in histories]
            fits = [(y, int(end), h) for y, end in zip(histories, ends)]
            with multiprocessing.Pool(max(1, jobs)) as pool:
                paths = pool.map(prophet_path, fits, chunksize=8)
            failed = sum(p is None for p in paths)
            if failed:
                print(f"  {section}: Prophet failed on {failed} of {len(paths)} histories; "
                      f"SeasonalNaive(24) there", file=sys.stderr, flush=True)
            out[peer] = np.array([
                p if p is not None else np.resize(y[-24:], h) for p, y in zip(paths, filled)])
        else:
            result = np.full((len(filled), h), np.nan)
            if peer == "MSTL":
                groups = [(lengths >= 2 * WEEK, MSTL(season_length=[24, WEEK], alias=peer)),
                          (lengths < 2 * WEEK, MSTL(season_length=[24], alias=peer))]
            else:
                model = {"SeasonalNaive": SeasonalNaive(season_length=24),
                         "AutoETS": AutoETS(season_length=24),
                         "AutoTheta": AutoTheta(season_length=24)}[peer]
                groups = [(np.ones(len(filled), dtype=bool), model)]
            for mask, model in groups:
                which = np.flatnonzero(mask)
                if len(which) == 0:
                    continue
                df = pd.DataFrame({
                    "unique_id": np.repeat(which, lengths[which]),
                    "ds": np.concatenate([np.arange(lengths[i]) for i in which]),
                    "y": np.concatenate([filled[i] for i in which]),
                })
                sf = StatsForecast(models=[model], freq=1, n_jobs=jobs,
                                   fallback_model=SeasonalNaive(season_length=24))
                fc = sf.forecast(df=df, h=h).sort_values(["unique_id", "ds"])
                ids = fc["unique_id"].to_numpy().reshape(-1, h)[:, 0]
                result[ids] = fc[peer].to_numpy().reshape(-1, h)
            out[peer] = result
        timings[(peer, section)] = timings.get((peer, section), 0.0) + time.monotonic() - started
        print(f"  {section}: {peer} {len(histories)} forecasts, h = {h}: "
              f"{time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return out


# ---------------------------------------------------------------------------------------------
# shardcast


class Shardcast:
    def __init__(self, binary, level, reason=None):
        self.binary, self.level, self.reason = binary, level, reason
        self.models = {}  # (section, H) -> {model: count}

    @classmethod
    def locate(cls, given, level):
        if given:
            # The CLI runs from the repository's root: a relative path is the caller's.
            return cls(str(Path(given).resolve()), level)
        cmd = ["cargo", "build", "--release", "-q", "-p", "shardcast-core", "--example",
               "forecast_cli", "--message-format=json-render-diagnostics"]
        print("building shardcast forecast_cli: " + " ".join(cmd), file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            built = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        except OSError as e:
            return cls(None, level, f"cargo not runnable ({e})")
        print(f"  build: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        if built.returncode != 0:
            errors = [line for line in built.stderr.splitlines() if line.startswith("error")]
            return cls(None, level, f"build failed ({errors[0] if errors else 'see cargo'})")
        binary = None
        for line in built.stdout.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                    and msg.get("target", {}).get("name") == "forecast_cli":
                binary = msg["executable"]
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        binary = binary or str(target / "release" / "examples" / "forecast_cli")
        # Run a private copy, so that a rebuild during the run cannot mix two versions.
        try:
            tmp = tempfile.mkdtemp(prefix="shardcast-bench-")
            atexit.register(shutil.rmtree, tmp, True)
            copy = Path(tmp) / "forecast_cli"
            shutil.copy2(binary, copy)
        except OSError as e:
            return cls(None, level, f"no binary at {binary} ({e})")
        return cls(str(copy), level)

    @property
    def available(self):
        return self.binary is not None and self.reason is None

    def forecast(self, section, h, requests, timings):
        """requests: [(id, y, next_hour)] or [(id, y, next_hour, recent)], recent being None
        (unknown) or (load per hour: the last three 5-minute buckets' (see recent_rate), the
        last hour's), both ending at the last whole 5-minute bucket. Returns [(model, point,
        lower, upper, path)] or None (and marks shardcast unavailable) when the CLI fails."""
        if not self.available:
            return None
        lines = []
        for rid, y, next_hour, *recent in requests:
            ys = [None if not math.isfinite(v) else float(v) for v in y]
            line = {"id": rid, "y": ys, "next_hour": int(next_hour)}
            if recent and recent[0] is not None and all(math.isfinite(v) for v in recent[0]):
                line["recent"], line["recent_hour"] = map(float, recent[0])
            lines.append(json.dumps(line))
        started = time.monotonic()
        try:
            ran = subprocess.run([self.binary, "--horizon", str(h), "--level", str(self.level)],
                                 input="\n".join(lines) + "\n", capture_output=True, text=True,
                                 cwd=REPO)
        except OSError as e:
            self.reason = f"not runnable ({e})"
            return None
        elapsed = time.monotonic() - started
        timings[(SHARDCAST, section)] = timings.get((SHARDCAST, section), 0.0) + elapsed
        print(f"  {section}: shardcast {len(requests)} forecasts, H = {h}: {elapsed:.1f} s",
              file=sys.stderr, flush=True)
        if ran.returncode != 0:
            tail = (ran.stderr.strip().splitlines() or ["no message"])[-1]
            self.reason = f"exit {ran.returncode} at H = {h} ({tail[:120]})"
            return None
        out = [line for line in ran.stdout.splitlines() if line.strip()]
        if len(out) != len(requests):
            self.reason = f"{len(out)} output lines for {len(requests)} inputs at H = {h}"
            return None
        results = []
        counts = self.models.setdefault((section, h), {})
        for line, (rid, *_) in zip(out, requests):
            try:
                r = json.loads(line)
            except ValueError:
                self.reason = f"unparsable output at H = {h}: {line[:80]}"
                return None
            if r.get("id") != rid:
                self.reason = f"output out of order at H = {h} ({r.get('id')} for {rid})"
                return None

            def f(key):
                v = r.get(key)
                return float(v) if isinstance(v, (int, float)) else float("nan")

            path = r.get("path") or []
            path = np.array([float(v) if isinstance(v, (int, float)) else np.nan for v in path])
            model = str(r.get("model", "?"))
            counts[model] = counts.get(model, 0) + 1
            results.append((model, f("point"), f("lower"), f("upper"), path))
        return results


# ---------------------------------------------------------------------------------------------
# M4 hourly


def read_m4(path):
    series = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            series[row[0]] = np.array([float(v) for v in row[1:] if v.strip() != ""])
    return series


def rolling_slots(i, k):
    """The rolling origins of the i-th series: k of the 24 slots j = 0..23 (origin = end of train
    - 7 (j + 1) hours, i.e. 7 h apart over the last week, 7 being prime to 24 so that the slots
    fall on the 24 hours of the day), spread evenly over the week and rotated from one series to
    the next so that all slots are used equally. k = 24: every series at every slot."""
    k = min(k, 24)
    return sorted({(i + (r * 24) // k) % 24 for r in range(k)})


def bench_m4(args, shardcast, timings, notes):
    train = read_m4(args.data / "m4-hourly" / "Hourly-train.csv")
    test = read_m4(args.data / "m4-hourly" / "Hourly-test.csv")
    names = list(train)[: args.series] if args.series else list(train)
    k = args.m4_origins
    print(f"M4: {len(names)} series, official origin + {k} rolling origin(s) each",
          file=sys.stderr, flush=True)
    full = {n: np.concatenate([train[n], test[n]]) for n in names}
    # official origin
    official_hist = [train[n] for n in names]
    # rolling origins: index o into train + test, the history is [:o]
    rolling = [(n, len(train[n]) - 7 * (j + 1))
               for i, n in enumerate(names) for j in rolling_slots(i, k)]
    rolling_hist = [full[n][:o] for n, o in rolling]

    peers_official = run_peers(official_hist, M4_OFFICIAL_H, args.jobs, args.peers, timings, "M4")
    peers_rolling = (run_peers(rolling_hist, max(M4_HORIZONS), args.jobs, args.peers, timings,
                               "M4") if rolling else {p: np.zeros((0, 24)) for p in args.peers})

    methods = [SHARDCAST] + args.peers
    official = {m: Scores() for m in methods}
    roll = {m: Scores() for m in methods}
    m4_official = {m: ([], []) for m in methods}  # sMAPE, MASE per series

    for peer in args.peers:
        for i, n in enumerate(names):
            path = peers_official[peer][i]
            m4_official[peer][0].append(smape(test[n], path))
            m4_official[peer][1].append(mase(train[n], test[n], path))
            for h in M4_HORIZONS:
                official[peer].add(h, n, test[n][:h].sum(), path[:h].sum())
        for j, (n, o) in enumerate(rolling):
            path = peers_rolling[peer][j]
            for h in M4_HORIZONS:
                roll[peer].add(h, n, full[n][o:o + h].sum(), path[:h].sum())

    # shardcast: one process per H. M4 has no clock: next_hour = index % 24 is a proxy.
    missing = 0
    for h in M4_HORIZONS + [M4_OFFICIAL_H]:
        requests = [(f"{n}@official", train[n], len(train[n]) % 24) for n in names]
        if h in M4_HORIZONS:
            requests += [(f"{n}@{o}", full[n][:o], o % 24) for n, o in rolling]
        results = shardcast.forecast("M4", h, requests, timings)
        if results is None:
            break
        for (rid, _, _), (_, point, lower, upper, path) in zip(requests, results):
            missing += int(not math.isfinite(point))
            n, where = rid.split("@")
            if h == M4_OFFICIAL_H:
                if len(path) != h or not np.all(np.isfinite(path)):
                    missing += 1
                    path = np.nan_to_num(np.resize(path, h) if len(path) else np.zeros(h))
                m4_official[SHARDCAST][0].append(smape(test[n], path))
                m4_official[SHARDCAST][1].append(mase(train[n], test[n], path))
                continue
            if where == "official":
                official[SHARDCAST].add(h, n, test[n][:h].sum(), point, lower, upper)
            else:
                o = int(where)
                roll[SHARDCAST].add(h, n, full[n][o:o + h].sum(), point, lower, upper)
    if missing:
        notes.append(f"M4: shardcast returned {missing} non-finite forecasts (counted as 0).")
    return {"names": names, "k": min(k, 24), "n_rolling": len(rolling), "official": official,
            "rolling": roll, "m4_official": m4_official}


# ---------------------------------------------------------------------------------------------
# NAB


class Trace:
    def __init__(self, path):
        ts, vs = [], []
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    t = datetime.strptime(row["timestamp"].strip(), "%Y-%m-%d %H:%M:%S")
                    v = float(row["value"])
                except (KeyError, ValueError):
                    continue
                ts.append(int(t.replace(tzinfo=timezone.utc).timestamp()))
                vs.append(v)
        order = np.argsort(ts, kind="stable")
        self.t = np.array(ts, dtype=np.int64)[order]
        self.v = np.array(vs)[order]
        # The step is the most common spacing, not the smallest: two of the traces have 12
        # samples stamped 03:00 and one 1-minute step at the March 2014 DST switch.
        diffs = np.diff(self.t)
        diffs = diffs[diffs > 0]
        self.step = int(np.bincount(diffs).argmax()) if len(diffs) else 3600
        self.start = int(self.t[0])
        self.end = int(self.t[-1]) + self.step  # end of the last sample's interval
        self.csum = np.concatenate([[0.0], np.cumsum(self.v)])

    def windows(self, starts, length=3600):
        """Sums over [s, s + length) for each s: mean of the observed samples x expected steps;
        NaN where none was observed. Also returns the fraction of the steps observed."""
        starts = np.asarray(starts, dtype=np.int64)
        lo = np.searchsorted(self.t, starts, side="left")
        hi = np.searchsorted(self.t, starts + length, side="left")
        count = hi - lo
        expected = length / self.step
        total = self.csum[hi] - self.csum[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(count > 0, total / np.maximum(count, 1) * expected, np.nan)
        return value, count / expected


def bench_nab(args, shardcast, timings, notes):
    paths = sorted((args.data / "nab").glob("*.csv"))
    rng = random.Random(args.seed)
    hmax = max(NAB_HORIZONS)
    history = args.nab_history_days * 24
    cuts = []  # (series, base hour (epoch s), minute)
    traces = {}
    for p in paths:
        tr = traces[p.stem] = Trace(p)
        last_base = (tr.end - (hmax + 1) * 3600) // 3600 * 3600
        for i in range(args.nab_origins - 1, -1, -1):
            base = last_base - 7 * 3600 * i
            if base - 3600 * 24 < tr.start:
                continue  # less than a day of history
            cuts.append((p.stem, base, rng.randint(1, 59)))
    print(f"NAB: {len(paths)} series, {len(cuts)} cuts", file=sys.stderr, flush=True)

    # Peers and shardcast "on the hour": clock-hour sums of at most `history` hours before base.
    def clock_history(tr, base):
        first = max(base - history * 3600, tr.start // 3600 * 3600)
        return tr.windows(np.arange(first, base, 3600))[0]

    def now_aligned_history(tr, cut):
        n = min(history, math.ceil((cut - tr.start) / 3600))
        return tr.windows(cut - 3600 * np.arange(n, 0, -1))[0]

    clock = [clock_history(traces[s], base) for s, base, _ in cuts]
    peer_paths = run_peers(clock, hmax + 1, args.jobs, args.peers, timings, "NAB",
                           ends=[base for _, base, _ in cuts])

    variants = {"on the hour": {m: Scores() for m in [SHARDCAST] + args.peers},
                "random minute": {m: Scores() for m in [SHARDCAST] + args.peers}}
    skipped = {v: 0 for v in variants}
    actuals = {}  # (variant, H, cut index) -> actual, or None when skipped
    for variant in variants:
        for h in NAB_HORIZONS:
            for j, (s, base, minute) in enumerate(cuts):
                cut = base + (60 * minute if variant == "random minute" else 0)
                value, seen = traces[s].windows([cut], 3600 * h)
                ok = bool(seen[0] >= 0.5 and math.isfinite(value[0]))
                actuals[(variant, h, j)] = float(value[0]) if ok else None
                skipped[variant] += int(not ok)
    for peer in args.peers:
        for j, (s, base, minute) in enumerate(cuts):
            path = peer_paths[peer][j]
            for h in NAB_HORIZONS:
                a = actuals[("on the hour", h, j)]
                if a is not None:
                    variants["on the hour"][peer].add(h, s, a, float(path[:h].sum()))
                a = actuals[("random minute", h, j)]
                if a is None:
                    continue
                if peer == "last hour x H":
                    # The reactive rule reads the last 60 minutes before the cut, as a DBA's
                    # "reads in the last hour" query would: stronger than a pro-rated clock hour.
                    cut = base + 60 * minute
                    fc = h * last_observed(now_aligned_history(traces[s], cut))
                else:
                    f = minute / 60
                    fc = (1 - f) * path[0] + path[1:h].sum() + f * path[h]
                variants["random minute"][peer].add(h, s, a, float(fc))

    missing = 0
    for variant in variants:
        for h in NAB_HORIZONS:
            requests = []
            for j, (s, base, minute) in enumerate(cuts):
                tr = traces[s]
                if variant == "on the hour":
                    cut = base
                    y, next_hour = clock[j], datetime.fromtimestamp(base, timezone.utc).hour
                else:
                    cut = base + 60 * minute
                    y = now_aligned_history(tr, cut)
                    next_hour = datetime.fromtimestamp(cut, timezone.utc).hour
                # The recent rate and the last hour as the extension compares them: ending at
                # the last whole 5-minute bucket, from traces of 5-minute steps or finer.
                recent = None
                if tr.step <= BUCKET_SECS:
                    end = cut // BUCKET_SECS * BUCKET_SECS
                    starts = end - BUCKET_SECS * np.arange(RECENT_BUCKETS, 0, -1)
                    buckets, _ = tr.windows(starts, BUCKET_SECS)
                    rate = recent_rate(buckets[np.isfinite(buckets)])
                    hour, _ = tr.windows([end - 3600], 3600)
                    if rate is not None:
                        recent = (rate, hour[0])
                requests.append((f"{s}@{j}", y, next_hour, recent))
            results = shardcast.forecast(f"NAB {variant}", h, requests, timings)
            if results is None:
                break
            for j, (_, point, lower, upper, _) in enumerate(results):
                missing += int(not math.isfinite(point))
                a = actuals[(variant, h, j)]
                if a is not None:
                    variants[variant][SHARDCAST].add(h, cuts[j][0], a, point, lower, upper)
    if missing:
        notes.append(f"NAB: shardcast returned {missing} non-finite forecasts (counted as 0).")
    for variant, n in skipped.items():
        if n:
            notes.append(f"NAB {variant}: {n} (cut, H) pairs skipped, actual window under half "
                         f"observed.")
    return {"series": [p.stem for p in paths], "cuts": len(cuts), "variants": variants,
            "history": history}


# ---------------------------------------------------------------------------------------------
# output


def table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def wape_table(scores, horizons, shardcast):
    header = ["method"]
    for kind in ("pooled", "mean", "median"):
        header += [f"{kind} H={h}" for h in horizons]
    rows = []
    for method, s in scores.items():
        if method == SHARDCAST and not shardcast.available:
            rows.append([method] + ["unavailable"] * (len(header) - 1))
            continue
        row = [method]
        row += [pct(s.pooled(h)) for h in horizons]
        row += [pct(s.mean(h)) for h in horizons]
        row += [pct(s.median(h)) for h in horizons]
        rows.append(row)
    table(header, rows)


def report(args, shardcast, m4, nab, timings, notes, started):
    import pandas
    import statsforecast

    print("# Forecast accuracy: shardcast and its peers\n")
    status = shardcast.binary if shardcast.available else f"unavailable: {shardcast.reason}"
    prophet = ""
    if "Prophet" in args.peers:
        from importlib.metadata import version
        prophet = f"prophet {version('prophet')}, "
    print(f"statsforecast {statsforecast.__version__}, {prophet}pandas {pandas.__version__}, "
          f"numpy {np.__version__}; jobs = {args.jobs}; interval level {args.level}; "
          f"shardcast: {status}\n")
    print("WAPE of the total over the next H hours. pooled = sum |actual - forecast| / sum "
          "actual over all (series, origin); mean / median = over series of each series' WAPE "
          "over its origins.\n")

    if m4:
        n = len(m4["names"])
        print(f"## M4 hourly: official protocol ({n} series, origin = end of train, h = 48)\n")
        rows = []
        for method, (sm, ms) in m4["m4_official"].items():
            if method == SHARDCAST and not (shardcast.available and sm):
                rows.append([method, "unavailable", "unavailable"])
            else:
                rows.append([method, num(float(np.mean(sm)), 2), num(float(np.mean(ms)))])
        table(["method", "sMAPE", "MASE"], rows)
        print(f"## M4 hourly: WAPE of horizon totals, official origin ({n} forecasts per H)\n")
        wape_table(m4["official"], M4_HORIZONS, shardcast)
        if m4["k"]:
            print(f"## M4 hourly: WAPE of horizon totals, rolling origins in the last week of "
                  f"train, {m4['k']} per series of the 24 slots 7 h apart "
                  f"({m4['n_rolling']} forecasts per H)\n")
            wape_table(m4["rolling"], M4_HORIZONS, shardcast)

    if nab:
        for variant, scores in nab["variants"].items():
            how = ("cuts at hh:00" if variant == "on the hour" else
                   "cuts at hh:mm; shardcast gets now-aligned hours, peers clock hours up to hh:00 "
                   "(pro-rated)")
            print(f"## NAB, {variant}: WAPE of horizon totals ({len(nab['series'])} series, "
                  f"{nab['cuts']} cuts 7 h apart, history <= {nab['history']} h; {how})\n")
            wape_table(scores, NAB_HORIZONS, shardcast)
        for variant, scores in nab["variants"].items():
            print(f"### NAB, {variant}: per-series WAPE, H = 1 / H = 4\n")
            rows = []
            for s in nab["series"]:
                row = [s]
                for method, sc in scores.items():
                    if method == SHARDCAST and not shardcast.available:
                        row.append("unavailable")
                    else:
                        row.append(" / ".join(pct(sc.series_wape(h, s)) for h in NAB_HORIZONS))
                rows.append(row)
            table(["series"] + list(scores), rows)

    if shardcast.available:
        print(f"## shardcast: {100 * args.level:.0f}% interval coverage of the horizon total\n")
        rows = []
        sections = []
        if m4:
            sections += [("M4 official origin", m4["official"], M4_HORIZONS)]
            if m4["k"]:
                sections += [("M4 rolling origins", m4["rolling"], M4_HORIZONS)]
        if nab:
            sections += [(f"NAB {v}", s, NAB_HORIZONS) for v, s in nab["variants"].items()]
        for label, scores, horizons in sections:
            cov = {h: scores[SHARDCAST].coverage(h) for h in horizons}
            rows.append([label] + [pct(cov[h]) if h in cov else "" for h in M4_HORIZONS])
        table(["data"] + [f"H={h}" for h in M4_HORIZONS], rows)
        print("Models chosen by shardcast: " + "; ".join(
            f"{sec} H={h}: " + ", ".join(f"{m} {c}" for m, c in sorted(counts.items()))
            for (sec, h), counts in shardcast.models.items()) + "\n")

    print("## Run time (wall seconds)\n")
    sections = (["M4"] if m4 else []) + (["NAB"] if nab else [])
    rows = []
    for method in [SHARDCAST] + args.peers:
        if method == SHARDCAST and not shardcast.available:
            rows.append([method] + ["unavailable"] * (len(sections) + 1))
            continue
        per = [sum(v for (m, sec), v in timings.items() if m == method and sec.startswith(s))
               for s in sections]
        rows.append([method] + [f"{v:.1f}" for v in per] + [f"{sum(per):.1f}"])
    table(["method"] + sections + ["total"], rows)
    for note in notes:
        print(f"- {note}")
    print(f"\nWhole run: {time.monotonic() - started:.0f} s.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=HERE / "data",
                        help="directory holding m4-hourly/ and nab/ (default: bench/data)")
    parser.add_argument("--shardcast-bin", help="forecast CLI to run instead of building "
                        "core/examples/forecast_cli.rs with cargo")
    parser.add_argument("--series", type=int, default=0,
                        help="only the first N M4 series (quick run); 0 = all 414")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="processes for statsforecast and Prophet (default: all cores)")
    parser.add_argument("--m4-origins", type=int, default=1,
                        help="rolling origins per M4 series, out of 24 slots 7 h apart in the "
                        "last week of train, rotated across series (default 1: the whole run "
                        "takes about 15 minutes on 2 cores; 24 = every slot, about 3 hours)")
    parser.add_argument("--nab-origins", type=int, default=24,
                        help="rolling cuts per NAB series, 7 hours apart")
    parser.add_argument("--nab-history-days", type=int, default=28,
                        help="history each NAB forecast sees (default: the retention, 28 days)")
    parser.add_argument("--level", type=float, default=0.8, help="interval level for shardcast")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random cut minutes")
    parser.add_argument("--only", choices=["m4", "nab"], help="run one data set only")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help="comma-separated subset of: " + ", ".join(PEERS))
    args = parser.parse_args()
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = set(args.peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")

    started = time.monotonic()
    shardcast = Shardcast.locate(args.shardcast_bin, args.level)
    if not shardcast.available:
        print(f"shardcast: unavailable ({shardcast.reason})", file=sys.stderr, flush=True)
    timings, notes = {}, []
    m4 = bench_m4(args, shardcast, timings, notes) if args.only in (None, "m4") else None
    nab = bench_nab(args, shardcast, timings, notes) if args.only in (None, "nab") else None
    report(args, shardcast, m4, nab, timings, notes, started)


if __name__ == "__main__":
    main()
