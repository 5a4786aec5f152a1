#!/usr/bin/env python3
"""Runs the pg_regress suite of shardcast's SQL API (pg_test/regress/sql -> expected).

A throwaway PostgreSQL 15 cluster (initdb under /tmp, as the `postgres` user when run as root,
on a free loopback port) with shardcast in shared_preload_libraries, as in production, so that
the settings, the launcher and `worker_status` are the real ones, but with the worker paused
(`shardcast.enabled = off`, the README's way to pause it): a sampler running in the background
would register tables and write history at moments of its own, and the expected output must
not depend on timing. Everything the suite shows is fed by the tests themselves with
record_access(). The worker's own life (sampling, restarts, refreshes on its schedule) is tested
by the end-to-end tests in pg_test/.

    python3 pg_test/regress/run.py            # run; prints regression.diffs and exits 1 on failure
    python3 pg_test/regress/run.py --accept   # run, then copy the results over expected/
    python3 pg_test/regress/run.py --keep     # keep the results directory (and print where)

Tests run in the order of pg_test/regress/schedule, one database, each file building on the
previous ones.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cluster import Cluster, pg_bindir, wait_for  # noqa: E402

DB = "shardcast_regression"
PG_REGRESS = Path("/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress")

SETTINGS = {
    "shardcast.database": f"'{DB}'",
    # Paused: no sampler, so nothing changes behind the tests' backs.
    "shardcast.enabled": "off",
    # Autovacuum would change relation sizes (free space and visibility maps) at moments of
    # its own, and the queue shows sizes.
    "autovacuum": "off",
    # CREATE PUBLICATION without logical decoding warns; the warning is not shardcast's API.
    "wal_level": "logical",
    "lc_messages": "'C'",
}


def pg_regress() -> Path:
    try:
        pgxs = subprocess.run(["pg_config", "--pgxs"], check=True, capture_output=True, text=True).stdout.strip()
        candidate = Path(pgxs).parent.parent / "test/regress/pg_regress"
        if candidate.exists():
            return candidate
    except (OSError, subprocess.CalledProcessError):
        pass
    return PG_REGRESS


def installed_build_is_plain() -> bool:
    """`cargo pgrx test` installs its own build, whose extension script also creates schema
    `tests` and the #[pg_test] functions: CREATE EXTENSION would then list them in 01_setup.
    `make test-regress` installs the plain build first."""
    # The installation the cluster runs (SHARDCAST_PG_BINDIR: a private one, see
    # scripts/private-install.sh), not whichever pg_config is first on PATH.
    sharedir = subprocess.run([str(pg_bindir() / "pg_config"), "--sharedir"], check=True, capture_output=True,
                              text=True).stdout.strip()
    extension = Path(sharedir) / "extension"
    control = (extension / "shardcast.control").read_text()
    version = next(line.split("=", 1)[1].strip().strip("'") for line in control.splitlines()
                   if line.startswith("default_version"))
    script = (extension / f"shardcast--{version}.sql").read_text(errors="replace")
    return "CREATE SCHEMA IF NOT EXISTS tests" not in script and "CREATE SCHEMA tests" not in script


def wait_for_a_quiet_hour() -> None:
    """Tests place history at whole hours before date_trunc('hour', now()): a run that crosses
    an hour would see part of it shifted by one hour. The suite takes seconds; a run that would
    start in the last minute of an hour waits for the next one."""
    now = datetime.datetime.now(datetime.timezone.utc)
    left = 3600 - (now.minute * 60 + now.second)
    if left < 60:
        print(f"waiting {left + 2} s for the hour to turn (the suite places history at whole hours)")
        time.sleep(left + 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accept", action="store_true", help="copy results/*.out over expected/ after the run")
    parser.add_argument("--keep", action="store_true", help="keep the output directory")
    parser.add_argument("tests", nargs="*", help="run only these tests (names from the schedule), in this order")
    args = parser.parse_args()
    if not installed_build_is_plain():
        print("the installed shardcast is cargo pgrx test's build (it creates schema tests): run make install",
              file=sys.stderr)
        return 2

    outdir = Path(tempfile.mkdtemp(prefix="shardcast-regress-", dir="/tmp"))
    cluster = Cluster(SETTINGS, "shardcast-regress")
    try:
        cluster.start()
        with cluster.connect() as conn:
            conn.execute(f"CREATE DATABASE {DB}")
            # The launcher is registered at server start: worker_status reads it.
            wait_for("the shardcast launcher", lambda: conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'shardcast launcher'").fetchone()[0])
        wait_for_a_quiet_hour()
        selection = ([f"--schedule={HERE / 'schedule'}"] if not args.tests else list(args.tests))
        command = [
            str(pg_regress()), "--use-existing", "--host=127.0.0.1", f"--port={cluster.port}",
            "--user=postgres", f"--dbname={DB}", f"--bindir={cluster.bindir}",
            f"--inputdir={HERE}", f"--outputdir={outdir}",
            # psql in verbose mode (the tests set VERBOSITY verbose, to show each error's
            # SQLSTATE) also prints the source file and line of each error: they change with
            # every edit of the code, so the launcher drops those lines.
            f"--launcher={HERE / 'psql-without-location.sh'}",
            *selection,
        ]
        result = subprocess.run(command)
        diffs = outdir / "regression.diffs"
        if result.returncode != 0 and diffs.exists():
            sys.stdout.write(diffs.read_text(errors="replace"))
        if args.accept:
            for out in sorted((outdir / "results").glob("*.out")):
                target = HERE / "expected" / out.name
                if not target.exists() or target.read_bytes() != out.read_bytes():
                    print(f"accepted {target.relative_to(HERE.parent.parent)}")
                    shutil.copyfile(out, target)
        if result.returncode != 0 and args.keep:
            print(f"server log: {cluster.log}", file=sys.stderr)
        return result.returncode
    finally:
        if args.keep:
            cluster.stop()
            print(f"results kept in {outdir}, cluster data in {cluster.root}")
        else:
            cluster.destroy()
            shutil.rmtree(outdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
