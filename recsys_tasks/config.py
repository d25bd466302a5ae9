"""Configuration: one frozen dataclass per stage, composed into `PipelineConfig`.

Loadable from a dict or YAML file, overridable with dotted ``key=value`` strings (the CLI's
``--set`` and the Airflow trigger form both end up here). Only URIs and secrets come from the
environment (``MLFLOW_TRACKING_URI``, ``RECSYS_WORKDIR``, ``RECSYS_SOURCE_URI``); everything that
changes a result is in the config, and the resolved config is written next to the artifacts.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# training users a demographic group needs before its popularity stands for it (the baseline, the fusion's
# prior and the reasons' segments alike)
MIN_GROUP = 20


@dataclass(frozen=True)
class ExtractConfig:
    """Where the data comes from and how it is split (docs/evaluation.md)."""

    # "bundled", a RecBole atomic-file or CSV directory, a SQLAlchemy URI, "sql" (the URI in
    # RECSYS_SOURCE_URI) or, in the DAG, "sql:<Airflow connection id>"
    source: str = "bundled"
    cold_user_frac: float = 0.2
    cold_item_frac: float = 0.2
    warm_test_frac: float = 0.2
    seed: int = 42
    positive_threshold: float = 4.0
    rating_min: float = 1.0
    rating_max: float = 5.0
    sample_users: int = 0  # 0 = all users; >0 keeps a seeded sample (tests, quick looks)
    previous_snapshot: str = ""  # SQL only: an earlier extract directory; read only newer interactions
    sql_chunk_rows: int = 500_000  # SQL only: interactions read (server-side cursor) and validated per chunk

    @property
    def holdout(self) -> bool:
        return any(f > 0 for f in (self.cold_user_frac, self.cold_item_frac, self.warm_test_frac))


@dataclass(frozen=True)
class KGConfig:
    """PyKEEN knowledge-graph embedding (model chosen by name, as in ``pykeen.pipeline``)."""

    model: str = "DistMult"
    embedding_dim: int = 64
    epochs: int = 20
    batch_size: int = 4096
    learning_rate: float = 0.01
    num_negs_per_pos: int = 4
    early_stopping_frequency: int = 5
    early_stopping_patience: int = 2
    eval_fraction: float = 0.005  # of triples, for validation and for the reported MRR/Hits@10
    include_freebase: bool = True
    # the source's triples enter only if some relation's linked items are co-liked in training this many
    # times as often as random pairs (`kg.embed.judge_source`); 0: always kept
    # (docs/decisions/0001-kg-source-link-lift-gate.md)
    freebase_min_lift: float = 1.5
    include_demographics: bool = True  # demographic values and their groups' likes (users' values: user_entities)
    include_likes: bool = True  # items' co-liked items (users' likes: user_entities)
    # users as entities (`user:ID --has_*--> value`, `user:ID --liked--> item:ID`): the graph then grows with users;
    # off, demographic values carry their group's taste and items their co-liked items
    # (docs/decisions/0015-kg-without-user-entities.md)
    user_entities: bool = False
    group_top_n: int = 100  # items per demographic value: `value --likes--> item`, the highest lifts ...
    group_min_lift: float = 1.2  # ... over the item's positive rate among all training users ...
    group_min_support: int = 5  # ... liked by at least this many of the value's users
    colike_window: int = 5  # `item --coliked--> item`: liked within this many places of each other in a history ...
    colike_top_k: int = 10  # ... each item's this many most co-liked items ...
    colike_min_support: int = 2  # ... by at least this many users
    max_eval_triples: int = 1000  # validation and test triples each at most (a seeded sample; the rest trains)
    seed: int = 42
    device: str = "auto"


@dataclass(frozen=True)
class TextConfig:
    """BERT-family encoder: a local folder or a hub name, mean pooled, L2 normalised."""

    model: str = DEFAULT_TEXT_MODEL
    batch_size: int = 0  # 0: 4096 on CUDA, 128 on the CPU
    max_length: int = 128
    device: str = "auto"
    # vectors kept by (model weights, max_length, dtype, text) so a retrain encodes only new texts;
    # "": $RECSYS_WORKDIR/cache/text; "off": no cache
    cache_dir: str = ""
    # the DAG's text encoding in this many mapped tasks (GPU queue), each its share of the uncached texts into the
    # cache, before text_embed assembles (docs/operations.md, "Sharded text encoding"); 1: text_embed encodes alone
    shards: int = 1
    # LoRA on the encoder before it encodes (`text.adapt`; docs/decisions/0023-lora-text-encoder.md): trained on pairs
    # from the training interactions (two items one user liked; a user's stated taste or profile and an item they
    # liked), base weights frozen, early-stopped on held-out users' pairs; false: the encoder as it is
    adapt: bool = False
    adapt_rank: int = 8
    adapt_pairs: int = 6000  # at most (a seeded sample of users): the cost is bounded whatever the data's size
    adapt_epochs: int = 3
    adapt_patience: int = 1
    adapt_batch: int = 32
    adapt_lr: float = 5e-4

    def __post_init__(self) -> None:
        rules = {
            "adapt_rank": (self.adapt_rank >= 1, "at least 1"),
            "adapt_pairs": (self.adapt_pairs >= 2, "at least 2"),
            "adapt_epochs": (self.adapt_epochs >= 1, "at least 1"),
            "adapt_patience": (self.adapt_patience >= 1, "at least 1"),
            "adapt_batch": (self.adapt_batch >= 2, "at least 2 (the other rows of a batch are the negatives)"),
            "adapt_lr": (self.adapt_lr > 0, "positive"),
        }
        for name, (ok, rule) in rules.items():
            if not ok:
                raise ConfigError(f"config key 'text.{name}': {getattr(self, name)!r} is invalid; expected {rule}")
        if self.adapt and self.shards > 1:
            raise ConfigError(
                f"config key 'text.shards': {self.shards} shards encode with the encoder as it is, before text_embed "
                "adapts it (text.adapt): set text.shards=1 with text.adapt"
            )
        if self.shards < 1:
            raise ConfigError(f"config key 'text.shards': {self.shards!r} is invalid; expected 1 or more")
        if self.shards > 1 and self.cache_dir.strip().lower() == "off":
            raise ConfigError(
                f"config key 'text.shards': {self.shards} shards hand text_embed their vectors "
                "through the vector cache, which text.cache_dir=off turns off"
            )


INPUTS = ("text", "kg", "demographics")


@dataclass(frozen=True)
class FinetuneConfig:
    """The hybrid two-tower model fine-tuned on interactions."""

    dim: int = 64
    hidden: int = 256
    epochs: int = 40
    batch_size: int = 512
    # the towers learn slowly (they serve cold users and new items), the item IDs fast (warm items)
    # (docs/decisions/0009-two-learning-rates.md)
    learning_rate: float = 5e-4
    id_learning_rate: float = 5e-3  # the item ID embeddings' and biases' (0: learning_rate)
    id_epochs: int = 10  # then up to this many epochs of the item IDs alone (towers frozen, early-stopped on the
    # cold and warm validation together: warm items go on learning after the cold-start towers stop); 0: none
    weight_decay: float = 1e-4
    max_history: int = 30
    id_dropout: float = 0.5
    text_prob: float = 0.3
    empty_history_prob: float = 0.2
    # DropoutNet on the user side: the share of training pairs with a history whose profile inputs are zeroed,
    # so the tower leans on the history where there is one (docs/decisions/0006-profile-dropout.md)
    profile_dropout: float = 0.5
    validation_user_frac: float = 0.1
    fusion_user_frac: float = 0.1  # more users held out, for the fusion's weights only (0: the validation users)
    # each held-out group at most this many users (a seeded sample), and scored this many users at a time
    max_validation_users: int = 2000
    max_fusion_users: int = 2000
    score_block: int = 256
    # sampled softmax (docs/decisions/0013-sampled-softmax.md): negatives per step, drawn with q ∝ (count + 1)^alpha
    # from the trainable items and log-Q corrected; with at most this many trainable items, the exact full softmax
    negatives: int = 2048
    negative_alpha: float = 0.75
    # with the sampled softmax, a history's items pooled from a table of content vectors refreshed every this many
    # steps, so a step runs the item tower over its targets and negatives only (0: over its history items too)
    history_refresh: int = 100
    # steps between two validations: an "epoch" past this many batches is this many on a fresh permutation, so
    # early stopping acts at a fixed cost whatever the data's size (MovieLens-100K: ~110 steps, whole passes); 0: passes
    steps_per_epoch: int = 1000
    loader_workers: int = 0  # the batches' DataLoader workers (0: built in the training process)
    # epochs without a better validation before each stage stops; the small validation is noisy
    # (docs/decisions/0005-patience-6.md)
    patience: int = 6
    # a gain in the validation score smaller than this share of the score it improves on is kept but resets no
    # patience: rounds that buy a fraction of a percent stop being paid for (docs/decisions/0021-min-gain.md)
    min_gain: float = 0.005
    # the item-ID stage's patience (it starts from the first stage's best state, which competes); 3 for large
    # catalogues (docs/decisions/0021-min-gain.md)
    id_patience: int = 6
    seed: int = 42
    device: str = "auto"
    # the training step's matrix products: "float32", "bfloat16" (autocast: weights, optimizer and loss stay
    # float32) or "auto", bfloat16 where the device computes it natively (docs/decisions/0022-bfloat16-step.md)
    precision: str = "auto"
    # data-parallel training (docs/operations.md; docs/decisions/0017-data-parallel-training.md): past 1 process or
    # 1 node the stage runs itself under torchrun, `processes` DistributedDataParallel processes per node (one per
    # GPU), each on its share of every epoch ("auto": NCCL on CUDA, gloo on the CPU); with `nnodes` > 1,
    # `rdzv_endpoint` is this node's "host:port", which the other nodes' torchrun reach
    processes: int = 1
    backend: str = "auto"
    nnodes: int = 1
    rdzv_endpoint: str = ""
    # ablations: the model's content inputs (any of INPUTS) and whether training simulates short
    # histories (False: every pair sees all of the user's earlier items, up to max_history)
    inputs: tuple[str, ...] = ("text", "kg", "demographics")
    truncate_histories: bool = True
    # after training: items without an ID served by a kernel ridge map from their text, genres and year to a
    # warm item's vector (`content_map`; False: by the content towers), and the model's scores fused with a
    # demographic popularity prior and EASE (lambda ease_lambda; 0: no EASE), weighted per history length on
    # the fusion users (`fusion_user_frac`; `fusion`; False: the model alone)
    content_map: bool = True
    fusion: bool = True
    ease_lambda: float = 200.0
    ease_max_items: int = 10_000  # past this many trained items EASE is skipped (its n³ inversion, n² memory)
    # what early stopping validates on: each validation user from its first K interactions
    validation_support: tuple[int, ...] = (0, 10)
    # the content map (docs/decisions/0002-kernel-content-map.md): ridge penalties tried by leave-one-out CV,
    # the RBF kernel's gamma times the median squared distance between trained items' inputs, and how many
    # trained items (a seeded sample where there are more) a new item is compared with
    map_alphas: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 3, 16))
    map_rbf_scale: float = 1.5
    map_max_landmarks: int = 2000
    # the map's profile term (docs/decisions/0003-profile-term.md): its weights and numbers of principal
    # directions of the text tried together, on the trained items in this many seeded pseudo-new folds
    profile_weights: tuple[float, ...] = (0.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    profile_dims: tuple[int, ...] = (16, 32, 64)
    pseudo_new_folds: int = 5
    # the fusion's grids (docs/decisions/0004-fusion.md): γ (prior), β (EASE, in units of std(model) /
    # std(EASE)) and δ (stated taste); the fusion users ranked from their first K interactions and cut at
    # these fractions of their history (the cuts below the last only for histories past 20 items)
    fusion_prior_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
    fusion_ease_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4, 0.8, 1.6)
    fusion_taste_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
    # a request's reference items ("something like Alien"): the weights of their text and model similarity tried on
    # the fusion users, each asking for one item they liked, and reported; applied with `fit_reference_weights`
    # (off: they buy relevance with what the request asks for, docs/decisions/0024-fitted-reference-weights.md)
    fit_reference_weights: bool = False
    reference_like_grid: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
    reference_model_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0)
    fusion_support: tuple[int, ...] = (0, 5, 10, 20)
    fusion_warm_cuts: tuple[float, ...] = (0.5, 0.65, 0.8)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.inputs) - set(INPUTS))
        if unknown:
            raise ConfigError(f"config key 'finetune.inputs': unknown input(s) {unknown}; known: {list(INPUTS)}")
        for name in (
            "profile_weights",
            "fusion_prior_grid",
            "fusion_ease_grid",
            "fusion_taste_grid",
            "reference_like_grid",
            "reference_model_grid",
        ):
            grid = getattr(self, name)  # 0 is the baseline each weight is compared with
            if 0.0 not in grid or any(w < 0 for w in grid):
                raise ConfigError(f"config key 'finetune.{name}': {list(grid)} must hold 0 and no negative weight")
        checks = {
            "map_alphas": bool(self.map_alphas) and all(a > 0 for a in self.map_alphas),
            "map_rbf_scale": self.map_rbf_scale > 0,
            "map_max_landmarks": self.map_max_landmarks >= 1,
            "profile_dims": bool(self.profile_dims) and all(k >= 1 for k in self.profile_dims),
            "pseudo_new_folds": self.pseudo_new_folds >= 1,
            "validation_support": bool(self.validation_support) and all(k >= 0 for k in self.validation_support),
            "fusion_support": all(k >= 0 for k in self.fusion_support),
            "fusion_warm_cuts": all(0 < f < 1 for f in self.fusion_warm_cuts),
            "steps_per_epoch": self.steps_per_epoch >= 0,
            "min_gain": 0 <= self.min_gain < 1,
            "id_patience": self.id_patience >= 1,
            "precision": self.precision in ("auto", "float32", "bfloat16"),
            "processes": self.processes >= 1,
            "nnodes": self.nnodes >= 1,
            "backend": self.backend in ("auto", "gloo", "nccl") and (self.backend, self.device) != ("nccl", "cpu"),
            "rdzv_endpoint": self._endpoint_fits(),
        }
        rules = {
            "map_alphas": "positive penalties, at least one",
            "map_rbf_scale": "positive",
            "map_max_landmarks": "at least 1",
            "profile_dims": "at least one, each at least 1",
            "pseudo_new_folds": "at least 1",
            "validation_support": "at least one, none negative",
            "fusion_support": "none negative",
            "fusion_warm_cuts": "fractions strictly between 0 and 1",
            "steps_per_epoch": "0 (whole passes) or more",
            "min_gain": "a share from 0 (every gain counts) to below 1",
            "id_patience": "at least 1",
            "precision": "'auto', 'float32' or 'bfloat16'",
            "processes": "at least 1 (processes per node)",
            "nnodes": "at least 1",
            "backend": "'auto', 'gloo' or 'nccl' ('nccl' needs CUDA, not finetune.device 'cpu')",
            "rdzv_endpoint": "'host:port' (port 1-65535) with finetune.nnodes > 1, empty with one node",
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(
                    f"config key 'finetune.{name}': {getattr(self, name)!r} is invalid; expected {rules[name]}"
                )

    def _endpoint_fits(self) -> bool:
        """``rdzv_endpoint`` is "host:port" where several nodes need it, and empty on one node (unused there)."""
        if self.nnodes <= 1:
            return not self.rdzv_endpoint
        host, _, port = self.rdzv_endpoint.rpartition(":")
        return bool(host) and port.isdigit() and 1 <= int(port) <= 65535


@dataclass(frozen=True)
class EvaluateConfig:
    """The cold-start protocol's slices and baselines."""

    k: int = 20
    support_sizes: tuple[int, ...] = (0, 5, 10, 20)
    demographic_min_group: int = MIN_GROUP
    item_knn_neighbours: int = 200  # item-kNN keeps each item's N most similar items (sparse); 0: every item
    als_factors: int = 64
    als_iterations: int = 15
    als_regularization: float = 0.05
    seed: int = 42  # also seeds the sample of users past max_users
    max_users: int = 5000  # past this many users a slice evaluates a seeded sample of them (0.95 CI reported)

    def __post_init__(self) -> None:
        for name in ("demographic_min_group", "item_knn_neighbours"):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"config key 'evaluate.{name}': {getattr(self, name)!r} is invalid; expected 0 or more"
                )
        if self.max_users < 1:
            raise ConfigError(f"config key 'evaluate.max_users': {self.max_users!r} is invalid; expected 1 or more")


@dataclass(frozen=True)
class RegistryConfig:
    """MLflow experiment, registered model and the promotion gate."""

    experiment: str = "recsys-cold-start"
    model_name: str = "recsys-cold-start"
    primary_metric: str = "cold_mean_ndcg"
    margin: float = 0.0  # the candidate must beat the champion's primary score by more than this
    tolerance: float = 0.02  # no slice's NDCG may fall by more than this (absolute)


@dataclass(frozen=True)
class MonitorConfig:
    """Data drift and the champion's live quality, per run (docs/operations.md, "Monitoring and drift")."""

    # the drift-check DAG triggers a retrain when the largest of these passes it: the share of interactions by new
    # users, the share on new items, and the rating distribution's total variation distance (each 0-1, against the
    # previous snapshot; `data.drift`)
    drift_threshold: float = 0.2
    # the rating distance decides only over at least this many added interactions: a smaller sample's distance is
    # mostly noise (100 of MovieLens-100K's ratings: mean 0.077, 99th percentile 0.164; docs/operations.md)
    min_added: int = 100
    # the champion's NDCG@live_k on the interactions newer than its training snapshot, over at most this many users
    # (a sample seeded by `seed`) that have a positive among them
    live_users: int = 500
    live_k: int = 20
    seed: int = 42

    def __post_init__(self) -> None:
        if not 0 <= self.drift_threshold < 1:
            raise ConfigError(
                f"config key 'monitor.drift_threshold': {self.drift_threshold!r} is invalid; expected 0 <= t < 1"
            )
        for name in ("min_added", "live_users", "live_k"):
            if getattr(self, name) < 1:
                value = getattr(self, name)
                raise ConfigError(f"config key 'monitor.{name}': {value!r} is invalid; expected 1 or more")


@dataclass(frozen=True)
class PipelineConfig:
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    kg: KGConfig = field(default_factory=KGConfig)
    text: TextConfig = field(default_factory=TextConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PipelineConfig:
        return _build(cls, data or {}, "")

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineConfig:
        return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def with_overrides(self, overrides: Mapping[str, Any] | list[str]) -> PipelineConfig:
        """Apply ``{"kg.epochs": 5}`` or ``["kg.epochs=5"]``; unknown keys are errors."""
        if not isinstance(overrides, Mapping):
            overrides = dict(_parse_assignment(s) for s in overrides)
        data = self.to_dict()
        for key, value in overrides.items():
            section, _, name = key.partition(".")
            if section not in data or not name or name not in data[section]:
                raise ConfigError(f"unknown config key {key!r}; known: {', '.join(sorted(_keys(data)))}")
            data[section][name] = value
        return PipelineConfig.from_dict(data)


class ConfigError(ValueError):
    """A config key or value that does not fit the dataclasses."""


def workdir() -> Path:
    """The root of runs, snapshots and the embedded MLflow store (``RECSYS_WORKDIR``)."""
    return Path(os.environ.get("RECSYS_WORKDIR", Path.cwd() / ".recsys")).resolve()


def tracking_uri(root: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else SQLite inside the workdir (the embedded default)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    root = root or workdir()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _keys(data: dict[str, Any]) -> list[str]:
    return [f"{s}.{k}" for s, sub in data.items() for k in sub]


def _parse_assignment(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    value = yaml.safe_load(raw)
    if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
        value = raw.strip()  # YAML 1.1 reads off/on/yes/no as booleans: "cache_dir=off" means the word
    return key.strip(), value


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {data!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(prefix + k for k in unknown)} in {cls.__name__}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        f = known[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, default, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, default: Any, key: str) -> Any:
    """Cast a value (often a string from a form or the CLI) to the default's type."""
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            if value not in (True, False):  # also rejects 5; accepts 0 and 1
                raise ValueError(value)
            return bool(value)
        if isinstance(value, bool) and not isinstance(default, str):
            raise ValueError(value)  # "epochs=true" is a typo, not 1
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split()]
            elif isinstance(value, (int, float)):
                value = [value]  # "support_sizes=0" is a one-element tuple
            return tuple(type(default[0])(v) for v in value) if default else tuple(value)
        if isinstance(default, str):
            return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key {key!r}: cannot use {value!r} as {type(default).__name__}") from exc
    return value
