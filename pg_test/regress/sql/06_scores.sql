-- Shard Priority Scores: what replication should copy first. Each refresh scores every live
-- shard: score = predicted load x class weight, then lifted along foreign keys (a table that
-- hot tables reference is lifted to shardcast.inheritance_factor x their score, so that a
-- query's joins are replicated together: lift and lift_source say from where), then held by
-- hysteresis (a published score moves only when the new one differs by more than
-- shardcast.score_hysteresis, 20%). priority_weight maps scores to 0-1000
-- (round(1000 x ln(1 + score) / ln(1 + max score)): 1000 for the top shard, 0 for a zero
-- score); tiers group them (shardcast.tiers, 3; tier 1 is the hottest); rank 1 is first.
-- shardcast.priority_scores shows them, with the forecast and a sparkline (07_sparkline).
--
-- The forecasts of 05_forecasts are exact, and so are these scores.
\set VERBOSITY verbose
SELECT shardcast.refresh_forecasts();
-- events is read less than orders but is critical (x10); customers is barely read but orders
-- references it, so it is lifted to orders' score and ranks right after it; the measurements
-- are logs (x0.1) except the 2025 partition (normal).
SELECT rank, shard, class, weight, predicted_load, lift, lift_source, score, priority_weight, tier
FROM shardcast.priority_scores ORDER BY rank;
-- With the forecast's interval and its model; size_bytes is NULL until the worker measures the
-- table.
SELECT shard, predicted_load_lower, predicted_load_upper, model, size_bytes FROM shardcast.priority_scores ORDER BY rank;

-- Session settings shape the next refresh (the worker uses the server's): without priority
-- inheritance customers falls to its own load, and with one tier every shard shares it.
SET shardcast.inheritance_factor = 0;
SET shardcast.tiers = 1;
SELECT shardcast.refresh_forecasts();
SELECT rank, shard, score, lift, lift_source, tier FROM shardcast.priority_scores ORDER BY rank;
RESET shardcast.inheritance_factor;
RESET shardcast.tiers;
-- Hysteresis: orders becomes a log (x0.1). With a threshold of 1000% its published score
-- stays put; with the default 20% it falls.
SELECT shardcast.set_shard_class('orders', 'log');
SET shardcast.score_hysteresis = 10;
SELECT shardcast.refresh_forecasts();
SELECT shard, class, predicted_load, weight, score, rank FROM shardcast.priority_scores WHERE shard = 'orders'::regclass;
RESET shardcast.score_hysteresis;
SELECT shardcast.refresh_forecasts();
SELECT shard, class, predicted_load, weight, score, rank FROM shardcast.priority_scores WHERE shard = 'orders'::regclass;
SELECT shardcast.set_shard_class('orders', 'normal');
SELECT shardcast.refresh_forecasts();
SELECT rank, shard, class, score, lift_source, priority_weight, tier FROM shardcast.priority_scores ORDER BY rank;
