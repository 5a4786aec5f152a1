-- shardcast 0.1.0 -> 0.2.0. Run by ALTER EXTENSION shardcast UPDATE; never edit once released.
\echo Use "ALTER EXTENSION shardcast UPDATE TO '0.2.0'" to load this file. \quit

-- Forecasts cover [now, now + horizon) and say which history and models made them. The stored
-- forecasts are derived data: they are dropped and made again by the next refresh.
TRUNCATE shardcast.forecast_state;
ALTER TABLE shardcast.forecast_state
    DROP COLUMN selected_model,
    ADD COLUMN window_start     timestamptz NOT NULL,
    ADD COLUMN window_end       timestamptz NOT NULL,
    ADD COLUMN observed_hours   integer NOT NULL,
    ADD COLUMN imported_hours   integer NOT NULL,
    ADD COLUMN change_reason    text NOT NULL,
    ADD COLUMN selected_members text[] NOT NULL,
    ADD COLUMN selected_weights double precision[] NOT NULL,
    ADD COLUMN selected_mase    double precision,
    ADD COLUMN error_offset     double precision NOT NULL;
COMMENT ON TABLE shardcast.forecast_state IS
    'Latest forecast per shard: total load over [window_start, window_end), its interval, the models combined, the history used, and why it changed.';

-- Hours nobody observed are unknown, not idle. 0.1.0 read every hour since a shard was first
-- seen as observed: its history is kept so, as one period from the oldest history to now.
CREATE TABLE shardcast.sampling_periods (
    started_at timestamptz NOT NULL,
    ended_at   timestamptz NOT NULL CHECK (ended_at >= started_at),
    PRIMARY KEY (started_at)
);
COMMENT ON TABLE shardcast.sampling_periods IS
    'Periods during which the worker sampled continuously; hours outside them are unknown, not idle.';
INSERT INTO shardcast.sampling_periods (started_at, ended_at)
SELECT least(min(first_seen), now()), now() FROM shardcast.shards HAVING count(*) > 0;
