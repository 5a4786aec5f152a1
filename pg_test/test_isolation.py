"""PostgreSQL's isolation tester pins down claim semantics: sessions interleaved step by step
(pg_test/isolation/specs, expected output in pg_test/isolation/expected)."""

import subprocess
from pathlib import Path

HERE = Path(__file__).parent / "isolation"


def test_claim_isolation_specs(cluster, tmp_path):
    with cluster.connect() as conn:
        conn.execute("DROP DATABASE IF EXISTS shardcast_isolation")
        conn.execute("CREATE DATABASE shardcast_isolation")
    pgxs = subprocess.run(["pg_config", "--pgxs"], capture_output=True, text=True, check=True).stdout.strip()
    regress = Path(pgxs).parent.parent / "test/isolation/pg_isolation_regress"
    specs = sorted(p.stem for p in (HERE / "specs").glob("*.spec"))
    result = subprocess.run(
        [str(regress), "--use-existing", "--host=127.0.0.1", f"--port={cluster.port}", "--user=postgres",
         "--dbname=shardcast_isolation", f"--inputdir={HERE}", f"--outputdir={tmp_path}",
         f"--bindir={cluster.bindir}", *specs],
        capture_output=True, text=True)
    diffs = tmp_path / "regression.diffs"
    assert result.returncode == 0, result.stdout + result.stderr + (diffs.read_text() if diffs.exists() else "")
