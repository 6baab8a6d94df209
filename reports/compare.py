"""The compare report: the procurement table (the best plan per GPU type) and charts of cost and GPUs needed.

Input (the simulator's format is not final; every key is optional, see reports/README.md):
    {model, workload, slos, rows: [row, ...]}     (rows may also be under table, results or gpus,
                                                   or the document may be the list itself)
A row is flat, e.g. {gpu, plan, gpus, nodes, cost_per_hour, cost_per_million_tokens, tokens_per_s_per_gpu,
power_kw, headroom, meets_slo}, or a planner candidate {plan: {...}, prediction: {...}, meets_slo}, which
is flattened. Known names and aliases feed the charts; every scalar column is shown in the table.
"""
from __future__ import annotations

from pathlib import Path

from reports.html import Page, figure, kv, note, table
from reports.svg import HBars

# chart field -> accepted names, first found wins
ALIASES = {
    "gpu": ("gpu", "hardware", "gpu_type", "name"),
    "cost_per_million_tokens": ("cost_per_million_tokens", "usd_per_million_tokens", "dollars_per_m_tokens",
                                "cost_per_m_tokens"),
    "cost_per_hour": ("cost_per_hour", "usd_per_hour", "dollars_per_hour"),
    "gpus": ("gpus", "num_gpus", "gpus_needed", "total_gpus"),
    "nodes": ("nodes", "num_nodes"),
    "tokens_per_s_per_gpu": ("tokens_per_s_per_gpu", "tok_s_per_gpu", "tokens_per_gpu"),
    "power_kw": ("power_kw", "kw"),
    "headroom": ("headroom", "slo_headroom"),
}
CHARTS = (("cost_per_million_tokens", "$ per million output tokens", "$ per M output tokens"),
          ("cost_per_hour", "Cost per hour of the deployment", "$ per hour"),
          ("gpus", "GPUs needed", "GPUs"),
          ("tokens_per_s_per_gpu", "Output throughput per GPU", "output tok/s per GPU"),
          ("power_kw", "Power", "kW"))


def rows_of(doc: dict | list) -> list[dict]:
    if isinstance(doc, list):
        rows = doc
    else:
        rows = next((doc[k] for k in ("rows", "table", "results", "gpus") if isinstance(doc.get(k), list)), [])
    return [_flatten(r) for r in rows if isinstance(r, dict)]


def _flatten(row: dict) -> dict:
    """A candidate-shaped row ({plan, prediction}) as one flat row; flat rows pass through."""
    out = {k: v for k, v in row.items() if not isinstance(v, dict)}
    plan, pred = row.get("plan"), row.get("prediction")
    if isinstance(pred, dict):
        out.update({k: v for k, v in pred.items() if not isinstance(v, dict) and k not in out})
    if isinstance(plan, dict):
        par = f"TP{plan.get('tp', 1)}" + (f" PP{plan['pp']}" if plan.get("pp", 1) > 1 else "")
        reps = f" x{plan['replicas']}" if plan.get("replicas", 1) > 1 else ""
        out["plan"] = f"{par}{reps} {plan.get('weight_dtype', '')}".strip()
        out.setdefault("gpu", plan.get("hardware"))
        out.setdefault("num_gpus", plan.get("num_gpus"))
    return out


def field(row: dict, name: str):
    return next((row[k] for k in ALIASES.get(name, (name,)) if row.get(k) is not None), None)


def _chart(rows: list[dict], key: str, title: str, unit: str) -> str | None:
    bars = []
    for r in rows:
        v = field(r, key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            cls = "bad" if r.get("meets_slo") is False else 0
            extra = f", {field(r, 'nodes')} nodes" if key == "gpus" and field(r, "nodes") is not None else ""
            bars.append((str(field(r, "gpu") or "?"), [(float(v), cls, f"{field(r, 'gpu')}: {v:,.4g} {unit}{extra}")]))
    if not bars:
        return None
    chart = HBars(title, unit, bars, width=480)
    chart.key(0, "meets the SLO")
    if any(r.get("meets_slo") is False for r in rows):
        chart.key("bad", "misses the SLO")
    return figure(chart)


def build(doc: dict | list) -> Page:
    meta = doc if isinstance(doc, dict) else {}
    rows = rows_of(doc)
    wl = meta.get("workload")
    sub = []
    if isinstance(wl, dict):
        sub.append(", ".join(f"{k} {v}" for k, v in wl.items() if not isinstance(v, (dict, list))))
    if meta.get("slos"):
        sub.append("SLO " + ", ".join(map(str, meta["slos"])))
    page = Page(f"GPU comparison: {meta.get('model', 'model')}", " · ".join(s for s in sub if s))
    if not rows:
        page.section("Procurement table", note("The input has no rows."))
        return page
    cheapest = min((r for r in rows if isinstance(field(r, "cost_per_million_tokens"), (int, float))
                    and r.get("meets_slo") is not False), key=lambda r: field(r, "cost_per_million_tokens"),
                   default=None)
    if cheapest:
        page.section("Summary", kv([("cheapest per token", f"{field(cheapest, 'gpu')}: "
                                    f"${field(cheapest, 'cost_per_million_tokens'):,.4g} per M tokens"),
                                   ("GPU types compared", len(rows))]))
    columns = []
    for r in rows:
        columns += [k for k, v in r.items() if k not in columns and not isinstance(v, (dict, list))]
    classes = [["bad" if k == "meets_slo" and r.get(k) is False else "" for k in columns] for r in rows]
    page.section("Procurement table", table(columns, [[r.get(k) for k in columns] for r in rows], classes))
    charts = [c for c in (_chart(rows, key, title, unit) for key, title, unit in CHARTS) if c]
    page.section("Cost and GPUs per GPU type",
                 f'<div class="grid2">{"".join(charts)}</div>' if charts else note("No numeric columns to chart."))
    return page


def write(doc: dict | list, path: str | Path) -> Path:
    return build(doc).write(path, data=doc if isinstance(doc, dict) else {"rows": doc})
