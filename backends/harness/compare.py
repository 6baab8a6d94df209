"""A run against a baseline: per latency metric, a seeded bootstrap interval on the ratio of medians
(run / baseline) from the per-request samples, and a verdict a CI job can gate on.

Lower is better for every metric here, so with threshold t:
  regression    the whole interval lies above 1 + t (worse by more than t, with confidence);
  pass          the whole interval lies at or below 1 + t (not worse by more than t);
  inconclusive  the interval straddles 1 + t: too noisy, or too few samples, to say.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COMPARE_METRICS = ("ttft", "tpot", "itl", "e2el")
EXIT_PASS, EXIT_REGRESSION, EXIT_INCONCLUSIVE = 0, 1, 3
_MIN_SAMPLES = 5
_MAX_SAMPLES = 4000      # pooled ITL gaps can be many; a seeded subsample keeps the bootstrap fast
_BOOT_CHUNK = 200


@dataclass
class MetricVerdict:
    metric: str
    verdict: str                  # pass | regression | inconclusive
    ratio: float | None           # median(run) / median(baseline)
    low: float | None
    high: float | None
    run_median_ms: float | None
    base_median_ms: float | None
    n_run: int
    n_base: int
    note: str = ""


def samples_ms(run: dict, metric: str) -> np.ndarray:
    """Successful requests' values of one metric; ITL pools every gap of every request."""
    out = []
    for s in run.get("samples") or []:
        if not s.get("ok"):
            continue
        if metric == "itl":
            out.extend(s.get("itl_ms") or [])
        elif s.get(f"{metric}_ms") is not None:
            out.append(s[f"{metric}_ms"])
    return np.asarray(out, dtype=np.float64)


def _boot_medians(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    meds = [np.median(x[rng.integers(0, len(x), (min(_BOOT_CHUNK, n_boot - i), len(x)))], axis=1)
            for i in range(0, n_boot, _BOOT_CHUNK)]
    return np.concatenate(meds)


def bootstrap_ratio(run_ms: np.ndarray, base_ms: np.ndarray, *, n_boot: int = 2000, confidence: float = 0.95,
                    seed: int = 0) -> tuple[float, float, float]:
    """Ratio of medians and its percentile-bootstrap interval (the two samples resampled independently)."""
    rng = np.random.default_rng(seed)
    if len(run_ms) > _MAX_SAMPLES:
        run_ms = rng.choice(run_ms, _MAX_SAMPLES, replace=False)
    if len(base_ms) > _MAX_SAMPLES:
        base_ms = rng.choice(base_ms, _MAX_SAMPLES, replace=False)
    ratio = float(np.median(run_ms) / np.median(base_ms))
    boots = _boot_medians(run_ms, n_boot, rng) / _boot_medians(base_ms, n_boot, rng)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boots[np.isfinite(boots)], [alpha, 1 - alpha])
    return ratio, float(low), float(high)


def compare_metric(run: dict, base: dict, metric: str, threshold: float, *, n_boot: int = 2000,
                   confidence: float = 0.95, seed: int = 0) -> MetricVerdict:
    r, b = samples_ms(run, metric), samples_ms(base, metric)
    if len(r) < _MIN_SAMPLES or len(b) < _MIN_SAMPLES:
        return MetricVerdict(metric, "inconclusive", None, None, None,
                             float(np.median(r)) if len(r) else None, float(np.median(b)) if len(b) else None,
                             len(r), len(b), f"fewer than {_MIN_SAMPLES} samples")
    if np.median(b) <= 0:
        return MetricVerdict(metric, "inconclusive", None, None, None, float(np.median(r)), 0.0, len(r), len(b),
                             "baseline median is 0")
    ratio, low, high = bootstrap_ratio(r, b, n_boot=n_boot, confidence=confidence, seed=seed)
    limit = 1 + threshold
    verdict = "regression" if low > limit else "pass" if high <= limit else "inconclusive"
    return MetricVerdict(metric, verdict, ratio, low, high, float(np.median(r)), float(np.median(b)), len(r), len(b))


def overall_verdict(verdicts: list[MetricVerdict]) -> str:
    kinds = {v.verdict for v in verdicts}
    return "regression" if "regression" in kinds else "inconclusive" if "inconclusive" in kinds else "pass"


def exit_code(overall: str, fail_on_inconclusive: bool) -> int:
    if overall == "regression":
        return EXIT_REGRESSION
    if overall == "inconclusive" and fail_on_inconclusive:
        return EXIT_INCONCLUSIVE
    return EXIT_PASS
