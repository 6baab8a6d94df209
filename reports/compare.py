"""The compare report: the procurement table (the best plan per GPU type) and charts of cost and GPUs needed.

Input (every key optional, see reports/README.md):
    {model, rate_rps, input_tokens, output_tokens, slos, rows: [row, ...]}
    (rows may also be under table, results or gpus, or the document may be the list itself)
A row is what `plan compare --json` writes (planner.render.comparison_json): {gpu, meets_slo, profile,
plan_label, gpus, nodes, cost_per_hour, cost_per_million_tokens, tokens_per_s_per_gpu, power_kw,
headroom: {slo label: fraction}, plan: {...}, prediction: {...}} or {gpu, meets_slo, reason} when no plan
fits; a bare planner candidate {plan, prediction, meets_slo} works too. Known names and aliases feed the
charts; every scalar column is shown in the table.
"""
from __future__ import annotations

from pathlib import Path

from reports.html import Page, Pct, figure, kv, note, slo_label, table
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
HEADERS = {"gpu": "GPU", "plan": "best plan", "meets_slo": "meets SLO", "gpus": "GPUs", "nodes": "nodes",
           "cost_per_hour": "$/h", "cost_per_million_tokens": "$/M tok", "tokens_per_s_per_gpu": "tok/s/GPU",
           "power_kw": "kW"}
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
    """One flat row: `plan_label` (or a label made from `plan`) as the plan, `headroom` per SLO as columns;
    a bare candidate ({plan, prediction}) takes its numbers from the prediction."""
    out = {k: v for k, v in row.items() if not isinstance(v, dict) and k != "plan_label"}
    plan, pred, head = row.get("plan"), row.get("prediction"), row.get("headroom")
    if isinstance(plan, dict):
        par = f"TP{plan.get('tp', 1)}" + (f" PP{plan['pp']}" if plan.get("pp", 1) > 1 else "")
        reps = f" x{plan['replicas']}" if plan.get("replicas", 1) > 1 else ""
        out["plan"] = row.get("plan_label") or f"{plan.get('num_gpus', '?')}x {plan.get('hardware', '')} {par}{reps}"
        out.setdefault("gpu", plan.get("hardware"))
        out.setdefault("gpus", plan.get("num_gpus"))
    elif row.get("plan_label"):
        out["plan"] = row["plan_label"]
    if isinstance(pred, dict):
        for k in ("cost_per_hour", "cost_per_million_tokens", "tokens_per_s_per_gpu"):
            if field(out, k) is None and pred.get(k) is not None:
                out[k] = pred[k]
    if isinstance(head, dict):              # {slo label: limit / predicted - 1}
        out.pop("headroom", None)
        out.update({f"headroom {k}": Pct(v, signed=True) for k, v in head.items() if isinstance(v, (int, float))})
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
    wl = meta.get("workload") if isinstance(meta.get("workload"), dict) else meta
    sub = [", ".join(f"{k} {wl[k]:g}" for k in ("input_tokens", "output_tokens", "rate_rps")
                     if isinstance(wl.get(k), (int, float)))]
    if meta.get("slos"):
        sub.append("SLO " + ", ".join(slo_label(s) for s in meta["slos"]))
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
    present = []
    for r in rows:
        present += [k for k, v in r.items() if k not in present and not isinstance(v, (dict, list))]
    # The decision columns first, in the order a buyer reads them; anything else after.
    first = [k for k in HEADERS if k in present] + [k for k in present if k.startswith("headroom")]
    columns = first + [k for k in present if k not in first]
    classes = [["bad" if k == "meets_slo" and r.get(k) is False else "" for k in columns] for r in rows]
    page.section("Procurement table", table([HEADERS.get(k, k) for k in columns],
                                            [[r.get(k) for k in columns] for r in rows], classes))
    charts = [c for c in (_chart(rows, key, title, unit) for key, title, unit in CHARTS) if c]
    page.section("Cost and GPUs per GPU type",
                 f'<div class="grid2">{"".join(charts)}</div>' if charts else note("No numeric columns to chart."))
    return page


def write(doc: dict | list, path: str | Path) -> Path:
    return build(doc).write(path, data=doc if isinstance(doc, dict) else {"rows": doc})
