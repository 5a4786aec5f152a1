import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cluster import Cluster, wait_for  # noqa: E402

DB = "shardcast_e2e"


@pytest.fixture(scope="session")
def cluster():
    """One publisher-like cluster with the worker sampling `shardcast_e2e` every second.

    The database is created after the server starts and the extension a little later, so that
    every run also checks that the worker waits for both without crashing or flooding the log.
    """
    c = Cluster({"shardcast.database": f"'{DB}'", "shardcast.sample_interval": "'1s'",
                 "shardcast.refresh_interval": "'2s'"}, "shardcast-e2e")
    c.start()
    try:
        with c.connect() as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        wait_for("the worker to wait for CREATE EXTENSION",
                 lambda: "waiting for CREATE EXTENSION" in c.log_text(), timeout=30)
        time.sleep(3)
        with c.connect(DB) as conn:
            conn.execute("CREATE EXTENSION shardcast")
        yield c
    finally:
        c.stop()
        if not __import__("os").environ.get("SHARDCAST_KEEP_CLUSTER"):
            c.destroy()


@pytest.fixture
def db(cluster):
    with cluster.connect(DB) as conn:
        yield conn
