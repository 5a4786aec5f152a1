-- Setup. shardcast is installed with CREATE EXTENSION in the database that
-- shardcast.database names (the one its background worker samples); the library is loaded
-- through shared_preload_libraries, so that the worker runs. Everything lives in schema
-- shardcast. This suite runs with the worker paused (shardcast.enabled = off): every piece of
-- history below is fed by the tests themselves with record_access(), so that the output does
-- not depend on timing. The worker's own life is tested end to end in pg_test/.
--
-- Errors are shown with their SQLSTATE (VERBOSITY verbose) and hint: both are part of the API.
\set VERBOSITY verbose
CREATE EXTENSION shardcast;
-- What it creates: the functions of the API (those starting with _ are internal), the tables
-- behind them, and the views a DBA reads.
\dx+ shardcast
-- Every table, view and function it creates explains itself (\d+ and \df+ show it): none
-- without a COMMENT.
SELECT pg_describe_object(d.classid, d.objid, 0) AS without_comment
FROM pg_depend d
WHERE d.refclassid = 'pg_extension'::regclass
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'shardcast')
  AND d.deptype = 'e'
  AND d.classid IN ('pg_class'::regclass, 'pg_proc'::regclass)
  AND (d.classid <> 'pg_class'::regclass
       OR (SELECT relkind FROM pg_class WHERE oid = d.objid) IN ('r', 'v', 'm', 'p'))
  AND obj_description(d.objid, d.classid::regclass::name) IS NULL
ORDER BY 1;
SELECT extversion FROM pg_extension WHERE extname = 'shardcast';
-- Whether the library was preloaded (the worker runs only then).
SELECT shardcast.preloaded();
-- The worker, as this database sees it: paused by shardcast.enabled = off, and sampling this
-- database (shardcast.database) once it runs. The other columns are its record: timestamps,
-- counts and the last error.
SELECT database = current_database() AS samples_this_database, state, pid IS NULL AS no_sampler_process
FROM shardcast.worker_status;
SELECT shards_tracked, samples_written, resets_detected, last_error, shards_scored
FROM shardcast.worker_status;
-- CREATE EXTENSION only once per database.
CREATE EXTENSION shardcast;
