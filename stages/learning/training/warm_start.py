"""Start a network's appearance stream from another trained network (``model.appearance.init``).

The caller (the pipeline, which knows model folders) reads the source network and hands over an
:class:`AppearanceInit`: its appearance weights and, per class of the new task, the source's classifier row for the
same expression (or None). Every appearance weight is copied except the classifier's, whose rows are copied only for
the classes both tasks share: a FER2013 network's ``angry`` row starts CK+'s ``anger`` output, while ``contempt``
(which FER2013 lacks) keeps its fresh initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stages.errors import StageError
from stages.learning.models import TwoStream
from stages.learning.models.two_stream import FrameAveraged

CLASSIFIER_PREFIX = "classifier."
"""Parameter names of an appearance network's last linear layer (rows = classes); see skipnet."""


@dataclass(frozen=True)
class AppearanceInit:
    """A source network's appearance weights for a new network of the same architecture.

    ``state``: the source appearance network's ``state_dict()`` (CPU tensors; :func:`appearance_network`'s);
    ``class_rows``: for each output class
    of the new network, in its order, the source classifier row of the same class, or None; ``source``: how errors
    name the source (a model name or folder)."""

    state: dict[str, torch.Tensor]
    class_rows: tuple[int | None, ...]
    source: str


def appearance_network(model: TwoStream) -> nn.Module | None:
    """The appearance network itself: ``model.appearance``, or the network that its :class:`FrameAveraged`
    wrapper (``model.input.appearance: frames``) runs on every frame; None without an appearance stream. A
    network is the same whichever input mode it was trained in, so its weights pass between modes."""
    net = model.appearance
    return net.net if isinstance(net, FrameAveraged) else net


def apply_appearance_init(model: TwoStream, init: AppearanceInit) -> int:
    """Copy ``init`` into ``model.appearance`` in place; returns how many classifier rows were copied.

    Every tensor but the classifier's must exist in both networks with the same shape; otherwise
    :class:`StageError` names the first mismatch and the source (the architectures differ: a network cannot start
    from weights of another shape)."""
    net = appearance_network(model)
    if net is None:
        raise StageError(f"model.appearance.init ({init.source}): the model has no appearance stream")
    own = net.state_dict()
    if CLASSIFIER_PREFIX + "weight" not in own or CLASSIFIER_PREFIX + "weight" not in init.state:
        raise StageError(
            f"model.appearance.init ({init.source}): both networks need their output layer named `classifier` "
            f"(every registered appearance network but fn2en has one)"
        )
    if len(init.class_rows) != model.build_args.get("n_classes", len(init.class_rows)):
        raise StageError(f"model.appearance.init ({init.source}): {len(init.class_rows)} class rows for a new network")
    body = {k for k in own if not k.startswith(CLASSIFIER_PREFIX)}
    missing = sorted(body - set(init.state))
    if missing:
        raise StageError(f"model.appearance.init ({init.source}): the source network has no {missing[0]!r}")
    with torch.no_grad():
        for name in sorted(body):
            src = init.state[name]
            if src.shape != own[name].shape:
                raise StageError(
                    f"model.appearance.init ({init.source}): {name} is {tuple(src.shape)} in the source and "
                    f"{tuple(own[name].shape)} here; set model.appearance like the source's"
                )
            own[name].copy_(src)
        copied = _copy_class_rows(own, init)
    return copied


def _copy_class_rows(own: dict[str, torch.Tensor], init: AppearanceInit) -> int:
    """The classifier rows of the shared classes (weight rows and bias entries), where the widths agree."""
    copied = 0
    for suffix in ("weight", "bias"):
        name = CLASSIFIER_PREFIX + suffix
        if name not in own or name not in init.state:
            continue
        src, dst = init.state[name], own[name]
        if src.shape[1:] != dst.shape[1:]:
            raise StageError(
                f"model.appearance.init ({init.source}): the classifier takes {src.shape[1:]} features in the "
                f"source and {dst.shape[1:]} here; set model.appearance like the source's"
            )
        for row, source_row in enumerate(init.class_rows):
            if source_row is not None:
                dst[row].copy_(src[source_row])
                copied += suffix == "weight"
    return copied
