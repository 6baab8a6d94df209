"""The results database under concurrent writers: no run is lost."""
import multiprocessing as mp

from backends.harness import results_db

N_PROCS, N_RUNS = 4, 50


def _writer(path: str, proc: int) -> None:
    for i in range(N_RUNS):
        results_db.save_run({"created_at": "2026-01-01T00:00:00", "tag": f"w{proc}", "backend": "url",
                             "status": "complete", "plan": {"model": "m", "hardware": "h"},
                             "metrics": {"completed": i}, "samples": [{"ok": True, "ttft_ms": float(i)}]}, path)


def test_four_processes_fifty_runs_each(tmp_path):
    path = str(tmp_path / "results.db")
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, p)) for p in range(N_PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    runs = results_db.list_runs(path, limit=10_000)
    assert len(runs) == N_PROCS * N_RUNS
    for p in range(N_PROCS):
        assert sorted(r["metrics"]["completed"] for r in runs if r["tag"] == f"w{p}") == list(range(N_RUNS))
    latest = results_db.load_run("w0", path)
    assert latest["metrics"]["completed"] == N_RUNS - 1 and latest["samples"][0]["ttft_ms"] == N_RUNS - 1
    assert results_db.load_run(str(runs[-1]["id"]), path)["id"] == runs[-1]["id"]


def test_env_var_picks_the_database(tmp_path, monkeypatch):
    monkeypatch.setenv("PLAN_RESULTS_DB", str(tmp_path / "env.db"))
    assert results_db.db_path() == tmp_path / "env.db"
    assert results_db.load_run("1") is None
