"""Build the measured HardwareProfile: the catalog's datasheet entry (or a synthetic one for the CPU
and for GPUs the catalog lacks) with its Efficiency fields replaced by what was measured, the raw
tables under `measured`, and provenance. Also merges collective curves into an existing profile."""
from __future__ import annotations

import datetime
import os
import statistics
from pathlib import Path
from typing import Optional

from planner.schemas import CurvePoint, Efficiency, HardwareProfile, Interconnect, Provenance, Sourced
from profilers import fit
from profilers.device import DeviceInfo


def default_output_path(name: str) -> Path:
    return Path("hw_profiles") / "measured" / f"{name}.yaml"


def catalog_datasheet(name: str) -> Optional[HardwareProfile]:
    """The catalog's datasheet profile for `name`, or None when the catalog or the entry is missing."""
    try:
        from planner.catalog import load_hardware
    except ImportError:
        return None
    try:
        return load_hardware(name, profile="datasheet")
    except Exception:                       # unknown GPU: a PlanError/KeyError, whatever the catalog raises
        return None


def synthetic_datasheet(device: DeviceInfo, raw: dict) -> HardwareProfile:
    """A stand-in 'datasheet' whose ceilings are the best measured rates, so every efficiency is <= 1.
    Used for the CPU and for GPUs the catalog does not know; marked as such in `sources`."""
    holdout = raw.get("holdout", {})
    peaks: dict[str, float] = {}
    for row in raw.get("gemm", []) + holdout.get("gemm", []):
        dtype = fit.compute_dtype(row["dtype"])
        flops = 2.0 * row["m"] * row["n"] * row["k"]
        peaks[dtype] = max(peaks.get(dtype, 0.0), flops / row["seconds"])
    # Nothing measured at all (--only launch): 1.0 keeps the profile valid; its efficiencies mean nothing.
    peaks.setdefault("bf16", max(peaks.values(), default=1.0))
    copies = raw.get("bandwidth", []) + holdout.get("copy", [])
    bandwidth = max((r["bytes_moved"] / r["seconds"] for r in copies), default=1.0)
    if device.kind == "cpu":
        memory = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    else:
        memory = float(device.gpus[0].memory_bytes)
    today = datetime.date.today().isoformat()
    note = "synthetic: best rate measured by profilers on this machine"
    return HardwareProfile(
        name=device.catalog_name,
        vendor="other" if device.kind == "cpu" else "nvidia",
        memory_bytes=memory,
        memory_bandwidth_bytes_per_s=bandwidth,
        peak_flops=peaks,
        # No interconnect figure exists for a synthetic device; the memory bandwidth keeps the field valid.
        interconnect=Interconnect(kind="none", bandwidth_bytes_per_s=bandwidth, gpus_per_node=device.count,
                                  source=note),
        tdp_w=(device.gpus[0].power_limit_w if device.gpus and device.gpus[0].power_limit_w else 1.0),
        price_per_gpu_hour=0.0,
        sources={"peak_flops": {"value": peaks["bf16"], "source": note, "date": today},
                 "memory_bandwidth_bytes_per_s": {"value": bandwidth, "source": note, "date": today}},
    )


def attention_fractions(raw: dict, peak_bf16: float, bandwidth: float, eff: Efficiency) -> None:
    prefill, decode = raw.get("prefill", []), raw.get("decode", [])
    if prefill:
        # The scalar from the first (primary) head size's longest sequences; a curve per head size.
        primary = [r for r in prefill if r["head_dim"] == prefill[0]["head_dim"]]
        longest = sorted(primary, key=lambda r: r["seq"])[-2:]
        eff.attention_compute = statistics.median(r["flops"] / r["seconds"] / peak_bf16 for r in longest)
        # Flash attention's efficiency grows with the sequence (more query tiles per head, less diagonal waste)
        # and with the head size.
        eff.attention_compute_by_len = {
            str(d): [CurvePoint(x=r["seq"], y=r["flops"] / r["seconds"] / peak_bf16)
                     for r in sorted(prefill, key=lambda r: r["seq"]) if r["head_dim"] == d]
            for d in sorted({r["head_dim"] for r in prefill})}
    if decode:
        # The scalar from the primary head size's biggest reads; other head sizes as factors of it.
        def biggest_eff(head_dim):
            rows = sorted((r for r in decode if r.get("head_dim", head_dim) == head_dim), key=lambda r: r["kv_bytes"])
            return statistics.median(r["kv_bytes"] / r["seconds"] / bandwidth for r in rows[-2:])
        primary = decode[0].get("head_dim")
        eff.attention_memory = biggest_eff(primary)
        # A call's fixed time: what is left beyond its stream at that efficiency, median over the rows with
        # programs enough to fill the GPU (one sequence's few split programs stream slower instead).
        rest = [r["seconds"] - r["kv_bytes"] / (bandwidth * eff.attention_memory) for r in decode
                if r.get("head_dim", primary) == primary and r["batch"] >= 8]
        if rest:
            eff.attention_decode_latency_s = max(0.0, statistics.median(rest))
        dims = sorted({r["head_dim"] for r in decode if "head_dim" in r})
        if len(dims) > 1:
            eff.attention_memory_by_head_dim = {str(d): biggest_eff(d) / eff.attention_memory for d in dims}


def apply_collectives(eff: Efficiency, results: dict[str, dict], link_bytes_per_s: float) -> dict:
    """Write allreduce_by_bytes for every group size, alpha and busbw from the largest group (the
    one tensor parallelism stresses most); return the fitted scalars per group for `measured`."""
    fits = {}
    for n, res in sorted(results.items(), key=lambda kv: int(kv[0])):
        eff.allreduce_by_bytes[str(n)] = fit.seconds_curve(res["sizes"], res["all_reduce"])
        alpha, busbw = fit.allreduce_fit(res["sizes"], res["all_reduce"], int(n))
        fits[str(n)] = {"alpha_s": alpha, "busbw_bytes_per_s": busbw}
        graph = res.get("all_reduce_graph")
        if graph:
            fits[str(n)]["graph_alpha_s"] = fit.allreduce_fit(graph["sizes"], graph["seconds"], int(n))[0]
    if fits:
        largest = fits[max(fits, key=int)]
        eff.allreduce_alpha_s = largest["alpha_s"]
        if largest["busbw_bytes_per_s"]:
            eff.allreduce_busbw_fraction = largest["busbw_bytes_per_s"] / link_bytes_per_s
    return fits


def apply_measurements(base: HardwareProfile, raw: dict) -> tuple[Efficiency, dict]:
    """New Efficiency (measured fields replaced, the rest kept from `base`) and the `measured` tables."""
    eff = base.efficiency.model_copy(deep=True)
    bandwidth = base.memory_bandwidth_bytes_per_s
    measured: dict = {}
    if raw.get("bandwidth"):
        eff.memory_by_bytes = fit.memory_curve(raw["bandwidth"], bandwidth)
        eff.memory = fit.plateau(eff.memory_by_bytes)
        measured["bandwidth"] = raw["bandwidth"]
    if raw.get("gemm"):
        fit.annotate_gemm(raw["gemm"], base.peak_flops, bandwidth)
        eff.gemm_by_m = fit.gemm_curves(raw["gemm"])
        eff.gemm = {**eff.gemm, **{d: fit.plateau(c) for d, c in eff.gemm_by_m.items()}}
        for name, value in fit.gemm_model_fields(raw["gemm"], bandwidth).items():
            setattr(eff, name, value)
        measured["gemm"] = raw["gemm"]
        measured["gemm_impl"] = raw.get("gemm_impl", {})
    if raw.get("prefill") or raw.get("decode"):
        attention_fractions(raw, base.peak_flops["bf16"], bandwidth, eff)
        measured["attention"] = {"impl": raw.get("attention_impl"), "prefill": raw.get("prefill", []),
                                 "decode": raw.get("decode", [])}
    if raw.get("launch"):
        launch = raw["launch"]
        # the engine's own eager issue interval where measured: what the cost model's eager kernels cost the host
        eff.kernel_overhead_s = launch.get("engine_eager_s_per_kernel") or launch["eager_s_per_kernel"]
        if launch.get("graph_s_per_kernel"):
            eff.graph_kernel_overhead_s = launch["graph_s_per_kernel"]
        measured["launch"] = launch
    if raw.get("collectives"):
        fits = apply_collectives(eff, raw["collectives"], base.interconnect.bandwidth_bytes_per_s)
        measured["collectives"] = {"runs": raw["collectives"], "fits": fits}
    if raw.get("holdout"):
        measured["holdout"] = raw["holdout"]
    return eff, measured


def provenance(device: DeviceInfo, command: str, duration_s: float) -> Provenance:
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    return Provenance(kind="measured", gpu=f"{device.count}x {device.name}", driver=device.driver,
                      torch=torch_version, date=datetime.datetime.now().isoformat(timespec="seconds"),
                      command=command, duration_s=round(duration_s, 1))


def build_profile(device: DeviceInfo, raw: dict, command: str, duration_s: float,
                  run_info: dict) -> HardwareProfile:
    base = None if device.kind == "cpu" else catalog_datasheet(device.catalog_name)
    synthetic = base is None
    notes = list(raw.get("notes", []))
    if synthetic:
        base = synthetic_datasheet(device, raw)
        if device.kind != "cpu":
            notes.append(f"no catalog datasheet for {device.catalog_name!r}: "
                         "ceilings are the best measured rates")
    eff, measured = apply_measurements(base, raw)
    measured = {"device": device.as_dict(), "run": run_info,
                "datasheet": "synthetic" if synthetic else "catalog", **measured, "notes": notes}
    update = {"efficiency": eff, "measured": measured, "provenance": provenance(device, command, duration_s)}
    if device.gpus:
        update.update(device_memory(base, device.gpus[0].memory_bytes))
    return base.model_copy(update=update)


def device_memory(base: HardwareProfile, memory_bytes: float) -> dict:
    """The memory the driver reports (what an engine can allocate), in place of the datasheet's figure: an H200
    reports 150.75e9 bytes where its datasheet entry holds 141 GiB (151.4e9; the driver keeps ~0.6 GB back)."""
    today = datetime.date.today().isoformat()
    return {"memory_bytes": float(memory_bytes),
            "sources": {**base.sources, "memory_bytes": Sourced(value=float(memory_bytes),
                                                                source="measured: NVML total memory", date=today)}}


def merge_collectives(profile: HardwareProfile, results: dict[str, dict], device: DeviceInfo,
                      command: str) -> HardwareProfile:
    """Add (or replace) multi-GPU all-reduce curves in an existing profile, keeping everything else."""
    runs = {**(profile.measured or {}).get("collectives", {}).get("runs", {}), **results}
    return with_collectives(profile, runs, {"command": command, "gpu": f"{device.count}x {device.name}",
                                            "driver": device.driver,
                                            "date": datetime.datetime.now().isoformat(timespec="seconds")})


def with_collectives(profile: HardwareProfile, runs: dict[str, dict], provenance: dict) -> HardwareProfile:
    """`profile` with the all-reduce curves fitted from `runs` (raw collective results by group size) in place of
    its own, and their provenance: also how a one-GPU profile takes over another session's multi-GPU runs."""
    eff = profile.efficiency.model_copy(deep=True)
    fits = apply_collectives(eff, runs, profile.interconnect.bandwidth_bytes_per_s)
    measured = {**(profile.measured or {}), "collectives": {"runs": runs, "fits": fits, "provenance": provenance}}
    return profile.model_copy(update={"efficiency": eff, "measured": measured})
