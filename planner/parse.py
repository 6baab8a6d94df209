"""Parsers for command-line values (and the files they name). Every failure is a one-line UsageError naming the
accepted forms."""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from planner.errors import UsageError, validation_problem, yaml_problem
from planner.schemas import SLO, Plan

SLO_FORMS = ("ttft=200ms", "tpot<=30ms", "itl=50ms", "e2e=5s", "ttft_p99=500ms", "tpot_p90<=40ms")
# One grammar for every command: `plan recommend` wrote METRIC=LIMIT and `plan bench` METRIC<=LIMIT, so both
# are read everywhere ("<" too, as the limit is inclusive either way); e2el is the harness's name for e2e.
_SLO_RE = re.compile(r"^(ttft|tpot|itl|e2el?)(?:_p(\d+(?:\.\d+)?))?(?:<=|<|=)(.+)$")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(?:e([+-]?\d+))?\s*(us|µs|ms|s)?$")
_UNIT_S = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_duration_s(text: str) -> float:
    """'200ms', '0.2s', '150us' -> seconds (> 0). A bare number is refused: '5' was read as 5 ms where the
    docs wrote e2e=5s, so the unit is never guessed."""
    m = _DURATION_RE.match(text.strip().lower())
    if not m:
        raise UsageError(f"malformed duration {text!r}: use a positive number with a unit, e.g. 200ms, 1.5s, 800us")
    if m.group(3) is None:
        raise UsageError(f"duration {text!r} has no unit: write {m.group(1)}ms or {m.group(1)}s")
    value = float(m.group(1)) * (10 ** int(m.group(2)) if m.group(2) else 1)
    seconds = value * _UNIT_S[m.group(3)]
    if not (seconds > 0 and math.isfinite(seconds)):
        raise UsageError(f"duration {text!r} must be positive and finite, e.g. 200ms")
    return seconds


def parse_slo(text: str) -> SLO:
    """'ttft=200ms' or 'ttft<=200ms' (mean), 'ttft_p99=500ms' or 'ttft_p99<=500ms' (percentile) -> SLO."""
    m = _SLO_RE.match(text.strip().lower().replace(" ", ""))
    if not m:
        raise UsageError(f"malformed SLO {text!r}: accepted forms are METRIC=LIMIT or METRIC<=LIMIT, with "
                         f"METRIC ttft, tpot, itl or e2e (a percentile as METRIC_pNN) and LIMIT a duration with "
                         f"its unit, e.g. {', '.join(SLO_FORMS)}")
    metric, pct, value = m.groups()
    metric = "e2e" if metric == "e2el" else metric
    percentile = float(pct) if pct else None
    if percentile is not None and not 0 < percentile <= 100:
        raise UsageError(f"SLO percentile in {text!r} must be in (0, 100], e.g. ttft_p99=500ms")
    if re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", value):
        raise UsageError(f"SLO {text!r} has no unit: write {text.strip()}ms or {text.strip()}s")
    try:
        limit = parse_duration_s(value)
    except UsageError:
        raise UsageError(f"malformed SLO {text!r}: the limit must be a positive duration with its unit; accepted "
                         f"forms are METRIC=LIMIT or METRIC<=LIMIT, e.g. {', '.join(SLO_FORMS)}") from None
    return SLO(metric=metric, limit_s=limit, percentile=percentile)


def parse_list(text: str | None) -> list[str]:
    """'h100,h200, a100' -> ['h100', 'h200', 'a100']."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def parse_positive_int(text: str, what: str) -> int:
    try:
        v = int(text)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be a positive integer, got {text!r}") from None
    if v <= 0:
        raise UsageError(f"{what} must be a positive integer, got {text!r}")
    return v


def read_data_file(path: str | Path, what: str):
    """The YAML or JSON (by suffix) in a file (`what`: the option or kind that names it), None when it is empty; a
    missing file or bad syntax is one line naming it, the line and the problem."""
    import yaml

    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file") from None
    except OSError as e:
        raise UsageError(f"{what} {path}: cannot read it ({e.strerror or e})") from None
    if not text.strip():
        return None                     # as YAML reads an empty file; JSON would call it a syntax error
    try:
        # the C parser where PyYAML has it: ~10x faster for the catalog's many files
        return json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=getattr(yaml, "CSafeLoader",
                                                                                               yaml.SafeLoader))
    except json.JSONDecodeError as e:
        raise UsageError(f"{what} {path} is not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"{what} {path} is not valid YAML: {yaml_problem(e)}") from None


def load_plan(path: str | Path) -> Plan:
    """A plan file (`plan recommend --out`) -> Plan, or one line naming the file, the field and the problem."""
    from pydantic import ValidationError

    data = read_data_file(path, "plan")
    if data is None:
        raise UsageError(f"plan {path} is empty: it needs at least model: and hardware: "
                         "(write one with `plan recommend --out plan.yaml`)")
    if not isinstance(data, dict):
        raise UsageError(f"plan {path} holds a {type(data).__name__}, not the mapping of fields (model:, "
                         "hardware:, tp:, ...) that `plan recommend --out` writes")
    try:
        return Plan.model_validate(data)
    except ValidationError as e:
        raise UsageError(f"invalid plan {path}: {validation_problem(e)}") from None


def output_path(path: Path, option: str) -> Path:
    """An output file, checked before the work that fills it, so that a bad path never costs a finished run or
    search: missing folders are created (as `plan report --out` always did); a folder or an unwritable place
    is a usage error now."""
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory: name a file in it, e.g. {path / 'out.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot create the folder {path.parent} ({e.strerror or e})") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: not writable; choose another path")
    return path
