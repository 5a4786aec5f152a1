-- History. A shard's access history is what the worker samples from PostgreSQL's statistics
-- (scans, tuples read, tuples written, blocks) in 5-minute buckets, and what
-- record_access() imports from elsewhere (query logs, another monitoring system):
--   record_access(shard regclass, sampled_at timestamptz, reads float8, writes float8 DEFAULT 0)
--   record_access(shards regclass[], sampled_at timestamptz[], reads float8[], writes float8[] DEFAULT NULL)
-- Each read counts as one scan reading one tuple from one buffer (a block hit); writes are
-- tuples written. The time may be
-- in the past, never in the future. The bulk form validates every element before it writes
-- anything, and returns how many samples it recorded. Hours that only imports cover are
-- "imported" history (as opposed to "observed" by the worker).
-- Views: shardcast.access_history (every stored bucket), shardcast.shard_activity (one row
-- per live shard: recent rates, last hour and last day totals).
\set VERBOSITY verbose
-- shard_activity's "last day" is now() - interval '1 day', a calendar day in the session's
-- time zone (23 or 25 hours across a daylight saving change): this file reads it in UTC.
SET timezone = 'UTC';
CREATE TEMPORARY TABLE scratch (x int);
-- The suite's history: the last 72 hours of a steady application, one sample an hour, each
-- 5 minutes before a whole hour back from now (so that every hour of the forecasts' series,
-- which end at the moment of a refresh, holds exactly one sample: see 05_forecasts).
SELECT now() - interval '5 minutes' AS t \gset
-- One sample: 150 reads and 50 writes of events.
SELECT shardcast.record_access('events', :'t', 150, 50);
-- The first use registered every shard (in OID order, so shard_id follows creation order).
SELECT shard_id, relid::regclass AS shard, schema_name, table_name, parent_relid::regclass AS parent,
       retired_at IS NULL AS live
FROM shardcast.shards ORDER BY shard_id;
-- Samples in one bucket add up; writes default to 0.
SELECT shardcast.record_access('events', :'t', 50);
-- Bulk: element i of each array is one sample. The events of the 71 hours before: 200 reads
-- and 50 writes an hour.
SELECT shardcast.record_access(array_agg('events'::regclass), array_agg(:'t'::timestamptz - k * interval '1 hour'),
                               array_agg(200::float8), array_agg(50::float8))
FROM generate_series(1, 71) AS k;
-- Reads an hour of the others: orders 1000, measurements_2026 40, customers 2,
-- measurements_2025 1 (writes NULL: no writes at all). The archive is never read.
SELECT shardcast.record_access(array_agg(s.shard), array_agg(:'t'::timestamptz - k * interval '1 hour'), array_agg(s.reads), NULL)
FROM (VALUES ('orders'::regclass, 1000::float8), ('measurements_2026', 40), ('customers', 2),
             ('measurements_2025', 1)) AS s(shard, reads),
     generate_series(0, 71) AS k;
-- Every stored bucket: 5 minutes wide while recent (the worker compacts the buckets older than
-- 6 hours into hourly slots, 1 hour wide).
SELECT shard, bucket_width, count(*) AS buckets, sum(scans) AS scans, sum(tuples_read) AS tuples_read,
       sum(tuples_written) AS tuples_written, sum(blocks_hit) AS blocks_hit, sum(blocks_read) AS blocks_read
FROM shardcast.access_history GROUP BY shard_id, shard, bucket_width ORDER BY shard_id;
SELECT round(extract(epoch FROM :'t'::timestamptz - bucket_start) / 3600) AS hours_ago, scans, tuples_read, tuples_written
FROM shardcast.access_history WHERE shard = 'events'::regclass ORDER BY bucket_start DESC LIMIT 3;
-- What a DBA looks at first: reads_per_sec and writes_per_sec average the last 15 minutes
-- (reads as shardcast.load_measure counts them, scans by default: one imported sample of 1000
-- reads is 1000 / 900 s), then the last hour's totals (one sample) and the last day's (24
-- samples).
SELECT shard, parent, round(reads_per_sec::numeric, 4) AS reads_per_sec, round(writes_per_sec::numeric, 4) AS writes_per_sec,
       scans_last_hour, tuples_read_last_hour, tuples_written_last_hour,
       scans_last_day, tuples_read_last_day, tuples_written_last_day,
       last_active_bucket IS NOT NULL AS active
FROM shardcast.shard_activity ORDER BY shard_id;

-- Refused, with nothing written. NULL arguments or elements: 22004.
SELECT shardcast.record_access(NULL, now(), 1);
SELECT shardcast.record_access('orders', NULL, 1);
SELECT shardcast.record_access('orders', now(), NULL);
SELECT shardcast.record_access('orders', now(), 1, NULL);
SELECT shardcast.record_access(ARRAY['orders', NULL]::regclass[], ARRAY[now(), now()], ARRAY[1, 1]);
SELECT shardcast.record_access(ARRAY['orders']::regclass[], ARRAY[now()], ARRAY[1], ARRAY[NULL]::float8[]);
SELECT shardcast.record_access(NULL::regclass[], ARRAY[now()], ARRAY[1]);
-- Negative, NaN, infinite or absurd counts (above 1e15 in one sample): 22003.
SELECT shardcast.record_access('orders', now(), -1);
SELECT shardcast.record_access('orders', now(), 'NaN');
SELECT shardcast.record_access('orders', now(), 1, 'Infinity');
SELECT shardcast.record_access('orders', now(), 2e15);
-- The bulk form names the element.
SELECT shardcast.record_access(ARRAY['orders', 'events']::regclass[], ARRAY[now(), now()], ARRAY[1, -1]);
-- A time in the future, or infinite: 22023.
SELECT shardcast.record_access('orders', now() + interval '1 hour', 1);
SELECT shardcast.record_access('orders', '-infinity', 1);
-- Arrays of different lengths, or more than 1,000,000 samples in one call: 22023.
SELECT shardcast.record_access(ARRAY['orders', 'events']::regclass[], ARRAY[now()], ARRAY[1, 1]);
SELECT shardcast.record_access(array_fill('orders'::regclass, ARRAY[1000001]), array_fill(now(), ARRAY[1000001]),
                               array_fill(1::float8, ARRAY[1000001]));
-- A relation that is not a shard: 42809, saying why.
SELECT shardcast.record_access('order_totals', now(), 1);
SELECT shardcast.record_access('ticket_numbers', now(), 1);
SELECT shardcast.record_access('customer_names', now(), 1);
SELECT shardcast.record_access('measurements', now(), 1);
SELECT shardcast.record_access('scratch', now(), 1);
SELECT shardcast.record_access('pg_class', now(), 1);
SELECT shardcast.record_access('shardcast.nodes', now(), 1);
-- An OID that names no relation: 42P01.
SELECT shardcast.record_access(4000000000::oid::regclass, now(), 1);
-- The bulk form names the element here too, and writes none of the call's samples.
SELECT shardcast.record_access(ARRAY['orders', 'order_totals']::regclass[], ARRAY[now(), now()], ARRAY[1, 1]);
SELECT shardcast.record_access(ARRAY['orders', 4000000000::oid::regclass], ARRAY[now(), now()], ARRAY[1, 1]);
-- Older than shardcast.history_retention (28 days): not recorded, since the worker would purge
-- it at once; a WARNING says so, and the bulk form counts only the samples it recorded.
SELECT shardcast.record_access('orders', now() - interval '29 days', 1);
SELECT shardcast.record_access(ARRAY['orders', 'orders']::regclass[], ARRAY[now() - interval '40 days', '1900-01-01'],
                               ARRAY[1, 1]);
-- Nothing of the refused calls was written: the counts are those above.
SELECT shard, count(*) AS buckets, sum(scans) AS scans
FROM shardcast.access_history GROUP BY shard_id, shard ORDER BY shard_id;
