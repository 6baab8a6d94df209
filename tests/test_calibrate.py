"""plan calibrate: recovery of known parameters from synthetic traces, the split, residuals, CLI errors."""
import json
import os
import subprocess
import sys

import pytest

from planner import calibrate as cal
from planner import catalog, uncertainty
from planner.arrivals import harness_requests
from planner.costmodel import Batch, Deployment, step_time_s
from planner.schemas import HardwareProfile

TRUE = {"step_overhead_s": 3e-4, "graph_kernel_overhead_s": 2e-6, "attention_compute": 0.45,
        "attention_memory": 0.7, "gemm_compute_scale": 0.85, "memory_scale": 0.9}


def synthetic_trace(path, hw, spec, params=TRUE):
    """Steps timed by the cost model with `params`: lone prefills and decode points, as bench_accuracy writes."""
    truth = cal.apply_params(hw, params)
    d = Deployment(spec)
    lines = [{"event": "config", "model": spec.model_dump(mode="json"), "tp": 1,     # what today's engine reports
              "piecewise_sizes": list(d.piecewise_sizes), "varlen_prefill": d.varlen_prefill}]
    step = 0
    # Chunks after a long context make attention a large share of some prefill steps.
    for n, before in ((128, 0), (512, 0), (2048, 0), (8192, 0), (1024, 7168), (2048, 30720), (512, 15872)):
        step += 1
        lines.append({"step": step, "point": f"p{n}+{before}", "num_prefill_tokens": n, "prefill_query_lens": [n],
                      "prefill_context_lens": [n + before], "num_decode_seqs": 0, "decode_context_len_sum": 0,
                      "cuda_graph_batch_size": None, "time_s": step_time_s(truth, d, Batch.of([(n, before)]))})
    for bs in (1, 4, 16, 64, 256):
        for ctx in (128, 1024, 8192):
            step += 1
            t = step_time_s(truth, d, Batch(0, 0, 0.0, 0, bs, bs * ctx))
            lines.append({"step": step, "point": f"d{bs}x{ctx}", "num_prefill_tokens": 0, "prefill_query_lens": [],
                          "prefill_context_lens": [], "num_decode_seqs": bs, "decode_context_len_sum": bs * ctx,
                          "cuda_graph_batch_size": bs, "time_s": t})
    lines.insert(2, {**lines[1], "step": 0, "warmup": True, "time_s": 9.9})     # a JIT warm-up step: ignored
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    hw = catalog.load_hardware("h100", "datasheet")
    spec = catalog.load_model("llama-8b")
    return hw, spec, synthetic_trace(tmp_path_factory.mktemp("cal") / "t.jsonl", hw, spec)


def test_recovers_known_parameters(setup):
    hw, _, trace = setup
    c = cal.calibrate(hw, [trace], names=tuple(TRUE), holdout=0.2, seed=1)
    for k, v in TRUE.items():
        assert c.params[k] == pytest.approx(v, rel=0.05), k
    assert max(abs(e) for e in c.residuals["step"]) < 0.01


def test_split_is_seeded_and_by_point(setup):
    hw, spec, trace = setup
    points = cal.load_trace(trace)
    assert len(points) == 22 and all(p.time_s < 9 for p in points)     # the warm-up step is left out
    a = cal.split(points, 0.3, seed=7)
    b = cal.split(points, 0.3, seed=7)
    assert [p.group for p in a[1]] == [p.group for p in b[1]]
    assert {p.group for p in a[0]}.isdisjoint({p.group for p in a[1]})
    assert len(a[1]) == round(0.3 * 22)
    assert [p.group for p in cal.split(points, 0.3, seed=8)[1]] != [p.group for p in a[1]]


def test_residuals_written_and_read_by_uncertainty(setup, tmp_path):
    hw, _, trace = setup
    c = cal.calibrate(hw, [trace], names=("step_overhead_s", "memory_scale"), holdout=0.5)
    path = tmp_path / "H100.yaml"
    c.profile.dump(path)
    back = HardwareProfile.load(path)
    assert back.provenance.kind == "calibrated" and back.provenance.data_files == [str(trace)]
    res = back.measured["residuals"]
    assert set(res) >= {"step", "tpot", "ttft"} and len(res["tpot"]) >= uncertainty.MIN_RESIDUALS
    lo, hi, basis = uncertainty.relative_band(back, "tpot")
    assert lo <= hi and "calibration residuals" in basis


def _plan(*args, cwd):
    return subprocess.run([sys.executable, "-m", "planner.cli", "calibrate", *args], capture_output=True, text=True,
                          cwd=cwd)


def test_cli_errors_are_one_line_exit_2(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for args in (["--gpu", "h200", "--trace", str(tmp_path / "missing.jsonl")],
                 ["--gpu", "h200", "--trace", str(empty), "--model", "llama-8b"],
                 ["--gpu", "h200"]):
        r = _plan(*args, "--out", str(tmp_path / "o.yaml"), cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error:")


def test_cli_writes_profile_and_json(setup, tmp_path):
    _, _, trace = setup
    out = tmp_path / "cal.yaml"
    r = _plan("--gpu", "h100", "--profile", "datasheet", "--trace", str(trace), "--params",
              "step_overhead_s,memory_scale", "--out", str(out), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc["params"]) == {"step_overhead_s", "memory_scale"}
    assert HardwareProfile.load(out).provenance.kind == "calibrated"


def _plan_env(*args, cwd, hw_path):
    return subprocess.run([sys.executable, "-m", "planner.cli", "calibrate", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, catalog.HW_PATH_ENV: str(hw_path)})


def test_default_output_is_where_profile_auto_looks(setup, tmp_path):
    """Without --out the fit goes where `--profile auto` finds it first (here the $PLAN_HW_PATH folder), not over
    hw_profiles/measured/, which auto ranks below hw_profiles/calibrated/. L4 ships no measured profile, so the
    old default would not clobber a tracked file while this test fails."""
    _, _, trace = setup
    mine = tmp_path / "profiles"
    mine.mkdir()
    r = _plan_env("--gpu", "l4", "--profile", "datasheet", "--trace", str(trace), "--params", "step_overhead_s",
                  "--json", cwd=tmp_path, hw_path=mine)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["out"] == str(mine / "calibrated" / "L4.yaml") and doc["used_by_auto"]
    assert HardwareProfile.load(doc["out"]).provenance.kind == "calibrated"


def test_default_output_never_replaces_an_existing_profile(setup, tmp_path):
    _, _, trace = setup
    existing = tmp_path / "profiles" / "calibrated" / "L4.yaml"
    existing.parent.mkdir(parents=True)
    existing.write_text("shipped: true\n")
    r = _plan_env("--gpu", "l4", "--profile", "datasheet", "--trace", str(trace), cwd=tmp_path,
                  hw_path=tmp_path / "profiles")
    assert r.returncode == 2 and "exists and is not replaced" in r.stderr and "--out" in r.stderr, r.stderr
    assert existing.read_text() == "shipped: true\n"


def test_fp8_decode_points_excluded_and_harness_arrivals(setup):
    from dataclasses import replace

    import numpy as np

    from planner.schemas import LengthDist, Workload
    hw, spec, trace = setup
    points = cal.load_trace(trace)
    dec = next(p for p in points if p.kind == "decode")
    pre = next(p for p in points if p.kind == "prefill")
    old_fp8 = replace(dec, deployment=replace(dec.deployment, weight_dtype="fp8", varlen_prefill=False))
    assert cal.excluded_why(old_fp8) and not cal.excluded_why(dec) and not cal.excluded_why(
        replace(pre, deployment=replace(pre.deployment, weight_dtype="fp8", varlen_prefill=False)))
    assert not cal.excluded_why(replace(dec, deployment=replace(dec.deployment, weight_dtype="fp8")))
    w = Workload(input_tokens=LengthDist(mean=16), output_tokens=LengthDist(mean=4), rate_rps=10.0)
    r = harness_requests(w, 5, 3)
    g = np.random.default_rng(3).gamma(1.0, 0.1, 5)
    assert np.allclose(r.arrival_s, [0, *np.cumsum(g[:4])])     # backends/harness/runner.py's schedule
