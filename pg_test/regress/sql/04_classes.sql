-- Classes. How much a shard matters to the application: shardcast.shard_classes holds the
-- classes and their weights (critical 10, normal 1, log 0.1 come with the extension; they are
-- editable, more can be added, and pg_dump keeps them). A shard's score is its predicted load
-- times its class weight (06_scores).
--   set_shard_class(shard regclass, class text)
-- sets the class of a table, a leaf partition or a partitioned table (whose partitions take it
-- unless they have one of their own). Classes are kept by qualified name, so that they
-- survive drop and re-create. shardcast.effective_classes shows each live shard's class and
-- where it came from (class_source NULL: the default, normal).
\set VERBOSITY verbose
CREATE TEMPORARY TABLE scratch (x int);
SELECT class, weight, description, builtin FROM shardcast.shard_classes ORDER BY weight DESC;
SELECT shard, class, weight, class_source FROM shardcast.effective_classes ORDER BY shard_id;
-- The event log is read by user-facing pages: critical. Measurements are history: log, but
-- the 2025 partition has a class of its own.
SELECT shardcast.set_shard_class('events', 'critical');
SELECT shardcast.set_shard_class('measurements', 'log');
SELECT shardcast.set_shard_class('measurements_2025', 'normal');
SELECT shard, class, weight, class_source FROM shardcast.effective_classes ORDER BY shard_id;
-- A class of one's own; setting a class again replaces it.
INSERT INTO shardcast.shard_classes (class, weight, description) VALUES ('cold', 0.01, 'kept, never read');
SELECT shardcast.set_shard_class('archive', 'cold');
SELECT shardcast.set_shard_class('archive', 'log');
SELECT schema_name, table_name, class FROM shardcast.shard_class_assignments ORDER BY table_name;
-- Class names are lower-case identifiers; weights are finite and not negative (CHECK: 23514).
INSERT INTO shardcast.shard_classes (class, weight) VALUES ('Hot', 5);
INSERT INTO shardcast.shard_classes (class, weight) VALUES ('hot', -1);
-- Refused: an unknown class (42704, the hint lists the known ones), a relation that holds no
-- shards, a view, a temporary table or a table of a system schema or of shardcast's own (42809,
-- saying why), an OID that names no relation (42P01), NULLs (22004).
SELECT shardcast.set_shard_class('orders', 'urgent');
SELECT shardcast.set_shard_class('order_totals', 'critical');
SELECT shardcast.set_shard_class('scratch', 'critical');
SELECT shardcast.set_shard_class('pg_class', 'critical');
SELECT shardcast.set_shard_class('shardcast.nodes', 'critical');
SELECT shardcast.set_shard_class(4000000000::oid::regclass, 'critical');
SELECT shardcast.set_shard_class(NULL, 'critical');
SELECT shardcast.set_shard_class('orders', NULL);
-- A class in use cannot be deleted (23503); an unused one can.
DELETE FROM shardcast.shard_classes WHERE class = 'cold';
DELETE FROM shardcast.shard_classes WHERE class = 'log';
