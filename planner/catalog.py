"""Model and GPU catalogs: look up by name or alias, read local HF configs, prefer measured profiles.

Catalog files are YAML under planner/data/models/ and hw_profiles/; extra GPU files come from the
directories in $PLAN_HW_PATH. Names match case-insensitively and ignore punctuation ("H100 SXM" ==
"h100-sxm"). Loaded objects are cached and shared: treat them as read-only.
"""
from __future__ import annotations

import datetime as dt
import difflib
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, TypeVar

from pydantic import ValidationError

import hw_profiles
from planner.errors import UsageError
from planner.parse import read_data_file
from planner.schemas import HardwareProfile, ModelSpec, Sourced

MODELS_DIR = Path(__file__).parent / "data" / "models"
HW_DIR = Path(hw_profiles.__file__).parent
HW_PATH_ENV = "PLAN_HW_PATH"
PROFILE_CHOICES = ("auto", "datasheet", "measured", "calibrated")
HF_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen3_moe", "deepseek_v3", "gemma2")

_FILE_SUFFIXES = (".yaml", ".yml", ".json")
T = TypeVar("T", ModelSpec, HardwareProfile)


# --------------------------------------------------------------------------- files
def _read(path: Path) -> dict:
    data = read_data_file(path, "file")
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping at the top level")
    return data


def _validate(cls: type[T], data: dict, path: Path) -> T:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise UsageError(f"{path}: invalid {cls.__name__}: {where}: {first['msg']}") from exc


@lru_cache(maxsize=None)
def _load_cached(cls: type[T], path: str, mtime_ns: int) -> T:
    # mtime in the key: a file edited while the process runs is read again
    return _validate(cls, _read(Path(path)), Path(path))


def _load_file(cls: type[T], path: Path) -> T:
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    return _load_cached(cls, str(path.resolve()), mtime_ns)


# --------------------------------------------------------------------------- name index
def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9.]", "", name.lower())


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.lower().endswith(_FILE_SUFFIXES)


@dataclass(frozen=True)
class _Index:
    kind: str                     # "model" or "GPU", for messages
    list_command: str
    files: dict[str, Path]        # canonical name -> file
    keys: dict[str, str]          # normalised name or alias -> canonical name
    spellings: dict[str, str]     # name or alias as written -> canonical name (for suggestions)

    def resolve(self, name: str) -> str:
        canonical = self.keys.get(_key(name))
        if canonical is None:
            raise UsageError(self.unknown(name))
        return canonical

    def unknown(self, name: str) -> str:
        lowered = {s.lower(): c for s, c in self.spellings.items()}
        close = difflib.get_close_matches(name.lower(), lowered, n=6, cutoff=0.5)
        names = list(dict.fromkeys(lowered[c] for c in close))[:3]
        hint = f"; did you mean {', '.join(names)}?" if names else ""
        return f"unknown {self.kind} '{name}'{hint} (run `{self.list_command}` to list them)"


def _build_index(cls: type[T], dirs: Iterable[Path], kind: str, list_command: str) -> _Index:
    """Later directories override earlier ones for the same canonical name."""
    files: dict[str, Path] = {}
    aliases: dict[str, list[str]] = {}
    for directory in dirs:
        for path in sorted(directory.glob("*.yaml")):
            obj = _load_file(cls, path)
            files[obj.name] = path
            aliases[obj.name] = [obj.name, *obj.aliases]
    keys: dict[str, str] = {}
    spellings: dict[str, str] = {}
    for canonical, names in aliases.items():
        for spelling in names:
            other = keys.setdefault(_key(spelling), canonical)
            if other != canonical:
                raise UsageError(f"{kind} name '{spelling}' is claimed by both {files[other]} and {files[canonical]}")
            spellings[spelling] = canonical
    return _Index(kind, list_command, files, keys, spellings)


@lru_cache(maxsize=1)
def _model_index() -> _Index:
    return _build_index(ModelSpec, [MODELS_DIR], "model", "plan models")


def _hw_dirs(hw_path: str) -> list[Path]:
    return [HW_DIR, *(Path(p).expanduser() for p in hw_path.split(os.pathsep) if p)]


@lru_cache(maxsize=8)
def _hardware_index(hw_path: str) -> _Index:
    # keyed by $PLAN_HW_PATH so a changed environment is honoured
    for directory in _hw_dirs(hw_path)[1:]:
        if not directory.is_dir():
            raise UsageError(f"${HW_PATH_ENV} names {directory}, which is not a directory")
    return _build_index(HardwareProfile, _hw_dirs(hw_path), "GPU", "plan gpus")


def _hw_path() -> str:
    return os.environ.get(HW_PATH_ENV, "")


# --------------------------------------------------------------------------- models
def resolve_model_name(name: str) -> str:
    """Canonical catalog name for a name or alias; UsageError with suggestions when unknown."""
    return _model_index().resolve(name)


def list_models() -> list[ModelSpec]:
    index = _model_index()
    return [_load_file(ModelSpec, index.files[name]) for name in sorted(index.files, key=str.lower)]


def load_model(name_or_path: str) -> ModelSpec:
    """A catalog model by name or alias, a ModelSpec YAML, an HF config.json, or a folder holding one."""
    if not _looks_like_path(name_or_path):
        index = _model_index()
        canonical = index.keys.get(_key(name_or_path))
        if canonical is not None:
            return _load_file(ModelSpec, index.files[canonical])
        if not Path(name_or_path).exists():
            raise UsageError(index.unknown(name_or_path))
    return _load_model_path(Path(name_or_path).expanduser())


def _load_model_path(path: Path) -> ModelSpec:
    """The spec carries the absolute path it came from (ModelSpec.path): a model folder for an HF config.json
    inside one (what vLLM and the built-in engine load), else the file itself."""
    path = path.resolve()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise UsageError(f"{path} has no config.json; give a catalog name (`plan models`) or an HF model folder")
        spec, ref = _load_hf_config(config), path
    elif not path.is_file():
        raise UsageError(f"no such file: {path}")
    elif path.suffix == ".json" and "num_hidden_layers" in _read(path):
        spec, ref = _load_hf_config(path), path.parent if path.name == "config.json" else path
    else:
        spec, ref = _load_file(ModelSpec, path), path
    return spec.model_copy(update={"path": str(ref)})


def _load_hf_config(path: Path) -> ModelSpec:
    return _hf_cached(str(path.resolve()), path.stat().st_mtime_ns)


@lru_cache(maxsize=None)
def _hf_cached(path: str, mtime_ns: int) -> ModelSpec:
    return spec_from_hf_config(_read(Path(path)), _model_name_from_path(Path(path)), Path(path))


def _model_name_from_path(config: Path) -> str:
    # HF cache layout: .../models--org--name/snapshots/<hash>/config.json
    for part in reversed(config.parent.parts):
        if part.startswith("models--"):
            return part.split("--")[-1]
    return config.parent.name


def _rope(cfg: dict) -> tuple[float, dict | None]:
    """rope_theta and the scaling dict; transformers v5 folds both into rope_parameters."""
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = cfg.get("rope_theta") or params.get("rope_theta") or 10000.0
    params.pop("rope_theta", None)
    if "type" in params:
        params.setdefault("rope_type", params.pop("type"))
    scaling = params if params.get("rope_type", "default") != "default" else None
    return float(theta), scaling


def spec_from_hf_config(cfg: dict, name: str, path: Path | str = "config.json") -> ModelSpec:
    """Map a Hugging Face config.json (one of HF_ARCHITECTURES) onto a ModelSpec."""
    arch = cfg.get("model_type", "")
    if arch not in HF_ARCHITECTURES:
        raise UsageError(f"{path}: model_type '{arch}' is not supported (supported: {', '.join(HF_ARCHITECTURES)}); "
                         "write a ModelSpec YAML instead")
    heads = cfg.get("num_attention_heads")
    rope_theta, rope_scaling = _rope(cfg)
    fields = dict(
        name=name,
        hf_id=cfg.get("_name_or_path") or None,
        architecture=arch,
        hidden_size=cfg.get("hidden_size"),
        num_layers=cfg.get("num_hidden_layers"),
        num_attention_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim"),
        intermediate_size=cfg.get("intermediate_size"),
        vocab_size=cfg.get("vocab_size"),
        tie_word_embeddings=cfg.get("tie_word_embeddings", arch == "gemma2"),  # the transformers defaults
        max_position_embeddings=cfg.get("max_position_embeddings", 4096),
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
        attention_bias=arch == "qwen2" or bool(cfg.get("attention_bias")),  # Qwen2 always has q/k/v bias
        qk_norm=arch in ("qwen3", "qwen3_moe"),
        # Only Gemma-2's alternating window fits the schema; Mistral v0.1's all-layer window is left out.
        sliding_window=cfg.get("sliding_window") if arch == "gemma2" else None,
        post_norms=arch == "gemma2",
    )
    experts = cfg.get("num_local_experts") or cfg.get("n_routed_experts") or cfg.get("num_experts") or 0
    if experts:
        fields.update(
            num_experts=experts,
            num_experts_per_tok=cfg.get("num_experts_per_tok", 0),
            # Mixtral has no separate expert width: its intermediate_size is the expert's
            moe_intermediate_size=cfg.get("moe_intermediate_size") or cfg.get("intermediate_size"),
            num_shared_experts=cfg.get("n_shared_experts") or 0,
            first_k_dense_layers=cfg.get("first_k_dense_replace", 0),
        )
    if cfg.get("kv_lora_rank"):
        fields.update(
            q_lora_rank=cfg.get("q_lora_rank"),
            kv_lora_rank=cfg["kv_lora_rank"],
            qk_nope_head_dim=cfg.get("qk_nope_head_dim"),
            qk_rope_head_dim=cfg.get("qk_rope_head_dim"),
            v_head_dim=cfg.get("v_head_dim"),
            head_dim=cfg.get("qk_nope_head_dim", 0) + cfg.get("qk_rope_head_dim", 0),
        )
    missing = [k for k in ("hidden_size", "num_layers", "num_attention_heads", "intermediate_size", "vocab_size")
               if fields[k] is None]
    if missing:
        raise UsageError(f"{path}: config lacks {', '.join(missing)}")
    return _validate(ModelSpec, fields, Path(path))


# --------------------------------------------------------------------------- hardware
def resolve_hardware_name(name: str) -> str:
    """Canonical GPU name for a name or alias; UsageError with suggestions when unknown."""
    return _hardware_index(_hw_path()).resolve(name)


def list_hardware(profile: str = "auto") -> list[HardwareProfile]:
    """Every catalog GPU; with a profile YAML path for `profile`, only the GPU that file describes."""
    if profile not in PROFILE_CHOICES:
        return [_profile_file(profile)]
    index = _hardware_index(_hw_path())
    return [load_hardware(name, profile) for name in sorted(index.files, key=str.lower)]


def _profile_file(profile: str) -> HardwareProfile:
    path = Path(profile).expanduser()
    if not path.is_file():
        raise UsageError(f"profile must be one of {', '.join(PROFILE_CHOICES)} or a YAML file; got '{profile}'")
    return _load_file(HardwareProfile, path)


def _names(name: str, hw: HardwareProfile) -> bool:
    """Whether a GPU name or alias given by the user denotes the GPU of profile `hw`."""
    if _key(name) in {_key(n) for n in (hw.name, *hw.aliases)}:
        return True
    keys = _hardware_index(_hw_path()).keys
    return keys.get(_key(name)) is not None and keys.get(_key(name)) == keys.get(_key(hw.name))


def measured_profile_path(name: str, kinds: tuple[str, ...] = ("calibrated", "measured")) -> Path | None:
    """The first profile of `kinds` (sub-folders `calibrated/`, `measured/`) for a canonical GPU name: the
    user's directories first; within one, a profile fitted to engine runs beats one from microbenchmarks."""
    for directory in reversed(_hw_dirs(_hw_path())):
        for kind in kinds:
            path = directory / kind / f"{name}.yaml"
            if path.is_file():
                return path
    return None


def load_hardware(name: str, profile: str = "auto") -> HardwareProfile:
    """A GPU by name or alias (or a YAML path). profile: "auto" prefers a calibrated, then a measured
    profile when one exists; "datasheet", "measured" and "calibrated" force one kind; anything else is a
    path to a profile YAML, which must describe the GPU `name` names (predictions for one GPU from another's
    profile would be labelled wrongly)."""
    if profile not in PROFILE_CHOICES:
        hw = _profile_file(profile)
        if not _names(name, hw):
            raise UsageError(f"profile {profile} describes {hw.name}, not {name}: give a profile of {name}, "
                             f"or name its GPU ({hw.name})")
        return hw
    if _looks_like_path(name):
        return _load_file(HardwareProfile, Path(name).expanduser())
    index = _hardware_index(_hw_path())
    canonical = index.resolve(name)
    if profile != "datasheet":
        measured = measured_profile_path(canonical, ("calibrated", "measured") if profile == "auto" else (profile,))
        if measured is not None:
            return _load_file(HardwareProfile, measured)
        if profile != "auto":
            raise UsageError(f"no {profile} profile for {canonical}; expected hw_profiles/{profile}/{canonical}.yaml "
                             f"(or under a ${HW_PATH_ENV} directory); use --profile datasheet")
    return _load_file(HardwareProfile, index.files[canonical])


def apply_price_overrides(profiles: Iterable[HardwareProfile], path: str | Path) -> list[HardwareProfile]:
    """Copies of `profiles` with prices from a {gpu name: $ per GPU-hour} YAML/JSON file.
    Catalog GPUs absent from `profiles` are skipped; names unknown to both are an error."""
    path = Path(path).expanduser()
    overrides = _read(path)
    profiles = list(profiles)
    by_key = {_key(n): i for i, p in enumerate(profiles) for n in (p.name, *p.aliases)}
    date = dt.date.fromtimestamp(path.stat().st_mtime).isoformat()
    prices: dict[int, float] = {}
    for name, price in overrides.items():
        if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
            raise UsageError(f"{path}: price for '{name}' must be a non-negative number ($ per GPU-hour)")
        index = by_key.get(_key(str(name)))
        if index is None:
            resolve_hardware_name(str(name))  # unknown everywhere: raises with suggestions
            continue
        prices[index] = float(price)
    return [p if i not in prices else p.model_copy(update={
        "price_per_gpu_hour": prices[i],
        "sources": {**p.sources, "price_per_gpu_hour": Sourced(value=prices[i], source=f"override file {path}",
                                                               date=date)},
    }) for i, p in enumerate(profiles)]
