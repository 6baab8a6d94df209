"""benchmarks/accuracy_report.py on a bench_accuracy.py-shaped directory (synthetic, no torch)."""
import gzip
import importlib.util
import json
from pathlib import Path

import pytest

from planner import catalog
from tests.test_calibrate import synthetic_trace

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("accuracy_report", ROOT / "benchmarks" / "accuracy_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("gzipped", [False, True])
def test_report_on_synthetic_machine(tmp_path, gzipped):
    hw = catalog.load_hardware("h100", "datasheet")
    spec = catalog.load_model("llama-8b")
    trace = synthetic_trace(tmp_path / "step_trace.jsonl", hw, spec)
    if gzipped:     # how the committed results keep large traces
        trace.with_name(trace.name + ".gz").write_bytes(gzip.compress(trace.read_bytes()))
        trace.unlink()
    case = {"model": spec.name, "weight_dtype": "bf16", "kv_dtype": "bf16", "tp": 1,
            "engine": {"max_num_seqs": 256, "max_num_batched_tokens": 8192, "gpu_memory_utilization": 0.9,
                       "block_size": 16},
            "kv_cache": {"kv_capacity_tokens": 400000}}
    step = {"meta": {"gpu": "H100-SXM", "device_name": "synthetic", "device_count": 1, "command": "test"},
            "cases": [case, {**case, "weight_dtype": "fp8", "kv_cache": None, "error": "CUDA out of memory", "oom": True}]}
    (tmp_path / "step.json").write_text(json.dumps(step))
    out = tmp_path / "ACCURACY.md"
    assert _module().main([str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    for needle in ("step level (held-out points)", "calibrated ms (err)", "datasheet ms (err)", "median",
                   "Pooled over 4 seeded splits (seeds 0-3",
                   "engine KV tokens", "Planned as fitting but out of memory: Llama-3.1-8B fp8 TP1", "## Reproduce"):
        assert needle in text, needle
    # the summary leads, one row per machine; this grid says nothing of its prompts: flagged as repeated ids
    assert text.index("## Summary") < text.index("## H100-SXM")
    row = next(line for line in text.splitlines() if line.startswith("| H100-SXM *"))
    assert row.count("%") == 4          # seed split and pooled steps, median / p90 each; no served runs here


def test_tiny_grid_serving_and_async_runs_end_to_end(tmp_path):
    """bench_accuracy.py on the CPU (tiny model: step grid + served runs, then served runs with async scheduling)
    and the report over both directories: the serving rows with realised load and intervals, the server's
    intake and garbage collection, and the async directory predicted by the first one's calibration."""
    import subprocess
    import sys

    import pytest
    pytest.importorskip("torch")
    grid, overlapped = tmp_path / "CPU", tmp_path / "CPU-async"
    bench = [sys.executable, str(ROOT / "benchmarks" / "bench_accuracy.py"), "--device", "cpu", "--tiny"]
    subprocess.run([*bench, "--out-dir", str(grid)], check=True, capture_output=True, timeout=600)
    # Cheap points take more measured steps than the grid's least (3), up to its cap (6): tiny CPU steps are cheap,
    # unless a loaded machine stretches one past a sixth of the point's 1 s measuring time.
    step = json.loads((grid / "step.json").read_text())
    counts = [len(p["times_s"]) for case in step["cases"] for p in case["points"]]
    assert all(3 <= n <= 6 for n in counts) and counts.count(6) >= len(counts) // 2
    subprocess.run([*bench, "--only", "serving", "--async-scheduling", "--out-dir", str(overlapped)], check=True,
                   capture_output=True, timeout=600)
    doc = json.loads((overlapped / "serving.json").read_text())
    assert doc["kv_cache"]["async_scheduling"] and all(len(r["samples"]) == r["metrics"]["completed"]
                                                       for r in doc["runs"])
    out = tmp_path / "ACCURACY.md"
    assert _module().main([str(grid), str(overlapped), "--out", str(out)]) == 0
    text = out.read_text()
    for needle in ("serving level (never fitted)", "| load | realised | requests |", "calibrated interval",
                   "the server around the engine", "intake p50 ms", "Garbage collection:",
                   "CPU (tiny) (CPU-async: async_scheduling True)"):
        assert needle in text, needle
    rows = [line for line in text.split("## Summary")[1].split("\n## ")[0].splitlines() if line.startswith("| CPU")]
    assert len(rows) == 2 and rows[0].startswith("| CPU (tiny) |")      # random prompt ids: no mark
    assert all(line.count("%") >= 4 and " of " in line for line in rows)   # served metrics and the interval count


def test_directory_profile_is_the_machines_own(tmp_path):
    """A directory holding its machine's measured profile is calibrated from that, not the catalog's, and is
    named by the directory (several machines of one kind in one report)."""
    mod = _module()
    own = catalog.load_hardware("h100", "measured")
    own = own.model_copy(update={"efficiency": own.efficiency.model_copy(update={"step_overhead_s": 0.00123})})
    own.dump(tmp_path / "profile.yaml")
    step = {"meta": {"gpu": "H100-SXM"}}
    assert mod.profiles(step, tmp_path)["measured"].efficiency.step_overhead_s == 0.00123
    assert mod.profiles(step)["measured"].efficiency.step_overhead_s != 0.00123


def test_served_steps_fit_the_cost_of_decodes_beside_a_prompt(tmp_path):
    """benchmarks/bench_served_steps.py's reading of a trace: only steps of one prompt of that length with decodes,
    their median by 16-decode bucket and the fitted line."""
    spec = importlib.util.spec_from_file_location("bench_served_steps", ROOT / "benchmarks" / "bench_served_steps.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    steps = [{"event": "config"}]
    for n in (1, 5, 20, 40, 70):
        steps.append({"step": n, "time_s": 0.02 + 1e-4 * n, "prefill_query_lens": [1024], "num_decode_seqs": n})
    steps += [{"step": 99, "time_s": 9.0, "prefill_query_lens": [], "num_decode_seqs": 30},          # decode-only
              {"step": 98, "time_s": 9.0, "prefill_query_lens": [512, 512], "num_decode_seqs": 3}]   # other prompts
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(json.dumps(s) for s in steps) + "\n")
    got = mod.mixed_steps(trace, 1024)
    assert got["steps"] == 5
    assert got["ms_per_decode"] == pytest.approx(0.1) and got["ms_at_0"] == pytest.approx(20.0)
    assert got["median_ms_by_decodes"] == {0: pytest.approx(20.3), 16: 22.0, 32: 24.0, 64: 27.0}


def test_shipped_directory_is_predicted_by_the_shipped_profiles_unfitted(tmp_path):
    """A --shipped directory: every step point predicted by hw_profiles/ as `plan` loads them, nothing fitted. Steps
    timed by the shipped calibrated profile itself are predicted exactly by it, and not by the datasheet profile."""
    from planner import calibrate as cal
    shipped = catalog.load_hardware("h100", "calibrated")
    spec = catalog.load_model("llama-8b")
    machine = tmp_path / "H100-check"
    machine.mkdir()
    synthetic_trace(machine / "step_trace.jsonl", shipped, spec, params=cal.initial_params(shipped))
    case = {"model": spec.name, "weight_dtype": "bf16", "kv_dtype": "bf16", "tp": 1, "prompt_ids": "random",
            "engine": {"max_num_seqs": 256, "max_num_batched_tokens": 8192, "gpu_memory_utilization": 0.9,
                       "block_size": 16}, "kv_cache": {"kv_capacity_tokens": 400000}}
    (machine / "step.json").write_text(json.dumps({"meta": {"gpu": "H100-SXM", "device_name": "synthetic",
                                                            "command": "test"}, "cases": [case]}))
    out = tmp_path / "ACCURACY.md"
    assert _module().main([str(machine), "--shipped", str(machine), "--out", str(out)]) == 0
    text = out.read_text()
    name = "H100-SXM (H100-check: the shipped profiles, nothing fitted)"
    section = text.split(f"## {name}\n")[1]
    assert f"### {name}: step level (every point)" in section
    line = next(ln for ln in section.splitlines() if ln.startswith("Relative error, absolute:"))
    assert "**calibrated** n=22, median 0.0%, p90 0.0%" in line and "**datasheet** n=22, median 0.0%" not in line
    row = next(ln for ln in text.split("## Summary")[1].splitlines() if ln.startswith(f"| {name} |"))
    assert row.startswith(f"| {name} | 0.0% / 0.0% |")
    assert f"--shipped {machine}" in text.split("## Reproduce")[1]


def test_a_shipped_directory_the_calibration_read_is_labelled_fitted(tmp_path, monkeypatch):
    """fitted_by follows the shipped calibration's provenance: a directory whose trace it read is in-sample, any
    other is a machine it never saw."""
    monkeypatch.chdir(tmp_path)
    shipped = catalog.load_hardware("h200", "calibrated")
    prov = shipped.provenance.model_copy(update={"data_files": ["runs/A/step_trace.jsonl", "runs/A/serving.json"]})
    profile = shipped.model_copy(update={"provenance": prov})
    report = _module()
    assert report.fitted_by(profile, tmp_path / "runs" / "A") and report.fitted_by(profile, Path("runs/A"))
    assert not report.fitted_by(profile, Path("runs/B"))


def test_the_shipped_h200_calibration_is_the_one_its_recipe_fits(monkeypatch):
    """hw_profiles/calibrated/H200.yaml was fitted on exactly the machines ACCURACY.md's Reproduce recipe names, so a
    --shipped machine outside them was never seen by it."""
    monkeypatch.chdir(ROOT)
    report, shipped = _module(), catalog.load_hardware("h200", "calibrated")
    assert {str(Path(f).parent) for f in shipped.provenance.data_files} == set(report.SHIPPED_FIT)
    assert not report.fitted_by(shipped, ROOT / "benchmarks/results/accuracy/H200-grid19")
