"""Typed configuration: personas.yaml loaded into validated models.

`load_personas(path)` returns every persona with its effective pipeline config
(defaults deep-merged with the persona's `overrides`). A bad entry raises
`ConfigError` naming the persona id, the field and the value. Airflow's DAG
file uses `load_personas_lenient`, which keeps the good personas and returns
the errors of the bad ones, so one typo does not take down the other DAGs.

The file is untrusted in the sense that a typo or a paste must not hurt: it
is capped in size, so is what YAML aliases expand to (a 613-byte alias bomb
expands to gigabytes); duplicate keys, duplicate persona ids and unknown keys at
every level are refused; cron schedules and Kubernetes quantities are checked here, at
load, naming the persona; every echoed value is bounded (`loaders.brief`).

Only pydantic, yaml and croniter are imported here: the DAG files import this
module at parse time.
"""

from __future__ import annotations

import copy
import os
import re
from decimal import Decimal, InvalidOperation
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dpo_tasks.loaders import InputFileError, brief, check_regular_file, decode_utf8

# Matched with fullmatch: `$` would also accept a trailing newline. Starts with a letter, ends with
# a letter or digit (a Kubernetes label value must), 63 characters at most (a DNS label's limit).
PERSONA_ID_RE = re.compile(r"[a-z](?:[a-z0-9_]{0,61}[a-z0-9])?")
DEFAULT_PERSONA = "persona_e_mexican_vegan"
EMBEDDED_MODEL = "smollm2-135m-instruct"
MAX_PERSONAS_BYTES = 1024 * 1024
MAX_YAML_DEPTH = 32
# Values after alias expansion; the shipped file has about 600.
MAX_YAML_VALUES = 50_000
# Kubernetes resource quantity (k8s.io/apimachinery resource.Quantity): a decimal with an optional
# binary (Ki..Ei), decimal SI (n, u, m, k, M..E) or exponent suffix.
_QUANTITY_RE = re.compile(r"(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?")
_QUANTITY_SCALE = {
    None: Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
# Schedules Airflow takes that are not cron expressions.
_NON_CRON_SCHEDULES = {"@once", "@continuous"}


def parse_quantity(value: str) -> Decimal:
    """A Kubernetes quantity ("500m", "64Gi", "1.5") as a number; ValueError naming the value otherwise."""
    m = _QUANTITY_RE.fullmatch(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(
            f"{brief(value)} is not a Kubernetes quantity: a number with an optional suffix "
            "(cpu: \"8\", \"500m\"; memory: \"64Gi\", \"512Mi\", \"1G\")"
        )
    suffix = m.group("suffix")
    try:
        if suffix and suffix[0] in "eE":
            return Decimal(m.group("num")) * Decimal(10) ** int(suffix[1:])
        return Decimal(m.group("num")) * _QUANTITY_SCALE[suffix]
    except (InvalidOperation, ValueError, OverflowError):
        raise ValueError(f"{brief(value)} is not a usable Kubernetes quantity") from None


def validate_schedule(value: str | None) -> str | None:
    """None, an Airflow preset or a 5-field cron expression that fires; ValueError saying why otherwise.

    Airflow's cron timetables validate with croniter; checking here names the persona at load
    instead of failing when the scheduler first computes a run.
    """
    if value is None or value in _NON_CRON_SCHEDULES:
        return value
    from croniter import CroniterBadCronError, CroniterBadDateError, croniter

    if not value.startswith("@") and len(value.split()) != 5 or value != value.strip() or "\n" in value:
        raise ValueError(f"{brief(value)} is not a 5-field cron expression (minute hour day month weekday) "
                         "or an Airflow preset (@hourly, @daily, @weekly, @monthly, @yearly, @once, @continuous)")
    try:
        croniter(value).get_next(float)
    except CroniterBadDateError:
        raise ValueError(f"cron expression {brief(value)} never fires") from None
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise ValueError(f"{brief(value)} is not a valid cron expression: {exc}") from None
    return value


def package_root() -> Path:
    """The repository/package root (holds personas.yaml when run from a checkout)."""
    return Path(__file__).resolve().parent.parent


def default_personas_path() -> Path:
    env = os.environ.get("PERSONA_DPO_PERSONAS")
    if env:
        return Path(env)
    return package_root() / "personas.yaml"


class ConfigError(ValueError):
    """personas.yaml (or a run's config) is invalid; the message names where."""


class _Model(BaseModel):
    # Unknown keys are typos until proven otherwise.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Model):
    base: str = EMBEDDED_MODEL
    # A directory, or a gs:// URI / store path the stage pulls into its cache (the pod included).
    sft_adapter: str | None = None
    # Pins the base model's hub revision (a commit hash or tag); recorded in the model card.
    revision: str | None = None


class GenerationConfig(_Model):
    num_prompts: int = Field(60, ge=1, le=100_000)
    batch_size: int = Field(16, ge=1, le=1024)
    max_new_tokens: int = Field(192, ge=8, le=4096)
    strong_temperature: float = Field(0.7, gt=0, le=2)
    weak_temperature: float = Field(0.9, gt=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    # Combined with the persona and the run's directory name (its Airflow run id): each run samples
    # its own prompts and seeds, a rerun of the same run samples the same ones.
    seed: int = 42
    # The user's own pool instead of the shipped one: a JSONL file of {id, prompt}, a local path or a
    # gs:// URI. From a run's conf only under the deployment's pool prefix (check_run_pool).
    prompt_pool: str | None = None

    @field_validator("prompt_pool")
    @classmethod
    def _pool_location(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip() or any(ord(ch) < 32 for ch in value):
            raise ValueError(f"generation.prompt_pool = {value!r} must be a path or a gs://bucket/object URI")
        if value.startswith("gs://") and "/" not in value[len("gs://"):].strip("/"):
            raise ValueError(f"generation.prompt_pool = {value!r} must name an object: gs://bucket/path/pool.jsonl")
        if "://" in value and not value.startswith(("gs://", "file://")):
            raise ValueError(f"generation.prompt_pool = {value!r}: only local paths, file:// and gs:// URIs are supported")
        return value


class GroqConfig(_Model):
    model: str = "llama-3.3-70b-versatile"
    both_orders: bool = True
    hard_constraint_shortcut: bool = True
    max_concurrency: int = Field(8, ge=1, le=256)
    # Groq's published on-demand limits for llama-3.3-70b-versatile.
    requests_per_minute: int = Field(30, ge=1)
    tokens_per_minute: int = Field(12_000, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0, le=20)
    # 5xx/timeout retries wait min(backoff_max_s, backoff_base_s * 2**attempt), jittered; 429 waits retry-after.
    backoff_base_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    max_output_tokens: int = Field(400, ge=64, le=8192)
    temperature: float = Field(0.0, ge=0, le=2)
    # Airflow connection holding the key (password field); GROQ_API_KEY outside Airflow.
    conn_id: str = "groq_default"
    # USD per million tokens, for the cost estimate only.
    price_in_per_mtok: float = Field(0.59, ge=0)
    price_out_per_mtok: float = Field(0.79, ge=0)


class RewardConfig(_Model):
    model_path: str | None = None
    num_candidates: int = Field(4, ge=2, le=32)
    min_margin: float = Field(0.05, ge=0)


class LabelingConfig(_Model):
    judge: Literal["rules", "groq", "reward"] = "rules"
    min_margin: float = Field(1.0, ge=0, le=10)
    groq: GroqConfig = GroqConfig()
    reward: RewardConfig = RewardConfig()


IMAGE_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def check_image_pinned(image: str) -> str:
    """A pod image must say which build it is: a tag other than `latest`, or a digest."""
    name, at, digest = image.partition("@")
    if at:
        if not IMAGE_DIGEST_RE.fullmatch(digest):
            raise ValueError(f"image {image!r} has a malformed digest; expected @sha256:<64 hex digits>")
        return image
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        raise ValueError(
            f"image {image!r} has no tag: pin the trainer image by tag or digest "
            "(e.g. REGISTRY/persona-dpo-trainer:1.4.0 or ...@sha256:...), so every pod of a run runs the same build"
        )
    if last.rsplit(":", 1)[1] == "latest":
        raise ValueError(f"image {image!r} uses the ':latest' tag, which moves; pin the trainer image by a release tag or digest")
    return image


def check_quantity(field: str, v: str | None) -> str | None:
    """A positive Kubernetes quantity; bytes below a mebibyte are a missing suffix ("64" meant "64Gi")."""
    if v is None:
        return v
    amount = parse_quantity(v)
    if amount <= 0:
        raise ValueError(f"{field} must be a positive quantity, got {brief(v)}")
    if field != "cpu" and amount < 2**20:
        raise ValueError(f"{field} = {brief(v)} is {amount} bytes; add a suffix such as Mi or Gi")
    if field == "cpu" and amount < Decimal("0.001"):
        raise ValueError(f"cpu = {brief(v)} is below 1m, the smallest CPU request Kubernetes accepts")
    return v


class Toleration(_Model):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"


GPU_TOLERATION = Toleration(key="nvidia.com/gpu")
A100_NODES = {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}


class PodResources(_Model):
    """What one stage's pod asks for. A generation or evaluation pod may need less than training."""

    # 0: a CPU pod (format only needs the tokenizer); no GPU node, no A100 pool slot.
    gpu_count: int = Field(1, ge=0)
    cpu: str = "4"
    memory: str = "32Gi"
    # Requested and limited: the run dir, /tmp and the caches are emptyDirs on the node's disk.
    ephemeral_storage: str = "100Gi"
    node_selector: dict[str, str] = A100_NODES
    tolerations: tuple[Toleration, ...] = (GPU_TOLERATION,)
    # The task's execution_timeout; the pod's activeDeadlineSeconds is a backstop a little above it.
    timeout_s: int = Field(3 * 3600, ge=60, le=7 * 24 * 3600)

    @field_validator("cpu", "memory", "ephemeral_storage")
    @classmethod
    def _quantity(cls, v: str, info: Any) -> str:
        return check_quantity(info.field_name, v)

    @field_validator("gpu_count")
    @classmethod
    def _one_gpu(cls, v: int) -> int:
        if v > 1:
            raise ValueError(
                f"gpu_count={v!r} is not supported: every stage runs as one process on one GPU (it is not "
                "launched through accelerate/torchrun, so extra GPUs would sit idle); use one larger GPU "
                "(node_selector, e.g. nvidia-a100-80gb) instead"
            )
        return v


class SecretKeyRef(_Model):
    """A key of a Kubernetes Secret in the pods' namespace (created by the platform team)."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]{1,253}$")


class ModelCacheConfig(_Model):
    """A volume for the Hugging Face cache, so a 3B base is not downloaded by every pod."""

    pvc: str | None = None
    gcs_bucket: str | None = None
    read_only: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> "ModelCacheConfig":
        if (self.pvc is None) == (self.gcs_bucket is None):
            raise ValueError("model_cache needs exactly one of pvc (a PersistentVolumeClaim name) or gcs_bucket (GCS FUSE CSI)")
        return self


class KubernetesConfig(_Model):
    """Where and how the model stages' pods run (`runner: kubernetes`). Deployment settings only:
    a run's conf never changes them."""

    gke: bool = True
    # Required with the kubernetes runner; a tag other than latest, or a digest.
    image: str | None = None
    namespace: str = "persona-dpo"
    project_id: str | None = None
    location: str | None = None
    cluster_name: str | None = None
    kubernetes_conn_id: str = "kubernetes_default"
    startup_timeout_s: int = Field(900, ge=600)
    service_account_name: str | None = None
    # The trainer image's user (docker/trainer.Dockerfile); the pod runs as it, never as root.
    run_as_user: int = Field(50000, ge=10000)
    scratch_size: str = "50Gi"
    cache_size: str = "50Gi"
    shm_size: str = "16Gi"
    hf_token_secret: SecretKeyRef | None = None
    model_cache: ModelCacheConfig | None = None
    generate: PodResources = PodResources()
    label: PodResources = PodResources()
    format: PodResources = PodResources(
        gpu_count=0, cpu="2", memory="8Gi", ephemeral_storage="20Gi", node_selector={}, tolerations=(), timeout_s=3600,
    )
    train: PodResources = PodResources(cpu="8", memory="64Gi", ephemeral_storage="150Gi", timeout_s=8 * 3600)
    evaluate: PodResources = PodResources()

    @field_validator("image")
    @classmethod
    def _pinned(cls, v: str | None) -> str | None:
        return None if v is None else check_image_pinned(v)

    @field_validator("scratch_size", "cache_size", "shm_size")
    @classmethod
    def _size(cls, v: str, info: Any) -> str:
        return check_quantity(info.field_name, v)


class TrainingConfig(_Model):
    lora_r: int = Field(16, ge=1, le=1024)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    learning_rate: float = Field(5e-5, gt=0, lt=1)
    # Share of the optimizer steps over which the learning rate rises linearly from 0 (then it decays
    # linearly to 0, the trainer's default schedule). 0: no warmup.
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    beta: float = Field(0.1, gt=0)
    epochs: float = Field(3, gt=0, le=100)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(4, ge=1)
    max_length: int = Field(512, ge=16)
    max_prompt_length: int = Field(256, ge=8)
    precompute_ref_log_probs: bool = True
    # "4bit": QLoRA, the frozen base in bitsandbytes NF4 (CUDA only; the train stage refuses it
    # elsewhere). Accepted here on any machine: the CPU-only Airflow worker validates the config
    # of a run whose training happens on a GPU pod.
    quantization: Literal["none", "4bit"] = "none"
    seed: int = 42

    @model_validator(mode="before")
    @classmethod
    def _moved_settings(cls, data: Any) -> Any:
        # The runner no longer concerns training alone (generate, evaluate and reward labeling run
        # on pods too); an old personas.yaml fails loudly instead of silently training locally.
        if isinstance(data, dict):
            moved = [k for k in ("runner", "kubernetes") if k in data]
            if moved:
                raise ValueError(
                    f"training.{' and training.'.join(moved)} moved to the pipeline level in this version: write "
                    "`runner: local | kubernetes` and `kubernetes: {...}` next to `training:` (per-stage pod "
                    "resources under kubernetes.generate/label/train/evaluate); see docs/deployment.md"
                )
        return data

    @model_validator(mode="after")
    def _prompt_fits(self) -> "TrainingConfig":
        if self.max_prompt_length >= self.max_length:
            raise ValueError(
                f"max_prompt_length={self.max_prompt_length!r} must be smaller than "
                f"max_length={self.max_length!r}"
            )
        return self


class SftConfig(_Model):
    """The optional `sft` stage: supervised fine-tuning on the run's best strong-prompt answers
    before DPO (the reference pipeline started DPO from an SFT adapter). Off by default.

    The adapter has the LoRA shape of `training.*` (DPO continues it); these are its own knobs."""

    enabled: bool = False
    epochs: float = Field(2, gt=0, le=100)
    learning_rate: float = Field(1e-4, gt=0, lt=1)
    batch_size: int = Field(4, ge=1, le=1024)
    grad_accum: int = Field(1, ge=1, le=1024)
    # The best-scored answers first; the rest are counted as skipped (`over_max_examples`).
    max_examples: int = Field(256, ge=1, le=100_000)
    # Tokens of system prompt + request + answer; a longer example is skipped, not cut (a cut answer
    # would teach stopping mid-recipe).
    max_length: int = Field(512, ge=16, le=32_768)
    # The labeling judge's overall score (0-10) a chosen answer needs; None: the best ones whatever
    # their score. "Best of the run" can still be bad: a winning refusal is not worth imitating.
    min_score: float | None = Field(None, ge=0, le=10)


class GeminiConfig(_Model):
    model: str = "gemini-2.0-flash"
    project: str | None = None
    location: str = "us-central1"
    max_concurrency: int = Field(8, ge=1, le=256)
    requests_per_minute: int = Field(300, ge=1)
    tokens_per_minute: int = Field(1_000_000, ge=1)
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0, le=20)
    backoff_base_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    max_output_tokens: int = Field(512, ge=64, le=8192)
    # Under Airflow: credentials and default project from this connection (GenAI hook).
    gcp_conn_id: str = "google_cloud_default"
    # USD per million tokens (Vertex AI, gemini-2.0-flash), for the cost estimate only.
    price_in_per_mtok: float = Field(0.15, ge=0)
    price_out_per_mtok: float = Field(0.60, ge=0)


class EvaluationConfig(_Model):
    # checklist: per-case expectations, independent of the labeling judge (dpo_tasks.judges.checklist).
    judge: Literal["checklist", "rules", "gemini"] = "checklist"
    max_new_tokens: int = Field(192, ge=8, le=4096)
    temperature: float = Field(0.7, ge=0, le=2)
    seed: int = 1234
    # k answers per model and case, each with its own seed: more judged pairs from the same cases.
    # The k outcomes of a case are correlated, so the interval uses the case as the cluster
    # (dpo_tasks.stats.clustered_win_rate); k multiplies generation time and API-judge calls.
    samples_per_case: int = Field(1, ge=1, le=8)
    gemini: GeminiConfig = GeminiConfig()

    @model_validator(mode="after")
    def _samples_need_sampling(self) -> "EvaluationConfig":
        if self.samples_per_case > 1 and self.temperature == 0:
            raise ValueError(
                f"evaluation.samples_per_case = {self.samples_per_case} needs evaluation.temperature > 0: "
                "at temperature 0 (greedy) every sample of a case is the same answer"
            )
        return self


class GateConfig(_Model):
    min_win_rate_lower_bound: float = Field(0.5, ge=0, le=1)
    # A win rate from the judge that made the training labels measures agreement, not quality.
    allow_same_judge: bool = False
    # Failed judgements shrink n; a gate on the judged cases alone could promote on 4 of 20.
    min_judged_fraction: float = Field(0.9, ge=0, le=1)
    min_judged: int = Field(15, ge=1)


class FeedbackConfig(_Model):
    min_feedback: int = Field(50, ge=1)
    max_good_ratio: float = Field(0.6, ge=0, le=1)
    cooldown_hours: float = Field(24, ge=0)


class PipelineConfig(_Model):
    schedule: str | None = "@weekly"
    # Where the stages that load a model run: a subprocess of the worker, or pods (see `kubernetes`).
    runner: Literal["local", "kubernetes"] = "local"
    model: ModelConfig = ModelConfig()
    generation: GenerationConfig = GenerationConfig()
    labeling: LabelingConfig = LabelingConfig()
    sft: SftConfig = SftConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    gate: GateConfig = GateConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()

    @model_validator(mode="after")
    def _pod_image(self) -> "PipelineConfig":
        if self.runner == "kubernetes" and self.kubernetes.image is None:
            raise ValueError(
                "runner is 'kubernetes' but kubernetes.image is not set; give the trainer image pinned by "
                "tag or digest (e.g. REGISTRY/persona-dpo-trainer:1.4.0)"
            )
        return self

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        return validate_schedule(v)


class Persona(_Model):
    id: str
    name: str
    description: str = ""
    cuisines: tuple[str, ...] = Field(min_length=1)
    dietary_restrictions: tuple[str, ...] = ()
    # restriction -> words that count as it (synonyms included)
    forbidden: dict[str, tuple[str, ...]] = {}
    # phrases containing a forbidden word that are nevertheless fine
    allowed: tuple[str, ...] = ()
    preferred_ingredients: tuple[str, ...] = Field(min_length=1)
    style_keywords: tuple[str, ...] = ()
    config: PipelineConfig = PipelineConfig()

    @field_validator("id")
    @classmethod
    def _id_shape(cls, v: str) -> str:
        if not PERSONA_ID_RE.fullmatch(v):
            raise ValueError(
                f"persona id {brief(v)} must match {PERSONA_ID_RE.pattern} (lowercase letters, digits, underscores, "
                "starting with a letter and ending with a letter or digit, at most 63; it becomes a DAG id, a "
                "pod label and a path)"
            )
        return v

    @field_validator("forbidden")
    @classmethod
    def _forbidden_words(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for category, words in v.items():
            if not category.strip():
                raise ValueError("forbidden has an empty restriction name")
            if any(not w.strip() for w in words):
                raise ValueError(f"forbidden[{category!r}] contains an empty word")
        return v

    def forbidden_terms(self) -> dict[str, str]:
        """Every forbidden word (lowercased) -> the restriction it belongs to."""
        terms: dict[str, str] = {}
        for category, words in self.forbidden.items():
            terms.setdefault(category.lower(), category)
            for w in words:
                terms.setdefault(w.lower(), category)
        return terms

    @property
    def dag_id(self) -> str:
        return f"dpo_{self.id}"


@dataclass
class PersonasFile:
    path: Path
    personas: dict[str, Persona]
    errors: dict[str, str] = field(default_factory=dict)

    def get(self, persona_id: str) -> Persona:
        if persona_id in self.personas:
            return self.personas[persona_id]
        if persona_id in self.errors:
            raise ConfigError(self.errors[persona_id])
        raise ConfigError(
            f"{self.path.name}: unknown persona id {persona_id!r}; "
            f"known: {', '.join(sorted(self.personas)) or '(none)'}"
        )


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested mappings merge; lists and scalars in `override` replace."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def format_validation_error(where: str, err: ValidationError, *, config_key: str = "config") -> str:
    """One line per problem: where, the dotted field, the bad value (`!r`) and what is allowed.

    A persona's merged pipeline settings sit under `config` in the model but
    come from `overrides` in the file; `config_key` names them as the user wrote them.
    """
    lines = []
    for e in err.errors():
        parts = [str(p) for p in e["loc"] if p != "__root__"]
        if parts and parts[0] == "config":
            parts[0] = config_key
        loc = ".".join(parts) or "(entry)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown field {loc!r} (value {brief(e['input'])}); check the spelling")
        elif e["type"] == "missing":
            lines.append(f"{where}: field {loc!r} is required")
        else:
            lines.append(f"{where}: field {loc!r} = {brief(e['input'])} is invalid: {msg}")
    return "\n".join(lines)


_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _YamlProblem(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line, self.message = line, message


class _StrictLoader(_YamlLoader):  # type: ignore[misc, valid-type]
    """The safe loader, refusing duplicate keys (YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise _YamlProblem(
                        key_node.start_mark.line + 1,
                        f"duplicate key {brief(key_node.value)} (first at line {seen[key]}); YAML would keep only the last",
                    )
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _check_events(text: str) -> None:
    """Bound alias expansion and nesting from the event stream, before anything is built.

    Aliases let a few hundred bytes expand to gigabytes (every consumer, pydantic included, walks
    the expansion), so the expanded size is counted and capped; `yaml.safe_dump` writes aliases
    for shared values, so refusing them outright would refuse dumped files. A few thousand nested
    brackets crash libyaml's recursive composer. Events are flat, so this pass is safe on any input.
    """
    depth = total = 0
    sizes: dict[str, int] = {}
    open_anchors: list[tuple[str | None, int]] = []
    for event in yaml.parse(text, Loader=_YamlLoader):
        if isinstance(event, yaml.AliasEvent):
            total += sizes.get(event.anchor, 1)
        elif isinstance(event, yaml.ScalarEvent):
            total += 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            total += 1
            depth += 1
            open_anchors.append((event.anchor, total))
            if depth > MAX_YAML_DEPTH:
                raise _YamlProblem(event.start_mark.line + 1, f"nested deeper than {MAX_YAML_DEPTH} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            anchor, start = open_anchors.pop()
            if anchor:
                sizes[anchor] = total - start + 1
        if total > MAX_YAML_VALUES:
            raise _YamlProblem(
                event.start_mark.line + 1,
                f"the document expands to more than {MAX_YAML_VALUES} values (YAML aliases?); write it out plainly",
            )


def parse_yaml(text: str, where: str) -> Any:
    """YAML text -> Python values with the limits above; ConfigError naming `where` and the line."""
    try:
        # libyaml's loader when present: the DAG processor parses this file on every DAG file parse.
        _check_events(text)
        return yaml.load(text, Loader=_StrictLoader)
    except _YamlProblem as exc:
        raise ConfigError(f"{where}:{exc.line}: {exc.message}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}{line}: not valid YAML: {exc.problem or exc.context}") from None
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise ConfigError(f"{where}: not valid YAML: {brief(str(exc))}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        path = check_regular_file(path, what="personas file", max_bytes=MAX_PERSONAS_BYTES)
        text = decode_utf8(path.read_bytes(), path)
    except FileNotFoundError:
        raise ConfigError(f"personas file not found: {str(path)!r}") from None
    except (InputFileError, OSError) as exc:
        raise ConfigError(str(exc)) from None
    raw = parse_yaml(text, str(path))
    if not isinstance(raw, dict) or not isinstance(raw.get("personas"), list):
        raise ConfigError(f"{path.name}: expected a mapping with a 'personas' list, got {type(raw).__name__}")
    unknown = set(raw) - {"defaults", "personas"}
    if unknown:
        raise ConfigError(f"{path.name}: unknown top-level key(s) {brief(sorted(map(str, unknown)))}; allowed: defaults, personas")
    if not isinstance(raw.get("defaults") or {}, dict):
        raise ConfigError(f"{path.name}: 'defaults' must be a mapping, got {brief(raw['defaults'])}")
    return raw


# What a persona entry may hold: the model's fields, with the pipeline settings spelled `overrides`.
PERSONA_KEYS = frozenset(Persona.model_fields) - {"config"} | {"overrides"}


def _entry_id(entry: Any, index: int) -> str:
    pid = entry.get("id") if isinstance(entry, dict) else None
    return pid if isinstance(pid, str) and len(pid) <= 64 and pid.isprintable() else f"#{index}"


def _build_persona(path: Path, defaults: dict[str, Any], entry: Any, index: int) -> Persona:
    if not isinstance(entry, dict):
        raise ConfigError(f"{path.name}: persona #{index} must be a mapping, got {brief(entry)}")
    pid = entry.get("id", f"#{index}")
    where = f"{path.name}: persona {brief(pid)}"
    unknown = sorted(str(k) for k in entry if k not in PERSONA_KEYS)
    if unknown:
        hint = " (pipeline settings go under 'overrides')" if "config" in unknown else ""
        names = ", ".join(brief(k) for k in unknown[:5])
        raise ConfigError(
            f"{where}: unknown field {names}{hint}; allowed: {', '.join(sorted(PERSONA_KEYS))}"
        )
    data = dict(entry)
    overrides = data.pop("overrides", None) or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: field 'overrides' = {brief(overrides)} must be a mapping")
    data["config"] = deep_merge(defaults, overrides)
    try:
        return Persona.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(where, err, config_key="overrides")) from None


def load_personas_lenient(path: str | os.PathLike[str] | None = None) -> PersonasFile:
    """Load every valid persona; collect per-persona errors instead of raising.

    File-level problems (missing file, bad YAML, bad `defaults`) still raise:
    with those, no persona can be trusted. An id given to more than one entry
    is an error for that id (none of its entries load: which one was meant is
    unknowable).
    """
    path = Path(path) if path else default_personas_path()
    raw = _read_yaml(path)
    defaults = raw.get("defaults") or {}
    try:
        PipelineConfig.model_validate(defaults)
    except ValidationError as err:
        raise ConfigError(format_validation_error(f"{path.name}: defaults", err)) from None
    ids = [_entry_id(entry, i) for i, entry in enumerate(raw["personas"])]
    personas: dict[str, Persona] = {}
    errors: dict[str, str] = {}
    for i, (pid, entry) in enumerate(zip(ids, raw["personas"])):
        if ids.count(pid) > 1:
            entries = ", ".join(f"#{j}" for j, other in enumerate(ids) if other == pid)
            errors[pid] = f"{path.name}: persona id {pid!r} is defined more than once (entries {entries}); keep one"
            continue
        try:
            personas[pid] = _build_persona(path, defaults, entry, i)
        except ConfigError as exc:
            errors[pid] = str(exc)
    return PersonasFile(path=path, personas=personas, errors=errors)


def load_personas(path: str | os.PathLike[str] | None = None) -> PersonasFile:
    """Strict load: any bad persona raises ConfigError with every problem listed."""
    result = load_personas_lenient(path)
    if result.errors:
        raise ConfigError("\n".join(result.errors.values()))
    return result


def load_persona(persona_id: str, path: str | os.PathLike[str] | None = None) -> Persona:
    """One persona; other personas' errors do not matter to it."""
    return load_personas_lenient(path).get(persona_id)


# What a run's conf (trigger form, REST API, `dpo_custom`) may change: counts, hyperparameters,
# judge kinds, the gate threshold. An entry ending in "." allows every key under it. Everything
# else (connection ids, Kubernetes settings, model ids and paths, the runner, API model names and
# rate limits) says where a run executes or with whose rights, and comes from the deployment
# (personas.yaml, env, connections). Dry run is a form field of its own, not a config key.
RUN_SETTABLE: frozenset[str] = frozenset({
    "generation.",
    "labeling.judge",
    "labeling.min_margin",
    "labeling.groq.both_orders",
    "labeling.groq.hard_constraint_shortcut",
    "labeling.groq.max_output_tokens",
    "labeling.groq.temperature",
    "labeling.reward.num_candidates",
    "labeling.reward.min_margin",
    # SFT before DPO, on or off per run, and its hyperparameters: training choices like training.*.
    "sft.",
    "training.lora_r",
    "training.lora_alpha",
    "training.lora_dropout",
    "training.target_modules",
    "training.learning_rate",
    "training.warmup_ratio",
    "training.beta",
    "training.epochs",
    "training.batch_size",
    "training.grad_accum",
    "training.max_length",
    "training.max_prompt_length",
    "training.precompute_ref_log_probs",
    "training.quantization",
    "training.seed",
    "evaluation.judge",
    "evaluation.max_new_tokens",
    "evaluation.temperature",
    "evaluation.seed",
    "evaluation.samples_per_case",
    "evaluation.gemini.max_output_tokens",
    "gate.min_win_rate_lower_bound",
    "gate.min_judged_fraction",
    "gate.min_judged",
    # Not gate.allow_same_judge: letting the labeler grade its own pupil is the deployment's call.
})


def run_settable(key: str) -> bool:
    """Whether a run's conf may override the dotted config key `key` (see RUN_SETTABLE)."""
    if not key or key.endswith("."):
        return False
    return key in RUN_SETTABLE or any(p.endswith(".") and key.startswith(p) and len(key) > len(p) for p in RUN_SETTABLE)


def _dotted_leaves(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys += _dotted_leaves(value, f"{dotted}.")
        else:
            keys.append(dotted)
    return keys


def _known_setting(key: str) -> bool:
    model: Any = PipelineConfig
    for part in key.split("."):
        fields = getattr(model, "model_fields", None)
        if fields is None:
            return not isinstance(model, type)  # a key inside a mapping field such as node_selector
        if part not in fields:
            return False
        model = fields[part].annotation
    return True


def check_run_overrides(overrides: dict[str, Any], *, where: str) -> None:
    """Refuse, naming them, the keys of a run's nested overrides that RUN_SETTABLE does not allow."""
    keys = _dotted_leaves(overrides or {})
    unknown = sorted(k for k in keys if not run_settable(k) and not _known_setting(k))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(map(repr, unknown))}; check the spelling (docs/security.md lists what a run may set)")
    refused = sorted(k for k in keys if not run_settable(k))
    if refused:
        raise ConfigError(
            f"{where}: {', '.join(map(repr, refused))} cannot be set by a run: a run may change counts, "
            "hyperparameters, judge kinds and the gate threshold (config.RUN_SETTABLE, listed in docs/security.md); "
            "connection ids, Kubernetes settings, model ids and paths, the runner and store locations come from "
            "the deployment (personas.yaml, the environment, Airflow connections)"
        )
    # Nested ({"generation": {"prompt_pool": ...}}) or dotted ({"generation.prompt_pool": ...}) alike.
    node: Any = overrides or {}
    pool = node.get("generation.prompt_pool")
    if pool is None and isinstance(node.get("generation"), dict):
        pool = node["generation"].get("prompt_pool")
    if pool is not None:
        check_run_pool(pool, where=where)


POOL_PREFIX_ENV = "PERSONA_DPO_POOL_PREFIX"
LOCAL_POOL_ROOT_ENV = "PERSONA_DPO_LOCAL_POOL_ROOT"


def check_run_pool(uri: Any, *, where: str = "run conf") -> str:
    """A prompt pool a run's conf names, if it lies where the deployment keeps users' pools.

    `gs://` under `$PERSONA_DPO_POOL_PREFIX`, or a local file under `$PERSONA_DPO_LOCAL_POOL_ROOT`
    (the embedded default); anything else is refused: a run's conf must not make the worker read
    an arbitrary file into training data. The deployment's own `generation.prompt_pool`
    (personas.yaml) is not limited.
    """
    from dpo_tasks.paths import is_within, safe_relpath

    key = f"{where}: 'generation.prompt_pool' = {uri!r}"
    if not isinstance(uri, str) or not uri:
        raise ConfigError(f"{key} must be a gs:// URI or a path")
    if uri.startswith("gs://"):
        prefix = (os.environ.get(POOL_PREFIX_ENV) or "").rstrip("/")
        if not prefix.startswith("gs://") or len(prefix) <= len("gs://"):
            raise ConfigError(f"{key}: this deployment accepts no gs:// pools from a run (${POOL_PREFIX_ENV} is not set)")
        if not uri.startswith(prefix + "/"):
            raise ConfigError(f"{key} must lie under {prefix + '/'!r} (${POOL_PREFIX_ENV})")
        safe_relpath(uri[len(prefix) + 1:], what=f"{key} object", error=ConfigError)
        return uri
    root = os.environ.get(LOCAL_POOL_ROOT_ENV)
    if not root:
        raise ConfigError(
            f"{key}: a run may name a local pool only when the deployment sets ${LOCAL_POOL_ROOT_ENV} "
            f"(gs:// pools: under ${POOL_PREFIX_ENV})"
        )
    path = uri.removeprefix("file://")
    if not os.path.isabs(path) or not is_within(path, root) or os.path.realpath(path) == os.path.realpath(root):
        raise ConfigError(f"{key} must be an absolute path under {root!r} (${LOCAL_POOL_ROOT_ENV})")
    return uri


def with_overrides(persona: Persona, overrides: dict[str, Any]) -> Persona:
    """A copy of `persona` with run-time overrides (trigger form, CLI) validated the same way."""
    if not overrides:
        return persona
    merged = deep_merge(persona.config.model_dump(mode="python"), overrides)
    try:
        config = PipelineConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(format_validation_error(f"run overrides for persona {persona.id!r}", err)) from None
    return persona.model_copy(update={"config": config})
