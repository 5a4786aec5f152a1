"""Runs last (pytest takes files in name order): stop the server and read what the worker said."""


def test_clean_exit_on_shutdown(cluster):
    cluster.stop()
    log = cluster.log_text()
    assert "shardcast worker exiting" in log
    assert "terminated by signal" not in log
    assert "PANIC" not in log
    assert "panicked" not in log
