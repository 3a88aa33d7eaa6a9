"""FAN (face-alignment's 2D heatmap network) from a local file, with face-alignment's crop geometry.

Nothing is downloaded. ``load_fan_network`` accepts either
- a TorchScript file (``torch.jit.save``; e.g. face-alignment <= 1.3's ``2DFAN4-cd938726ad.zip``), or
- a state dict (face-alignment 1.4+'s ``2DFAN4-11f355bf06.pth.tar``), loaded into ``face_alignment.models.FAN``
  with the number of hourglass modules read from its keys (needs the ``face_alignment`` package).

The network maps ``[B, 3, 256, 256]`` float RGB in [0, 1] to ``[B, 68, 64, 64]`` heatmaps (or a list of them, the
last being used). :class:`FanPredictor` reproduces face-alignment's geometry: crop centre = box centre moved up
by 12% of the box height, crop side = 200 * (box width + height) / 195 pixels; each point is the heatmap's
arg-max cell shifted a quarter cell towards its larger neighbour, mapped back to image pixels in floating point
(face-alignment truncates to integers).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np

from stages.errors import MissingWeightsError, StageError
from stages.face_geometry import FLIP_PERMUTATION, N_POINTS
from stages.image import to_rgb
from stages.preprocess.landmarks.base import Box

CROP = 256
HEATMAP = 64
REFERENCE_SCALE = 195.0
SCALE_FACTOR = 200.0
CENTER_Y_OFFSET = 0.12
WHAT_TO_PUT = (
    "set landmarks.fan_weights to a local copy of face-alignment's 2D-FAN-4 weights: the state dict "
    "2DFAN4-11f355bf06.pth.tar (https://www.adrianbulat.com/downloads/python-fan/, fetched on a machine with "
    "internet) or a TorchScript export of the network; this project never downloads weights"
)


def load_fan_network(path: str | None):
    """The FAN network in eval mode on CPU; MissingWeightsError when ``path`` is unset or absent, StageError when
    the file is neither TorchScript nor a FAN state dict."""
    import torch

    if not path:
        raise MissingWeightsError(f"the fan backend needs a weights file: {WHAT_TO_PUT}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise MissingWeightsError(f"FAN weights file missing: {file}; {WHAT_TO_PUT}")
    try:
        with warnings.catch_warnings():  # torch 2.x deprecates TorchScript; old FAN releases ship it
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(file), map_location="cpu")
    except Exception as jit_error:  # not TorchScript: try a state dict
        try:
            net = _fan_from_state_dict(torch.load(str(file), map_location="cpu", weights_only=True))
        except Exception as err:
            raise StageError(
                f"{file}: not a FAN checkpoint (TorchScript: {type(jit_error).__name__}; state dict: "
                f"{type(err).__name__}: {err})"
            ) from err
    return net.eval()


def _fan_from_state_dict(state: dict):
    from face_alignment.models import FAN

    if "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    modules = 1 + max(int(k.split(".")[0][1:]) for k in state if k.startswith("m") and k.split(".")[0][1:].isdigit())
    net = FAN(modules)
    net.load_state_dict(state)
    return net


def crop_geometry(box: Box) -> tuple[float, float, float]:
    """(centre x, centre y, crop side in image pixels) of face-alignment's crop for a detector box."""
    left, top, right, bottom = box
    cx = (left + right) / 2.0
    cy = (top + bottom) / 2.0 - (bottom - top) * CENTER_Y_OFFSET
    side = SCALE_FACTOR * ((right - left) + (bottom - top)) / REFERENCE_SCALE
    return cx, cy, side


def heatmap_to_image(cells: np.ndarray, box: Box) -> np.ndarray:
    """(x, y) heatmap coordinates (cell k spans [k, k+1)) -> image pixels (pixel centres at integers)."""
    cx, cy, side = crop_geometry(box)
    scale = side / HEATMAP
    return np.stack([cells[:, 0] * scale + cx - side / 2 - 0.5, cells[:, 1] * scale + cy - side / 2 - 0.5], axis=1)


def heatmap_peaks(heatmaps: np.ndarray) -> np.ndarray:
    """(68, 2) continuous (x, y) heatmap coordinates of [68, 64, 64] heatmaps: arg-max cell centre, moved a
    quarter cell towards the larger neighbour on each axis (face-alignment's rule)."""
    n, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, -1).argmax(axis=1)
    ys, xs = np.divmod(flat, w)
    out = np.stack([xs, ys], axis=1).astype(np.float64) + 0.5
    for j in range(n):
        x, y, hm = xs[j], ys[j], heatmaps[j]
        if 0 < x < w - 1 and 0 < y < h - 1:
            out[j, 0] += 0.25 * np.sign(hm[y, x + 1] - hm[y, x - 1])
            out[j, 1] += 0.25 * np.sign(hm[y + 1, x] - hm[y - 1, x])
    return out


class FanPredictor:
    """68 points from a box with a FAN network. ``flip``: also run the mirrored crop and average the heatmaps
    (face-alignment's default; doubles the cost)."""

    def __init__(self, network, flip: bool = False) -> None:
        self.net = network
        self.flip = flip

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return to_rgb(image)

    def crop(self, rgb: np.ndarray, box: Box) -> np.ndarray:
        """uint8 [256, 256, 3] crop of face-alignment's geometry (zeros outside the image)."""
        cx, cy, side = crop_geometry(box)
        s = side / CROP  # image pixels per crop pixel
        inverse = np.array([[s, 0.0, cx - side / 2 + 0.5 * s - 0.5], [0.0, s, cy - side / 2 + 0.5 * s - 0.5]])
        return cv2.warpAffine(
            rgb,
            inverse,
            (CROP, CROP),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )

    def heatmaps(self, crop: np.ndarray) -> np.ndarray:
        """[68, 64, 64] float32 heatmaps of one uint8 [256, 256, 3] crop."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float().div_(255.0)[None]
        with torch.inference_mode():
            out = self._last(self.net(x))
            if self.flip:
                mirrored = self._last(self.net(torch.flip(x, dims=[3])))
                out = out + torch.flip(mirrored, dims=[3])[:, torch.as_tensor(FLIP_PERMUTATION)]
        heatmaps = out[0].float().numpy()
        if heatmaps.shape != (N_POINTS, HEATMAP, HEATMAP):
            raise StageError(
                f"FAN network returned heatmaps of shape {tuple(heatmaps.shape)}, expected "
                f"({N_POINTS}, {HEATMAP}, {HEATMAP})"
            )
        return heatmaps

    @staticmethod
    def _last(out):
        return out[-1] if isinstance(out, (list, tuple)) else out

    def predict(self, prepared: np.ndarray, box: Box) -> np.ndarray:
        cells = heatmap_peaks(self.heatmaps(self.crop(prepared, box)))
        return heatmap_to_image(cells, box).astype(np.float32)
