"""Docs with examples that run: README.md and docs/*.md, checked against the code.

* Every command of a fenced shell block (```bash, ```sh, ```console: its `$ ` lines) must parse: a `plan ...`
  command through the CLI's own parser (each subcommand, option and value type), `python -m
  backends.engine.server` / `python -m profilers.cli profile` through the same commands, a `python
  benchmarks/X.py` script's options against its `--help`, test files and scripts must exist. A command of a
  kind this module does not know fails, so a new kind of example is a decision, not a silent pass.
* A few quick, deterministic commands (CPU only, about a second each) run as written, in a scratch folder
  that sees the repository's `benchmarks/` and `hw_profiles/`, with their exit code and the output the docs
  describe (RUN). Every other command must match an entry of NOT_RUN, which says why it is not run here (a
  GPU, a server that runs until stopped, minutes, or a file the reader makes first).
* ```python blocks run too (PY_NOT_RUN lists those that need a GPU or are fragments).
* Inline `plan ...` spans (the README's command table, prose) name subcommands and options that exist.
* The worked example's table header, the README's catalog counts, docs/catalog.md's tables and docs/engine.md's
  flag list match what the code prints or holds.
Every fenced block needs a language, so that a shell example cannot hide in an unlabelled one.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
SEPARATORS = {"&&", "||", ";", "|", "&"}
REDIRECTS = {">", ">>", "<", ">&", "&>"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SHELL_BUILTINS = {"mkdir", "export", "cd", "cp", "ls", "cat"}


@dataclass(frozen=True)
class Example:
    where: str                  # "docs/bench.md:7"
    argv: tuple[str, ...]

    @property
    def text(self) -> str:
        return shlex.join(self.argv)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@lru_cache(maxsize=None)
def fenced_blocks() -> tuple[tuple[str, int, str, str], ...]:
    """(doc, line of the opening fence, language, body) of every fenced block."""
    found = []
    for path in DOCS:
        text = path.read_text()
        for m in FENCE.finditer(text):
            found.append((_rel(path), text.count("\n", 0, m.start()) + 1, m.group(1).lower(), m.group(2)))
    return tuple(found)


def split_commands(line: str) -> list[list[str]]:
    """One shell line -> its simple commands: comments dropped, split at && || ; | &, redirections and
    leading VAR=value assignments removed."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    commands, current, tokens = [], [], list(lex)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in SEPARATORS:
            commands.append(current)
            current = []
        elif tok in REDIRECTS:
            i += 1                                   # and its target
        else:
            current.append(tok)
        i += 1
    commands.append(current)
    out = []
    for argv in commands:
        while argv and ENV_ASSIGNMENT.match(argv[0]) and len(argv) > 1:
            argv = argv[1:]
        if argv:
            out.append(argv)
    return out


@lru_cache(maxsize=None)
def shell_examples() -> tuple[Example, ...]:
    found = []
    for doc, fence_line, lang, body in fenced_blocks():
        if lang not in SHELL:
            continue
        lines = body.splitlines()
        i = 0
        while i < len(lines):
            start, line = i, lines[i]
            if lang == "console":
                if not line.startswith("$ "):        # its output
                    i += 1
                    continue
                line = line[2:]
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i].strip()
            for argv in split_commands(line):
                found.append(Example(f"{doc}:{fence_line + 1 + start}", tuple(argv)))
            i += 1
    return tuple(found)


# ---------------------------------------------------------------------------------------------- parsing
@lru_cache(maxsize=None)
def root_command():
    import typer.main

    from planner.cli import app
    return typer.main.get_command(app)


def resolve(argv: list[str]):
    """`plan` argv (without `plan`) -> (leaf command, its arguments, 'plan sub ...'); every group level's next
    word must be one of its subcommands."""
    cmd, args, path = root_command(), list(argv), ["plan"]
    while hasattr(cmd, "commands"):
        assert args and args[0] in cmd.commands, \
            f"`{' '.join(path)}` has no subcommand {args[0] if args else '(none given)'!r}: {sorted(cmd.commands)}"
        path.append(args.pop(0))
        cmd = cmd.commands[path[-1]]
    return cmd, args, " ".join(path)


def check_plan_parses(argv: list[str], where: str) -> None:
    """The CLI's own parser takes the arguments (options exist, values convert, required ones given); nothing
    runs."""
    from planner.errors import parser_errors

    cmd, args, name = resolve(argv)
    try:
        cmd.make_context(name, args)
    except parser_errors() as e:
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        pytest.fail(f"{where}: `{shlex.join(['plan', *argv])}` does not parse: {message}")


def option_names(cmd) -> set[str]:
    return {o for p in cmd.params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))
            if o.startswith("-")}


@lru_cache(maxsize=None)
def script_options(script: str) -> frozenset[str]:
    r = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, f"{script} --help: exit {r.returncode}: {r.stderr[-500:]}"
    return frozenset(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", r.stdout))


def _python_scripts() -> list[str]:
    return sorted({e.argv[1] for e in shell_examples()
                   if e.argv[0] in ("python", "python3") and len(e.argv) > 1 and e.argv[1].endswith(".py")})


@pytest.fixture(scope="module")
def script_help():
    """--help of every documented script, two at a time (some import torch: seconds each)."""
    scripts = [s for s in _python_scripts() if (ROOT / s).is_file()]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(scripts, pool.map(script_options, scripts)))


def _test_paths(args: list[str], where: str) -> None:
    for a in args:
        if not a.startswith("-"):
            path = ROOT / a.split("::")[0]
            assert path.exists(), f"{where}: pytest path {a} does not exist"


def check_parses(example: Example, script_help: dict) -> None:
    argv, where = list(example.argv), example.where
    head = argv[0]
    if head == "plan":
        check_plan_parses(argv[1:], where)
    elif head in ("python", "python3") and argv[1:2] == ["-m"]:
        module, rest = argv[2], argv[3:]
        if module == "backends.engine.server":        # `plan serve`'s command, run standalone
            check_plan_parses(["serve", *rest], where)
        elif module == "profilers.cli":
            check_plan_parses(rest, where)              # `profile ...`, as under `plan`
        elif module == "profilers.validate":
            assert len(rest) == 1 and (ROOT / rest[0]).is_file(), f"{where}: validate takes one profile file"
        elif module == "pytest":
            _test_paths(rest, where)
        else:
            pytest.fail(f"{where}: `python -m {module}` is a kind of example test_docs.py does not check yet")
    elif head in ("python", "python3") and argv[1].endswith(".py"):
        script = argv[1]
        assert (ROOT / script).is_file(), f"{where}: {script} does not exist"
        known = script_help[script]
        for tok in argv[2:]:
            if tok.startswith("-"):
                assert tok.split("=")[0] in known, f"{where}: {script} has no option {tok} (its --help: " \
                                                   f"{sorted(known)})"
    elif head == "pytest":
        _test_paths(argv[1:], where)
    elif head == "bash" or head.startswith("scripts/"):
        script = argv[1] if head == "bash" else head
        assert (ROOT / script).is_file(), f"{where}: {script} does not exist"
    elif head == "pip":
        assert argv[1:] == ["install", "."], f"{where}: unexpected pip command {example.text}"
    elif head in SHELL_BUILTINS:
        pass
    else:
        pytest.fail(f"{where}: `{example.text}`: a kind of command test_docs.py does not know; teach it to "
                    "check this one")


def test_every_fenced_block_has_a_language():
    bare = [f"{doc}:{line}" for doc, line, lang, _ in fenced_blocks() if not lang]
    assert not bare, f"fenced blocks without a language (```bash for commands, ```text for output): {bare}"


def test_examples_are_found():
    """The extraction itself: each doc with shell examples contributes commands, and plan commands dominate."""
    docs = {e.where.split(":")[0] for e in shell_examples()}
    assert {"README.md", "docs/bench.md", "docs/profiling.md", "docs/accuracy.md", "docs/engine.md",
            "docs/simulator.md", "docs/ci.md"} <= docs
    assert sum(e.argv[0] == "plan" for e in shell_examples()) >= 20


def test_every_shell_example_parses(script_help):
    problems = []
    for example in shell_examples():
        try:
            check_parses(example, script_help)
        except (AssertionError, pytest.fail.Exception) as e:
            problems.append(str(e).splitlines()[0])
    assert not problems, "documented commands that do not parse:\n" + "\n".join(problems)


def test_parse_check_catches_mistakes():
    """The checker fails on what it should: an unknown subcommand, option or value."""
    for argv in (["recomend", "--model", "x"], ["recommend", "--modle", "x"], ["bench", "run", "--rate", "fast"],
                 ["recommend"]):
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            check_plan_parses(argv, "test")


# ---------------------------------------------------------------------------------------------- running
@dataclass(frozen=True)
class Expect:
    rc: int = 0
    stdout: tuple[str, ...] = ()        # substrings of stdout
    stderr: str | None = None           # substring of the one stderr line of a failure
    json: bool = False                  # stdout is one JSON document
    before: tuple[str, ...] = ()        # commands run first in the same folder (rc 0), e.g. the file it reads
    notes: str = field(default="", compare=False)


CALIBRATE = ("plan calibrate --gpu h200 --trace benchmarks/results/accuracy/H200/step_trace.jsonl "
             "--run benchmarks/results/accuracy/H200/serving.json --out H200.cal.yaml --json")
WORKED = "plan recommend --model llama-70b --slo ttft=200ms --slo tpot=50ms --gpus h100,h200,a100,l40s"

# Doc command (as written, continuation lines joined) -> what it must do here.
RUN: dict[str, Expect] = {
    WORKED: Expect(0, ("Llama-3.1-70B: 1024 in / 256 out; SLO ttft<=200ms, tpot<=50ms", "Best: ", "Likely range: ",
                       "Launch with vLLM:", "vllm serve meta-llama/Llama-3.1-70B-Instruct --tensor-parallel-size")),
    "plan explain --model llama-8b --gpu h200 --batch 32": Expect(0, (
        "Prefill step", "Decode step at batch 32", "GFLOP", "FLOP/B", "bound", "share", "TTFT", "TPOT",
        "Memory per GPU", "weights", "activations", "runtime", "KV cache", "KV tokens", "max seqs")),
    ("plan compare --model llama-70b --gpus h100,h200,a100,l40s,mi300x --slo ttft_p90=500ms --slo tpot=50ms "
     "--rate 50"): Expect(0, ("best plan", "GPUs", "nodes", "$/h", "$/M tok", "tok/s/GPU", "kW",
                              "headroom ttft_p90<=500ms", "headroom tpot<=50ms")),
    "plan bench history --tag nightly": Expect(2, stderr="no results database at plan-results.db"),
    "plan bench compare nightly --baseline 41 --threshold 5% --fail-on-inconclusive":
        Expect(2, stderr="no results database at plan-results.db"),
    "python -m profilers.validate hw_profiles/measured/H200.yaml":
        Expect(0, ("| kind | point | measured (us) | predicted (us) | error |", "median absolute error")),
    CALIBRATE: Expect(0, ('"gpu": "H200"', '"out": "H200.cal.yaml"', '"median_abs_error"'), json=True),
    "plan recommend --model llama-8b --gpus h200 --profile H200.cal.yaml":
        Expect(0, ("Best: ", "x H200 TP", "calibrated", "Launch with vLLM:"), before=(CALIBRATE,)),
}

# Regex over the command -> why it is not run here. Each must match at least one documented command.
NOT_RUN: dict[str, str] = {
    r"^pip install \.$": "installs the package (done once for the whole suite)",
    r"^bash scripts/test\.sh$|^scripts/install_browser\.sh$": "installs packages and runs the whole suite",
    r"^(python -m )?pytest ": "a test run (the suite runs those tests)",
    r"^(mkdir|export) ": "shell set-up of the example after it",
    r"^plan recommend --model llama-70b --slo ttft=200ms$": "the whole catalog (~4 s); the worked example runs",
    r"^plan calibrate --gpu h200 --trace steps\.jsonl ": "steps.jsonl is the reader's own engine trace",
    r"^plan calibrate .*serving_trace\.jsonl\.gz": "18k served steps: minutes of fitting",
    r"^plan bench run --plan plan\.yaml": "serves a GPU plan (plan.yaml from plan recommend) on a GPU",
    r"^plan bench run --backend url --url http://gpu-box:8000": "needs a running server (gpu-box)",
    r"^plan bench selfcheck": "timing: exits 1 when a loaded machine cannot keep up with 2000 req/s",
    r"^plan compare --model llama-8b .*--prices prices\.yaml": "prices.yaml is the reader's own file",
    r"^plan serve |^python -m backends\.engine\.server ": "a server: runs until stopped (GPU-sized models too)",
    r"^plan profile --device cpu": "6 s of measurements; tests/test_profilers.py runs the CPU profile",
    r"^plan profile( |$)": "measures a GPU (pynvml, CUDA)",
    r"^python benchmarks/bench_accuracy\.py --device cpu": "~40 s on 2 CPU cores (checked by hand)",
    r"^python benchmarks/bench_accuracy\.py": "GPU grid (minutes)",
    r"^python benchmarks/accuracy_report\.py": "reads the CPU grid's output / fits several machines (seconds "
                                                "to minutes)",
    r"^python benchmarks/bench_engine\.py --device cpu": "a CPU benchmark (~6 s, timing only)",
    r"^python benchmarks/bench_engine\.py": "GPU benchmark",
    r"^python benchmarks/bench_engine_scale\.py --device cpu": "~35 s of CPU processes (gloo TP 2)",
    r"^python benchmarks/bench_engine_scale\.py": "GPU benchmark (several GPUs)",
    r"^python benchmarks/bench_prefill_graphs\.py": "GPU benchmark (CUDA graphs)",
}


def test_every_shell_example_is_run_or_has_a_reason():
    unclassified = [f"{e.where}: {e.text}" for e in shell_examples()
                    if e.text not in RUN and not any(re.search(p, e.text) for p in NOT_RUN)]
    assert not unclassified, ("documented commands neither run by test_docs.py (RUN) nor listed with a reason "
                              f"(NOT_RUN): {unclassified}")
    texts = {e.text for e in shell_examples()}
    assert not [c for c in RUN if c not in texts], \
        f"RUN names commands the docs no longer show: {[c for c in RUN if c not in texts]}"
    stale = [p for p in NOT_RUN if not any(re.search(p, t) for t in texts)]
    assert not stale, f"NOT_RUN entries that match no documented command: {stale}"


@pytest.fixture
def workdir(tmp_path):
    """A scratch folder that reads the repository's data as the docs' relative paths expect."""
    for name in ("benchmarks", "hw_profiles"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PLAN_HW_PATH", "PLAN_RESULTS_DB")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_documented(text: str, cwd: Path) -> subprocess.CompletedProcess:
    argv = shlex.split(text)
    if argv[0] == "plan":
        argv = [sys.executable, "-m", "planner.cli", *argv[1:]]
    elif argv[0] in ("python", "python3"):
        argv = [sys.executable, *argv[1:]]
    return subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("text", list(RUN))
def test_documented_command_runs(text, workdir):
    expect = RUN[text]
    for first in expect.before:
        r = run_documented(first, workdir)
        assert r.returncode == 0, f"{first}: exit {r.returncode}: {r.stderr[-800:]}"
    r = run_documented(text, workdir)
    assert r.returncode == expect.rc, f"`{text}`: exit {r.returncode}, docs say {expect.rc}: {r.stderr[-800:]}"
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    for needle in expect.stdout:
        assert needle in r.stdout, f"`{text}`: {needle!r} not in its output:\n{r.stdout[-3000:]}"
    if expect.json:
        json.loads(r.stdout)
    if expect.stderr is not None:
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expect.stderr in lines[0], r.stderr


def test_worked_example_prints_the_readme_table(workdir):
    """The README's worked example: its output block's title and column header are what the command prints
    (the numbers move with the cost model and are not compared)."""
    blocks = fenced_blocks()
    i = next(k for k, (doc, _, lang, body) in enumerate(blocks)
             if doc == "README.md" and lang == "console" and WORKED in body)
    doc_output = blocks[i + 1][3]
    r = run_documented(WORKED, workdir)
    assert r.returncode == 0, r.stderr
    printed = [line.rstrip() for line in r.stdout.splitlines()]

    def columns(lines):                 # the first table's header cells (widths follow the plans' names)
        return next([c.strip() for c in line.strip("┃").split("┃")] for line in lines if line.startswith("┃"))

    assert columns(doc_output.splitlines()) == columns(printed)
    title = next(line.strip() for line in doc_output.splitlines() if line.strip())
    assert title in {line.strip() for line in printed}, f"README title not printed: {title!r}"
    for prefix in ("Best: ", "Likely range: ", "Launch with vLLM:", "vllm serve "):
        assert any(line.startswith(prefix) for line in doc_output.splitlines()), prefix
        assert any(line.startswith(prefix) for line in printed), prefix


# ---------------------------------------------------------------------------------------------- python blocks
PY_NOT_RUN = {
    "from backends.engine.config import": "builds Llama-3.1-8B on device='cuda'",
    "from backends.engine.attention import": "a fragment: the kernels' signatures (q, k, v... undefined)",
}


def python_blocks() -> list[tuple[str, str]]:
    return [(f"{doc}:{line}", body) for doc, line, lang, body in fenced_blocks() if lang == "python"]


def test_python_blocks_are_run_or_have_a_reason():
    skipped = [where for where, body in python_blocks() if any(body.startswith(k) for k in PY_NOT_RUN)]
    assert len(skipped) == len(PY_NOT_RUN), f"PY_NOT_RUN entries that match no block: {PY_NOT_RUN}, {skipped}"


RUN_PY = [b for b in python_blocks() if not any(b[1].startswith(k) for k in PY_NOT_RUN)]


@pytest.mark.parametrize("where,body", RUN_PY, ids=[where for where, _ in RUN_PY])
def test_python_block_runs(where, body, workdir):
    r = subprocess.run([sys.executable, "-c", body], cwd=workdir, env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, f"{where}: exit {r.returncode}:\n{r.stderr[-2000:]}"
    assert r.stdout.strip(), f"{where} printed nothing"


# ---------------------------------------------------------------------------------------------- inline spans
def inline_spans(prefix: str) -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), path.read_text())
        for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
            span = " ".join(m.group(1).split())
            if span.startswith(prefix):
                found.append((f"{_rel(path)}:{text.count(chr(10), 0, m.start()) + 1}", span))
    return found


def test_inline_plan_commands_name_real_subcommands_and_options():
    spans = inline_spans("plan ")
    assert len(spans) > 30
    for where, span in spans:
        words = span.replace("\\|", "|").split()[1:]
        cmd, path = root_command(), ["plan"]
        while hasattr(cmd, "commands") and words and not words[0].startswith("-"):
            assert words[0] in cmd.commands, f"{where}: `{span}`: `{' '.join(path)}` has no subcommand {words[0]!r}"
            path.append(words.pop(0))
            cmd = cmd.commands[path[-1]]
        known = option_names(cmd)
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", " ".join(words)):
            assert flag in known, f"{where}: `{span}`: `{' '.join(path)}` has no option {flag}"


def test_engine_doc_lists_every_serve_flag():
    """docs/engine.md's `Flags:` list is the server's options (besides --plan, described after it)."""
    text = (ROOT / "docs" / "engine.md").read_text()
    listed = re.search(r"Flags: `([^`]+)`", text)
    assert listed, "docs/engine.md lost its Flags: list"
    flags = set(re.findall(r"--[a-z][a-z0-9-]*", listed.group(1)))
    serve = option_names(root_command().commands["serve"]) - {"--plan", "--help", "-m"}
    assert flags == serve, f"missing from the docs: {sorted(serve - flags)}; not options: {sorted(flags - serve)}"


# ---------------------------------------------------------------------------------------------- catalog
def _table(text: str, header_start: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


def test_catalog_doc_matches_the_catalog():
    from planner import catalog
    from planner.params import param_counts

    text = (ROOT / "docs" / "catalog.md").read_text()
    models = _table(text, "| model |")
    specs = catalog.list_models()
    assert set(models) == {s.name for s in specs}
    for s in specs:
        pc = param_counts(s)
        want = [s.name, ", ".join(s.aliases), s.architecture, f"{pc.total / 1e9:.2f}", f"{pc.active / 1e9:.2f}"]
        assert models[s.name][:5] == want, f"docs/catalog.md row of {s.name}: {models[s.name][:5]} != {want}"
        assert models[s.name][7:] == [str(s.num_layers), f"{s.num_attention_heads} / {s.num_kv_heads}",
                                      f"`{s.hf_id}`"], s.name
    gpus = _table(text, "| GPU |")
    hws = catalog.list_hardware("datasheet")
    assert set(gpus) == {h.name for h in hws}
    for h in hws:
        fp8 = h.peak_flops.get("fp8")
        want = [h.name, ", ".join(h.aliases), f"{h.memory_bytes / 1e9:.0f}", f"{h.memory_bytes / 2**30:g}",
                f"{h.memory_bandwidth_bytes_per_s / 1e12:g}", f"{h.peak_flops['bf16'] / 1e12:g}",
                f"{fp8 / 1e12:g}" if fp8 else "–", h.interconnect.kind,
                f"{h.interconnect.bandwidth_bytes_per_s / 1e9:g}", f"{h.tdp_w:g}", f"{h.price_per_gpu_hour:g}"]
        assert gpus[h.name][:11] == want, f"docs/catalog.md row of {h.name}: {gpus[h.name][:11]} != {want}"


def test_catalog_listings_match_the_docs(workdir):
    """`plan models` / `plan gpus` (README: "22 models, 11 GPUs") list what docs/catalog.md lists, and the
    README's GPU names resolve."""
    readme = (ROOT / "README.md").read_text()
    n_models, n_gpus = map(int, re.search(r"\((\d+) models, (\d+) GPUs", readme).groups())
    text = (ROOT / "docs" / "catalog.md").read_text()
    for command, key, n, table in (("plan models --json", "models", n_models, "| model |"),
                                   ("plan gpus --json", "gpus", n_gpus, "| GPU |")):
        r = run_documented(command, workdir)
        assert r.returncode == 0, r.stderr
        names = {m["name"] for m in json.loads(r.stdout)[key]}
        assert len(names) == n, f"README says {n} {key}, `{command}` lists {len(names)}"
        assert names == set(_table(text, table)), key
    r = run_documented("plan gpus", workdir)
    assert r.returncode == 0 and "GPU catalog" in r.stdout
    for col in ("name", "aliases", "memory GB", "TB/s", "bf16 TFLOP/s", "fp8 TFLOP/s", "link GB/s", "$/h", "profile"):
        assert col in r.stdout
    from planner import catalog
    gpu_sentence = re.search(r"GPUs: (`[^.]*?)\(`plan gpus`\)", readme).group(1)
    for alias in re.findall(r"`([^`]+)`", gpu_sentence):
        catalog.load_hardware(alias)
