"""The staged schedule: build the model, then run each configured stage with `model.fit`.

A run folder (see run_folder) holds everything needed to reproduce and resume a run.
Running again on the same run directory skips finished stages and resumes the current one at
the epoch after the last one that finished. With `feature_cache_views`, the part of the tower
that no stage on the cache trains runs once over the data (see feature_cache) and each such
stage fits only what it trains, on the cached outputs; a stage that trains every block has no
frozen front to store and trains on the images. The saved model is the same single-image
classifier either way.
"""

import dataclasses
import logging
import os
import time
from pathlib import Path

import keras

from siamdog.config import StageConfig, TrainConfig
from siamdog.data.augment import Augmentation
from siamdog.data.batches import DirectoryBatches, PairedBatches, list_classes
from siamdog.data.features import FeatureBatches
from siamdog.data.mixing import MixedBatches
from siamdog.data.quadrants import QuadrantBatches
from siamdog.data.sampling import check_class_balanced
from siamdog.errors import SiamdogError
from siamdog.files import read_json, write_json
from siamdog.inference import predict_batches
from siamdog.models.backbones import (
    block_learning_rates,
    build_tower,
    calibrate_batchnorm,
    get_backbone,
    resolve_weights,
    split_tower,
    unfreeze_last_blocks,
)
from siamdog.models.siamese import BATCH_OUTPUTS, OUTPUTS, SiamdogModel, build_model, heads_of
from siamdog.similarity import calibrate_on_readings, calibrate_verification, calibrated_answers, features_and_probabilities, same_class_head_of
from siamdog.training.callbacks import (
    ClassifierValidation,
    EpochOrder,
    PositivePairFraction,
    SaveBestClassifier,
    ScheduledLearningRate,
    TrainingCurves,
)
from siamdog.training.checkpoint import StageCheckpoint, load_training_state, save_training_state
from siamdog.training.distribution import distributed, loader_workers, process_data
from siamdog.training.feature_cache import stage_inputs
from siamdog.training.front_engines import FrontEngine
from siamdog.training import hardware
from siamdog.training.run_folder import RunPaths, prepare_run, run_lock, saved_config
from siamdog.training.stages import build_before_fit, compile_stage, learning_rate_schedule, make_optimizer

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 64  # images whose statistics initialize BatchNorm in a random tower


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the backend; on TensorFlow also ask for deterministic ops."""
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def data_folders(data_dir: Path) -> tuple[Path, Path, list[str]]:
    train_dir, valid_dir = data_dir / "train", data_dir / "valid"
    if not train_dir.is_dir():
        raise SiamdogError(f"{data_dir}: no train/ folder (make one with `siamdog organize`)")
    if not valid_dir.is_dir():
        raise SiamdogError(f"{data_dir}: no valid/ folder (organize with a valid fraction above 0)")
    classes = list_classes(train_dir)
    if len(classes) < 2:
        raise SiamdogError(f"{train_dir}: need at least two class folders, found {len(classes)}")
    return train_dir, valid_dir, classes


def _select_stages(config: TrainConfig, only: list[str] | None) -> list[str]:
    names = config.stage_names()
    if not only:
        return names
    unknown = [s for s in only if s not in names]
    if unknown:
        raise SiamdogError(f"unknown stage(s) {', '.join(unknown)} (this config has: {', '.join(names)})")
    return [n for n in names if n in only]


def train(
    data_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    config: TrainConfig,
    stages: list[str] | None = None,
    workers: int = 4,
    callbacks: list[keras.callbacks.Callback] = (),
    verbose: str | int = "auto",
    tensorboard_dir: str | os.PathLike | None = None,
) -> dict:
    """Train (or resume) a run; returns the run's state (finished stages and best score).

    With `tensorboard_dir`, each stage also logs its per-epoch figures for TensorBoard into
    `tensorboard_dir/<stage>/` (train/ and validation/ beside each other).

    Every setting is checked (and the tower built, which checks the weights file) before
    anything is written, so a refused command leaves no run folder behind to refuse the
    corrected one.
    """
    data_dir, run = Path(data_dir), RunPaths(Path(run_dir))
    train_dir, valid_dir, classes = data_folders(data_dir)
    config = for_this_machine(config, saved_config(run))
    selected = _select_stages(config, stages)
    check_settings(config, len(classes))
    seed_everything(config.seed)
    with distributed(config.distribution, config.batch_size, config.mode):
        model = new_model(config, len(classes))
        run.root.mkdir(parents=True, exist_ok=True)
        with run_lock(run.lock):
            prepare_run(run, config, classes)
            return _run_stages(run, model, train_dir, valid_dir, classes, config, selected, workers, callbacks, verbose, tensorboard_dir)


def for_this_machine(config: TrainConfig, resumed: TrainConfig | None = None) -> TrainConfig:
    """`config` with `precision: auto` replaced by the precision this machine trains fastest in
    (siamdog.training.hardware), so that the run's saved config says what it trained in. A run
    being `resumed` goes on in the precision it started in, on whichever machine."""
    if config.precision != "auto":
        return config
    if resumed is not None:
        log.info("precision auto: %s, the run's", resumed.precision)
        return dataclasses.replace(config, precision=resumed.precision)
    precision = hardware.auto_precision(hardware.this_hardware())
    log.info("precision auto: %s on this machine", precision)
    return dataclasses.replace(config, precision=precision)


def new_model(config: TrainConfig, num_classes: int) -> SiamdogModel:
    """The model a run of `config` starts from: its tower and heads, or `init_from`'s weights."""
    tower = build_tower(config.backbone, config.weights, config.image_size, config.precision)
    model = build_model(
        config.mode, tower, num_classes, config.dropout, config.embedding_size, weighed_batch_outputs(config), config.auxiliary_head
    )
    if config.init_from is not None:
        start_from(model, config.init_from)
    return model


def calibrate_random_tower(tower: keras.Model, config: TrainConfig, train_dir: Path, classes: list[str]) -> None:
    """Give a randomly initialized tower BatchNorm statistics from one training batch (see
    calibrate_batchnorm); a pretrained one, or one from `init_from`, keeps its own."""
    if config.init_from is None and resolve_weights(config.weights) is None:
        sample = DirectoryBatches(train_dir, (config.image_size, config.image_size), CALIBRATION_BATCH, seed=config.seed, classes=classes)
        calibrate_batchnorm(tower, [sample[0][0]])


def weighed_batch_outputs(config: TrainConfig) -> tuple[str, ...]:
    """The batch-wide loss outputs that some stage gives a weight above 0."""
    return tuple(name for name in BATCH_OUTPUTS if any(stage.loss_weights()[OUTPUTS[name].weight] > 0 for stage in config.stages))


def check_settings(config: TrainConfig, num_classes: int) -> None:
    """Refuse settings that only the data or the backbone can rule out, with the reason (the
    image size and the weights are checked by build_tower, also before anything is written)."""
    spec = get_backbone(config.backbone)
    if config.init_from is not None and not os.path.isfile(config.init_from):
        raise SiamdogError(f"init_from: {config.init_from}: no such model file")
    for stage in config.stages:
        if stage.trainable_blocks > spec.num_blocks:
            raise SiamdogError(
                f"stages.{stage.name}.trainable_blocks: {config.backbone} has {spec.num_blocks} blocks; cannot unfreeze {stage.trainable_blocks}"
            )
    if config.mode == "multiloss" and config.batch_size < 2:
        raise SiamdogError(
            f"batch_size {config.batch_size}: the multi-loss model pairs images within a batch, so a batch needs at least 2 (or use mode softmax)"
        )
    if config.precision == "mixed_float16" and not hardware.has_accelerator():
        # Measured with bench/precision.py on a CPU with AMX: 3 steps of the whole tower did not
        # finish in 6 minutes, where float32 took under half a minute.
        log.warning("precision mixed_float16: no GPU here, and on a CPU float16 trains many times slower than float32; "
                    "use mixed_bfloat16 on a CPU with AVX-512 BF16 or AMX, else float32")
    if config.front_engine != "keras" and not config.feature_cache_views:
        raise SiamdogError(f"front_engine {config.front_engine}: runs the cached pass, so it needs feature_cache_views >= 1")
    if config.sampler == "class_balanced":
        try:
            check_class_balanced(config.batch_size, config.images_per_class, num_classes)
        except ValueError as e:
            raise SiamdogError(f"sampler class_balanced: {e}") from None


def trains_on_cache(config: TrainConfig, stage: StageConfig) -> bool:
    """Whether `stage` fits on the cached pass of the frozen front: with `feature_cache_views`,
    every stage that leaves a block of the tower frozen. One that trains every block has no
    frozen front, so it trains on the images, with new augmentations each epoch."""
    return bool(config.feature_cache_views) and stage.trainable_blocks < get_backbone(config.backbone).num_blocks


def every_stage_on_cache(config: TrainConfig) -> bool:
    """Whether the whole run trains on the cached pass (trains_on_cache), so that the same-class
    head can be calibrated on the cached valid pass too."""
    return all(trains_on_cache(config, stage) for stage in config.stages)


def cached_front_blocks(config: TrainConfig) -> int:
    """How many of the tower's last blocks the front of the cached passes leaves out: the most
    that a stage on the cache trains (0: the front is the whole tower, its pass pooled features)."""
    return max((stage.trainable_blocks for stage in config.stages if trains_on_cache(config, stage)), default=0)


def start_from(model: SiamdogModel, path: str) -> None:
    """Load the weights of an earlier run's saved classifier (tower, embedding, classifier)."""
    try:
        model.image_classifier.load_weights(path)
    except (ValueError, OSError) as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise SiamdogError(f"init_from: {path} does not fit this model (same backbone, image size, classes and embedding needed; {reason})") from None
    log.info("starting from the weights of %s", path)


def _stage_callbacks(
    run: RunPaths,
    stage: StageConfig,
    stage_names: list[str],
    model: SiamdogModel,
    val_classifier: keras.Model,
    val_heads: keras.Model | None,
    val_batches,
    tensorboard_dir: str | os.PathLike | None = None,
) -> tuple[list[keras.callbacks.Callback], StageCheckpoint]:
    """Validation first (it adds val_accuracy to the logs), then what monitors or records it.

    `val_classifier` scores `val_batches` (images, or cached features), or `val_heads`, both
    heads of a fused classifier, which validation weighs and fuses itself; the model's image
    classifier is what is saved, with its embedder and same-class head. The checkpoint comes
    after the callbacks whose counters it saves, and before CSVLogger: a crash between the two
    then costs a history row at worst, never a repeated one.
    """
    run.history(stage.name).parent.mkdir(exist_ok=True)
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=stage.early_stopping_patience, restore_best_weights=True
    )
    # A cosine schedule sets the learning rate of every step itself, so the plateau rule is
    # only there without one; either logs the rate.
    reduce_lr = [keras.callbacks.ReduceLROnPlateau(
        monitor="val_accuracy",
        mode="max",
        factor=stage.reduce_lr_factor,
        patience=stage.reduce_lr_patience,
        min_lr=stage.min_learning_rate,
    )] if stage.schedule == "plateau" else []
    checkpoint = StageCheckpoint(run.backup(stage.name), stateful=[early_stopping, *reduce_lr])
    companions = [(run.best_embedder, model.embedder)]
    if model.same_class is not None:
        companions.append((run.best_same_class, model.same_class))
    callbacks = [
        ClassifierValidation(val_classifier, val_batches, val_heads, model.parts.fusion),
        SaveBestClassifier(model.image_classifier, str(run.best_model), stage.name, companions),
        early_stopping,
        *(reduce_lr or [ScheduledLearningRate()]),
        checkpoint,
        keras.callbacks.CSVLogger(str(run.history(stage.name)), append=True),
        TrainingCurves([(s, str(run.history(s))) for s in stage_names], str(run.curves)),
    ]
    if tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(Path(tensorboard_dir) / stage.name), write_graph=False))
    return callbacks, checkpoint


def _cached_stage_data(
    stage: StageConfig, config: TrainConfig, model: SiamdogModel, train_dir: Path, valid: DirectoryBatches, classes: list[str], sampling: dict
):
    """(model to fit, its batches, validation classifier, both heads of it if fused, validation
    batches) of a stage that trains on the cached pass: the part of the tower that no stage on
    the cache trains runs once over the images (see feature_cache) and the stage fits only what it
    trains (the heads, and the last blocks if unfrozen) on its outputs: all
    `feature_cache_views` views of each image where the stage augments, view 0 (the image as
    is) where it does not."""
    size = (config.image_size, config.image_size)
    front_blocks = cached_front_blocks(config)
    plain = DirectoryBatches(train_dir, size, config.batch_size, shuffle=False, classes=classes)
    augmentation = Augmentation(**dataclasses.asdict(config.augment))

    def inputs(batches, views, engine):
        return stage_inputs(
            model.tower, config.backbone, front_blocks, stage.trainable_blocks, batches, views, augmentation, config.seed,
            engine=engine,
        )

    # The training pass runs on the configured engine; the valid pass on the Keras front
    # that evaluate and predict run, so that model selection sees the saved model's numbers.
    train_cache = inputs(plain, config.feature_cache_views, FrontEngine(config.front_engine, calibration=plain))
    train_cache = train_cache[: None if stage.augment else 1]
    valid_cache = inputs(valid, 1, FrontEngine())
    _, tail = split_tower(model.tower, config.backbone, stage.trainable_blocks)
    on_cache = heads_of(model, tail)
    return (
        on_cache.training,
        FeatureBatches(train_cache, plain.classes, len(classes), config.batch_size, **sampling),
        on_cache.classifier,
        on_cache.head_probabilities,
        FeatureBatches(valid_cache, valid.classes, len(classes), config.batch_size, shuffle=False),
    )


@dataclasses.dataclass
class PreparedStage:
    """A stage ready for `fit`: the compiled model it trains, its batches (pairs of them for
    multi-loss, built on `samples`, the sampler-ordered source), and what validates it (the
    classifier, or both heads of a fused one)."""

    model: keras.Model
    data: keras.utils.PyDataset
    samples: DirectoryBatches | FeatureBatches
    val_classifier: keras.Model
    val_heads: keras.Model | None
    val_batches: DirectoryBatches | FeatureBatches


def prepare_stage(
    stage: StageConfig,
    index: int,
    config: TrainConfig,
    model: SiamdogModel,
    train_dir: Path,
    valid: DirectoryBatches,
    classes: list[str],
    workers: int,
    learning_rate: float | None = None,
) -> PreparedStage:
    """Unfreeze the stage's blocks, make its batches and compile what it fits, with its
    schedule's learning rate or a fixed `learning_rate` (which the LR finder moves itself).

    Normally the whole model trains on images; with `feature_cache_views`, what a stage that
    leaves blocks frozen trains fits on the cached pass (_cached_stage_data)."""
    unfreeze_last_blocks(model.tower, config.backbone, stage.trainable_blocks)
    sampling = {"seed": config.seed + 1000 * index, "sampler_kind": config.sampler, "images_per_class": config.images_per_class}
    if trains_on_cache(config, stage):
        fit_model, samples, val_classifier, val_heads, val_batches = _cached_stage_data(
            stage, config, model, train_dir, valid, classes, sampling
        )
    else:
        fit_model, val_classifier, val_heads, val_batches = model.training, model.image_classifier, model.head_probabilities, valid
        samples = DirectoryBatches(
            train_dir,
            (config.image_size, config.image_size),
            config.batch_size,
            augmentation=Augmentation(**dataclasses.asdict(config.augment)) if stage.augment else None,
            classes=classes,
            workers=1 if config.mode == "multiloss" else loader_workers(config.distribution, workers),
            **sampling,
        )
    if learning_rate is None:
        learning_rate = learning_rate_schedule(  # pairing keeps the number of batches
            stage.schedule, stage.learning_rate, stage.epochs, len(samples), stage.warmup_epochs, stage.cycle_epochs
        )
    multipliers = None
    if stage.block_lr_factor != 1:
        multipliers = block_learning_rates(model.tower, config.backbone, stage.trainable_blocks, stage.block_lr_factor)
    optimizer = make_optimizer(stage.optimizer, learning_rate, stage.momentum, multipliers)
    if config.precision == "mixed_float16":  # float16 gradients underflow without loss scaling
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    compile_stage(fit_model, optimizer, config.label_smoothing, **stage.loss_weights())
    data = samples
    if stage.quadrant_mask or stage.same_class_mosaic:
        data = QuadrantBatches(
            samples, stage.quadrant_mask, stage.same_class_mosaic, sampling["seed"], workers=loader_workers(config.distribution, workers)
        )
    if config.mode == "multiloss":
        data = PairedBatches(data, config.pair_every, workers=workers, outputs=fit_model.output_names)
    elif stage.mix != "none":
        data = MixedBatches(data, stage.mix, stage.mix_alpha, sampling["seed"], workers=loader_workers(config.distribution, workers))
    return PreparedStage(fit_model, data, samples, val_classifier, val_heads, val_batches)


def _run_stages(
    run: RunPaths,
    model: SiamdogModel,
    train_dir: Path,
    valid_dir: Path,
    classes: list[str],
    config: TrainConfig,
    selected: list[str],
    workers: int,
    callbacks: list[keras.callbacks.Callback],
    verbose: str | int,
    tensorboard_dir: str | os.PathLike | None,
) -> dict:
    state = read_json(str(run.state)) or {"completed": {}}
    finished = [s for s in config.stage_names() if s in state["completed"]]
    size = (config.image_size, config.image_size)
    if all(name in state["completed"] for name in selected):
        if "verification_seconds" not in state or not calibrated_answers(run.root):  # stopped while calibrating, or calibrated by an earlier version
            _calibrate_verification(run, state, config, model, valid_dir, classes, workers)
        else:
            log.info("%s: stage(s) %s already complete; nothing to do", run.root, ", ".join(selected))
        return state
    if finished:
        load_training_state(run.checkpoint(finished[-1]), model.training)
        log.info("resuming after stage %s", finished[-1])
    else:
        calibrate_random_tower(model.tower, config, train_dir, classes)

    valid = DirectoryBatches(valid_dir, size, config.batch_size, shuffle=False, classes=classes)
    for index, stage in enumerate(config.stages):
        if stage.name not in selected or stage.name in state["completed"]:
            continue
        log.info("stage %s: %d trainable block(s), %s lr %g", stage.name, stage.trainable_blocks, stage.optimizer, stage.learning_rate)
        started = time.monotonic()  # a stage's time includes its cache pass, if any
        prepared = prepare_stage(stage, index, config, model, train_dir, valid, classes, workers)
        sampler_callbacks = [EpochOrder(prepared.samples)]
        if config.mode == "multiloss":
            sampler_callbacks.append(PositivePairFraction(prepared.data))
        stage_callbacks, checkpoint = _stage_callbacks(
            run, stage, config.stage_names(), model, prepared.val_classifier, prepared.val_heads, prepared.val_batches, tensorboard_dir
        )
        data = process_data(prepared.data)
        build_before_fit(prepared.model, data)
        # shuffle=False: the sampler orders the epoch. Keras would also shuffle the batches, with
        # Python's global generator, which a resumed run cannot put back where it was.
        history = prepared.model.fit(
            data, epochs=stage.epochs, shuffle=False, callbacks=[*sampler_callbacks, *stage_callbacks, *callbacks], verbose=verbose
        )
        seconds = time.monotonic() - started
        run.checkpoint(stage.name).parent.mkdir(exist_ok=True)
        save_training_state(run.checkpoint(stage.name), model.training)
        checkpoint.discard()
        state["completed"][stage.name] = {
            "epochs_run_now": len(history.epoch),
            "seconds": round(seconds, 1),
            "best_val_accuracy": max(history.history.get("val_accuracy", [float("nan")])),
        }
        state["best"] = read_json(str(run.best_model.with_suffix(".json")))
        write_json(str(run.state), state)
        log.info("stage %s done in %.0f s", stage.name, seconds)
    _calibrate_verification(run, state, config, model, valid_dir, classes, workers)
    return state


def _calibrate_verification(
    run: RunPaths, state: dict, config: TrainConfig, model: SiamdogModel, valid_dir: Path, classes: list[str], workers: int
) -> None:
    """The thresholds of `siamdog verify`, chosen on the valid photos (calibrate_verification),
    on the cached valid pass where every stage trained on the cache rather than on the photos
    read through the whole tower again; its seconds go into state.json last, which marks the
    run as finished."""
    started = time.monotonic()
    if every_stage_on_cache(config):
        features, probabilities, labels = _cached_valid_readings(run, config, model, valid_dir, classes)
        figures = calibrate_on_readings(run.root, features, probabilities, labels, valid_dir, same_class_head_of(run.root, model))
    else:
        figures = calibrate_verification(run.root, valid_dir, workers)
    state["verification_seconds"] = round(time.monotonic() - started, 1)
    write_json(str(run.state), state)
    answers = "; ".join(f"{answer} ROC AUC {f['roc_auc']}, accuracy {f['accuracy']:.4f} at threshold {f['threshold']:.4f}"
                        for answer, f in figures["answers"].items())
    log.info("same class or not, on %d valid pairs: %s", figures["pairs"], answers)


def _cached_valid_readings(run: RunPaths, config: TrainConfig, model: SiamdogModel, valid_dir: Path, classes: list[str]):
    """(features, class probabilities, class indices) of the valid photos by the best epoch's
    weights: the cached pass of the front, which no stage trains, through the rest of the
    tower, the embedding and the classifier."""
    model.image_classifier.load_weights(run.best_model)  # the best epoch's weights, not the last one's
    blocks = cached_front_blocks(config)
    valid = DirectoryBatches(valid_dir, (config.image_size, config.image_size), config.batch_size, shuffle=False, classes=classes)
    cache = stage_inputs(model.tower, config.backbone, blocks, blocks, valid, 1, Augmentation(), config.seed)
    _, tail = split_tower(model.tower, config.backbone, blocks)
    on_cache = heads_of(model, tail)
    both, width = features_and_probabilities(on_cache.embedder, on_cache.classifier)
    outputs, labels = predict_batches(both, FeatureBatches(cache, valid.classes, len(classes), config.batch_size, shuffle=False))
    return outputs[:, :width], outputs[:, width:], labels
