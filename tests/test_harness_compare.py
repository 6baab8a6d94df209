"""Compare verdicts on synthetic samples, and the exit codes a CI job gates on."""
import json

import numpy as np
import typer
from typer.testing import CliRunner

from backends.harness import compare as cmp
from backends.harness.cli import register


def run_with(ttft_ms, seed=0):
    return {"samples": [{"ok": True, "ttft_ms": float(x), "tpot_ms": 10.0, "e2el_ms": float(x) + 100,
                         "itl_ms": [10.0, 10.0]} for x in ttft_ms]}


def lognormal(median, sigma, n, seed):
    return np.random.default_rng(seed).lognormal(np.log(median), sigma, n)


def test_clear_regression():
    v = cmp.compare_metric(run_with(lognormal(120, 0.1, 400, 1)), run_with(lognormal(100, 0.1, 400, 2)), "ttft", 0.05)
    assert v.verdict == "regression" and 1.15 < v.ratio < 1.25 and v.low > 1.05


def test_clear_pass_same_distribution_and_improvement():
    base = run_with(lognormal(100, 0.1, 400, 2))
    assert cmp.compare_metric(run_with(lognormal(100, 0.1, 400, 1)), base, "ttft", 0.05).verdict == "pass"
    assert cmp.compare_metric(run_with(lognormal(80, 0.1, 400, 1)), base, "ttft", 0.05).verdict == "pass"


def test_noisy_is_inconclusive():
    v = cmp.compare_metric(run_with(lognormal(105, 1.0, 30, 1)), run_with(lognormal(100, 1.0, 30, 2)), "ttft", 0.05)
    assert v.verdict == "inconclusive" and v.low < 1.05 < v.high


def test_seeded_and_few_samples():
    a, b = run_with(lognormal(100, 0.3, 100, 1)), run_with(lognormal(100, 0.3, 100, 2))
    assert cmp.compare_metric(a, b, "ttft", 0.05, seed=7) == cmp.compare_metric(a, b, "ttft", 0.05, seed=7)
    assert cmp.compare_metric(run_with([1, 2]), b, "ttft", 0.05).verdict == "inconclusive"


def test_cli_exit_codes(tmp_path):
    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)
    files = {}
    for name, (median, sigma, n, seed) in {"base": (100, 0.1, 400, 2), "same": (100, 0.1, 400, 1),
                                           "slow": (130, 0.1, 400, 1), "noisy": (104, 1.0, 30, 3),
                                           "noisybase": (100, 1.0, 30, 4)}.items():
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(run_with(lognormal(median, sigma, n, seed))))
    cli = CliRunner()

    def code(run, base, *extra):
        return cli.invoke(app, ["bench", "compare", str(files[run]), "--baseline", str(files[base]),
                                "--metrics", "ttft", *extra]).exit_code

    assert code("same", "base") == 0
    assert code("slow", "base") == 1
    assert code("slow", "base", "--threshold", "50%") == 0
    assert code("noisy", "noisybase") == 0
    assert code("noisy", "noisybase", "--fail-on-inconclusive") == 3
    r = cli.invoke(app, ["bench", "compare", "nope", "--baseline", str(files["base"]), "--db", str(tmp_path / "x.db")])
    assert r.exit_code == 2 and "no run 'nope'" in r.output
