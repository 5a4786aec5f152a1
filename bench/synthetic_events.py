"""Synthetic stand-ins for 5-minute event counts (mentions, requests): not real data, and not a
benchmark of their own, but a check of the forecaster on a kind of trace that bench/data lacks.

Ten series of 60 days, written as nab/-style CSVs so that the benchmarks read them:

    python3 bench/synthetic_events.py 7 /tmp/synth/nab             # --bursty for the second kind
    python3 bench/forecast_accuracy.py --data /tmp/synth --only nab
    python3 bench/replay_bench.py --data /tmp/synth --m4-groups 0 --cuts 48

The default kind: a level drawn log-uniform in 3-400 per step, a daily cosine shape (amplitude
0.2-0.8), a weekend factor (0.5-0.95), a slow log random walk, negative-binomial counts, and news
bursts (one every 0.7-3 days, Pareto-tailed heights, a rise of 5-15 minutes and a half-life of 15
minutes to 3 hours). --bursty (the README's "burstier kind" is seed 12): levels of 2-80 per step,
a smoother daily shape, two bursts a day on average, higher and shorter (half-life 10 minutes to
an hour), and more overdispersed counts: the last hour repeated misses by about half at 1 hour.
--sparse: the default kind at a base level of 0.05-2 per step (0.6-24 events an hour before the
daily shape, drift and bursts; the means of seed 21's series are 2-45 an hour), with a burst
every 1-4 days, where a count's noise weighs on the last hour and the day's shape matters.
"""
import argparse
import os

import numpy as np
import pandas as pd

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("seed", nargs="?", type=int, default=7, help="random seed (default 7)")
parser.add_argument("outdir", nargs="?", default="/tmp/synth/nab",
                    help="directory for the CSVs (default /tmp/synth/nab)")
kind = parser.add_mutually_exclusive_group()
kind.add_argument("--bursty", action="store_true", help="the burstier kind")
kind.add_argument("--sparse", action="store_true", help="the sparse kind")
parsed = parser.parse_intermixed_args()  # `12 --bursty DIR` as well as `12 DIR --bursty`
bursty, sparse, seed, out = parsed.bursty, parsed.sparse, parsed.seed, parsed.outdir
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(seed)
n = 60 * 288
t = pd.date_range("2015-02-26", periods=n, freq="5min")
hours = (t.hour + t.minute / 60).to_numpy()
for k in range(10):
    if bursty:
        level = np.exp(rng.uniform(np.log(2), np.log(80)))
        amp = rng.uniform(0.2, 0.6)
        peak = rng.uniform(12, 20)
        daily = np.exp(amp * np.cos(2 * np.pi * (hours - peak) / 24))
        daily /= daily.mean()
        weekend = np.where(t.dayofweek.to_numpy() >= 5, rng.uniform(0.4, 0.9), 1.0)
        drift = np.exp(np.cumsum(rng.normal(0, 0.006, n)))
        count = rng.poisson(60 * 2 * rng.uniform(0.5, 1.5))
    else:
        # The sparse kind has the default's shape at a base level of 0.6-24 events an hour.
        low, high = (0.05, 2) if sparse else (3, 400)
        level = np.exp(rng.uniform(np.log(low), np.log(high)))
        amp = rng.uniform(0.2, 0.8)
        peak = rng.uniform(12, 20)
        daily = 1 + amp * np.cos(2 * np.pi * (hours - peak) / 24)
        weekend = np.where(t.dayofweek.to_numpy() >= 5, rng.uniform(0.5, 0.95), 1.0)
        drift = np.exp(np.cumsum(rng.normal(0, 0.004, n)))
        days_apart = rng.uniform(1, 4) if sparse else rng.uniform(0.7, 3)
        count = rng.poisson(60 / days_apart)
    rate = level * daily * weekend * drift
    bursts = np.zeros(n)
    for s in rng.integers(0, n, count):
        if bursty:
            height = level * (rng.pareto(1.1) + 1) * rng.uniform(1, 8)
            half = rng.uniform(2, 12)  # 10 min .. 1 h, in 5-min steps
        else:
            height = level * (rng.pareto(1.3) + 1) * rng.uniform(1, 5)
            half = rng.uniform(3, 36)  # 15 min .. 3 h, in 5-min steps
        rise = rng.integers(1, 4)
        m = np.arange(n - s)
        shape = np.where(m < rise, (m + 1) / rise, 0.5 ** ((m - rise) / half))
        bursts[s:] += height * shape
    mu = rate + bursts
    r = rng.uniform(1.5, 8) if bursty else rng.uniform(3, 30)  # negative binomial dispersion
    counts = rng.negative_binomial(r, r / (r + mu))
    pd.DataFrame({"timestamp": t.strftime("%Y-%m-%d %H:%M:%S"), "value": counts.astype(float)}).to_csv(
        f"{out}/synthetic_events_{k}.csv", index=False)
