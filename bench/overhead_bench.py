"""Worker overhead benchmark: pgbench TPS with and without shardcast preloaded.

Prints figures; asserts nothing. Run with `make bench-overhead` (installs the release build first),
or `python3 bench/overhead_bench.py [options]` after `make install-release`.

One throwaway cluster, restarted before every run with one of three configurations:

  baseline   shardcast not in shared_preload_libraries (the extension exists in the database, but
             nothing loads the library: no launcher, no sampler)
  1min       preloaded, shardcast.sample_interval = 1min (the default)
  1s         preloaded, shardcast.sample_interval = 1s (the smallest)

The database holds pgbench's tables at --scale plus --tables small idle tables, so the sampler
reads the statistics of that many shards every cycle. Rounds run the three configurations in a
rotating order (round 1: baseline, 1min, 1s; round 2: 1min, 1s, baseline; ...), each a pgbench run
of --duration seconds after a restart, a pg_prewarm of pgbench's tables, a pause (--settle, the same
for every configuration, counted from the restart) and a short warm-up. Before
a preloaded run starts, the sampler must be running, have sampled since the restart, track every
table, and have published its first forecast refresh (which a worker does right after it starts,
then every shardcast.refresh_interval, 5 min): so the measured window holds steady sampling, not
the worker's start-up. The refresh's own cost is printed apart, amortized over 5 minutes.

The cluster runs from a private copy of the PostgreSQL installation holding a snapshot of the
installed shardcast (taken when the benchmark starts; its build, release or debug, is printed): a
`make install` elsewhere during the run rewrites shardcast.so in place, which would change the
build under measurement or crash the server.

Reported per configuration: median, min and max TPS; the paired ratio to the baseline run of the
same round (median, min, max over rounds); and the CPU of shardcast's processes (sampler +
launcher, from /proc/<pid>/schedstat) over the measured window, as CPU-seconds per minute of wall
time and as a percentage of one core: on a small, busy machine that is a steadier measure of the
overhead than TPS, whose run-to-run noise is often larger than the effect.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pg_test"))

from cluster import Cluster, as_user, wait_for  # noqa: E402

DB = "bench"
CONFIGS = {
    "baseline": None,
    "1min": "1min",
    "1s": "1s",
}
INCLUDE_FILE = "overhead_bench.conf"
REFRESH_INTERVAL_S = 300  # shardcast.refresh_interval's default, which the benchmark keeps


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def one(conn, sql, *args):
    return conn.execute(sql, args).fetchone()[0]


# -- the installed build ------------------------------------------------------------------------


def pg_config(flag: str) -> str:
    return subprocess.run(["/usr/lib/postgresql/15/bin/pg_config", flag], check=True,
                          capture_output=True, text=True).stdout.strip()


def elf_has_debug_info(path: Path) -> bool:
    """Whether a 64-bit little-endian ELF file has a .debug_info section (a debug build)."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:
            return False
        shoff, = struct.unpack_from("<Q", header, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", header, 0x3A)
        f.seek(shoff)
        sections = [struct.unpack_from("<IIQQQQ", f.read(shentsize)) for _ in range(shnum)]
        _, _, _, _, stroff, strsize = sections[shstrndx]
        f.seek(stroff)
        names = f.read(strsize)
        for name_off, *_ in sections:
            if names[name_off:names.index(b"\0", name_off)] == b".debug_info":
                return True
    return False


def describe_build(library: Path, control: Path, installed: Path) -> str:
    version = re.search(r"default_version\s*=\s*'([^']*)'", control.read_text())
    kind = "DEBUG build (run `make install-release` for meaningful figures)" if elf_has_debug_info(library) \
        else "release build"
    digest = hashlib.sha256(library.read_bytes()).hexdigest()[:12]
    mtime = datetime.fromtimestamp(library.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{installed}: {kind}, version {version.group(1) if version else '?'}, "
            f"installed {mtime}, sha256 {digest}")


def private_install(root: Path) -> tuple[Path, str]:
    """A private copy of the PostgreSQL 15 installation under `root`, with a snapshot of the
    installed shardcast: the cluster runs from it, so that `make install` elsewhere on the machine
    (which rewrites shardcast.so in place, under running servers) neither changes the build being
    measured nor crashes the server. PostgreSQL finds $libdir and its share directory relative to
    its binary, so the binaries are copied; everything else is a symlink but for shardcast's files.
    Returns the bin directory and a description of the build."""
    bindir, libdir, sharedir = (Path(pg_config(f)) for f in ("--bindir", "--pkglibdir", "--sharedir"))
    control = sharedir / "extension" / "shardcast.control"
    library = libdir / "shardcast.so"
    if not control.exists() or not library.exists():
        sys.exit(f"shardcast is not installed ({control} or {library} is missing): run `make install-release`")

    def mirror(src: Path, dst: Path, copy: bool) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        for entry in src.iterdir():
            if copy or entry.name.startswith("shardcast"):
                shutil.copy2(entry, dst / entry.name)
            else:
                (dst / entry.name).symlink_to(entry)

    # Paths keep their layout relative to each other (/usr/lib/postgresql/15/bin ...).
    mirror(bindir, root / bindir.relative_to("/"), copy=True)
    mirror(libdir, root / libdir.relative_to("/"), copy=False)
    share = root / sharedir.relative_to("/")
    share.mkdir(parents=True)
    for entry in sharedir.iterdir():
        if entry.name != "extension":
            (share / entry.name).symlink_to(entry)
    mirror(sharedir / "extension", share / "extension", copy=False)
    # A copy taken while someone installs is torn: take it again until it matches the source.
    private = root / libdir.relative_to("/") / "shardcast.so"
    for _ in range(30):
        settled = time.time() - library.stat().st_mtime > 3
        source = library.read_bytes()
        if settled and source[:4] == b"\x7fELF" and private.read_bytes() == source:
            break
        time.sleep(2)
        shutil.copy2(library, private)
    else:
        sys.exit(f"{library} keeps changing: cannot take a snapshot of the installed build")
    return root / bindir.relative_to("/"), describe_build(private, share / "extension" / "shardcast.control", library)


# -- processes ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """The CPU time a process has used: /proc/<pid>/schedstat (nanoseconds), else utime + stime."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def shardcast_pids(conn) -> dict[str, int]:
    rows = conn.execute("SELECT backend_type, pid FROM pg_stat_activity"
                        " WHERE backend_type IN ('shardcast', 'shardcast launcher')").fetchall()
    return {kind: pid for kind, pid in rows}


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


# -- the cluster ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        settings = {
            "shared_preload_libraries": "''",
            "shardcast.database": f"'{DB}'",
            "shared_buffers": "'1GB'",
            "max_locks_per_transaction": "1024",
            "max_connections": "50",
            # Last, so that it overrides the lines above.
            "include_if_exists": f"'{INCLUDE_FILE}'",
        }
        self.cluster = Cluster(settings, "shardcast-overhead")

    def start(self) -> None:
        self.cluster.bindir, self.build = private_install(self.cluster.root / "install")
        log(f"snapshot of {self.build}")
        self.cluster.start()
        with self.cluster.connect() as conn:
            libdir = one(conn, "SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'")
        if not libdir.startswith(str(self.cluster.root)):
            raise RuntimeError(f"the cluster does not run from its private installation ($libdir is {libdir})")

    def destroy(self) -> None:
        self.cluster.destroy()

    def pg_ctl(self, *args: str) -> None:
        c = self.cluster
        subprocess.run(as_user([c.bin("pg_ctl"), "-D", str(c.data), "-l", str(c.log), "-w", *args]),
                       check=True, capture_output=True)

    def restart(self, config: str) -> None:
        interval = CONFIGS[config]
        lines = ["shared_preload_libraries = ''"] if interval is None else \
            ["shared_preload_libraries = 'shardcast'", f"shardcast.sample_interval = '{interval}'"]
        path = self.cluster.data / INCLUDE_FILE
        path.write_text("\n".join(lines) + "\n")
        os.chmod(path, 0o644)
        self.pg_ctl("-m", "fast", "stop")
        self.pg_ctl("start")

    def pgbench(self, *args: str) -> str:
        out = subprocess.run([self.cluster.bin("pgbench"), *args, self.cluster.dsn(DB)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"pgbench {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def setup(self) -> None:
        a = self.args
        with self.cluster.connect() as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        started = time.monotonic()
        self.pgbench("-i", "-q", "-s", str(a.scale))
        log(f"pgbench -i -s {a.scale}: {time.monotonic() - started:.0f} s")
        with self.cluster.connect(DB) as conn:
            conn.execute("CREATE EXTENSION pg_prewarm")
            # Not preloaded yet: the extension warns that no worker runs; that is expected here.
            conn.execute("SET client_min_messages = error")
            conn.execute("CREATE EXTENSION shardcast")
            conn.execute("CREATE SCHEMA extra")
            for first in range(0, a.tables, 500):
                conn.execute(f"""
                    DO $$ BEGIN
                        FOR i IN {first}..{min(first + 500, a.tables) - 1} LOOP
                            EXECUTE format('CREATE TABLE extra.t%s (id int PRIMARY KEY, v int)', i);
                            EXECUTE format('INSERT INTO extra.t%s VALUES (1, 1)', i);
                        END LOOP;
                    END $$""")
            conn.execute("VACUUM ANALYZE")
            self.relations = one(conn, "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                                       " WHERE c.relkind IN ('r', 'p') AND n.nspname IN ('public', 'extra')")
        log(f"{a.tables} extra tables; {self.relations} tables in all")

    def wait_ready(self, config: str) -> dict:
        """After a restart: pg_prewarm, and for a preloaded configuration a worker that samples."""
        with self.cluster.connect(DB) as conn:
            if CONFIGS[config] is None:
                pids = shardcast_pids(conn)
                preload = one(conn, "SHOW shared_preload_libraries")
                if pids or preload:
                    raise RuntimeError(f"baseline is not a baseline: {pids}, preload {preload!r}")
                status = {}
            else:
                def ready():
                    row = conn.execute("""
                        SELECT w.state, w.pid, w.shards_tracked, w.last_error, w.last_cycle_ms
                        FROM shardcast.worker_status w
                        WHERE w.state = 'running'
                          AND w.last_sample_at >= pg_postmaster_start_time()
                          AND w.last_refresh_at >= pg_postmaster_start_time()
                          AND w.shards_tracked >= %s""", [self.relations]).fetchone()
                    return row
                row = wait_for(f"the sampler to run ({config})", ready, timeout=180, every=0.5)
                interval = one(conn, "SHOW shardcast.sample_interval")
                if interval != CONFIGS[config]:
                    raise RuntimeError(f"shardcast.sample_interval is {interval}, expected {CONFIGS[config]}")
                status = {"pid": row[1], "shards": row[2]}
            conn.execute("SELECT pg_prewarm(c.oid) FROM pg_class c"
                         " WHERE c.relname LIKE 'pgbench\\_%' AND c.relkind IN ('r', 'i')")
            conn.execute("CHECKPOINT")
        return status

    def worker_snapshot(self, conn, preloaded: bool) -> dict:
        if not preloaded:
            return {"pids": {}, "cpu": {}}
        pids = shardcast_pids(conn)
        row = conn.execute("SELECT last_sample_at, samples_written, last_cycle_ms, last_refresh_ms,"
                           " last_error, last_error_at FROM shardcast.worker_status").fetchone()
        return {"pids": pids, "cpu": {k: cpu_seconds(p) for k, p in pids.items()},
                "last_sample_at": row[0], "samples_written": row[1], "last_cycle_ms": row[2],
                "last_refresh_ms": row[3], "last_error": row[4], "last_error_at": row[5]}

    def run(self, config: str, mode: str) -> dict:
        a = self.args
        preloaded = CONFIGS[config] is not None
        common = ["-n", "-c", str(a.clients), "-j", str(a.threads), "-M", "prepared"]
        if mode == "select":
            common.append("-S")
        if a.warmup > 0:
            self.pgbench(*common, "-T", str(a.warmup))
        with self.cluster.connect(DB) as conn:
            before = self.worker_snapshot(conn, preloaded)
            load_before = loadavg()
            t0 = time.monotonic()
            wall_start = one(conn, "SELECT now()")
            out = self.pgbench(*common, "-T", str(a.duration))
            wall = time.monotonic() - t0
            after = self.worker_snapshot(conn, preloaded)
        tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out).group(1))
        latency = re.search(r"latency average = ([\d.]+) ms", out)
        result = {"config": config, "mode": mode, "tps": tps, "wall": wall,
                  "latency_ms": float(latency.group(1)) if latency else None,
                  "load": f"{load_before}->{loadavg()}"}
        if preloaded:
            if before["pids"] != after["pids"]:
                result["note"] = f"shardcast processes changed during the run: {before['pids']} -> {after['pids']}"
            cpu = 0.0
            for kind, pid_cpu in after["cpu"].items():
                if pid_cpu is not None and before["cpu"].get(kind) is not None:
                    cpu += pid_cpu - before["cpu"][kind]
            sampler = (after["cpu"].get("shardcast") or 0) - (before["cpu"].get("shardcast") or 0)
            result.update(cpu=cpu, sampler_cpu=sampler,
                          sampled=after["last_sample_at"] is not None and after["last_sample_at"] >= wall_start,
                          buckets=after["samples_written"] - before["samples_written"],
                          cycle_ms=after["last_cycle_ms"], refresh_ms=after["last_refresh_ms"])
            if after["last_error_at"] is not None and after["last_error_at"] >= wall_start:
                result["note"] = f"worker error during the run: {after['last_error']}"
        return result


# -- report ---------------------------------------------------------------------------------------


def fmt_pct(x: float) -> str:
    return f"{x:+.1f}%"


def report(results: list[dict], args, modes: list[str], build: str, relations: int) -> None:
    print()
    print(f"Conditions: {os.cpu_count()} cores, pgbench scale {args.scale}, {args.tables} extra idle tables "
          f"({relations} tables sampled), {args.rounds} rounds x {args.duration} s per configuration, "
          f"-c {args.clients} -j {args.threads} -M prepared, fsync off, shared_buffers 1GB, "
          f"restart, pg_prewarm, {args.settle:g} s from the restart, then {args.warmup} s warm-up before each run.")
    print(f"Library: a snapshot of {build}")
    for mode in modes:
        title = "select-only (pgbench -S)" if mode == "select" else "TPC-B-like (pgbench default)"
        print()
        print(f"### {title}")
        print()
        print("| configuration | median TPS | min | max | TPS vs baseline, paired: median (min .. max) "
              "| shardcast CPU, s per min of wall | % of one core (min .. max) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        runs = [r for r in results if r["mode"] == mode]
        base_by_round = {r["round"]: r["tps"] for r in runs if r["config"] == "baseline"}
        for config in CONFIGS:
            mine = [r for r in runs if r["config"] == config]
            if not mine:
                continue
            tps = [r["tps"] for r in mine]
            row = f"| {config} | {statistics.median(tps):,.0f} | {min(tps):,.0f} | {max(tps):,.0f} "
            if config == "baseline":
                row += "| (reference) | none | none |"
            else:
                ratios = [r["tps"] / base_by_round[r["round"]] - 1 for r in mine if r["round"] in base_by_round]
                row += (f"| {fmt_pct(statistics.median(ratios) * 100)} "
                        f"({fmt_pct(min(ratios) * 100)} .. {fmt_pct(max(ratios) * 100)}) ")
                per_min = [r["cpu"] / r["wall"] * 60 for r in mine]
                core = [r["cpu"] / r["wall"] * 100 for r in mine]
                row += (f"| {statistics.median(per_min):.3f} "
                        f"| {statistics.median(core):.2f}% ({min(core):.2f} .. {max(core):.2f}) |")
            print(row)
    preloaded = [r for r in results if r["config"] != "baseline"]
    if preloaded:
        print()
        for config in [c for c in CONFIGS if CONFIGS[c]]:
            mine = [r for r in preloaded if r["config"] == config]
            if not mine:
                continue
            cycles = [r["cycle_ms"] for r in mine if r["cycle_ms"] is not None]
            sampled = sum(1 for r in mine if r["sampled"])
            print(f"- {config}: sampled during {sampled} of {len(mine)} runs; last cycle "
                  f"{statistics.median(cycles):.1f} ms (median over runs); buckets written per run "
                  f"{statistics.median([r['buckets'] for r in mine]):.0f} (median)")
        refresh = [r["refresh_ms"] for r in preloaded if r["refresh_ms"] is not None]
        if refresh:
            ms = statistics.median(refresh)
            print(f"- forecast refresh (outside the measured windows; made at worker start, then every "
                  f"{REFRESH_INTERVAL_S // 60} min): {ms:.0f} ms of work, i.e. "
                  f"{ms / 1000 / REFRESH_INTERVAL_S * 100:.3f}% of one core amortized (these shards have "
                  f"little history; see the Cost table for 28 days)")
    notes = [r for r in results if r.get("note")]
    for r in notes:
        print(f"- NOTE round {r['round']} {r['config']} {r['mode']}: {r['note']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=int, default=20, help="pgbench scale factor (default 20)")
    p.add_argument("--tables", type=int, default=1000, help="extra small idle tables to sample (default 1000)")
    p.add_argument("--duration", type=int, default=60, help="seconds per measured pgbench run (default 60)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of the three configurations (default 5)")
    p.add_argument("--mode", choices=["select", "tpcb", "both"], default="select",
                   help="pgbench workload: select-only (-S, default), TPC-B-like, or both after each restart")
    p.add_argument("--clients", type=int, default=4, help="pgbench -c (default 4)")
    p.add_argument("--threads", type=int, default=2, help="pgbench -j (default 2)")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured pgbench seconds before each run (default 5)")
    p.add_argument("--settle", type=float, default=10,
                   help="seconds from a restart to the warm-up, the same for every configuration (default 10)")
    args = p.parse_args()
    modes = ["select", "tpcb"] if args.mode == "both" else [args.mode]

    per_run = (args.duration + args.warmup) * len(modes) + args.settle + 5
    log(f"about {args.rounds * len(CONFIGS) * per_run / 60:.0f} min of runs after setup")

    # SIGTERM (make interrupted, a timeout) cleans up like Ctrl-C.
    def interrupted(*_):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, interrupted)
    bench = Bench(args)
    results: list[dict] = []
    try:
        bench.start()
        bench.setup()
        names = list(CONFIGS)
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for config in order:
                bench.restart(config)
                restarted = time.monotonic()
                bench.wait_ready(config)
                # Every configuration starts its warm-up as long after the restart: a baseline run
                # does not begin while the new server still settles and a preloaded one later.
                time.sleep(max(0.0, args.settle - (time.monotonic() - restarted)))
                for mode in modes:
                    r = bench.run(config, mode)
                    r["round"] = rnd + 1
                    results.append(r)
                    extra = "" if CONFIGS[config] is None else \
                        f", shardcast CPU {r['cpu'] * 1000:.0f} ms ({r['cpu'] / r['wall'] * 100:.2f}% of a core)"
                    log(f"round {rnd + 1} {config:8} {mode:6} {r['tps']:9,.0f} TPS{extra}; load {r['load']}"
                        + (f"; NOTE {r['note']}" if r.get("note") else ""))
    except KeyboardInterrupt:
        log("interrupted; figures so far:")
    finally:
        relations = getattr(bench, "relations", 0)
        bench.destroy()
    if results:
        report(results, args, modes, bench.build, relations)


if __name__ == "__main__":
    main()
