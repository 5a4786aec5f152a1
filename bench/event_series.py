"""What bench/flight_events.py and bench/record_events.py share: the span of whole days a set
covers, checked against the records, and the nab/-style CSVs of events counted per 5 minutes."""
import glob
import os

import pandas as pd


def add_span_arguments(parser, default_start, what):
    """--from, --months and --series, as both scripts take them."""
    parser.add_argument("--from", dest="start", default=default_start,
                        help=f"first day (default {what})")
    parser.add_argument("--months", type=int, default=2, help="months of history (default 2)")
    parser.add_argument("--series", type=int, default=10, help="the busiest N (default 10)")


def span(parser, args, first, end):
    """[start, end) of the set: whole days inside [first, end), the whole days the records
    cover. A span beyond them would be padded with zeros that nobody observed, and a start
    that is not midnight would count events at other steps than the series' own."""
    if args.months < 1 or args.series < 1:
        parser.error("--months and --series must be at least 1")
    try:
        start = pd.Timestamp(args.start)
    except ValueError:
        start = pd.NaT
    if pd.isna(start):
        parser.error(f"--from {args.start!r} is not a date (for example {first:%Y-%m-%d})")
    if start.tzinfo is not None or start != start.normalize():
        parser.error(f"--from {args.start!r} must be a day, without a time or a time zone")
    if args.months > 12 * (end.year - first.year + 1):
        parser.error(f"--months {args.months} is longer than the records")
    stop = start + pd.DateOffset(months=args.months)
    if start < first or stop > end:
        parser.error(f"{start:%Y-%m-%d} to {stop:%Y-%m-%d} is not inside the records' whole days "
                     f"({first:%Y-%m-%d} to {end:%Y-%m-%d})")
    return start, stop


def clear(outdir, source):
    """Makes `outdir` and removes the CSVs of `source` (`source_*.csv`) a run before wrote there:
    the benchmarks read every CSV of the directory."""
    os.makedirs(outdir, exist_ok=True)
    for old in glob.glob(os.path.join(outdir, f"{source}_*.csv")):
        os.remove(old)


def write(outdir, prefix, times, keys, start, stop, series, noun):
    """One CSV per key of the `series` most frequent ones, named `prefix_key.csv`: the events
    at `times` (one per row, naive timestamps) counted per 5-minute step of [start, stop). Old
    CSVs of the same source (the prefix's first word) are removed first, since the benchmarks
    read every CSV of the directory."""
    inside = (times >= start) & (times < stop)
    times, keys = times[inside], keys[inside]
    steps = pd.date_range(start, stop, freq="5min", inclusive="left")
    clear(outdir, prefix.split("_")[0])
    for key in keys.value_counts().index[:series]:
        counts = (times[keys == key].dt.floor("5min").value_counts()
                  .reindex(steps, fill_value=0).sort_index())
        path = os.path.join(outdir, f"{prefix}_{key}.csv")
        pd.DataFrame({"timestamp": steps.strftime("%Y-%m-%d %H:%M:%S"),
                      "value": counts.to_numpy(dtype=float)}).to_csv(path, index=False)
        print(f"{path}: {int(counts.sum())} {noun}, {counts.sum() / len(steps) * 12:.1f} an hour")
