-- Shards. Every ordinary table and every leaf partition of the watched database is a shard:
-- the unit whose reads shardcast records, forecasts and replicates. Views, sequences,
-- materialized views, partitioned parents and temporary tables are not shards, and neither are
-- tables in system schemas, in shardcast's own schema or in shardcast.excluded_schemas.
-- shardcast.shard_candidates is the one place that decides it; shardcast.shards is the
-- registry (the worker registers new tables at each sample; record_access(), enqueue_all() and
-- enqueue_publication() register what they need at once). A shard is (OID, schema, name): a
-- dropped or renamed table is retired, and keeps its history.
\set VERBOSITY verbose
-- The application that the rest of this suite uses: customers, their orders (which reference
-- customers), an event log, an archive, and measurements partitioned by year.
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, total numeric NOT NULL);
CREATE TABLE events (id bigint, payload text);
CREATE TABLE archive (id int, data text);
CREATE TABLE measurements (at date NOT NULL, value float8) PARTITION BY RANGE (at);
CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 100) g;
INSERT INTO orders SELECT g, 1 + g % 100, g * 10 FROM generate_series(1, 1000) g;
INSERT INTO events SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g;
INSERT INTO measurements SELECT date '2025-01-01' + g % 700, g FROM generate_series(1, 1400) g;
-- And relations that are not shards.
CREATE VIEW order_totals AS SELECT customer_id, sum(total) AS total FROM orders GROUP BY customer_id;
CREATE MATERIALIZED VIEW customer_names AS SELECT name FROM customers;
CREATE SEQUENCE ticket_numbers;
CREATE TEMPORARY TABLE scratch (x int);  -- gone with this session: each file makes its own
SELECT relid::regclass, schema_name, table_name, parent_relid::regclass AS parent
FROM shardcast.shard_candidates ORDER BY table_name;
-- shardcast.excluded_schemas is a list of schema names read as search_path reads one: unquoted
-- names have their ASCII letters folded to lower case, double-quoted ones are kept as written;
-- a malformed item is left out.
SELECT shardcast._name_list('Staging, "Mixed" ,public,"a""b", Über') AS excluded,
       shardcast._name_list('"A"b, c, "unterminated') AS malformed_left_out,
       shardcast._name_list('') AS none;
-- Nothing is registered until the worker samples or a function needs a shard: the first
-- record_access() (03_history) registers every candidate at once.
SELECT count(*) FROM shardcast.shards;
