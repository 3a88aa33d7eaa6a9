"""The one config system every verb shares: YAML in ``configs/``, validated on load, ``--set`` overrides.

Each stage owns its config model (``stages.preprocess.decode.FrameSelectionConfig``,
``stages.preprocess.landmarks.LandmarkConfig``,
...); this module composes them into :class:`Config`. Relative paths are taken relative to the current working
directory (the README runs every command from the repository root).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError, model_validator

from data_manifests.name_pattern import CKPLUS_NAME_PATTERN
from pipeline.errors import ConfigError
from stages.learning.models.config import ModelConfig, TrainConfig
from stages.preprocess.sequence import SequenceConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DemoConfig(_Strict):
    """How `data.format: demo` generates its dataset when `data.root` does not hold one yet."""

    layout: Literal["ckplus", "oulu", "videos"] = "ckplus"
    subjects: int = Field(118, ge=1, description="number of subjects (118 = CK+-sized: 327 labelled sequences)")
    seed: NonNegativeInt = 0
    faces: Path | None = Field(
        None, description="folder of face photos with 68-point .pts files; null = the packaged fallback face"
    )
    workers: int = Field(2, ge=1, description="processes used to write the demo set")


class DataConfig(_Strict):
    format: Literal["ckplus", "oulu", "folder", "imagefolder", "fer2013", "jaffe", "kdef", "demo"] = "demo"
    root: Path = Path("data/demo")
    labels_csv: Path | None = Field(None, description="labels CSV (path, subject, label) for format=folder")
    manifest: Path | None = Field(None, description="manifest file; default OUTPUT_DIR/manifest.parquet")
    classes: str | list[str] = Field("ckplus7", description="class set name (ckplus7, basic6, basic7, ckplus8) or list")
    include_neutral: bool = False
    neutral_frames: int = Field(1, ge=1)
    oulu_system: str = "VL"
    oulu_illumination: str = "Strong"
    name_pattern: str = Field(
        CKPLUS_NAME_PATTERN,
        description="format=imagefolder: regular expression on each file stem with named groups subject "
        "(required), sequence and frame (optional); the default fits CK+ names (S010_004_00000017)",
    )
    fer2013_images: Path | None = Field(
        None,
        description="format=fer2013 read from the CSV: folder its rows are written to as PNG files, once "
        "(default: <CSV folder>/<CSV name>_images)",
    )
    kdef_angles: str | list[str] = Field(
        "S", description="format=kdef: views taken, of FL, HL, S, HR, FR (a list or comma-separated; default S)"
    )
    folds: int = Field(10, ge=2)
    fold_seed: NonNegativeInt | None = Field(
        None, description="seed of the fold assignment; default: the top-level seed"
    )
    fold_file: Path | None = Field(None, description="CSV subject,fold (0-based) to use instead of computed folds")
    demo: DemoConfig = DemoConfig()


class RayConfig(_Strict):
    address: str | None = Field(None, description="existing Ray cluster ('auto' or host:port); null = local Ray")
    workers: int = Field(2, ge=1, description="parallel workers (actors) for preprocessing and prediction")
    item_timeout: float | None = Field(
        1800.0,
        gt=0,
        description="seconds one sequence or input may take on a worker before it becomes a "
        "'timeout' row (null: no limit)",
    )
    start_timeout: float = Field(
        120.0,
        gt=0,
        description="seconds a worker may take to start (or wait to be scheduled) before the pool goes on without it",
    )
    huge_pages: bool = Field(
        True,
        description="start landmark workers (preprocess, predict) with glibc's malloc on transparent huge pages "
        "(GLIBC_TUNABLES=glibc.malloc.hugetlb=1): dlib's 68-point model is ~100 MB of trees read at random, and "
        "with 4 KiB pages most of its reads miss the TLB. No effect where the C library is not glibc >= 2.35",
    )


class PreprocessConfig(SequenceConfig):
    """Every stage's settings (see :class:`stages.preprocess.sequence.SequenceConfig`) plus where results go."""

    export_csv: bool = Field(False, description="also write per-frame landmark tables as CSV")
    cache_dir: Path | None = Field(None, description="cache folder; default OUTPUT_DIR/cache")


class CVConfig(_Strict):
    run_folds: list[NonNegativeInt] | None = Field(None, min_length=1, description="0-based folds to run; null = all")
    parallel: int | None = Field(None, description="folds trained at once; default = ray.workers")
    device: Literal["auto", "cpu", "cuda"] = "auto"


class Config(_Strict):
    seed: NonNegativeInt = 0
    output_dir: Path = Path("runs/demo")
    data: DataConfig = DataConfig()
    ray: RayConfig = RayConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    cv: CVConfig = CVConfig()

    @model_validator(mode="after")
    def _run_folds_exist(self) -> Config:
        """``cv.run_folds`` names folds of ``data.folds`` (a fold file's own numbers are checked when it is read)."""
        folds = self.cv.run_folds or []
        missing = sorted({f for f in folds if f >= self.data.folds})
        if missing and self.data.fold_file is None:
            raise ValueError(
                f"cv.run_folds: fold(s) {missing} do not exist with data.folds={self.data.folds} "
                f"(0-based: 0..{self.data.folds - 1})"
            )
        return self

    @property
    def manifest_path(self) -> Path:
        return self.data.manifest or self.output_dir / "manifest.parquet"

    @property
    def cache_dir(self) -> Path:
        return self.preprocess.cache_dir or self.output_dir / "cache"

    @property
    def fold_seed(self) -> int:
        return self.seed if self.data.fold_seed is None else self.data.fold_seed


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'a.b.c=VALUE'`` -> (['a','b','c'], VALUE parsed as YAML: numbers, booleans, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected dotted.key=value")
    key, _, raw = text.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({exc})") from exc
    return parts, value


def _apply_override(data: dict, parts: list[str], value: Any, text: str) -> None:
    node = data
    for i, p in enumerate(parts[:-1]):
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {text}: '{'.'.join(parts[: i + 1])}' is not a section")
        node = child
    node[parts[-1]] = value


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid config"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        got = (
            "" if err["type"] == "extra_forbidden" or isinstance(err["input"], dict) else f" (got {err['input']!r:.80})"
        )
        lines.append(f"  {loc}: {msg}{got}" if loc else f"  {msg}{got}")
    return "\n".join(lines)


MAX_CONFIG_NODES = 100_000
"""The most values (mappings, lists and scalars, counting every repetition of a YAML alias) a config may hold."""


def _check_size(data: Any, source: str) -> None:
    """Raise :class:`ConfigError` when ``data`` expands to more than :data:`MAX_CONFIG_NODES` values.

    YAML aliases let a few lines stand for an exponentially large tree (a "billion laughs" bomb); safe_load
    shares the repeated objects, but validating or printing the config would walk every copy. The walk stops as
    soon as the limit is passed, so the check itself is cheap. The message blames aliases only when the tree
    does repeat a shared mapping or list; a config that is simply large is called large."""
    count, stack, seen, shared = 0, [data], set(), False
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            why = "YAML aliases repeat parts of it" if shared else "it is simply too large"
            raise ConfigError(
                f"{source}: the config expands to more than {MAX_CONFIG_NODES} values ({why}); "
                "a seqfer config holds a few hundred"
            )
        if isinstance(node, dict | list):
            shared = shared or id(node) in seen
            seen.add(id(node))
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def load_config(path: Path | str | None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (None = all defaults), apply ``--set`` overrides, validate.

    Raises :class:`ConfigError` naming the file and each offending key.
    """
    data: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason})") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        _check_size(loaded, str(path))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of keys")
        data = loaded or {}
    for text in overrides or []:
        parts, value = parse_override(text)
        _check_size(value, f"--set {text[:60]}")
        _apply_override(data, parts, value, text)
    if overrides:
        source += " (with --set " + ", ".join(overrides) + ")"
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
    return cfg


def check_paths(cfg: Config, source: str) -> None:
    """Paths that must exist before a run starts (the demo root is generated, so it is exempt)."""
    checks: list[tuple[str, Path | None]] = [("data.fold_file", cfg.data.fold_file)]
    if cfg.data.format != "demo":
        checks.append(("data.root", cfg.data.root))
        checks.append(("data.labels_csv", cfg.data.labels_csv))
    elif cfg.data.demo.faces is not None:
        checks.append(("data.demo.faces", cfg.data.demo.faces))
    for key, p in checks:
        if p is not None and not Path(p).exists():
            raise ConfigError(f"{source}: {key}: path does not exist: {p}")


def to_yaml(cfg: Config) -> str:
    """The effective config as YAML (what `seqfer config show` prints and run folders store)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
