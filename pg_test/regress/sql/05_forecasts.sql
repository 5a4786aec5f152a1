-- Forecasts. For every live shard shardcast forecasts its total load over the next
-- shardcast.horizon (1 hour by default) from its hourly history (up to 28 days): load is what
-- shardcast.load_measure counts (scans by default; an imported read is one scan) plus
-- shardcast.write_weight (0: reads only) x tuples written. Models are selected by backtest and combined;
-- a shard with under a day of history borrows the daily profile of older ones (cold start);
-- the interval [lower, upper] covers shardcast.interval_level (80%) of the backtest errors.
-- The worker refreshes forecasts and scores every shardcast.refresh_interval;
--   refresh_forecasts() RETURNS bigint
-- does it now, with this session's settings, and returns the number of shards scored.
-- shardcast.forecasts shows each live shard's latest forecast and explains it: the window
-- [window_start, window_end) (it starts when the forecast is made), the model and its members'
-- weights, the backtest MASE (NULL: no backtest), the hours of history used (observed by the
-- worker, or imported with record_access) and why it changed since the last refresh.
-- A forecast has two numbers: point, the one figure nearest the outcome (with the interval
-- around it), and expected, the mean load, which scores and the queue use (they differ where
-- load comes in bursts or sittings: the likeliest hour holds none, the mean a share of one).
--
-- A forecast's hourly series ends at the moment of the refresh. The history of 03_history has
-- one sample in each of those hours whenever this runs, so these forecasts are exact: a
-- steady history is its own forecast (last_value, MASE 0, no interval).
\set VERBOSITY verbose
SELECT shardcast.refresh_forecasts();
-- events: 200 reads an hour (its 50 writes weigh 0 by default).
SELECT shard, horizon, window_end - window_start AS window_length, model, point, lower, upper, expected,
       models, backtest_mase, history_points, observed_hours, imported_hours, change_reason
FROM shardcast.forecasts ORDER BY shard_id;
-- The window starts when the forecast is made.
SELECT bool_and(window_start = computed_at) AS starts_when_made FROM shardcast.forecasts;
-- A cold start (archive: no history yet) refreshed with nothing new keeps its model, and says so.
SELECT shardcast.refresh_forecasts();
SELECT shard, model, models, change_reason FROM shardcast.forecasts WHERE shard = 'archive'::regclass;

-- History imported later changes the forecast, and the forecast says why: a year-end job read
-- the archive 4 times an hour over the last day (24 samples placed like those of 03_history).
SELECT shardcast.record_access(array_agg('archive'::regclass), array_agg(now() - interval '5 minutes' - k * interval '1 hour'),
                               array_agg(4::float8))
FROM generate_series(0, 23) AS k;
SELECT shardcast.refresh_forecasts();
SELECT shard, model, point, imported_hours, change_reason FROM shardcast.forecasts ORDER BY shard_id;
-- Refreshed again with nothing new.
SELECT shardcast.refresh_forecasts();
SELECT shard, change_reason FROM shardcast.forecasts ORDER BY shard_id;

-- Other measures: tuples read instead of scans (an imported read is one of each), and writes
-- weighing as much as reads.
SET shardcast.load_measure = 'tuples';
SET shardcast.write_weight = 1;
SELECT shardcast.refresh_forecasts();
SELECT shard, point FROM shardcast.forecasts ORDER BY shard_id;
RESET shardcast.load_measure;
RESET shardcast.write_weight;
-- Blocks (buffer accesses): an imported read is one block hit, so imported history is load
-- under every measure, the same here as in scans.
SET shardcast.load_measure = 'blocks';
SELECT shardcast.refresh_forecasts();
SELECT shard, point FROM shardcast.forecasts ORDER BY shard_id;
RESET shardcast.load_measure;
-- A session can forecast over another horizon (in PostgreSQL's units, 1 hour to 7 days): the
-- published forecasts are then over that horizon until the next refresh (the worker uses the
-- server's setting). A steady load over 4 hours is 4 times an hour's; a forecast over another
-- horizon is a first forecast again (models are selected per horizon).
SET shardcast.horizon = '4h';
SELECT shardcast.refresh_forecasts();
SELECT shard, horizon, window_end - window_start AS window_length, point, change_reason FROM shardcast.forecasts ORDER BY shard_id;
RESET shardcast.horizon;
