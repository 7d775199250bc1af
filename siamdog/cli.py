"""The `siamdog` command: parses arguments and calls the library; nothing else happens here."""

import argparse
import contextlib
import logging
import os
import sys

from siamdog import __version__
from siamdog.config import PRECISIONS
from siamdog.data.images import DEFAULT_MAX_PIXELS
from siamdog.data.pairing import ANSWERS, DEFAULT_ANSWER
from siamdog.data.pseudo_labels import DEFAULT_THRESHOLD as PSEUDO_LABEL_DEFAULT_THRESHOLD
from siamdog.errors import SiamdogError
from siamdog.inference import DEFAULT_TTA, TTA_VIEWS

DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
BACKEND_COMMANDS = ("train", "lr-find", "evaluate", "predict", "export", "verify", "embed", "search")  # the commands that load Keras


def _organize(args) -> int:
    from siamdog.data.organize import organize

    result = organize(
        args.src,
        args.dst,
        labels=args.labels,
        fmt=args.format,
        id_column=args.id_column,
        label_column=args.label_column,
        valid_fraction=args.valid_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        link=args.link,
        force=args.force,
        workers=args.workers,
        max_pixels=args.max_pixels,
    )
    print(result.summary())
    return 0


def _train_config(args):
    from siamdog.config import config_from_dict, config_to_dict, load_config

    overrides = {
        key: value
        for key, value in {
            "backbone": args.backbone,
            "weights": args.weights,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "mode": args.mode,
            "precision": args.precision,
            "label_smoothing": args.label_smoothing,
            "seed": args.seed,
            "init_from": args.init_from,
        }.items()
        if value is not None
    }
    config = load_config(args.config, overrides)
    if args.max_epochs is None:
        return config
    if args.max_epochs < 1:
        raise SiamdogError(f"--max-epochs must be at least 1, got {args.max_epochs}")
    values = config_to_dict(config)
    for stage in values["stages"]:
        stage["epochs"] = min(stage["epochs"], args.max_epochs)
    return config_from_dict(values, "--max-epochs")


def _train(args) -> int:
    from siamdog.training.distribution import join_processes
    from siamdog.training.pseudo_rounds import train_with_pseudo_labels
    from siamdog.training.trainer import train

    join_processes()  # a multi-host run's processes find each other before the backend starts

    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    if args.pseudo_labels is None:
        given = [flag for flag, value in (("--threshold", args.threshold), ("--rounds", args.rounds)) if value is not None]
        if given:
            raise SiamdogError(f"{' and '.join(given)}: only with --pseudo-labels DIR (the images to pseudo-label)")
        run, state = args.run, train(args.data, args.run, _train_config(args), stages=stages, workers=args.workers, tensorboard_dir=args.tensorboard)
    else:
        threshold = PSEUDO_LABEL_DEFAULT_THRESHOLD if args.threshold is None else args.threshold
        run, state = train_with_pseudo_labels(
            args.data, args.run, _train_config(args), args.pseudo_labels, threshold, 1 if args.rounds is None else args.rounds, stages, workers=args.workers,
            tensorboard_dir=args.tensorboard,
        )
    best = state.get("best") or {}
    if best:
        print(f"best val_accuracy {best['val_accuracy']:.4f} ({best['stage']}, epoch {best['epoch']}); model: {run}/best.keras")
    return 0


def _lr_find(args) -> int:
    from siamdog.training.lr_finder import find_learning_rate

    result = find_learning_rate(
        args.data, _train_config(args), args.stage, start=args.start, end=args.end, steps=args.steps, out_dir=args.out, workers=args.workers
    )
    print(result.summary())
    print(f"wrote {args.out}/lr-find.png and lr-find.csv")
    return 0


def _evaluate(args) -> int:
    from siamdog.data.labels import read_class_map
    from siamdog.evaluate import evaluate

    class_map = read_class_map(args.class_map) if args.class_map else None
    result = evaluate(
        args.model, args.data, out_dir=args.out, batch_size=args.batch_size, workers=args.workers, max_pixels=args.max_pixels,
        tta=args.tta, class_map=class_map, train_dir=args.train_data, image_size=args.image_size,
    )
    print(result.summary())
    print()
    print(result.report)
    return 0


def _export(args) -> int:
    from siamdog.export import export_model

    out = export_model(args.model, args.format, args.out)
    print(f"wrote {out} (the model, classes.txt and input.json)")
    return 0


def _verify(args) -> int:
    from siamdog.similarity import verify

    result = verify(args.model, args.first, args.second, answer=args.by, threshold=args.threshold)
    print(result.summary([args.first, args.second]))
    return 0


def _embed(args) -> int:
    from siamdog.similarity import embed

    count, skipped = embed(args.model, args.images, args.out, recursive=args.recursive, workers=args.workers)
    print(f"indexed {count} images into {args.out}")
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s): {', '.join(skipped)}")
    return 0


def _search(args) -> int:
    from siamdog.similarity import search

    for rank, found in enumerate(search(args.index, args.query, args.k), 1):
        print(f"{rank}. {found.image}  distance {found.distance:.4f}  predicted {found.predicted}")
    return 0


def _predict(args) -> int:
    from siamdog.evaluate import predict

    count, skipped = predict(
        args.model, args.images, args.out, batch_size=args.batch_size, workers=args.workers, max_pixels=args.max_pixels,
        tta=args.tta, recursive=args.recursive, top_k=args.top_k, fmt=args.format, image_size=args.image_size,
    )
    print(f"wrote {count} predictions to {args.out}")
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s): {', '.join(skipped)}")
    return 0


def _demo_data(args) -> int:
    from siamdog.demo import make_demo_images

    classes = make_demo_images(
        args.raw, args.test, num_classes=args.classes, per_class=args.per_class, test_per_class=args.test_per_class, size=args.size, seed=args.seed
    )
    print(f"wrote {args.per_class} images for each of {len(classes)} classes to {args.raw}" + (f" and held-out ones to {args.test}" if args.test else ""))
    return 0


@contextlib.contextmanager
def _quiet_backend_import():
    """Import Keras and its backend with the C++ start-up lines (oneDNN, CUDA probing)
    silenced: they go straight to file descriptor 2, so that is what is pointed elsewhere."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _import_backend(verbose: bool) -> None:
    """Load Keras before a command needs it: quietly, with only errors from TensorFlow's
    Python loggers (retracing warnings), unless `verbose`."""
    with contextlib.nullcontext() if verbose else _quiet_backend_import():
        import keras  # noqa: F401
    if not verbose:
        for name in ("tensorflow", "absl"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _add_training_arguments(p: argparse.ArgumentParser) -> None:
    """What train and lr-find share: the organized data, the run settings given over the config
    file (see _train_config) and the loader threads."""
    p.add_argument("--data", required=True, help="organized folder with train/ and valid/")
    p.add_argument("--config", help="YAML config (default: the original recipe, configs/original.yaml; `make train` takes configs/default.yaml, the best recipe measured)")
    p.add_argument("--backbone", help="xception or inception_v3")
    p.add_argument("--weights", help="imagenet, none, or a .weights.h5 file")
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--mode", choices=("multiloss", "softmax"))
    p.add_argument("--precision", choices=(*PRECISIONS, "auto"),
                   help="the tower's: mixed_bfloat16 where the hardware computes in bfloat16 (CPUs with AMX or AVX-512 BF16, recent GPUs, TPUs); "
                        "auto picks what this machine trains fastest in")
    p.add_argument("--label-smoothing", type=float, help="on the classifier's cross-entropy, from 0 (none) to below 1")
    p.add_argument("--seed", type=int)
    p.add_argument("--max-epochs", type=int, help="cap the epochs of every stage (part of the run's settings)")
    p.add_argument("--init-from", help="start from the weights of an earlier run's best.keras (same backbone, size and classes)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="threads loading batches")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siamdog", description="Fine-grained image classification with a Siamese multi-loss model.")
    parser.add_argument("--version", action="version", version=f"siamdog {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show the backend's start-up and tracing messages")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("organize", help="split a folder of labelled photos into train/, valid/ (and test/) class folders")
    p.add_argument("src", help="folder of images: flat (labels in names or a labels file) or already in class folders")
    p.add_argument("dst", help="output folder (gets train/, valid/, classes.txt, manifest.csv, rejected.csv)")
    p.add_argument("--labels", help="labels file: CSV with a header (id,breed) or '<image> <label>' lines")
    p.add_argument("--format", default="auto", choices=("auto", "filename", "folders", "csv", "txt"),
                   help="where labels come from: file names, class folders, a CSV or a text file (default: auto)")
    p.add_argument("--id-column", help="CSV column naming the image (default: id, image, file, ...)")
    p.add_argument("--label-column", help="CSV column holding the label (default: breed, label, class, ...)")
    p.add_argument("--valid-fraction", type=float, default=0.1, help="share of each class held out for validation (default: 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.0, help="share of each class held out for a final test/ split that neither training nor model selection sees (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    p.add_argument("--link", default="copy", choices=("copy", "hard", "sym"), help="copy files (default) or link them")
    p.add_argument("--force", action="store_true", help="redo a DST made from another source or with other settings")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="parallel file checks")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse images claiming more pixels, undecoded")
    p.set_defaults(handler=_organize)

    p = commands.add_parser(
        "train",
        help="train (or resume) a run in stages",
        description="Train (or resume) a run in stages. The configuration with its overrides (including --max-epochs, "
        "which caps every stage's epochs) defines the run and is saved in RUN/config.yaml: rerunning with the same "
        "settings resumes it, other settings are refused. Only --stages and --workers may change between runs of one "
        "folder. To go on from a finished run with more epochs or other settings, start a new run with "
        "--init-from OLD_RUN/best.keras.",
    )
    _add_training_arguments(p)
    p.add_argument("--run", required=True, help="run folder: config, checkpoints, best model, history")
    p.add_argument("--stages", help="comma-separated stage names to run (default: all)")
    p.add_argument("--tensorboard", metavar="DIR", help="also log every stage's per-epoch figures for TensorBoard into DIR/<stage>/")
    p.add_argument("--pseudo-labels", metavar="DIR",
                   help="after training, label the images under DIR where the model is confident and train again on them too "
                        "(the last round's model is RUN/pseudo-round-N/best.keras)")
    # No defaults here: given without --pseudo-labels they are refused, not silently ignored.
    p.add_argument("--threshold", type=float, help=f"with --pseudo-labels: the probability from which an image is pseudo-labelled (default: {PSEUDO_LABEL_DEFAULT_THRESHOLD})")
    p.add_argument("--rounds", type=int, help="with --pseudo-labels: rounds, each labelled by the previous one's model (default: 1)")
    p.set_defaults(handler=_train)

    p = commands.add_parser(
        "lr-find",
        help="sweep a stage's learning rate and suggest one (the LR range test)",
        description="Train one stage of the configured run for --steps batches on a throwaway model while its learning "
        "rate grows from --start to --end, plot the loss against it and suggest the rate where the loss falls fastest. "
        "No run folder is written; a cached pass it needs stays beside the data for training to reuse.",
    )
    _add_training_arguments(p)
    p.add_argument("--out", required=True, help="folder for lr-find.png and lr-find.csv")
    p.add_argument("--stage", help="the stage to sweep (default: the first)")
    p.add_argument("--start", type=float, default=1e-7, help="first learning rate (default: 1e-7)")
    p.add_argument("--end", type=float, default=1.0, help="last learning rate (default: 1)")
    p.add_argument("--steps", type=int, default=100, help="training batches in the sweep (default: 100)")
    p.set_defaults(handler=_lr_find)

    for name, helptext in (("evaluate", "score a model on labelled class folders"), ("predict", "label an unlabelled folder")):
        p = commands.add_parser(name, help=helptext)
        p.add_argument("--model", required=True, nargs="+", metavar="MODEL",
                       help="run folder or .keras file (with classes.txt beside it); several: their ensemble, the mean of their probabilities")
        if name == "evaluate":
            p.add_argument("--data", required=True, help="folder of class folders, e.g. DATA/valid")
            p.add_argument("--out", help="folder for report.html, predictions.csv, confusion_matrix.png and metrics.json (default: RUN/evaluation; required for an ensemble)")
            p.add_argument("--class-map", help="two-column file, folder,class: the model class of folders named otherwise")
            p.add_argument("--train-data", help="the run's training folder (e.g. DATA/train): also scored, to list likely label errors in report.html")
            p.set_defaults(handler=_evaluate)
        else:
            p.add_argument("--images", required=True, help="folder of images")
            p.add_argument("--out", required=True, help="output file: label<TAB>image_id lines, or CSV with --format csv")
            p.add_argument("--recursive", action="store_true", help="also read the subfolders (ids become sub/folder/name)")
            p.add_argument("--format", default="submission", choices=("submission", "csv"),
                           help="submission: the competition's label<TAB>image_id lines; csv: the top-k labels with their probabilities")
            p.add_argument("--top-k", type=int, default=1, help="labels per image in the CSV format (default: 1)")
            p.set_defaults(handler=_predict)
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
        p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse images claiming more pixels, undecoded")
        p.add_argument("--tta", nargs="?", const=DEFAULT_TTA, default="none", choices=TTA_VIEWS,
                       help="test-time augmentation: average each image's probabilities as is and mirrored (--tta flip: 2x the time), "
                            f"or also its centre enlarged, as is and mirrored (--tta crops: 4x); a bare --tta is --tta {DEFAULT_TTA}")
        p.add_argument("--image-size", type=int, metavar="PX",
                       help="read the photos at PX x PX instead of the size each model trained at (the run folder's config.yaml "
                            "rebuilds the model; a size a little above training's can do better, bench/README.md)")

    p = commands.add_parser("export", help="write a run's classifier as a SavedModel, ONNX or LiteRT model")
    p.add_argument("model", help="run folder or .keras file (with classes.txt beside it)")
    p.add_argument("--format", required=True, choices=("savedmodel", "onnx", "litert"))
    p.add_argument("--out", help="folder to write (default: export-<format>/ beside the model)")
    p.set_defaults(handler=_export)

    p = commands.add_parser("verify", help="whether two photos show one class")
    p.add_argument("model", help="run folder or .keras file")
    p.add_argument("first")
    p.add_argument("second")
    p.add_argument("--by", choices=tuple(ANSWERS), default=DEFAULT_ANSWER,
                   help=f"the answer that gives the verdict: {'; '.join(f'{name}, {answer.description}' for name, answer in ANSWERS.items())} "
                        f"(multi-loss runs only) (default: {DEFAULT_ANSWER})")
    p.add_argument("--threshold", type=float, help="score from which the verdict is 'same class' (default: the one chosen on valid pairs when the run was trained)")
    p.set_defaults(handler=_verify)

    p = commands.add_parser("embed", help="index a folder of photos for similar-photo search")
    p.add_argument("model", help="run folder or .keras file")
    p.add_argument("images", help="folder of images")
    p.add_argument("--out", required=True, help="index folder to write")
    p.add_argument("--recursive", action="store_true", help="also read the subfolders")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    p.set_defaults(handler=_embed)

    p = commands.add_parser("search", help="the photos of an index most like a query photo")
    p.add_argument("index", help="index folder made by `siamdog embed`")
    p.add_argument("query", help="image file")
    p.add_argument("--k", type=int, default=5, help="how many (default 5)")
    p.set_defaults(handler=_search)

    p = commands.add_parser("demo-data", help="generate the small learnable demo image set")
    p.add_argument("raw", help="flat folder for training images named <class>_<id>.jpg")
    p.add_argument("--test", help="folder for held-out images in class folders")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--per-class", type=int, default=60)
    p.add_argument("--test-per-class", type=int, default=20)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_demo_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command in BACKEND_COMMANDS:
        _import_backend(args.verbose)
    try:
        return args.handler(args)
    except SiamdogError as e:
        print(f"siamdog {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a folder without write permission, ...
        where = f"{e.filename}: " if e.filename else ""
        print(f"siamdog {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"siamdog {args.command}: interrupted; run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
