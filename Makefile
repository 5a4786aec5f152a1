# shardcast: the README's two commands are `make demo` and `make test`.
PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
PGRX_TEST_DATA ?= /tmp/shardcast-pgrx-test
RUN_AS ?= postgres

.PHONY: deps demo test test-core test-pgrx test-e2e install install-release bench bench-forecast-core lint

deps:
	./scripts/install-deps.sh
	./scripts/install-citus.sh

# Builds and installs the extension into the system PostgreSQL 15 (debug build: quick to build).
# `cargo pgrx package` then a rename into place (scripts/install-package.sh), not `cargo pgrx
# install`: that one rewrites shardcast.so in place, under the mapped pages of every running
# server that loaded it (a demo, a test, a benchmark in another shell), which crashes them. A
# server started before an install should still be restarted before it is used again: PostgreSQL
# loads the new file beside the old one for the functions a backend has not called yet. To run
# another build beside the installed one, see scripts/private-install.sh.
install: deps
	rm -rf target/package-debug
	cargo pgrx package --debug --pg-config $(PG_CONFIG) --out-dir target/package-debug
	./scripts/install-package.sh target/package-debug
	$(MAKE) install-released-scripts

install-release: deps
	rm -rf target/package-release
	cargo pgrx package --pg-config $(PG_CONFIG) --out-dir target/package-release
	./scripts/install-package.sh target/package-release
	$(MAKE) install-released-scripts

# cargo pgrx package generates the current version's script and copies the upgrade scripts
# (sql/shardcast--A--B.sql), but not the released versions' full scripts: without them
# CREATE EXTENSION shardcast VERSION '0.1.0' (and so the upgrade test) cannot run.
EXTENSION_DIR = $(shell $(PG_CONFIG) --sharedir)/extension
CARGO_VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
.PHONY: install-released-scripts
install-released-scripts:
	@for f in sql/shardcast--*.sql; do \
		case "$$f" in *--*--*|sql/shardcast--$(CARGO_VERSION).sql) continue ;; esac; \
		echo "install $$f $(EXTENSION_DIR)/"; install -m 644 "$$f" "$(EXTENSION_DIR)/"; \
	done

demo: install-release
	python3 demo/demo.py

# shardcast on Citus: a coordinator and 4 workers, a skewed workload, a node added; Citus's
# rebalance by shard count, then shardcast's by predicted load, hot moves first (about a minute
# after the build; needs Citus, which `make deps` builds).
.PHONY: demo-citus
demo-citus: install-release
	python3 demo/demo_citus.py

test: deps test-core test-pgrx test-e2e test-regress

# The pure-Rust core: unit and property tests, no database.
test-core:
	cargo test -p shardcast-core

# #[pg_test]s inside a PostgreSQL started by pgrx, with the worker preloaded.
test-pgrx: deps
	mkdir -p $(PGRX_TEST_DATA) && chown $(RUN_AS) $(PGRX_TEST_DATA)
	cargo pgrx test pg15 --runas $(RUN_AS) --pgdata $(PGRX_TEST_DATA)/data

# End to end: real clusters, real clients, the real worker. `cargo pgrx test` installs its
# test build, so install the plain build again first.
test-e2e: install
	python3 -m pytest pg_test -q

# The SQL API documented by its own regression output: pg_regress runs pg_test/regress/sql and
# compares with pg_test/regress/expected, on a throwaway cluster with the worker paused.
.PHONY: test-regress
test-regress: install
	python3 pg_test/regress/run.py

# Benchmarks print figures; they assert nothing.
# Every benchmark (about 75 minutes on 2 cores): sampler, forecasting cost, queue, overhead on
# pgbench, forecast accuracy beside statsforecast and Prophet, the same and the queue's order on
# real event counts, the replay of real traces through SQL, and Citus.
bench: bench-forecast-core install-release
	python3 bench/sampler_bench.py
	python3 bench/forecast_bench.py
	python3 bench/queue_bench.py
	python3 bench/overhead_bench.py $(OVERHEAD_ARGS)
	$(MAKE) bench-accuracy bench-events bench-replay bench-citus

# Citus: the coordinator's sampling cycle, the rebalance plan and the order of its moves with
# 1,000 shards on 4 workers, then the orders on 300 synthetic clusters (about two minutes; needs
# Citus, which `make deps` builds).
.PHONY: bench-citus
bench-citus: install-release
	python3 bench/citus_bench.py $(CITUS_ARGS)
	cargo run --release -q -p shardcast-core --example rebalance_orders

# Ranking and model cost on the traces in bench/data, without a database.
TRACES ?= bench/data/nab/*.csv
bench-forecast-core:
	cargo run --release -q -p shardcast-core --example ranking -- $(TRACES)
	cargo run --release -q -p shardcast-core --example model_cost

# Forecast accuracy of shardcast beside statsforecast peers and Prophet on M4 hourly and NAB
# (bench/data): prints markdown tables, about 15 minutes on 2 cores. Quick run: make bench-accuracy ACCURACY_ARGS="--series 40"
.PHONY: bench-accuracy
bench-accuracy:
	python3 -m pip install -q -r bench/requirements.txt
	python3 bench/forecast_accuracy.py $(ACCURACY_ARGS)

# Real event counts that bench/data lacks, per 5 minutes: departures from New York in 2013 per
# carrier in June-July and per destination in November-December (bench/flight_events.py),
# Minneapolis police stops in June-July 2017 and MovieLens film ratings per genre in
# October-November 1997, five people's wrist actigraphy, a web shop's order lines per product
# range in September-October 2011 and a pizzeria's sales per kind and size in March-April 2015
# (bench/record_events.py, which fetches its wheels with pip): forecast accuracy beside the same
# peers, and the queue's order on the core's forecasts (bench/order_check.py); about 20 minutes.
EVENTS_DIR ?= /tmp/shardcast-events
EVENT_SETS = carriers destinations stops ratings activity retail pizza
.PHONY: bench-events
bench-events:
	python3 -m pip install -q -r bench/requirements.txt
	python3 bench/flight_events.py $(EVENTS_DIR)/carriers/nab
	python3 bench/flight_events.py $(EVENTS_DIR)/destinations/nab --from 2013-11-01 --by dest
	python3 bench/record_events.py stops $(EVENTS_DIR)/stops/nab
	python3 bench/record_events.py ratings $(EVENTS_DIR)/ratings/nab
	python3 bench/record_events.py activity $(EVENTS_DIR)/activity/nab
	python3 bench/record_events.py retail $(EVENTS_DIR)/retail/nab
	python3 bench/record_events.py pizza $(EVENTS_DIR)/pizza/nab
	for set in $(EVENT_SETS); do python3 bench/forecast_accuracy.py --data $(EVENTS_DIR)/$$set --only nab || exit 1; done
	for set in $(EVENT_SETS); do python3 bench/order_check.py --data $(EVENTS_DIR)/$$set --cuts 1000 || exit 1; done

# Prioritization replay through SQL: NAB and M4 hourly groups as shards, >= 16 cuts each, AWA
# capture of prioritized_queue against FIFO, last-hour and yesterday WSPT and the oracle at 1, 4
# and 12 h windows; prints markdown tables, about 3 minutes on 2 idle cores (10-20 when busy). Quick run: make bench-replay REPLAY_ARGS="--cuts 4 --m4-groups 1"
.PHONY: bench-replay
bench-replay: install-release
	python3 bench/replay_bench.py $(REPLAY_ARGS)

# The worker's overhead on pgbench: TPS with shardcast not preloaded, preloaded sampling every
# 1 min and every 1 s (interleaved rounds, paired ratios), and the CPU of shardcast's processes;
# prints markdown tables, about 20 minutes (5 rounds x 3 x 60 s; --mode both doubles it). Quick
# run: make bench-overhead OVERHEAD_ARGS="--duration 15 --rounds 2 --tables 200"
.PHONY: bench-overhead
bench-overhead: install-release
	python3 bench/overhead_bench.py $(OVERHEAD_ARGS)

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
