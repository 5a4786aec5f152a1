-- Sparklines: a shard's hourly load as one line of text, then | and its forecast per hour.
--   sparkline(shard regclass, span interval DEFAULT '24 hours') RETURNS text
-- draws one glyph per clock hour, from span (1 hour to 28 days, whole hours) ago to the current
-- hour included, scaled to the line's own maximum; priority_scores.sparkline is the same line
-- over 24 hours. It never opens the table, so DDL that locks it does not block it.
\set VERBOSITY verbose
-- A page-view counter with a known day: reads at whole hours only, 10 to 80 an hour. Not
-- refreshed yet, so no forecast: the line ends with the current hour, which has no reads yet.
CREATE TABLE pageviews (id int);
SELECT shardcast.record_access(array_agg('pageviews'::regclass), array_agg(date_trunc('hour', now()) - k * interval '1 hour'),
                               array_agg(10 * (1 + k % 8)::float8))
FROM generate_series(1, 30) AS k;
SELECT shardcast.sparkline('pageviews', '12 hours');
SELECT shardcast.sparkline('pageviews', '1 hour');
SELECT shardcast.sparkline('pageviews');
-- Spans are whole hours: 90 minutes draws one hour.
SELECT shardcast.sparkline('pageviews', '90 minutes') = shardcast.sparkline('pageviews', '1 hour') AS same;
-- Once forecast, the line ends with | and the forecast (here one glyph: a 1-hour horizon).
-- Its glyph depends on the forecast, which depends on the minute of the refresh.
SELECT shardcast.refresh_forecasts();
SELECT left(shardcast.sparkline('pageviews', '12 hours'), 13) AS history, substr(shardcast.sparkline('pageviews', '12 hours'), 14, 1) AS separator,
       length(shardcast.sparkline('pageviews', '12 hours')) AS length;
-- priority_scores shows the 24-hour line: the steady shards of 03_history are flat, and so is
-- their forecast. (The glyph of the current hour, the 25th, is left out: whether this hour
-- holds a sample yet depends on the minute.)
SELECT shard, sparkline = shardcast.sparkline(shard) AS same_line, left(sparkline, 24) AS last_24_hours,
       substr(sparkline, 26) AS forecast
FROM shardcast.priority_scores WHERE shard::text NOT IN ('archive', 'pageviews') ORDER BY rank;
-- A table with no history (here a new one, not yet a registered shard) draws a flat line
-- without a forecast.
CREATE TABLE unread (id int);
SELECT shardcast.sparkline('unread', '6 hours');
DROP TABLE unread;
-- Refused: a relation that holds no shard, a view, a partitioned parent or a system table
-- (42809, saying why), spans under 1 hour or over 28 days (22023), NULLs (22004), an OID
-- that names no relation (42P01).
SELECT shardcast.sparkline('order_totals', '6 hours');
SELECT shardcast.sparkline('measurements');
SELECT shardcast.sparkline('pg_class');
SELECT shardcast.sparkline('orders', '30 minutes');
SELECT shardcast.sparkline('orders', '29 days');
SELECT shardcast.sparkline('orders', NULL);
SELECT shardcast.sparkline(NULL);
SELECT shardcast.sparkline(4000000000::oid::regclass);
-- The page-view counter is not part of the application: dropped, it leaves priority_scores at
-- once (the view never opens a table, and leaves out those that are gone); the registry
-- retires it at the next sample, or when a function syncs it (enqueue_all() in 09_queue).
DROP TABLE pageviews;
SELECT count(*) FROM shardcast.priority_scores WHERE shard::text = 'pageviews';
