"""The `seqfer` command line. Every verb shares one config system (see :mod:`pipeline.config`).

Each verb is a thin shell over a plain function in ``pipeline/`` so the same steps are a Python API.
A user's mistake (bad path, bad config, unreadable dataset) prints one clear message and exits with code 2,
never a traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.console import UsageError, end_process, os_error_text, show_version, usage_error_text
from pipeline.errors import USER_ERRORS
from pipeline.runtime.interrupt import Interrupted
from pipeline.runtime.log import NORMAL, QUIET, VERBOSE, setup_logging

log = logging.getLogger("pipeline.cli")  # not __name__: `python -m pipeline.cli` runs as __main__

app = typer.Typer(
    name="seqfer",
    help="Facial expression recognition from face videos and image sequences.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=show_version, is_eager=True, help="print the versions and exit"),
    ] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="also print debug messages")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="warnings and errors only, no progress bars")] = False,
    log_file: Annotated[
        Path | None, typer.Option("--log-file", help="also append every message, debug included, to this file")
    ] = None,
) -> None:
    """Facial expression recognition from face videos and image sequences."""
    from pipeline.errors import ConfigError

    if verbose and quiet:
        raise ConfigError("-v and -q: choose one")
    if log_file is not None and not log_file.parent.is_dir():
        raise ConfigError(f"--log-file {log_file}: folder {log_file.parent} does not exist")
    try:
        setup_logging(VERBOSE if verbose else QUIET if quiet else NORMAL, log_file)
    except OSError as exc:
        raise ConfigError(f"--log-file {log_file}: cannot write there ({exc.strerror or exc})") from None


ConfigArg = Annotated[Path, typer.Argument(help="YAML config, e.g. configs/demo.yaml")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override any key: --set dotted.key=value (repeatable)", show_default=False),
]


# Scanner options shared by `manifest` and `evaluate` (both read a dataset as it ships).
FormatOpt = Annotated[
    str, typer.Option("--format", "-f", help="ckplus | oulu | folder | imagefolder | fer2013 | jaffe | kdef")
]
LabelsOpt = Annotated[Path | None, typer.Option(help="labels CSV (path, subject, label) for --format folder")]
NeutralOpt = Annotated[bool, typer.Option(help="add first frames as a 'neutral' class")]
OuluSystemOpt = Annotated[str, typer.Option(help="Oulu: VL | NI | all")]
OuluLightOpt = Annotated[str, typer.Option(help="Oulu: Strong | Weak | Dark | all")]
PatternOpt = Annotated[
    str | None,
    typer.Option(
        help="imagefolder: regex on file stems with named groups subject, sequence, frame (default: CK+ names)"
    ),
]
FerImagesOpt = Annotated[
    Path | None,
    typer.Option(help="fer2013 CSV: folder its rows are written to as PNGs, once [<CSV folder>/<CSV name>_images]"),
]
KdefAnglesOpt = Annotated[str | None, typer.Option(help="kdef: views to take, comma-separated of FL,HL,S,HR,FR [S]")]


def _scan_options(pattern: str | None, fer2013_images: Path | None, kdef_angles: str | None) -> dict:
    """The format-specific scanner options that were given (the scanners' own defaults stand for the rest)."""
    given = {"name_pattern": pattern, "fer2013_images": fer2013_images, "kdef_angles": kdef_angles}
    return {k: v for k, v in given.items() if v is not None}


def _load(config: Path, overrides: list[str] | None):
    """The effective config of a verb that writes into OUTPUT_DIR, which this run then holds until the command
    ends: a second run into the same OUTPUT_DIR gets one error line at once (issue: two runs mixing results)."""
    from pipeline.config import check_paths, load_config
    from pipeline.runtime.output_folder import hold_folder

    cfg = load_config(config, overrides or [])
    check_paths(cfg, str(config))
    hold_folder(cfg.output_dir)
    return cfg


@config_app.command("show")
def config_show(config: ConfigArg, set_: SetOpt = None) -> None:
    """Print the effective config: the file's values over the defaults, with --set overrides applied."""
    from pipeline.config import load_config, to_yaml

    typer.echo(to_yaml(load_config(config, set_ or [])), nl=False)


@app.command("manifest")
def manifest(
    root: Annotated[Path, typer.Argument(help="dataset root")],
    format: FormatOpt,
    output: Annotated[Path, typer.Option("-o", "--output", help="manifest file (.parquet)")],
    labels: LabelsOpt = None,
    folds: Annotated[int, typer.Option(help="number of subject-independent folds")] = 10,
    seed: Annotated[int, typer.Option(help="fold seed")] = 0,
    fold_file: Annotated[Path | None, typer.Option(help="CSV subject,fold (0-based) to use as folds")] = None,
    classes: Annotated[
        str, typer.Option(help="class set: ckplus7 | basic6 | basic7 (FER2013, JAFFE, KDEF) | ckplus8")
    ] = "ckplus7",
    include_neutral: NeutralOpt = False,
    oulu_system: OuluSystemOpt = "VL",
    oulu_illumination: OuluLightOpt = "Strong",
    pattern: PatternOpt = None,
    fer2013_images: FerImagesOpt = None,
    kdef_angles: KdefAnglesOpt = None,
    csv: Annotated[bool, typer.Option("--csv", help="also write a CSV copy")] = False,
) -> None:
    """Scan a CK+ / Oulu-CASIA tree, a class-folder image set, FER2013 (CSV or folder export), JAFFE, KDEF or a
    folder of videos into a manifest with subject-independent folds (none for FER2013, which has its own split)."""
    from data_manifests.errors import ManifestError
    from data_manifests.scan import build_manifest
    from data_manifests.schema import write_manifest

    if seed < 0:
        raise ManifestError(f"--seed {seed}: a fold seed is a whole number, 0 or more")
    if folds < 2:
        raise ManifestError(f"--folds {folds}: cross-validation needs at least 2 folds")
    if output.is_dir():
        raise ManifestError(f"-o {output}: is a folder; give the manifest's file name, e.g. {output}/manifest.parquet")
    if output.suffix.lower() != ".parquet":
        raise ManifestError(
            f"-o {output}: a manifest is written as Parquet; name it .parquet "
            f"(e.g. {output.with_suffix('.parquet')}) and add --csv for a CSV copy beside it"
        )
    df, meta, report = build_manifest(
        root,
        format,
        n_folds=folds,
        seed=seed,
        fold_file=fold_file,
        labels_csv=labels,
        classes=classes,
        include_neutral=include_neutral,
        oulu_system=oulu_system,
        oulu_illumination=oulu_illumination,
        **_scan_options(pattern, fer2013_images, kdef_angles),
    )
    write_manifest(df, output, meta, csv=csv)
    typer.echo(report.summary(df))
    typer.echo(f"wrote {output}" + (f" and {output.with_suffix('.csv')}" if csv else ""))


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Argument(help="output folder")],
    layout: Annotated[str, typer.Option(help="ckplus | oulu | videos")] = "ckplus",
    subjects: Annotated[int, typer.Option(help="number of subjects (118 = CK+-sized)")] = 118,
    seed: Annotated[int, typer.Option()] = 0,
    faces: Annotated[Path | None, typer.Option(help="folder of face photos with 68-point .pts files")] = None,
    workers: Annotated[int, typer.Option(help="processes")] = 2,
) -> None:
    """Generate a synthetic dataset of warped real faces in the CK+, Oulu-CASIA or videos layout."""
    from pydantic import ValidationError

    from pipeline.config import DemoConfig, format_validation_error, load_config
    from pipeline.data.manifest import ensure_demo_data
    from pipeline.errors import ConfigError

    cfg = load_config(None)
    cfg.data.root = out
    try:
        cfg.data.demo = DemoConfig(layout=layout, subjects=subjects, seed=seed, faces=faces, workers=workers)
    except ValidationError as exc:  # a bad option is one error: line, as from the config loader
        raise ConfigError(format_validation_error(exc, "demo-data options")) from None
    ensure_demo_data(cfg)


@app.command("preprocess")
def preprocess(
    config: ConfigArg,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option("--force", help="recompute even what is cached")] = False,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (overrides ray.address)")] = None,
) -> None:
    """Decode, find landmarks, align and compute trajectories for every sequence, on Ray, with a resumable cache
    (exit code 1 when every sequence failed, 3 when any failed because of the environment: disk, memory, workers)."""
    from pipeline.preprocess.run import run_preprocess
    from pipeline.runtime.progress import exit_code

    cfg = _load(config, set_)
    if address is not None:
        cfg.ray.address = address
    summary = run_preprocess(cfg, force=force)
    raise typer.Exit(exit_code(summary))


@app.command("cv")
def cv(config: ConfigArg, set_: SetOpt = None) -> None:
    """10-fold subject-independent cross-validation; writes a run folder with reports and checkpoints."""
    from pipeline.cv.run import run_cv

    run_cv(_load(config, set_))


@app.command("compare")
def compare(
    config: ConfigArg,
    models: Annotated[str, typer.Option(help="appearance networks, comma-separated")] = (
        "skipnet,dtan,dba,resmask,pcnn,fn2en"
    ),
    streams: Annotated[str, typer.Option(help="stream settings, comma-separated: appearance, fused")] = (
        "appearance,fused"
    ),
    set_: SetOpt = None,
    no_ray: Annotated[bool, typer.Option("--no-ray", help="train folds one after another in this process")] = False,
    data: Annotated[
        Path | None, typer.Option(help="prepared data (.npz from --prepare-only) instead of preprocessing")
    ] = None,
    prepare_only: Annotated[
        bool, typer.Option("--prepare-only", help="only write OUTPUT_DIR/compare/data.npz and stop")
    ] = False,
) -> None:
    """Cross-validate several appearance networks x stream settings on the same folds; one table and plot."""
    from pipeline.compare.run import run_compare

    run_compare(_load(config, set_), models, streams, use_ray=not no_ray, data_file=data, prepare_only=prepare_only)


@app.command("train")
def train(
    config: ConfigArg,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="model folder; default OUTPUT_DIR/model")] = None,
) -> None:
    """Train one deployable model on all labelled subjects and write a model folder."""
    from pipeline.train.run import run_train

    run_train(_load(config, set_), out_dir=out)


@app.command("predict")
def predict(
    args: Annotated[
        list[str],
        typer.Argument(
            metavar="[MODEL] INPUTS...",
            help="MODEL: a model folder (from train), CV run folder, OUTPUT_DIR or ready model (fer2013, the default "
            "when left out); INPUTS: videos, frame folders, images, globs, manifests, .txt lists",
        ),
    ],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="results file [predictions.csv]")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="csv | jsonl [from -o's suffix, else csv]")] = None,
    window: Annotated[float | None, typer.Option(help="sliding window length in seconds")] = None,
    stride: Annotated[float | None, typer.Option(help="window stride in seconds [window / 2]")] = None,
    visualize: Annotated[Path | None, typer.Option(help="folder for per-input pictures")] = None,
    cache: Annotated[Path | None, typer.Option(help="cache processed sequences here (none by default)")] = None,
    set_: SetOpt = None,
) -> None:
    """Predict an expression label with class probabilities for each input (exit code 1 if any failed)."""
    from pipeline.model_folder.format import split_model_argument
    from pipeline.predict.run import run_predict

    model, inputs = split_model_argument(args)
    n_failed = run_predict(
        model,
        inputs,
        output=output,
        fmt=fmt,
        window=window,
        visualize=visualize,
        overrides=set_ or [],
        stride=stride,
        cache_dir=cache,
    )
    raise typer.Exit(1 if n_failed else 0)


@app.command("evaluate")
def evaluate(
    model: Annotated[Path, typer.Argument(help="model folder (from train), CV run folder, or OUTPUT_DIR")],
    root: Annotated[Path, typer.Argument(help="labelled dataset root")],
    format: FormatOpt,
    output: Annotated[Path, typer.Option("-o", "--output", help="output folder (metrics.json, predictions.csv...)")],
    split: Annotated[
        str | None, typer.Option(help="score only this split (train | val | test) of a dataset with its own split")
    ] = None,
    labels: LabelsOpt = None,
    classes: Annotated[
        str | None,
        typer.Option(help="class set read from the data: ckplus7 | basic6 | basic7 | ckplus8 [every class]"),
    ] = None,
    include_neutral: NeutralOpt = False,
    oulu_system: OuluSystemOpt = "VL",
    oulu_illumination: OuluLightOpt = "Strong",
    pattern: PatternOpt = None,
    fer2013_images: FerImagesOpt = None,
    kdef_angles: KdefAnglesOpt = None,
    cache: Annotated[Path | None, typer.Option(help="cache processed sequences here (none by default)")] = None,
    set_: SetOpt = None,
) -> None:
    """Score a model on a labelled dataset: accuracy, mean class accuracy (also restricted to the classes the
    data shares with the model), predictions and confusion matrix (exit code 1 if every sequence failed)."""
    from pipeline.evaluate.run import run_evaluate

    metrics = run_evaluate(
        model,
        root,
        format,
        output,
        split=split,
        overrides=set_ or [],
        cache_dir=cache,
        labels_csv=labels,
        classes=classes,
        include_neutral=include_neutral,
        oulu_system=oulu_system,
        oulu_illumination=oulu_illumination,
        **_scan_options(pattern, fer2013_images, kdef_angles),
    )
    raise typer.Exit(0 if metrics["n_scored"] else 1)


@app.command("run")
def run(config: ConfigArg, set_: SetOpt = None) -> None:
    """The whole pipeline: (demo data), manifest, preprocess, cross-validation and its report."""
    from pipeline.run import run_all

    run_all(_load(config, set_))


def _run_command(command: Any, argv: list[str] | None) -> object:
    """Run one command; the output folders and files it locked are released when it ends, however it ends."""
    from pipeline.runtime.folder_lock import release_all

    try:
        return command.main(args=argv, prog_name="seqfer", standalone_mode=False)
    finally:
        release_all()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: runs the app, turning user errors into one message and exit code 2."""
    setup_logging(NORMAL)  # a previous call's -q / --log-file (tests call main repeatedly) does not carry over
    command = typer.main.get_command(app)
    try:
        code = _run_command(command, argv)
    except typer.Exit as exc:
        return exc.exit_code
    except UsageError as exc:
        log.error("%s", usage_error_text(exc))
        return int(getattr(exc, "exit_code", 2))
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except USER_ERRORS as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:  # the environment refused a read or write: read-only folder, full disk, ulimit -f
        log.error("%s", os_error_text(exc))
        return 2
    except UnicodeError as exc:
        log.error("a file or folder name or a text file is not valid UTF-8 (%s); rename or re-encode it", exc.reason)
        return 2
    except Interrupted as exc:
        typer.echo(f"interrupted: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo("interrupted: finished work is kept; run the same command again to resume", err=True)
        return 130
    return code if isinstance(code, int) else 0  # a command's typer.Exit(code) comes back as its return value


def console_main() -> None:
    """The ``seqfer`` console script (and ``python -m pipeline.cli``): :func:`main`, then
    :func:`~pipeline.console.end_process` with its exit code."""
    end_process(main())


if __name__ == "__main__":
    console_main()
