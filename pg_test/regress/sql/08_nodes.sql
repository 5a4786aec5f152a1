-- Nodes: where replication copies shards to.
--   add_node(name text, capacity_bytes_per_sec float8, max_concurrent int DEFAULT 4, conninfo text DEFAULT NULL)
--   report_node_load(node text, load float8)     -- 0-1: the share of its capacity in use
-- A node's capacity and current load decide node assignment (a task without a requested node
-- goes to the node that would finish it earliest); max_concurrent bounds its claims. Nodes are
-- rows of shardcast.nodes: alter_node changes capacity or disables one (a disabled node gets no
-- claims), remove_node removes one (15_lifecycle). conninfo (it may hold a password) is not readable by PUBLIC (14_privileges).
\set VERBOSITY verbose
SELECT shardcast.add_node('replica-a', 200e6, 4, 'host=replica-a dbname=app');
SELECT shardcast.add_node('replica-b', 50e6, 2);
SELECT shardcast.add_node('replica-c', 10e6);
SELECT shardcast.report_node_load('replica-b', 0.5);
SELECT node, conninfo, capacity_bytes_per_sec, max_concurrent, current_load, load_reported_at IS NOT NULL AS load_reported, enabled
FROM shardcast.nodes ORDER BY node;
-- replica-c is kept for the claims in 10_claims, disabled until then.
UPDATE shardcast.nodes SET enabled = false WHERE node = 'replica-c';

-- Refused: a duplicate name (42710), an empty or over-long name (at most 63 bytes), one with
-- whitespace at either end (a look-alike of another) or control characters, a capacity
-- that is not between 1 and 1e15 bytes per second, a max_concurrent outside 1-1024 (22023),
-- NULLs (22004).
SELECT shardcast.add_node('replica-a', 100e6);
SELECT shardcast.add_node('', 100e6);
SELECT shardcast.add_node('   ', 100e6);
SELECT shardcast.add_node(repeat('n', 64), 100e6);
SELECT shardcast.add_node('replica-a ', 100e6);
SELECT shardcast.add_node(E'replica\x01', 100e6);
SELECT shardcast.add_node('replica-x', 0);
SELECT shardcast.add_node('replica-x', -5);
SELECT shardcast.add_node('replica-x', 0.5);
SELECT shardcast.add_node('replica-x', 'NaN');
SELECT shardcast.add_node('replica-x', 'Infinity');
SELECT shardcast.add_node('replica-x', 2e15);
SELECT shardcast.add_node('replica-x', 100e6, 0);
SELECT shardcast.add_node('replica-x', 100e6, 1025);
SELECT shardcast.add_node(NULL, 100e6);
SELECT shardcast.add_node('replica-x', NULL);
SELECT shardcast.add_node('replica-x', 100e6, NULL);
-- A conninfo over 8 kB (22023). It is not parsed here: the driver connects with its own libpq,
-- which may know options the server's does not, and reports a bad one when it connects.
SELECT shardcast.add_node('replica-x', 100e6, 4, 'host=' || repeat('h', 8200));
-- A load outside 0-1 (22023), an unknown node (42704), NULLs (22004).
SELECT shardcast.report_node_load('replica-b', 1.5);
SELECT shardcast.report_node_load('replica-b', -0.1);
SELECT shardcast.report_node_load('replica-b', 'NaN');
SELECT shardcast.report_node_load('replica-z', 0.5);
SELECT shardcast.report_node_load(NULL, 0.5);
SELECT shardcast.report_node_load('replica-b', NULL);
-- Nothing of the refused calls was written.
SELECT count(*) FROM shardcast.nodes WHERE node = 'replica-x';
