"""Run configuration: dataclasses with the original recipe as defaults, loaded from and saved to YAML.

Unknown keys, wrong types and impossible values (a negative learning rate, an unknown
backbone) are refused with a message that names the key.
"""

import dataclasses
import os
import re
from typing import Annotated, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass

from siamdog.errors import SiamdogError

_STRICT = ConfigDict(extra="forbid")
Fraction = Annotated[float, Field(ge=0, lt=1)]
NonNegative = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
# What a tower computes in (Keras dtype policies); its variables stay float32 in every case.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@dataclass(config=_STRICT)
class AugmentConfig:
    """ImageDataGenerator's augmentation knobs (same names, same units)."""

    rotation_range: NonNegative = 30.0
    width_shift_range: Fraction = 0.2
    height_shift_range: Fraction = 0.2
    shear_range: NonNegative = 0.2
    zoom_range: Fraction = 0.2
    horizontal_flip: bool = True
    vertical_flip: bool = False
    brightness_range: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] | None = None
    fill_mode: Literal["nearest", "reflect", "wrap", "constant"] = "nearest"


@dataclass(config=_STRICT)
class StageConfig:
    """One stage of the schedule: what is trainable, with which optimizer, for how long."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")]
    epochs: Annotated[int, Field(gt=0)]
    optimizer: Literal["nadam", "adam", "sgd"]
    learning_rate: Annotated[float, Field(gt=0)]
    momentum: Fraction = 0.0
    trainable_blocks: Annotated[int, Field(ge=0)] = 0  # 0: tower frozen; n: its last n blocks train
    # fast.ai's differential learning rates: the heads train at learning_rate, the last unfrozen
    # block at learning_rate * block_lr_factor, the one before it at * block_lr_factor ** 2, ...
    block_lr_factor: Annotated[float, Field(gt=0, le=1)] = 1.0
    binary_loss_weight: NonNegative = 0.0  # weight of the "same class?" loss (multiloss only)
    triplet_loss_weight: NonNegative = 0.0  # weight of the batch-hard triplet loss on the embedding (multiloss only)
    center_loss_weight: NonNegative = 0.0  # weight of the center loss on the embedding (multiloss only)
    mined_pair_loss_weight: NonNegative = 0.0  # weight of the same-class loss on every positive pair and the hardest negatives (multiloss only)
    augment: bool = True
    early_stopping_patience: Annotated[int, Field(gt=0)] = 5
    reduce_lr_patience: Annotated[int, Field(gt=0)] = 2
    reduce_lr_factor: Annotated[float, Field(gt=0, lt=1)] = 0.5
    min_learning_rate: NonNegative = 1e-7
    # How the learning rate moves within the stage (siamdog.training.stages.learning_rate_schedule):
    # "plateau" (the original recipe: constant, multiplied by reduce_lr_factor when valid accuracy
    # stalls), "cosine" (linear warmup over warmup_epochs, then cosine decay to 0 at the last
    # epoch) or "cosine_restarts" (SGDR: cosine cycles of cycle_epochs, each twice the last).
    schedule: Literal["plateau", "cosine", "cosine_restarts"] = "plateau"
    warmup_epochs: Annotated[int, Field(ge=0)] = 0
    cycle_epochs: Annotated[int, Field(gt=0)] = 1
    # Mixing each training batch (siamdog.data.mixing, softmax mode only): "mixup" blends pairs
    # of samples and their labels, "cutmix" pastes a box of one into another (images, or the
    # cached feature maps of a fine-tuning stage); mix_alpha is the Beta parameter of the weight.
    mix: Literal["none", "mixup", "cutmix"] = "none"
    mix_alpha: Annotated[float, Field(gt=0, le=1)] = 0.2
    # The Baidu blog's quadrant augmentations (siamdog.data.quadrants), each the probability that
    # a training sample is changed (the image, or on the feature cache the feature map where the
    # trainable blocks begin). Any mode. quadrant_mask fills one random quadrant with its mean;
    # same_class_mosaic cuts its four quadrants from photos of its class in the batch (needs the
    # class_balanced sampler, which puts images_per_class photos of a class in each batch).
    quadrant_mask: Probability = 0.0
    same_class_mosaic: Probability = 0.0

    @model_validator(mode="after")
    def _block_rates_fit(self):
        if self.block_lr_factor != 1 and not self.trainable_blocks:
            raise ValueError(f"block_lr_factor {self.block_lr_factor}: this stage trains no blocks of the tower (trainable_blocks 0)")
        return self

    @model_validator(mode="after")
    def _warmup_fits(self):
        if self.warmup_epochs and self.schedule != "cosine":
            raise ValueError(f"warmup_epochs: only the cosine schedule warms up (this stage's schedule is {self.schedule})")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs {self.warmup_epochs} leaves none of the stage's {self.epochs} epoch(s) to decay in")
        return self

    def loss_weights(self) -> dict[str, float]:
        """The weights of the losses beside the classifier's, by setting name (see OUTPUTS)."""
        return {name: value for name, value in dataclasses.asdict(self).items() if name.endswith("_loss_weight")}


def default_stages() -> list[StageConfig]:
    """The original recipe: heads on a frozen tower, then the last two blocks, then no augmentation."""
    # The "same class?" loss in heads trains only bin_out (the tower is frozen and the classifier
    # does not see that loss), so finetune starts with a trained bin_out instead of sending a
    # random head's gradients into the unfrozen blocks.
    heads = StageConfig(name="heads", epochs=30, optimizer="nadam", learning_rate=2e-3, binary_loss_weight=0.5)
    finetune = StageConfig(
        name="finetune",
        epochs=30,
        optimizer="sgd",
        learning_rate=1e-4,
        momentum=0.9,
        trainable_blocks=2,
        binary_loss_weight=0.5,
    )
    polish = dataclasses.replace(finetune, name="polish", learning_rate=1e-5, augment=False)
    return [heads, finetune, polish]


@dataclass(config=_STRICT)
class TrainConfig:
    """Everything that decides a training run's result (runtime knobs such as workers are not here)."""

    backbone: str = "xception"
    weights: str = "imagenet"  # "imagenet", "none" or a path to a .weights.h5 file
    # A .keras model of an earlier run with the same backbone, size and heads: the new run starts
    # from its weights (after `weights` builds the tower), e.g. to go on from a short trial run.
    init_from: str | None = None
    image_size: Annotated[int, Field(ge=32)] = 299
    batch_size: Annotated[int, Field(gt=0)] = 32
    mode: Literal["multiloss", "softmax"] = "multiloss"
    pair_every: Annotated[int, Field(gt=0)] = 4  # every k-th batch is made of positive pairs
    # The epoch order (siamdog.data.sampling): "shuffled" (the original recipe) or
    # "class_balanced" (P x K batches: batch_size / images_per_class classes, images_per_class each).
    sampler: Literal["shuffled", "class_balanced"] = "shuffled"
    images_per_class: Annotated[int, Field(ge=2)] = 4
    label_smoothing: Fraction = 0.0  # on the classifier's cross-entropy
    dropout: Fraction = 0.5
    # 0: the heads read the pooled features (the original recipe); n: a gated linear unit
    # compresses them to n values first, and trains in every stage (siamdog.models.siamese).
    embedding_size: Annotated[int, Field(ge=0)] = 0
    # With an embedding (multiloss): a second classifier on the pooled features themselves (the
    # Baidu blog's auxiliary head), fused with the first by their valid accuracies.
    auxiliary_head: bool = False
    seed: int = 0
    # 0: every stage sees freshly decoded (and augmented) images every epoch. n >= 1: the frozen
    # front of the tower runs once, and stages train on its cached outputs, for n views of each
    # image where they augment (1: as is, 2: plus its mirror, more: plus seeded augmentations of
    # the `augment` settings) and the image as is where they do not. Or the views by name, the
    # image as is first: siamdog.inference's TTA views, such as
    # [as is, mirrored, zoomed, zoomed mirrored] (the views `--tta crops` averages).
    feature_cache_views: Annotated[int, Field(ge=0)] | list[str] = 0
    # What runs that front for the cache (siamdog.training.front_engines): "keras", or OpenVINO
    # in float32 ("openvino") or int8 ("openvino_int8", 2.5-3.2x the Keras pass on 2 CPU cores). The saved
    # model is Keras float32 whichever runs the pass.
    front_engine: Literal["keras", "openvino", "openvino_int8"] = "keras"
    # The tower's precision (its variables stay float32; the heads compute in float32):
    # "mixed_bfloat16" for CPUs with AMX or AVX-512 BF16, TPUs and recent GPUs, "mixed_float16"
    # for GPUs (with dynamic loss scaling), or "auto": the one this machine trains fastest in, as
    # measured (siamdog.training.hardware), written into the run's saved config. See
    # bench/README.md for what each gives on a CPU.
    precision: Literal[(*PRECISIONS, "auto")] = "float32"
    # "data_parallel": the model on every local device (GPUs, else logical CPU devices), each
    # batch split between them; batch_size is the global batch (siamdog.training.distribution).
    distribution: Literal["none", "data_parallel"] = "none"
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    stages: list[StageConfig] = dataclasses.field(default_factory=default_stages)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        from siamdog.models.backbones import BACKBONES  # imports Keras, so only when validating

        if value not in BACKBONES:
            raise ValueError(f"unknown backbone {value!r} (choose from {', '.join(BACKBONES)})")
        return value

    @field_validator("feature_cache_views")
    @classmethod
    def _known_views(cls, value: int | list[str]) -> int | list[str]:
        from siamdog.inference import VIEWS

        if isinstance(value, int):
            return value
        unknown = [v for v in value if v not in VIEWS]
        if unknown:
            raise ValueError(f"unknown view {unknown[0]!r} (choose from {', '.join(VIEWS)})")
        if not value or value[0] != "as is":
            raise ValueError("the first view must be 'as is' (a stage that does not augment trains on it)")
        return value

    @field_validator("stages")
    @classmethod
    def _unique_stage_names(cls, stages: list[StageConfig]) -> list[StageConfig]:
        if not stages:
            raise ValueError("at least one stage is needed")
        names = [s.name for s in stages]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"stage names must be unique; repeated: {', '.join(duplicates)}")
        return stages

    @model_validator(mode="after")
    def _auxiliary_head_fits(self):
        if self.auxiliary_head and self.mode != "multiloss":
            raise ValueError("auxiliary_head: the auxiliary head is a multi-loss output (use mode multiloss)")
        if self.auxiliary_head and not self.embedding_size:
            raise ValueError("auxiliary_head: needs embedding_size > 0 (without an embedding both heads would read the same pooled features)")
        return self

    @model_validator(mode="after")
    def _batch_transforms_fit(self):
        mixed = [s.name for s in self.stages if s.mix != "none"]
        if mixed and self.mode != "softmax":
            keys = ", ".join(f"stages.{name}.mix" for name in mixed)
            raise ValueError(f"{keys}: mixing batches needs mode softmax (a mixed pair has no same-class answer)")
        for stage in self.stages:
            if stage.mix == "cutmix" and self.feature_cache_views and not stage.trainable_blocks:
                raise ValueError(
                    f"stages.{stage.name}.mix cutmix: with feature_cache_views a frozen stage trains on pooled features, "
                    "so there is no box to cut for cutmix (use mixup, or no feature cache)"
                )
            for key in ("quadrant_mask", "same_class_mosaic"):
                if getattr(stage, key) and self.feature_cache_views and not stage.trainable_blocks:
                    raise ValueError(
                        f"stages.{stage.name}.{key}: with feature_cache_views a frozen stage trains on pooled features, "
                        "which have no quadrants (use it on a stage that trains blocks, or use no feature cache)"
                    )
            if stage.same_class_mosaic and self.sampler != "class_balanced":
                raise ValueError(
                    f"stages.{stage.name}.same_class_mosaic: needs sampler class_balanced "
                    f"(with sampler {self.sampler} a batch seldom holds two photos of a class)"
                )
        return self

    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        message = re.sub(r"^Value error, ", "", item["msg"])
        parts.append(f"{where}: {message}" if where else message)  # a check across keys names them itself
    return "; ".join(parts)


def config_from_dict(values: dict, source: str = "config") -> TrainConfig:
    """A validated TrainConfig from plain values (as read from YAML)."""
    if not isinstance(values, dict):
        raise SiamdogError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
    try:
        return TrainConfig(**values)
    except ValidationError as e:
        raise SiamdogError(f"{source}: {_describe(e)}") from None
    except TypeError as e:
        raise SiamdogError(f"{source}: {e}") from None


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> TrainConfig:
    """The defaults, updated by the YAML file at `path` (if any), then by `overrides`."""
    values: dict = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                values = yaml.safe_load(f) or {}
        except OSError as e:
            raise SiamdogError(f"{path}: cannot read config ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise SiamdogError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise SiamdogError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
    values = {**values, **(overrides or {})}
    return config_from_dict(values, str(path) if path else "config")


def config_to_dict(config: TrainConfig) -> dict:
    """Plain values (lists, not tuples) for YAML."""

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


def save_config(config: TrainConfig, path: str | os.PathLike) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config_to_dict(config), f, sort_keys=False)
