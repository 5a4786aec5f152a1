-- Settings. Every shardcast.* setting, its unit, range and context: "postmaster" ones apply at
-- server start, "sighup" ones on reload (ALTER SYSTEM ... ; SELECT pg_reload_conf()), and
-- "user" ones can also be SET in a session (the worker uses the server's values). The queue's
-- order (ordering, overtake_window, prefetch_quantile) is server-wide, so that every claimer
-- follows the same stored order. This suite's server sets shardcast.database and
-- shardcast.enabled = off (pg_test/regress/run.py); the rest are the defaults.
\set VERBOSITY verbose
SELECT name, setting, unit, context, vartype, min_val, max_val, enumvals
FROM pg_settings WHERE name LIKE 'shardcast.%' ORDER BY name;
SELECT name, short_desc FROM pg_settings WHERE name LIKE 'shardcast.%' ORDER BY name;
SHOW shardcast.horizon;
SHOW shardcast.claim_lease;
SHOW shardcast.history_retention;
SET shardcast.horizon = '90min';
SHOW shardcast.horizon;
SET shardcast.horizon = '2d';
SHOW shardcast.horizon;
RESET shardcast.horizon;
-- PostgreSQL's own checks refuse values out of range (22023), of the wrong unit or type
-- (22023), unknown enum values (22023, the hint lists them), misspelt names under the
-- reserved prefix shardcast. (42602), and session changes of server settings (55P02).
SET shardcast.horizon = '30min';
SET shardcast.horizon = '8d';
SET shardcast.horizon = '2 parsecs';
SET shardcast.tiers = 0;
SET shardcast.tiers = 21;
SET shardcast.interval_level = 0.999;
SET shardcast.write_weight = -1;
SET shardcast.inheritance_factor = 1.5;
SET shardcast.load_measure = 'bytes';
SET shardcast.plan_workers = 0;
SET shardcast.max_attempts = 0;
SET shardcast.claim_lease = '0';
SET shardcast.sampel_interval = '1s';
SET shardcast.ordering = 'fifo';
SET shardcast.overtake_window = '0';
SET shardcast.prefetch_quantile = 1;
SET shardcast.enabled = on;
SET shardcast.database = 'other';
