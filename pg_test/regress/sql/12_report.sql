-- What the order was worth. shardcast.prioritization_report, over the tasks done so far, and
--   prioritization_report_since(since timestamptz)   -- over the tasks claimed since then
-- compare the access-weighted availability (AWA: the share of the accesses during the run that
-- hit shards already copied) of the realised order with FIFO's (catalog order) and perfect
-- foresight's (Smith's rule on the true load), both replayed on the run's own workers with each
-- copy's own duration: capture = (realised - fifo) / (oracle - fifo), NULL when they tie.
--
-- Here the run is the copies of 10_claims (two tasks done, a few milliseconds each): its
-- window and bandwidth follow from when they ran, and differ at every run (shown as
-- comparisons). No access was recorded during those milliseconds (the history of 03_history is
-- older), so every order's AWA is 0 and capture is NULL.
\set VERBOSITY verbose
SELECT tasks, bytes_copied, window_end >= window_start AS window_ok, bandwidth > 0 AS bandwidth_positive,
       awa_realised, awa_fifo, awa_oracle, capture
FROM shardcast.prioritization_report;
-- The same, since a moment: everything (NULL), nothing (a moment to come).
SELECT tasks, bytes_copied FROM shardcast.prioritization_report_since(NULL);
SELECT count(*) FROM shardcast.prioritization_report_since(now() + interval '1 hour');
