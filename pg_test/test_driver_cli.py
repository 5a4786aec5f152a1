"""End to end: the driver as scripts and services see it. Exit codes, signals (a stop stops the
copy on the node too), progress lines, --dry-run, waiting for another driver's lease, the
privileges of the README, and `finish`, the way out.

One source with shardcast preloaded and one plain PostgreSQL 15 replica. Every test makes its
own tables and its own node (a name of its own for the same replica, so its own publication,
subscription and slot), so that the tests do not depend on each other or on their order.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from cluster import PUBLISHER_SETTINGS, SUBSCRIBER_SETTINGS, Cluster, running_cluster, wait_for

DB = "app"
ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "driver" / "shardcast_driver.py"
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


def one(conn, query, *args):
    row = conn.execute(query, args).fetchone()
    return None if row is None else row[0]


def driver_command(*args: str) -> list[str]:
    return [sys.executable, str(DRIVER), *args]


def run(source: Cluster, *args: str, dsn: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    done = subprocess.run(driver_command(*args[:1], "--source", dsn or source.dsn(DB), *args[1:])
                          if args[:1] == ("finish",) else
                          driver_command("--source", dsn or source.dsn(DB), "--poll", "0.2", *args),
                          capture_output=True, text=True, timeout=timeout)
    print(done.stdout, done.stderr)
    return done


def start(source: Cluster, *args: str) -> subprocess.Popen:
    return subprocess.Popen(driver_command("--source", source.dsn(DB), "--poll", "0.2", *args),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def pair():
    settings = {"shardcast.database": f"'{DB}'", "shardcast.sample_interval": "'1s'",
                "shardcast.claim_lease": "'4s'", **PUBLISHER_SETTINGS}
    with running_cluster(settings, "shardcast-cli-src") as source, \
            running_cluster(SUBSCRIBER_SETTINGS, "shardcast-cli-replica") as replica:
        for cluster in (source, replica):
            with cluster.connect() as conn:
                conn.execute(f"CREATE DATABASE {DB}")
        with source.connect(DB) as conn:
            conn.execute("CREATE EXTENSION shardcast")
        yield source, replica


def node_for(source: Cluster, replica: Cluster, name: str) -> str:
    """A node of the test's own: the replica under another name."""
    with source.connect(DB) as src:
        src.execute("SELECT shardcast.add_node(%s, 100e6, 4, %s)", [name, replica.dsn(DB)])
    return name


def enqueue(source: Cluster, table: str, node: str) -> int:
    with source.connect(DB) as src:
        return one(src, "SELECT shardcast.enqueue(%s, %s)", table, node)


def task_state(source: Cluster, task: int) -> tuple:
    with source.connect(DB) as src:
        return src.execute("SELECT state, attempts, claimed_by FROM shardcast.replication_tasks WHERE task_id = %s",
                           [task]).fetchone()


def slow_table(source: Cluster, replica: Cluster, name: str, rows: int = 40000) -> None:
    """A table of about 20 MB whose copy to the replica takes 10 s or more: on the replica it
    already exists, empty, with an ALWAYS trigger (it fires in the tablesync worker too) that
    sleeps 25 ms every 100 rows."""
    with source.connect(DB) as src:
        src.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v text);"
                    f"INSERT INTO {name} SELECT i, repeat(md5(i::text), 14) FROM generate_series(1, {rows}) i")
    with replica.connect(DB) as rep:
        rep.execute(f"""
            CREATE TABLE {name} (id int PRIMARY KEY, v text);
            CREATE FUNCTION {name}_slow() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.id % 100 = 0 THEN PERFORM pg_sleep(0.025); END IF; RETURN NEW; END $$;
            CREATE TRIGGER slow BEFORE INSERT ON {name} FOR EACH ROW EXECUTE FUNCTION {name}_slow();
            ALTER TABLE {name} ENABLE ALWAYS TRIGGER slow;""")


def copying(replica: Cluster, table: str) -> int:
    with replica.connect(DB) as rep:
        return one(rep, "SELECT bytes_processed FROM pg_stat_progress_copy WHERE relid = to_regclass(%s)", table) or 0


def assert_copy_stopped(source: Cluster, replica: Cluster, table: str, node: str) -> None:
    """Nothing of the table's copy goes on: no COPY, no tablesync worker, not in the subscription,
    no rows, no tablesync slot on the source, not published."""
    with replica.connect(DB) as rep:
        assert one(rep, "SELECT count(*) FROM pg_stat_progress_copy WHERE relid = to_regclass(%s)", table) == 0
        assert one(rep, "SELECT count(*) FROM pg_stat_subscription WHERE relid = to_regclass(%s)", table) == 0
        assert one(rep, "SELECT count(*) FROM pg_subscription_rel WHERE srrelid = to_regclass(%s)", table) == 0
        assert one(rep, f"SELECT count(*) FROM {table}") == 0
        suboid = one(rep, "SELECT oid FROM pg_subscription WHERE subname = %s", f"shardcast_{node}")
    with source.connect(DB) as src:
        assert one(src, "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE %s",
                   f"pg\\_{suboid}\\_sync\\_%") == 0
        assert one(src, "SELECT count(*) FROM pg_publication_tables WHERE pubname = %s AND tablename = %s",
                   f"shardcast_{node}", table) == 0


def unslow(replica: Cluster, table: str) -> None:
    with replica.connect(DB) as rep:
        rep.execute(f"DROP TRIGGER slow ON {table}")


# --- the command line, no cluster -----------------------------------------------------------

def test_version_is_the_extensions():
    done = subprocess.run(driver_command("--version"), capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "shardcast-driver 0.2.0", done
    cargo = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    pyproject = re.search(r'^version = "([^"]+)"', (ROOT / "driver" / "pyproject.toml").read_text(), re.M).group(1)
    assert cargo == pyproject == "0.2.0"
    module = subprocess.run([sys.executable, "-m", "shardcast_driver", "finish", "--version"], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "driver")})
    assert module.returncode == 0 and module.stdout.strip() == "shardcast-driver 0.2.0", module


@pytest.mark.parametrize("args", [["--workers", "-1"], ["--workers", "0"], ["--workers", "two"], ["--poll", "0"],
                                  ["--sync-timeout", "-5"], ["--retry-delay", "-1"], ["--bogus"], [],
                                  # Past PostgreSQL's largest lock_timeout: every sync would fail on it.
                                  ["--lock-timeout", "3000000"],
                                  ["--wait", "--no-wait"],
                                  ["--publisher-conninfo", "postgresql://u:secret@127.0.0.1:notaport/app"]])
def test_usage_errors_exit_2(args):
    source = ["--source", "host=127.0.0.1 port=1"] if args else []
    done = subprocess.run(driver_command(*source, *args), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done
    assert "usage: shardcast-driver" in done.stderr
    finish = subprocess.run(driver_command("finish", "--source", "x", "--keep"), capture_output=True, text=True)
    assert finish.returncode == 2 and "usage: shardcast-driver finish" in finish.stderr, finish


def test_no_source_to_connect_to_exits_3():
    done = subprocess.run(driver_command("--source", "host=127.0.0.1 port=1 dbname=app connect_timeout=2"),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 3, done
    assert "cannot connect to the source" in done.stderr


def test_a_source_database_without_shardcast_is_told_to_create_it(pair):
    source, _ = pair
    for args in ([], ["--dry-run"], ["finish"]):
        done = run(source, *args, dsn=source.dsn("postgres"))
        assert done.returncode == 3, done.stdout + done.stderr
        assert "CREATE EXTENSION shardcast;" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_the_driver_reads_no_internal_column():
    """README, "What it reads": the claim order is the manifest's `position`, never the task
    table's `dispatch_rank`; citus-rebalance reads its moves from the view citus_moves."""
    sources = {path.name: path.read_text() for path in (ROOT / "driver" / "shardcast_driver").glob("*.py")}
    assert [name for name, text in sources.items() if "dispatch_rank" in text] == []
    assert "replication_tasks" not in sources["citus.py"]


def test_pip_installs_the_driver_offline_with_its_console_script(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    env = {**os.environ, "PIP_NO_INDEX": "1"}
    # A copy of driver/, so that the build leaves nothing in the work tree.
    subprocess.run(["cp", "-r", str(ROOT / "driver"), str(tmp_path / "driver")], check=True)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index", str(tmp_path / "driver")],
                             capture_output=True, text=True, env=env, timeout=120)
    assert install.returncode == 0, install.stdout + install.stderr
    version = subprocess.run([str(venv / "bin" / "shardcast-driver"), "--version"], capture_output=True, text=True,
                             cwd=tmp_path)
    assert version.stdout.strip() == "shardcast-driver 0.2.0", version


# --- against the clusters ---------------------------------------------------------------------

def test_a_rerun_after_failed_tasks_reports_them_and_exits_1(pair):
    source, replica = pair
    node = node_for(source, replica, "t_failed")
    with source.connect(DB) as src:
        src.execute("CREATE TABLE t_failed_keyless (v text); INSERT INTO t_failed_keyless VALUES ('a')")
        attempts = int(one(src, "SHOW shardcast.max_attempts"))
    task = enqueue(source, "t_failed_keyless", node)
    first = run(source, "--node", node, "--retry-delay", "0")
    assert first.returncode == 1, first.stdout + first.stderr
    # One line per failed attempt, each with its number: not the same line again and again.
    failures = [line for line in first.stdout.splitlines() if "Z FAILED " in line and "t_failed_keyless" in line]
    assert len(failures) == attempts, failures
    for n in range(1, attempts + 1):
        assert sum(f"attempt {n} of {attempts}" in line for line in failures) == 1, failures
    assert "no attempts left: failed" in failures[-1] and "replica identity" in failures[-1]
    assert task_state(source, task)[:2] == ("failed", attempts)
    assert all(STAMP.match(line) for line in first.stdout.splitlines()), first.stdout
    assert "summary: 0 done" in first.stdout and "exit 1:" in first.stdout
    # Again: nothing is open, and the run says what failed before and exits 1, not 0.
    again = run(source, "--node", node)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "0 open task(s)" in again.stdout
    assert "failed in earlier runs" in again.stdout and "t_failed_keyless -> t_failed" in again.stdout
    assert (f"to try again: SELECT shardcast.retry_task({task})" in again.stdout
            or "to try again: SELECT shardcast.enqueue('public.t_failed_keyless', 't_failed')" in again.stdout)
    # A failure of a table that is gone is no longer one.
    with source.connect(DB) as src:
        src.execute("DROP TABLE t_failed_keyless")
    gone = run(source, "--node", node)
    assert gone.returncode == 0, gone.stdout + gone.stderr


def test_ctrl_c_stops_the_copy_on_the_node_and_hands_the_task_back(pair):
    source, replica = pair
    node = node_for(source, replica, "t_sigint")
    slow_table(source, replica, "t_sigint_big")
    task = enqueue(source, "t_sigint_big", node)
    driver = start(source, "--node", node, "--worker", "w-sigint", "--progress-interval", "1")
    try:
        wait_for("the node to copy t_sigint_big", lambda: copying(replica, "t_sigint_big") > 1e6, timeout=60)
        time.sleep(2.5)  # a progress line or two
        assert copying(replica, "t_sigint_big") > 0, "the copy ended before the test could stop it"
        driver.send_signal(signal.SIGINT)
        out, _ = driver.communicate(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    print(out)
    assert driver.returncode == 130, out
    assert all(STAMP.match(line) for line in out.splitlines()), out
    assert re.search(r"copying  public\.t_sigint_big -> t_sigint: [\d.]+ [kM]B \(\d+ rows\) copied", out), out
    assert "released public.t_sigint_big -> t_sigint (stopping; copy stopped on t_sigint)" in out
    assert "exit 130: stopped by SIGINT" in out
    # At once, not when the copy would have ended.
    assert_copy_stopped(source, replica, "t_sigint_big", node)
    assert task_state(source, task) == ("queued", 0, None)
    # The next run copies it whole.
    unslow(replica, "t_sigint_big")
    again = run(source, "--node", node)
    assert again.returncode == 0, again.stdout + again.stderr
    source.wait_for_subscribers(DB)
    with source.connect(DB) as src, replica.connect(DB) as rep:
        assert one(rep, "SELECT count(*) FROM t_sigint_big") == one(src, "SELECT count(*) FROM t_sigint_big")
    assert task_state(source, task)[0] == "done"


def test_sigterm_stops_a_follower_cleanly_with_status_0(pair):
    source, replica = pair
    node = node_for(source, replica, "t_sigterm")
    slow_table(source, replica, "t_sigterm_big")
    driver = start(source, "--node", node, "--worker", "w-sigterm", "--follow")
    try:
        time.sleep(1)
        task = enqueue(source, "t_sigterm_big", node)  # arrives while it follows
        wait_for("the node to copy t_sigterm_big", lambda: copying(replica, "t_sigterm_big") > 0, timeout=60)
        assert driver.poll() is None
        driver.send_signal(signal.SIGTERM)
        out, _ = driver.communicate(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    print(out)
    assert driver.returncode == 0, out  # systemd: a clean stop, not a failure
    assert "stopping (SIGTERM)" in out and "released public.t_sigterm_big" in out
    assert task_state(source, task) == ("queued", 0, None)
    with source.connect(DB) as src:
        assert one(src, "SELECT count(*) FROM shardcast.replication_tasks WHERE node = %s AND state = 'claimed'",
                   node) == 0
    assert_copy_stopped(source, replica, "t_sigterm_big", node)


def test_dry_run_shows_the_plan_and_claims_nothing(pair):
    source, replica = pair
    node = node_for(source, replica, "t_dry")
    with source.connect(DB) as src:
        src.execute("CREATE TABLE t_dry_a (id int PRIMARY KEY); CREATE TABLE t_dry_b (id int PRIMARY KEY);"
                    "INSERT INTO t_dry_a SELECT generate_series(1, 1000)")
    tasks = [enqueue(source, "t_dry_a", node), enqueue(source, "t_dry_b", node)]
    done = run(source, "--node", node, "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dry run, nothing is claimed: 2 queued task(s) for t_dry" in done.stdout
    assert "public.t_dry_a -> t_dry" in done.stdout and "public.t_dry_b -> t_dry" in done.stdout
    assert "every task ready in about" in done.stdout
    assert "a run would create publication shardcast_t_dry" in done.stdout
    for task in tasks:
        assert task_state(source, task) == ("queued", 0, None)
    with source.connect(DB) as src, replica.connect(DB) as rep:
        assert one(src, "SELECT count(*) FROM pg_publication WHERE pubname = 'shardcast_t_dry'") == 0
        assert one(rep, "SELECT count(*) FROM pg_subscription WHERE subname = 'shardcast_t_dry'") == 0
        assert one(rep, "SELECT to_regclass('t_dry_a')") is None


def test_a_task_held_by_another_driver_is_waited_for_out_loud_or_exits_4(pair):
    source, replica = pair
    node = node_for(source, replica, "t_held")
    with source.connect(DB) as src:
        src.execute("CREATE TABLE t_held_a (id int PRIMARY KEY); INSERT INTO t_held_a VALUES (1)")
    task = enqueue(source, "t_held_a", node)
    # The ghost's lease is long enough that the first run (Python's start, a subscription) meets
    # it held on a loaded machine, then cut to 15 s for the second run to meet and wait out.
    with source.connect(DB) as src:
        src.execute("SET shardcast.claim_lease = '60s'")
        assert one(src, "SELECT task_id FROM shardcast.claim_task('ghost', %s)", node) == task
    held = run(source, "--node", node, "--no-wait")
    assert held.returncode == 4, held.stdout + held.stderr
    assert f"task {task} (public.t_held_a) on node t_held is held by worker ghost until" in held.stdout
    assert task_state(source, task)[2] == "ghost"
    # Without --no-wait: it says it waits, and takes the task over once the ghost's lease runs out.
    with source.connect(DB) as src:
        src.execute("UPDATE shardcast.replication_tasks SET lease_expires_at = clock_timestamp() + interval '15 s'"
                    " WHERE task_id = %s", [task])
    waited = run(source, "--node", node)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "is held by worker ghost until" in waited.stdout and "; waiting" in waited.stdout
    assert task_state(source, task)[0] == "done"


def test_finish_says_what_there_is_to_finish_where_the_driver_set_nothing_up():
    """An uninstall follows the README: finish first. Where the driver never ran, that is no
    error (it said "add a node"), and a node that cannot be reached and never replicated is not
    said to have left a publication and a slot behind."""
    with running_cluster({"shared_preload_libraries": "''"}, "shardcast-cli-bare") as source:
        with source.connect() as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        with source.connect(DB) as src:
            src.execute("CREATE EXTENSION shardcast")
        none = run(source, "finish")
        assert none.returncode == 0, none.stdout + none.stderr
        assert "nothing to finish: no node in shardcast.nodes has a conninfo" in none.stdout
        # A node whose conninfo was cleared after it replicated: its publication is no "nothing".
        with source.connect(DB) as src:
            src.execute("SELECT shardcast.add_node('ghost', 1e6, 1)")
            src.execute("CREATE PUBLICATION shardcast_ghost")
        cleared = run(source, "finish")
        assert cleared.returncode == 2, cleared.stdout + cleared.stderr
        assert "no node has a conninfo, but shardcast_ghost is on the source" in cleared.stderr
        with source.connect(DB) as src:
            src.execute("DROP PUBLICATION shardcast_ghost")
            src.execute("SELECT shardcast.remove_node('ghost')")
        with source.connect(DB) as src:
            src.execute("SELECT shardcast.add_node('gone', 1e6, 1, 'host=127.0.0.1 port=1 dbname=app connect_timeout=2')")
        gone = run(source, "finish")
        assert gone.returncode == 3, gone.stdout + gone.stderr  # the environment: a node unreachable
        assert "gone: no publication or slot of it on the source" in gone.stderr
        assert "left on the source" not in gone.stderr


def test_finish_leaves_ordinary_tables_and_no_slot_publication_or_subscription(pair):
    source, replica = pair
    node = node_for(source, replica, "t_finish")
    with source.connect(DB) as src:
        src.execute("CREATE TABLE t_finish_a (id int PRIMARY KEY, v text);"
                    "INSERT INTO t_finish_a SELECT i, 'v' || i FROM generate_series(1, 5000) i")
    enqueue(source, "t_finish_a", node)
    refused = run(source, "finish", "--node", node)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "finish refused: 1 task(s) open" in refused.stderr
    synced = run(source, "--node", node)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    source.wait_for_subscribers(DB)
    kept = run(source, "finish", "--node", node, "--keep-replicating")
    assert kept.returncode == 0, kept.stdout + kept.stderr
    with replica.connect(DB) as rep:
        suboid = one(rep, "SELECT oid FROM pg_subscription WHERE subname = 'shardcast_t_finish'")
    assert suboid is not None
    # Removing the node now would leave its publication, slot and subscription with nothing that
    # names them: refused (55006) until finish has taken them down.
    with source.connect(DB) as src:
        with pytest.raises(psycopg.errors.ObjectInUse, match="publication shardcast_t_finish is on the source"):
            src.execute("SELECT shardcast.remove_node(%s)", [node])
    finished = run(source, "finish", "--node", node)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "finished: t_finish hold ordinary tables now" in finished.stdout
    with source.connect(DB) as src, replica.connect(DB) as rep:
        assert one(src, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'shardcast_t_finish'"
                        " OR slot_name LIKE %s", f"pg\\_{suboid}\\_sync\\_%") == 0
        assert one(src, "SELECT count(*) FROM pg_publication WHERE pubname = 'shardcast_t_finish'") == 0
        assert one(rep, "SELECT count(*) FROM pg_subscription WHERE subname = 'shardcast_t_finish'") == 0
        # The replica keeps the rows, as a table of its own: writes on the source no longer reach
        # it, and it takes writes of its own.
        assert one(rep, "SELECT count(*) FROM t_finish_a") == 5000
        src.execute("INSERT INTO t_finish_a VALUES (5001, 'late')")
        rep.execute("INSERT INTO t_finish_a VALUES (6000, 'mine')")
        time.sleep(2)
        assert one(rep, "SELECT count(*) FROM t_finish_a WHERE id = 5001") == 0
    # Again: nothing left to take down.
    again = run(source, "finish", "--node", node)
    assert again.returncode == 0, again.stdout + again.stderr
    with source.connect(DB) as src:
        assert one(src, "SELECT shardcast.remove_node(%s)", node) == 0


@pytest.mark.parametrize("name", ["t_rm", "T_Rm.eu-1", "t_" + "x" * 45, "t_rm_ü", "İstanbul-1", "\u212aelvin"])
def test_remove_node_knows_the_drivers_publication_by_the_drivers_name_for_it(pair, name):
    """remove_node computes the name the driver gives a node's publication (a twin of
    common.channel_name, in SQL): the two must agree, odd names (case, punctuation, length,
    non-ASCII) included."""
    sys.path.insert(0, str(ROOT / "driver"))
    from shardcast_driver.common import channel_name
    source, replica = pair
    node_for(source, replica, name)
    with source.connect(DB) as src:
        src.execute(f'CREATE PUBLICATION "{channel_name(name)}"')
        with pytest.raises(psycopg.errors.ObjectInUse, match=f"publication {channel_name(name)} is on the source"):
            src.execute("SELECT shardcast.remove_node(%s)", [name])
        src.execute(f'DROP PUBLICATION "{channel_name(name)}"')
        # A slot left (finish drops the publication first, and may fail to drop the slot).
        src.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [channel_name(name)])
        with pytest.raises(psycopg.errors.ObjectInUse, match=f"slot {channel_name(name)} is on the source"):
            src.execute("SELECT shardcast.remove_node(%s)", [name])
        src.execute("SELECT pg_drop_replication_slot(%s)", [channel_name(name)])
        assert one(src, "SELECT shardcast.remove_node(%s)", name) == 0


def test_finish_leaves_a_slot_of_another_database_alone(pair):
    source, replica = pair
    node = node_for(source, replica, "t_fslot")
    with source.connect() as conn:
        conn.execute("CREATE DATABASE t_fslot_other")
    try:
        with source.connect("t_fslot_other") as other:
            other.execute("SELECT pg_create_logical_replication_slot('shardcast_t_fslot', 'pgoutput')")
        finished = run(source, "finish", "--node", node)
        assert finished.returncode == 0, finished.stdout + finished.stderr
        with source.connect(DB) as src:
            assert one(src, "SELECT database FROM pg_replication_slots WHERE slot_name = 'shardcast_t_fslot'") \
                == "t_fslot_other"
    finally:
        with source.connect(DB) as src:
            src.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                        " WHERE slot_name = 'shardcast_t_fslot'")


def readme_grants(role: str, without: str | None = None) -> str:
    """The README's GRANT block for the driver's role (up to the optional queue-filling part),
    for `role`, without the lines that contain `without`."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```sql\n(CREATE ROLE replicator .*?)```", readme, re.S).group(1)
    block = block.split("-- and, if the scripts also fill the queue")[0]
    lines = [line for line in block.splitlines() if without is None or without not in line]
    return "\n".join(lines).replace("replicator", role)


def test_a_driver_role_with_exactly_the_readme_grants_syncs(pair):
    source, replica = pair
    node = node_for(source, replica, "t_grants")
    with source.connect(DB) as src:
        src.execute("CREATE ROLE app_owner;"
                    "CREATE TABLE t_grants_a (id int PRIMARY KEY, v text); ALTER TABLE t_grants_a OWNER TO app_owner;"
                    "INSERT INTO t_grants_a SELECT i, 'v' || i FROM generate_series(1, 1000) i")
        src.execute(readme_grants("replicator"))
        assert not one(src, "SELECT rolsuper FROM pg_roles WHERE rolname = 'replicator'")
    task = enqueue(source, "t_grants_a", node)
    dsn = f"host=127.0.0.1 port={source.port} user=replicator dbname={DB}"
    done = run(source, "--node", node, dsn=dsn)
    assert done.returncode == 0, done.stdout + done.stderr
    assert task_state(source, task)[0] == "done"
    source.wait_for_subscribers(DB)
    with replica.connect(DB) as rep:
        assert one(rep, "SELECT count(*) FROM t_grants_a") == 1000
    # Without EXECUTE on alter_node, finish could not disable the node first (a driver started
    # later would set its replication up again): it takes nothing down and names the GRANT.
    with source.connect(DB) as src:
        src.execute(readme_grants("replicator_nofinish", without="alter_node"))
    kept = run(source, "finish", "--node", node, dsn=dsn.replace("user=replicator", "user=replicator_nofinish"))
    assert kept.returncode == 3, kept.stdout + kept.stderr
    assert "GRANT EXECUTE ON FUNCTION shardcast.alter_node(text, double precision, integer, text, boolean) TO " \
           "replicator_nofinish;" in kept.stderr
    with source.connect(DB) as src:
        assert one(src, "SELECT count(*) FROM pg_publication WHERE pubname = %s", f"shardcast_{node}") == 1
        assert one(src, "SELECT enabled FROM shardcast.nodes WHERE node = %s", node)
    finished = run(source, "finish", "--node", node, dsn=dsn)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    with source.connect(DB) as src:
        assert not one(src, "SELECT enabled FROM shardcast.nodes WHERE node = %s", node)

    # One GRANT fewer: the driver says which, and claims nothing.
    node = node_for(source, replica, "t_grants_less")
    with source.connect(DB) as src:
        src.execute("CREATE TABLE t_grants_b (id int PRIMARY KEY); ALTER TABLE t_grants_b OWNER TO app_owner")
        src.execute(readme_grants("replicator_less", without="ON DATABASE"))
    task = enqueue(source, "t_grants_b", node)
    refused = run(source, "--node", node, dsn=dsn.replace("user=replicator", "user=replicator_less"))
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert f"GRANT CREATE ON DATABASE {DB} TO replicator_less;" in refused.stderr
    assert task_state(source, task) == ("queued", 0, None)


def test_a_node_role_that_is_not_a_superuser_is_told_so(pair):
    source, replica = pair
    with replica.connect(DB) as rep:
        rep.execute("CREATE ROLE plain LOGIN")
    with source.connect(DB) as src:
        src.execute("SELECT shardcast.add_node('t_plain', 100e6, 1, %s)",
                    [replica.dsn(DB).replace("user=postgres", "user=plain")])
        src.execute("CREATE TABLE t_plain_a (id int PRIMARY KEY)")
    task = enqueue(source, "t_plain_a", "t_plain")
    done = run(source, "--node", "t_plain")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "ALTER ROLE plain SUPERUSER;" in done.stderr and "PostgreSQL 15 only a superuser" in done.stderr
    assert "add_node" not in done.stderr  # the node is there: its role lacks a privilege
    assert task_state(source, task) == ("queued", 0, None)
