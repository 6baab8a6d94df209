"""Synthetic example documents in the input shapes the renderers expect (bench, compare, history).

They are the tests' fixtures and a living example of the formats (reports/README.md): deterministic for a
seed, with vLLM's metric names (docs: /work/shared/reference/metrics.md). Recommend documents are not
synthesized: `plan recommend --json` produces real ones.
"""
from __future__ import annotations

import numpy as np

GPUS = (("H100-SXM", 2.49, 0.70), ("H200", 3.10, 0.70), ("B200", 5.50, 1.00), ("MI300X", 1.85, 0.75),
        ("A100-80GB-SXM", 1.29, 0.40), ("L40S", 0.86, 0.35))


def _stats(name: str, ms: np.ndarray) -> dict:
    if ms.size == 0:
        return {}
    out = {f"mean_{name}_ms": float(ms.mean()), f"median_{name}_ms": float(np.median(ms)),
           f"std_{name}_ms": float(ms.std())}
    for p in (50, 90, 95, 99):
        out[f"p{p}_{name}_ms"] = float(np.percentile(ms, p))
    return out


def bench_doc(n: int = 500, seed: int = 0, rate_rps: float = 20.0, fail_fraction: float = 0.01,
              mean_output: int = 128) -> dict:
    """A run document shaped like `plan bench run --json --per-request` (backends/harness/bench.py):
    n requests with per-request samples, and metrics computed from those samples."""
    rng = np.random.default_rng(seed)
    starts = np.cumsum(rng.exponential(1 / rate_rps, n))
    starts -= starts[0]
    outs = np.clip(rng.lognormal(np.log(mean_output), 0.4, n).astype(int), 2, 4 * mean_output)
    ins = np.clip(rng.lognormal(np.log(1024), 0.3, n).astype(int), 16, 8192)
    failed = rng.random(n) < fail_fraction
    samples, ends, errors = [], [], {}
    ttfts, tpots, e2els, itls = [], [], [], []
    for i in range(n):
        row = {"i": i, "ok": not failed[i], "error": None, "t_start_s": round(float(starts[i]), 6),
               "prompt_tokens": int(ins[i])}
        if failed[i]:
            err = "HTTP 503: Service Unavailable" if rng.random() < 0.7 else "timeout after 300 s"
            errors[err] = errors.get(err, 0) + 1
            samples.append({**row, "error": err, "ttft_ms": None, "tpot_ms": None, "e2el_ms": None, "itl_ms": [],
                            "output_tokens": 0})
            ends.append(float(starts[i]))
            continue
        ttft = float(rng.lognormal(np.log(0.12), 0.35))
        gaps = rng.gamma(8.0, 0.025 / 8.0, outs[i] - 1)
        gaps[rng.random(gaps.size) < 0.01] += 0.15           # stalls behind other requests' prefills
        e2el = ttft + float(gaps.sum())
        tpot = (e2el - ttft) / (outs[i] - 1)
        samples.append({**row, "ttft_ms": round(ttft * 1e3, 4), "tpot_ms": round(tpot * 1e3, 4),
                        "e2el_ms": round(e2el * 1e3, 4), "itl_ms": (gaps * 1e3).round(4).tolist(),
                        "output_tokens": int(outs[i])})
        ends.append(float(starts[i]) + e2el)
        ttfts.append(ttft)
        e2els.append(e2el)
        tpots.append(tpot)
        itls.append(gaps)
    ok = ~failed
    duration = max(ends)
    total_out = int(outs[ok].sum())
    metrics = {"completed": int(ok.sum()), "failed": int(failed.sum()), "duration": duration,
               "total_input_tokens": int(ins[ok].sum()), "total_output_tokens": total_out,
               "request_throughput": int(ok.sum()) / duration, "output_throughput": total_out / duration,
               "total_token_throughput": (int(ins[ok].sum()) + total_out) / duration,
               "concurrency_littles_law": sum(e2els) / duration}
    for name, vals in (("ttft", ttfts), ("tpot", tpots), ("e2el", e2els)):
        metrics.update(_stats(name, np.asarray(vals) * 1e3))
    metrics.update(_stats("itl", np.concatenate(itls) * 1e3 if itls else np.array([])))
    predicted = {"mean_ttft_ms": 110.0, "mean_tpot_ms": 24.0, "mean_e2el_ms": metrics["mean_e2el_ms"] * 0.9,
                 "p90_ttft_ms": 190.0, "output_throughput": metrics["output_throughput"] * 1.08,
                 "request_throughput": rate_rps * 1.02}
    vs = [{"metric": k, "measured": metrics[k], "predicted": v, "error": (metrics[k] - v) / v}
          for k, v in predicted.items()]
    plan = {"model": "Llama-3.1-8B", "hardware": "H100-SXM", "num_gpus": 1, "tp": 1, "pp": 1, "replicas": 1,
            "weight_dtype": "bf16", "kv_dtype": "bf16", "max_num_seqs": 256, "max_num_batched_tokens": 8192}
    return {"schema": 1, "created_at": "2026-11-20T10:00:00+00:00", "tag": "nightly", "backend": "vllm",
            "status": "complete", "status_detail": "", "exit_code": int(failed.any()), "not_sent": 0,
            "plan": plan,
            "config": {"load": {"rate_rps": rate_rps, "arrival": "poisson", "num_requests": n, "seed": seed},
                       "workload": {"input_tokens": {"kind": "lognormal", "mean": 1024},
                                    "output_tokens": {"kind": "lognormal", "mean": mean_output}},
                       "slos": ["ttft<=500ms"]},
            "server": {"base_url": "http://127.0.0.1:8000", "served_model": "llama-8b", "version": "0.33.0"},
            "metrics": metrics,
            "client": {"offered_rate_rps": rate_rps, "p99_dispatch_lag_ms": 0.4, "client_bound": False},
            "errors": [{"error": e, "count": c} for e, c in sorted(errors.items(), key=lambda kv: -kv[1])],
            "versions": {"vllm": "0.33.0", "planner": "0.1.0"}, "gpu": "NVIDIA H100 80GB HBM3",
            "git_rev": "4e2beff", "command": f"plan bench run --plan plan.yaml --rate {rate_rps:g} --num-requests {n}",
            "samples": samples, "vs_predicted": vs}


def vllm_result_doc(n: int = 200, seed: int = 1) -> dict:
    """The same kind of run as `vllm bench serve --save-result --save-detailed` writes it: flat metrics
    and per-request columns in seconds (no start times, so no time axis)."""
    run = bench_doc(n, seed)
    rows = run["samples"]
    flat = {"date": "20261120-100000", "backend": "vllm", "model_id": "meta-llama/Llama-3.1-8B-Instruct",
            "num_prompts": n, "request_rate": 20.0, "burstiness": 1.0, "max_concurrency": None}
    flat.update(run["metrics"])
    flat.update({"input_lens": [r["prompt_tokens"] for r in rows], "output_lens": [r["output_tokens"] for r in rows],
                 "ttfts": [(r["ttft_ms"] or 0.0) / 1e3 for r in rows],
                 "itls": [[g / 1e3 for g in r["itl_ms"]] for r in rows],
                 "generated_texts": ["" for _ in rows], "errors": [r["error"] or "" for r in rows]})
    return flat


def compare_doc() -> dict:
    """A procurement table: the best plan per GPU type for one model and workload."""
    rows = []
    for i, (gpu, price, kw) in enumerate(GPUS):
        gpus = (2, 2, 1, 1, 4, 8)[i]
        replicas = (3, 2, 2, 4, 3, 2)[i]
        n = gpus * replicas
        tok_gpu = (2300, 3100, 5200, 2600, 1100, 520)[i]
        rows.append({"gpu": gpu, "plan": f"TP{gpus} x{replicas} bf16", "gpus": n, "nodes": -(-n // 8),
                     "cost_per_hour": price * n, "cost_per_million_tokens": price / (tok_gpu * 3600 / 1e6),
                     "tokens_per_s_per_gpu": tok_gpu, "power_kw": kw * n, "headroom": (0.35, 0.22, 0.6, 0.15,
                                                                                        0.05, -0.1)[i],
                     "meets_slo": i < 5})
    return {"model": "Llama-3.1-70B", "workload": {"input_tokens": 1024, "output_tokens": 256, "rate_rps": 20},
            "slos": ["ttft<=500ms", "tpot<=50ms"], "rows": rows}


def history_runs(n: int = 30, seed: int = 0) -> list[dict]:
    """CI run records, oldest first, with per-metric verdicts from a regression gate."""
    rng = np.random.default_rng(seed)
    runs = []
    for i in range(n):
        slow = 1.25 if i in (17, 18) else 1.0              # a regression, fixed two runs later
        m = {"mean_ttft_ms": float(120 * slow * rng.normal(1, 0.03)),
             "p99_ttft_ms": float(260 * slow * rng.normal(1, 0.05)),
             "mean_tpot_ms": float(24 * rng.normal(1, 0.02)),
             "p99_itl_ms": float(70 * rng.normal(1, 0.06)),
             "output_throughput": float(2400 / slow * rng.normal(1, 0.03))}
        verdicts = {k: ("regression" if slow > 1 and k in ("mean_ttft_ms", "p99_ttft_ms", "output_throughput")
                        else "pass") for k in m}
        runs.append({"run_id": f"run-{1000 + i}", "commit": f"{rng.integers(0, 16 ** 7):07x}",
                     "timestamp": f"2026-11-{1 + i // 2:02d}T{10 + i % 2 * 6:02d}:00:00Z", "branch": "main",
                     "metrics": m, "verdicts": verdicts,
                     "verdict": "regression" if slow > 1 else "pass"})
    return runs
