"""The model card: a model folder's README.md, written from its model.json facts and the training config."""

from __future__ import annotations

from pipeline.config import Config


def _pct(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.1f}%"


def _ensemble_lines(info: dict) -> list[str]:
    """The card's line on an ensemble (none for a single network)."""
    members = info.get("members") or []
    if info.get("ensemble", 1) <= 1 or not members:
        return []
    return [
        f"- Ensemble of {len(members)} networks (`train.ensemble`), class probabilities averaged; member k is the "
        "run at seed + k, each with its own validation subjects: seeds "
        f"{', '.join(str(m.get('seed', '?')) for m in members)}; best epochs "
        f"{', '.join(str(m.get('best_epoch', '?')) for m in members)}; validation accuracies "
        f"{', '.join(_pct(m.get('val_accuracy')) for m in members)} (the line above is member 0's)"
    ]


def _selection_line(info: dict, split: dict) -> str:
    """How the epoch was chosen: on the dataset's own ``val`` split, or on held-out subjects drawn from the data."""
    val = f"validation accuracy {_pct(info.get('val_accuracy'))}"
    if split.get("protocol"):
        return (
            f"- Model selection: {split['protocol']}; best epoch {info.get('best_epoch', '?')} chosen on `val`; {val}"
        )
    return (
        f"- Model selection: {split.get('n_train', '?')} training sequences ({split.get('n_train_subjects', '?')} "
        f"subjects); best epoch {info.get('best_epoch', '?')} chosen on {split.get('n_val', '?')} validation "
        f"sequences of {split.get('n_val_subjects', '?')} held-out subject(s) (val_fraction "
        f"{split.get('val_fraction', '?')}, seed {split.get('seed', '?')}); {val}"
    )


def _accuracy_lines(data: dict, split: dict, cv: dict | None) -> list[str]:
    """Where the model's honest accuracy is: the dataset's test split (scored once by evaluate), or the CV run of
    the same output folder."""
    if split.get("protocol"):  # a dataset with its own split: its test part is scored once, by evaluate
        return [
            "- Test accuracy: score the dataset's `test` split once with `seqfer evaluate MODEL "
            f"{data.get('root', 'ROOT')} --format {data.get('format', 'F')} --split test -o OUT`.",
            "- The validation accuracy above chose the epoch: it is optimistic; quote the test figure.",
            "",
        ]
    if cv:
        note = {
            True: "same settings as this model",
            False: "NOTE: that run used different settings",
            None: "settings not compared",
        }[cv.get("same_settings")]
        first = (
            f"- {cv['n_folds']}-fold subject-independent CV: {_pct(cv['accuracy_mean'])} +- "
            f"{_pct(cv['accuracy_std'])} (mean class accuracy {_pct(cv['mean_class_accuracy'])}; {note}; "
            f"`{cv['source']}`)"
        )
    else:
        first = "- CV accuracy unknown: no `seqfer cv` summary was found for this output folder."
    return [
        first,
        "- The validation accuracy above is on few subjects and chose the epoch: it is optimistic; quote the CV "
        "figure.",
        "",
    ]


def model_card(info: dict, cfg: Config) -> str:
    """The model folder's README.md: what it is, what it was trained on, how well it did, how to use it."""
    data, split, cv = info.get("data", {}), info.get("split", {}), info.get("cv")
    seq, inp = info["preprocessing"]["sequence"], info["preprocessing"]["model_input"]
    lines = [
        "# seqfer model card",
        "",
        f"- Trained: {info.get('trained_at', 'unknown')}",
        f"- Model: {cfg.model.streams}"
        + (
            f" ({cfg.model.appearance.name} + {cfg.model.geometry.name}, fusion {cfg.model.fusion})"
            if cfg.model.streams == "fused"
            else ""
        ),
        f"- Classes ({len(info['classes'])}, output order): {', '.join(info['classes'])}",
        "",
        "## Data",
        "",
        f"- Dataset: {data.get('format', '?')} at `{data.get('root', '?')}` (manifest `{data.get('manifest', '?')}`)",
        f"- Labelled sequences used: {data.get('n_sequences', '?')} from {data.get('n_subjects', '?')} subjects; "
        f"excluded (failed preprocessing): {data.get('n_excluded', 0)}",
        f"- Sequences per class: {', '.join(f'{k} {v}' for k, v in data.get('class_counts', {}).items())}",
        _selection_line(info, split),
        *_ensemble_lines(info),
        "",
        "## Accuracy",
        "",
    ]
    lines += _accuracy_lines(data, split, cv)
    lines += [
        "## Preprocessing it expects (applied automatically by `seqfer predict`)",
        "",
        f"- Frames: {seq['frames']['mode']} (frame folders assumed at {seq['frames']['fps']} fps); landmarks: "
        f"{seq['landmarks']['backend']} ({seq['landmarks']['detector']} detector, tracking "
        f"{'on' if seq['landmarks']['track'] else 'off'}); aligned crops {seq['align']['size']} px "
        f"{seq['align']['color']}; trajectory {seq['trajectory']['length']} steps, {seq['trajectory']['normalise']}",
        f"- Model input: appearance {inp['appearance']} (k={inp['k']}) at {inp['size']} px; "
        + (
            "trained on single images: a video, frame folder or window is labelled by the mean of its frames' "
            "probabilities, each frame with a face scored as an image (a manifest row naming its peak frame: that "
            "frame)."
            if data.get("max_frames") == 1
            else "geometry = the trajectory. Sequences should run from a neutral face to the expression's peak, like "
            "the training data; a single image gives an all-zero trajectory (the geometry stream sees no motion)."
        ),
        "",
        "## Use",
        "",
        "```bash",
        "seqfer predict MODEL_FOLDER clip.mp4 frames_dir/ face.jpg -o predictions.csv",
        "```",
        "",
        "```python",
        "from pipeline.predict.predictor import Predictor",
        "",  # the example as ruff formats it: a ready model's card is checked with the code
        'p = Predictor.load("MODEL_FOLDER")',
        'result = p.predict("clip.mp4")  # .label, .probabilities, .status, .reason',
        "```",
        "",
        "## Versions",
        "",
        *[f"- {k}: {v}" for k, v in info.get("versions", {}).items()],
        "",
    ]
    return "\n".join(lines)
