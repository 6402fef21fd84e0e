"""Configuration: pydantic models, YAML presets, ``--set key=value`` overrides, a stable hash.

One resolved :class:`Config` describes one cell (benchmark, method, seed, mode) *and* the grid it belongs
to (``audit``).  Presets live in ``src/jepa_audit/presets/<name>.yaml`` (package data: a wheel carries them) and
list only what differs from the defaults here.
Every model forbids unknown keys, so a typo fails before any compute is spent, with one message that names
the key and the file it came from.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from jepa_audit.presets import PRESET_DIR, PRESETS, presets_for_task  # noqa: F401  (config's API)

# The one home of the presets: package data, so an installed wheel runs what a checkout runs.


class ConfigError(ValueError):
    """A configuration problem, with a message that names the key and the source file."""


class Strict(BaseModel):
    # inf and nan are refused in every float field (λ = inf trained to a NaN model; lr = inf likewise)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelCfg(Strict):
    """Which causal LM to fine-tune."""

    kind: Literal["tiny", "hf"] = Field("tiny", description="tiny: a small Llama trained here; hf: a local HF dir")
    path: str | None = Field(None, description="local Hugging Face model directory (kind=hf); never a hub id")
    hidden_size: int = Field(64, gt=0, description="tiny model width d")
    num_layers: int = Field(2, gt=0, description="tiny model depth")
    num_heads: int = Field(4, gt=0, description="attention heads")
    num_kv_heads: int = Field(4, gt=0, description="key/value heads (GQA when < num_heads)")
    intermediate_size: int = Field(192, gt=0, description="MLP width")
    max_positions: int = Field(256, gt=0, description="longest sequence in tokens")
    vocab_size: int = Field(512, gt=32, description="tiny tokenizer vocabulary (BPE trained on train text)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights/autocast dtype")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    attn_implementation: Literal["sdpa", "eager"] = Field("sdpa", description="attention kernel")
    autocast: Literal["none", "bf16", "fp16"] = Field(
        "none", description="mixed precision for forward/loss on GPU (weights stay in model.dtype)"
    )
    forward: Literal["auto", "hf", "lean"] = Field(
        "auto", description="the CE rows' forward and decoding: lean = models/lean.py (transformers' Llama maths, "
        "LoRA merged, fused projections; same outputs to float rounding, ~1.5x faster on tiny CPU models); hf = "
        "transformers' forward; auto = lean where it applies (Llama, one dtype throughout, no autocast, no LoRA dropout while "
        "training), else hf"
    )

    @model_validator(mode="after")
    def _check(self) -> ModelCfg:
        if self.kind == "hf" and not self.path:
            raise ValueError("model.kind=hf needs model.path: a local directory with config.json and safetensors")
        if self.hidden_size % self.num_heads:
            raise ValueError("model.hidden_size must be divisible by model.num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("model.num_heads must be divisible by model.num_kv_heads")
        return self


class BaseCfg(Strict):
    """Pre-training of the tiny base, once per (corpus, config), cached content-addressed."""

    steps: int = Field(650, ge=0, description="optimizer steps on the pre-training pool")
    pool_size: int = Field(3000, gt=0, description="generated (description, regex) pairs, disjoint from fine-tuning")
    pool_seed: int = Field(1_000_003, description="generator seed of the pool (never a fine-tuning seed)")
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(32, gt=0)
    seed: int = Field(0, description="init and data order of the base")


class AdapterCfg(Strict):
    """LoRA (through PEFT) or full fine-tuning; decided once, in models.build_model."""

    mode: Literal["lora", "full"] = "lora"
    rank: int = Field(16, gt=0)
    alpha: float = Field(32.0, gt=0, description="LoRA alpha (LLM-JEPA: 2·rank)")
    dropout: float = Field(0.1, ge=0, lt=1)
    targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    train_embeddings: bool = Field(False, description="also train embeddings/head under LoRA (modules_to_save)")


class DataCfg(Strict):
    """Which task, where its examples come from and how they are split (jepa_audit.tasks)."""

    task: str = Field("nlrx", description="task id from `jepa-audit tasks list` (nlrx, scan, gsm8k, jsonl, a plugin's)")
    source: str = Field(
        "embedded", description="the task's data source: nlrx: embedded (generator) | nl-rx (data.path); "
        "scan, gsm8k, jsonl: local (data.path)"
    )
    path: str | None = Field(None, description="local data directory of the task (NL-RX, SCAN, GSM8K files)")
    split: Literal["llm-jepa", "deep-regex"] = Field(
        "llm-jepa", description="nlrx only: 8,000/2,000 or 6,500/1,000/2,500 (other tasks: the benchmark)"
    )
    n_train: int = Field(2000, gt=0, description="embedded corpus: training pairs per benchmark")
    n_test: int = Field(300, gt=0, description="embedded corpus: test pairs per benchmark")
    corpus_seed: int = Field(7, description="embedded corpus seed (fixed across cells)")
    val_size: int = Field(200, ge=0, description="validation slice carved from train (tuning only)")
    geometry_size: int = Field(
        64, ge=0, description="held-out geometry pool carved from train after val (never val, never test)"
    )
    max_train: int | None = Field(None, gt=0, description="use only the first N training rows")
    max_test: int | None = Field(None, gt=0, description="evaluate only the first N test rows")
    system_prompt: str | None = Field(None, description="system turn; None = the task's own (tasks list)")
    # the jsonl task (tasks/jsonl.py): one's own data from one YAML
    name: str | None = Field(None, description="jsonl: the benchmark's name (default: jsonl)")
    train_file: str = Field("train.jsonl", description="jsonl: the training file under data.path")
    test_file: str = Field("test.jsonl", description="jsonl: the test file under data.path")
    validation_file: str | None = Field(
        None, description="jsonl: a validation file under data.path (default: data.val_size rows carved from train)"
    )
    prompt_field: str = Field("prompt", description="jsonl: the field of a pair line holding the prompt")
    target_field: str = Field("target", description="jsonl: the field of a pair line holding the target")
    match: Literal["exact", "normalised", "numeric"] = Field(
        "exact", description="jsonl: exact match of stripped strings | normalised (case, spaces, Unicode form) | "
        "numeric (the last number, by value)"
    )

    @model_validator(mode="after")
    def _check(self) -> DataCfg:
        # imported here, not at the top, for start-up speed alone (no cycle: tasks never import config): the
        # CLI imports this module for its help text, and the task registry (numpy, the NL-RX generator, the
        # regex engine) would add ~0.2-0.4 s to every command (measured: `import jepa_audit.cli`, 2 cores)
        from jepa_audit.tasks import get_task

        try:
            task = get_task(self.task)
        except KeyError as e:
            raise ValueError(f"data.task: {str(e).strip(chr(34) + chr(39))}") from None
        if self.source not in task.sources:
            raise ValueError(
                f"data.source={self.source!r} is not a source of task {self.task}; expected one of: "
                f"{', '.join(task.sources)}"
            )
        if self.source != "embedded" and not self.path:
            raise ValueError(
                f"data.source={self.source} needs data.path: a local {self.task} directory (nothing is downloaded)"
            )
        return self

    @property
    def system(self) -> str:
        """The system turn: ``system_prompt``, or the task's own when it is unset."""
        if self.system_prompt is not None:
            return self.system_prompt
        from jepa_audit.tasks import get_task  # lazy for start-up speed, as in _check

        return get_task(self.task).system_prompt


class TrainCfg(Strict):
    steps: int = Field(120, gt=0, description="optimizer steps")
    batch_size: int = Field(16, gt=0, description="sequences per micro-batch")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (tiny-model calibration: docs/calibration.md)")
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(10, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine floor as a fraction of lr")
    schedule: Literal["cosine", "linear"] = Field(
        "cosine", description="cosine: warmup then cosine to min_lr_ratio·lr; linear: transformers' "
        "get_linear_schedule_with_warmup (LLM-JEPA's, via the HF Trainer default), to 0"
    )
    grad_clip: float = Field(1.0, ge=0, description="0 disables clipping")
    threads: int = Field(1, gt=0, description="torch CPU threads per cell (tiny models gain nothing from more)")
    log_every: int = Field(10, gt=0)
    deterministic: bool = Field(
        False, description="deterministic GPU kernels (bit-identical retries; slower): see jepa_audit/determinism.py"
    )
    pack: Literal["none", "longest", "flat"] = Field(
        "none",
        description="pack the CE rows' real tokens (position ids restarting per sequence, block-diagonal "
        "attention; same loss and gradients to float rounding, train.py: forward_rows): none = right-padded "
        "rows; longest = first-fit into rows as long as the batch's longest (never more attention work); "
        "flat = one row of every real token, no padding at all (for varlen attention kernels, e.g. "
        "FlashAttention-2 on a GPU; a dense-mask CPU attention pays the square). docs/performance.md",
    )
    labels: Literal["answer", "llm-jepa"] = Field(
        "answer",
        description="CE targets: answer = the answer and its end-of-turn; llm-jepa = LLM-JEPA's collator "
        "(DataCollatorForLanguageModeling(mlm=False): every token but its pad id, so the prompt is trained and, "
        "with pad = eos = end-of-turn, no end-of-turn is)",
    )


class ViewsCfg(Strict):
    """How the two views of a two-view objective are built (data/views.py)."""

    nl: Literal["prefix", "published"] = Field(
        "prefix",
        description="prefix: NL view = the CE row's prefix (free), regex view = the assistant turn after BOS; "
        "published: both exactly as LLM-JEPA's finetune.py (user-only / assistant-only rows rendered as text "
        "then tokenised, k predictor tokens before the end-of-turn, last_token = -2)",
    )


class MethodOverride(Strict):
    weight: float | None = Field(None, ge=0, description="λ for this method (beats aux.weight)")
    params: dict[str, Any] = Field(default_factory=dict, description="parameters for this method (beat aux.params)")


class AuxCfg(Strict):
    method: str = Field("ce", description="objective id from `jepa-audit aux list` (ce = no auxiliary)")
    weight: float | None = Field(None, ge=0, description="λ in CE + λ·aux; None = the registry default")
    params: dict[str, Any] = Field(default_factory=dict, description="overrides of the objective's parameters")
    dose: float | None = Field(
        None, gt=0, description="λ calibration runs only: set λ at step 0 so that λ·‖∇aux‖/‖∇CE‖ = dose "
        "(audit/calibration.py); None = use weight"
    )
    calibrated_dose: float | None = Field(
        None, gt=0, description="set by the audit's λ calibration stage: weight is its validation pick, made at "
        "this grid dose (calibration.json); None = not calibrated"
    )
    per_method: dict[str, MethodOverride] = Field(
        default_factory=dict, description="method id → {weight, params}: settings of one method of a grid"
    )

    def resolved(self, default_weight: float) -> tuple[float, dict[str, Any]]:
        """(λ, parameter overrides) of ``method``: per_method[method] over aux.weight/params over defaults.

        Always λ = 0 for the ``ce`` baseline, which has no auxiliary: a global ``--set aux.weight=0.5`` over a
        grid must not turn the baseline into a cell with a λ·0 term and nothing to train it."""
        if self.method == "ce":
            return 0.0, {}
        ov = self.per_method.get(self.method, MethodOverride())
        weight = ov.weight if ov.weight is not None else (self.weight if self.weight is not None else default_weight)
        return weight, {**self.params, **ov.params}


class ProbeCfg(Strict):
    enabled: bool = Field(True, description="log cos(∇aux, ∇CE); off only for timing the bare step")
    every: int = Field(25, gt=0, description="gradient-cosine probe interval in steps (step 0 always probes)")
    per_layer: bool = True


class GeometryCfg(Strict):
    enabled: bool = True
    layers: list[int] | None = Field(None, description="hidden-state indices; None = 4 evenly spaced incl. last")
    n_sequences: int = Field(
        64, gt=1, description="sequences of the fixed geometry batch, drawn from the data.geometry_size pool "
        "(capped by it, with a warning); ≥ 512 for d ≈ 2,048"
    )
    seed: int = Field(0, description="which pool rows form the fixed geometry batch")
    curve_every: int = Field(0, ge=0, description="log a cheap geometry subset every N steps (0 = off)")


class EvalCfg(Strict):
    batch_size: int = Field(64, gt=0)
    max_new_tokens: int = Field(64, gt=0)
    dfa_max_states: int = Field(20000, gt=0)
    dfa_time_budget_s: float = Field(0.5, gt=0)


class TrackingCfg(Strict):
    mlflow: bool = Field(False, description="log params/metrics to MLflow (local file store)")
    mlflow_uri: str | None = Field(None, description="default: file store under the audit directory")
    tensorboard: bool = Field(False, description="write TensorBoard curves under the cell directory")


class CalibrationCfg(Strict):
    """The audit's λ calibration stage (audit/calibration.py): before the test grid, per (auxiliary,
    benchmark, mode), short fine-tunes on train at each dose, scored on the validation slice (never test)."""

    enabled: bool = Field(False, description="run the stage before the test grid (quick, cpu, paper: on)")
    doses: list[float] = Field(
        default_factory=lambda: [0.001, 0.01, 0.1, 1.0],
        description="grid of step-0 doses λ·‖∇aux‖/‖∇CE‖; λ per run = dose·‖∇CE‖/‖∇aux‖ at step 0",
    )
    seeds: list[int] = Field(default_factory=lambda: [1001], description="calibration seeds, disjoint from audit.seeds")
    steps: int | None = Field(None, gt=0, description="optimizer steps per run; None = train.steps")
    val_rows: int | None = Field(None, gt=0, description="score on the first N validation rows; None = all")
    rule: Literal["best", "one_se"] = Field(
        "best",
        description="pick: best = the validation-best dose, ties to the smaller λ; one_se = the largest λ within "
        "one paired standard error of the best score (glmnet's lambda.1se; objectives/calibrate.py)",
    )

    @model_validator(mode="after")
    def _check(self) -> CalibrationCfg:
        d = self.doses
        if not d or any(not (x > 0) for x in d) or sorted(set(d)) != d:
            raise ValueError("calibration.doses must be positive, distinct and ascending")
        if d[-1] < 1.0 or d[-1] / d[0] < 1000 * (1 - 1e-9):
            raise ValueError("calibration.doses must reach 1 and span at least three decades (max/min ≥ 1000)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("calibration.seeds must be a non-empty list of distinct seeds")
        return self


class StatsCfg(Strict):
    """What the verdicts decide against, declared before the run (recorded in grid.json; stats/decisions.py)."""

    sesoi_pp: float = Field(
        2.0, gt=0, description="smallest effect of interest of the primary metric, percentage points: the reward "
        "half says 'no gain shown' only when gains of this size are ruled out (non-superiority test after Holm)",
    )
    min_shift_sd: float = Field(
        0.5, ge=0, description="a target geometry key counts as moved only when |shift| ≥ this many seed SDs "
        "(pooled within methods over every cell of the benchmark and mode)",
    )


class AuditCfg(Strict):
    """The grid: benchmark × method × seed × mode."""

    name: str = "audit"
    benchmarks: list[str] = Field(default_factory=lambda: ["synth", "turk"])
    methods: list[str] = Field(default_factory=lambda: ["ce"])
    seeds: list[StrictInt] = Field(default_factory=lambda: [82, 23, 37])  # strict: `true` is not seed 1
    modes: list[Literal["lora", "full"]] = Field(default_factory=lambda: ["lora"])
    executor: Literal["local", "ray"] = "local"
    workers: int = Field(2, gt=0, description="cells run side by side")
    alpha: float = Field(0.10, gt=0, lt=1)
    family: Literal["per-benchmark", "all"] = "per-benchmark"


class Config(Strict):
    """Everything a cell needs; ``benchmark``/``seed``/``aux.method``/``adapter.mode`` pick the cell."""

    preset: str = "custom"
    benchmark: str = "synth"
    seed: int = 82
    cache_dir: str = Field(".cache/jepa-audit", description="content-addressed base models and tokenizers")
    model: ModelCfg = Field(default_factory=ModelCfg)
    base: BaseCfg = Field(default_factory=BaseCfg)
    adapter: AdapterCfg = Field(default_factory=AdapterCfg)
    data: DataCfg = Field(default_factory=DataCfg)
    train: TrainCfg = Field(default_factory=TrainCfg)
    aux: AuxCfg = Field(default_factory=AuxCfg)
    views: ViewsCfg = Field(default_factory=ViewsCfg)
    probe: ProbeCfg = Field(default_factory=ProbeCfg)
    geometry: GeometryCfg = Field(default_factory=GeometryCfg)
    eval: EvalCfg = Field(default_factory=EvalCfg)
    tracking: TrackingCfg = Field(default_factory=TrackingCfg)
    audit: AuditCfg = Field(default_factory=AuditCfg)
    calibration: CalibrationCfg = Field(default_factory=CalibrationCfg)
    stats: StatsCfg = Field(default_factory=StatsCfg)
    plugins: list[str] = Field(
        default_factory=list, description="plugin .py files or folders (objectives, tasks) imported before the "
        "registries are read; relative paths resolve against the config file's folder (docs/plugins.md)"
    )
    plugins_loaded: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="set when the config is loaded, not by hand: every plugin imported "
        "(files and entry points) → its sha256 and the ids it registered; enters the hash of the cells it serves"
    )

    @model_validator(mode="after")
    def _calibration_seeds_disjoint(self) -> Config:
        shared = sorted(set(self.calibration.seeds) & set(self.audit.seeds))
        if self.calibration.enabled and shared:
            raise ValueError(
                f"calibration.seeds and audit.seeds share {shared}: calibration runs must use seeds the test "
                "grid does not"
            )
        return self

    def cell(self, benchmark: str, method: str, seed: int, mode: str) -> Config:
        """The config of one grid cell (a copy)."""
        c = self.model_copy(deep=True)
        c.benchmark, c.seed = benchmark, seed
        c.aux.method = method
        c.adapter.mode = mode  # type: ignore[assignment]
        return c

    def cell_hash(self) -> str:
        """Stable hash of what determines a cell's result (not the grid, not where caches live)."""
        # the calibration stage reaches a test cell only through aux.weight (its pick), which is hashed;
        # stats (what the verdicts decide against) changes no cell's result; plugins enter through their sha256
        d = self.model_dump(
            mode="json",
            exclude={"audit", "calibration", "cache_dir", "preset", "tracking", "stats", "plugins", "plugins_loaded"},
        )
        # keys added after results existed leave the hash alone at their defaults (old runs still resume)
        # the system turn is hashed as the text it resolves to (None = the task's own), as before it could be None
        d["data"]["system_prompt"] = self.data.system
        for section, key, default in _HASH_NEUTRAL_DEFAULTS:
            if d.get(section, {}).get(key, default) == default:
                d.get(section, {}).pop(key, None)
        if d.get("views") == {"nl": "prefix"}:
            d.pop("views")
        used = self.cell_plugins()
        if used:  # a plugin's source is part of the cell: by content, not by where the file lies
            d["plugins"] = sorted(p["sha256"] for p in used.values())
        return stable_hash(d)

    def cell_plugins(self) -> dict[str, dict[str, Any]]:
        """The loaded plugins this cell runs: those that registered its ``aux.method`` or its ``data.task``."""
        return {src: p for src, p in self.plugins_loaded.items()
                if self.aux.method in p.get("objectives", ()) or self.data.task in p.get("tasks", ())}  # fmt: skip


_HASH_NEUTRAL_DEFAULTS: tuple[tuple[str, str, Any], ...] = (
    ("train", "labels", "answer"),
    ("train", "pack", "none"),
    ("model", "forward", "auto"),
    ("aux", "per_method", {}),
    ("aux", "dose", None),
    ("aux", "calibrated_dose", None),
    ("data", "task", "nlrx"),
    ("data", "name", None),
    ("data", "train_file", "train.jsonl"),
    ("data", "test_file", "test.jsonl"),
    ("data", "validation_file", None),
    ("data", "prompt_field", "prompt"),
    ("data", "target_field", "target"),
    ("data", "match", "exact"),
)


def stable_hash(obj: Any, n: int = 16) -> str:
    """sha256 of canonical JSON (sorted keys), first ``n`` hex digits."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


# ----------------------------------------------------------------------------------------------------------
# Loading: preset → file → --set overrides → validation
# ----------------------------------------------------------------------------------------------------------


def preset_path(name: str) -> Path:
    p = PRESET_DIR / f"{name}.yaml"
    if name in PRESETS and p.is_file():
        return p
    raise ConfigError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)} (files in {PRESET_DIR})")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read as UTF-8 text: {e}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_where(e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _yaml_where(e: yaml.YAMLError) -> str:
    """The parser's complaint in one line: ``line L, column C: <problem>`` (1-based), not its 7-line report."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = " ".join(str(getattr(e, "problem", None) or e).split())
    context = getattr(e, "context", None)
    what = f"{problem} ({' '.join(str(context).split())})" if context and problem else problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {what}" if mark is not None else what


def _non_finite(obj: Any, where: str = "") -> str | None:
    """The dotted key of the first inf or nan anywhere in ``obj`` (lists as ``key[i]``), or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where or "(top level)"
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = _non_finite(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            found = _non_finite(v, f"{where}[{i}]")
            if found:
                return found
    return None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "params":
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=c`` → (["a", "b"], yaml-typed c)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.steps=100")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _format_validation(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key {loc!r}")
        else:
            parts.append(f"key {loc!r}: {e['msg']} (got {e.get('input')!r})")
    return f"invalid config from {source}: " + "; ".join(parts)


#: imports plugin files (absolute paths) and returns what ``Config.plugins_loaded`` records: source → record
PluginLoader = Callable[[list[str]], dict[str, dict[str, Any]]]


def _plugin_paths(data: dict[str, Any], base: Path, source: str) -> list[str]:
    """``data["plugins"]`` as absolute paths (relative ones resolved against ``base``); ConfigError else."""
    raw = data.get("plugins", [])
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise ConfigError(f"invalid config from {source}: key 'plugins': expected a list of paths, got {raw!r}")
    return [str((base / Path(x).expanduser()).resolve()) for x in raw]


def load_config(
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: list[str] | None = None,
    includes: list[str | Path] | None = None,
    plugin_loader: PluginLoader | None = None,
) -> Config:
    """Resolve a config: defaults ← preset ← file ← ``--set`` overrides. Raises ConfigError.

    Plugins (``plugins:`` of the file, resolved against its folder; ``includes``, i.e. ``--include``,
    against the working directory) are handed to ``plugin_loader`` before validation, so a plugin's task or
    objective is known to it; ``plugins_loaded`` records what it imported. The loader lives above config
    (:func:`jepa_audit.plugins.load_config` passes it, with installed entry points); without one, a config
    that lists plugins is refused rather than validated without them."""
    data: dict[str, Any] = {}
    sources = []
    plugins: list[str] = []
    if preset:
        p = preset_path(preset)
        data = _merge(data, _read_yaml(p))
        data.setdefault("preset", preset)
        sources.append(str(p))
        plugins += _plugin_paths(data, p.parent, str(p))
    if file:
        raw = _read_yaml(Path(file))
        plugins += _plugin_paths(raw, Path(file).resolve().parent, str(file))
        data = _merge(data, raw)
        sources.append(str(file))
    for item in overrides or []:
        path, value = parse_override(item)
        cur = data
        for k in path[:-1]:
            nxt = cur.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: {k!r} is not a section")
            cur = nxt
        cur[path[-1]] = value
        sources.append(f"--set {item}")
        if path == ["plugins"]:
            plugins += _plugin_paths({"plugins": value}, Path.cwd(), f"--set {item}")
    bad = _non_finite(data)  # everywhere, aux.params and other free-form mappings included
    if bad is not None:
        raise ConfigError(
            f"invalid config from {' + '.join(sources) or 'defaults'}: key {bad!r} is not a finite number "
            "(inf and nan are refused everywhere in the config)"
        )
    plugins += [str(Path(x).expanduser().resolve()) for x in includes or []]
    data["plugins"] = list(dict.fromkeys(plugins))
    if plugin_loader is not None:
        data["plugins_loaded"] = plugin_loader(data["plugins"])
    elif data["plugins"]:
        # the registries sit above config: importing plugins is the caller's (jepa_audit.plugins.load_config)
        raise ConfigError(
            f"config from {' + '.join(sources) or 'defaults'} lists plugins {data['plugins']}: load it with "
            "jepa_audit.plugins.load_config (the CLI does), which imports them before the config is validated"
        )
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, " + ".join(sources) or "defaults")) from None


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
