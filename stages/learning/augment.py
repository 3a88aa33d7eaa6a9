"""Training-time augmentation of batched model inputs; every random draw comes from a seeded Generator.

- Horizontal flip (per sample, p = 0.5) of the appearance crops AND the landmark trajectory: pixels mirrored
  about the crop's vertical centre line; trajectory x -> -x (displacements, so the mirror axis does not
  matter) and landmark indices re-ordered by :data:`stages.face_geometry.FLIP_PERMUTATION` so index i is again
  iBUG point i.
- Small random rotation, zoom and shift of the crops (one ``affine_grid`` / ``grid_sample``, bilinear, border
  padding), a random gain (brightness), contrast about the crop's mean and gamma, clamped to [0, 1], and an
  optional Gaussian blur of random width (camera focus and resolution), and optional random erasing of one
  rectangle. All frames of a sample get the same transform.
  Trajectories are not rotated/zoomed: they are already normalised for pose and scale, and the geometric
  augmentation of crops stands for alignment jitter.
- Optional Gaussian noise on trajectories.

Never applied at validation, test or prediction time (:func:`stages.learning.training.fit.fit` applies it to training
batches only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from stages.face_geometry import FLIP_PERMUTATION
from stages.learning.models.config import AugmentConfig

_FLIP_INDEX = torch.as_tensor(FLIP_PERMUTATION.copy(), dtype=torch.long)


def hflip_appearance(app: torch.Tensor) -> torch.Tensor:
    """Mirror [..., S, S] crops left-right: pixel column x -> S - 1 - x."""
    return app.flip(-1)


def hflip_landmarks(points: torch.Tensor, width: float | None = None) -> torch.Tensor:
    """Mirror [..., 68, 2] (x, y) points and re-index them by the 68-point mirror permutation.

    ``width`` given: absolute pixel coordinates, x -> (width - 1) - x. ``width`` None: displacements (or
    centred coordinates), x -> -x.
    """
    out = points.index_select(-2, _FLIP_INDEX.to(points.device)).clone()
    out[..., 0] = -out[..., 0] if width is None else (width - 1) - out[..., 0]
    return out


def hflip_trajectory(traj: torch.Tensor) -> torch.Tensor:
    """Mirror trajectories [..., L, 68, 2] of displacements: x -> -x, landmark indices permuted."""
    return hflip_landmarks(traj, None)


def _affine_theta(n: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """[n, 2, 3] random sampling matrices for rotation, zoom and shift (:func:`affine_theta` of the draws)."""
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(cfg.rotate_deg)
    zoom = 1 + (torch.rand(n, generator=gen) * 2 - 1) * cfg.scale
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 * cfg.shift)  # fraction of side -> [-1, 1] units
    return affine_theta(angle, zoom, shift)


def affine_theta(angle: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """[n, 2, 3] sampling matrices (output -> input, normalised coordinates, as ``affine_grid`` reads them) of a
    rotation by ``angle`` [n] (radians), a zoom by ``zoom`` [n] (> 1 enlarges the face) and a shift ``shift`` [n, 2]
    (x, y, in [-1, 1] units: 1 is half the side)."""
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    return torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1
    )


def warp_crops(app: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Crops [B, C, S, S] resampled through ``theta`` [B, 2, 3] (:func:`affine_theta`): bilinear, border padding."""
    grid = F.affine_grid(theta.to(app.device, app.dtype), list(app.shape), align_corners=False)
    return F.grid_sample(app, grid, mode="bilinear", padding_mode="border", align_corners=False)


def gaussian_blur(app: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each sample of ``app`` [B, C, S, S] with a separable Gaussian of its own std ``sigma`` [B] (pixels;
    0 = unchanged), reflect-padded so the border is not darkened."""
    radius = max(1, math.ceil(3 * float(sigma.max())))
    x = torch.arange(-radius, radius + 1, device=app.device, dtype=app.dtype)
    s = sigma.clamp(min=1e-3).view(-1, 1)
    kernel = torch.exp(-0.5 * (x.view(1, -1) / s) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # [B, 2r+1]; sigma ~ 0 -> a delta
    b, c, h, w = app.shape
    flat = F.pad(app.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    k = kernel.repeat_interleave(c, dim=0)  # one kernel per (sample, channel) group
    flat = F.conv2d(flat, k.view(b * c, 1, 1, -1), groups=b * c)
    flat = F.conv2d(flat, k.view(b * c, 1, -1, 1), groups=b * c)
    return flat.reshape(b, c, h, w)


def random_erase(app: torch.Tensor, draws: torch.Tensor, p: float) -> torch.Tensor:
    """Random erasing of [B, C, S, S] crops: with probability ``p`` per sample, one rectangle (area 2-40 % of
    the crop, aspect ratio 0.3-3.3, same place in every frame/channel of the sample) is set to the sample's mean.
    ``draws`` [B, 5] uniform [0, 1): apply?, area, aspect, top, left."""
    b, _c, h, w = app.shape
    area = (0.02 + draws[:, 1] * 0.38) * h * w
    aspect = torch.exp(math.log(0.3) + draws[:, 2] * (math.log(1 / 0.3) - math.log(0.3)))
    eh = torch.sqrt(area * aspect).clamp(max=h)
    ew = torch.sqrt(area / aspect).clamp(max=w)
    top = draws[:, 3] * (h - eh)
    left = draws[:, 4] * (w - ew)
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    inside = (
        (ys >= top.view(b, 1, 1))
        & (ys < (top + eh).view(b, 1, 1))
        & (xs >= left.view(b, 1, 1))
        & (xs < (left + ew).view(b, 1, 1))
        & (draws[:, 0] < p).view(b, 1, 1)
    ).to(app.device)
    mean = app.mean(dim=(1, 2, 3), keepdim=True)
    return torch.where(inside.unsqueeze(1), mean.expand_as(app), app)


def augment_batch(
    app: torch.Tensor | None,
    traj: torch.Tensor | None,
    cfg: AugmentConfig,
    gen: torch.Generator,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Augment a training batch: ``app`` [B, C, S, S] float in [0, 1], ``traj`` [B, L, 68, 2] (either None).

    Random numbers are drawn on the CPU from ``gen`` in a fixed order whatever the device, so a seed gives the
    same augmentation on any device. Returns new tensors; the inputs are not modified.
    """
    ref = app if app is not None else traj
    if ref is None:
        return app, traj
    n = ref.shape[0]
    flip = (torch.rand(n, generator=gen) < 0.5) if cfg.flip else torch.zeros(n, dtype=torch.bool)
    theta = _affine_theta(n, cfg, gen)
    gain = 1 + (torch.rand(n, generator=gen) * 2 - 1) * cfg.brightness
    # photometric draws only when enabled, so configs without them keep their random stream (and figures)
    contrast = 1 + (torch.rand(n, generator=gen) * 2 - 1) * cfg.contrast if cfg.contrast > 0 else None
    gamma = torch.exp((torch.rand(n, generator=gen) * 2 - 1) * cfg.gamma) if cfg.gamma > 0 else None
    sigma = torch.rand(n, generator=gen) * cfg.blur if cfg.blur > 0 else None
    noise = torch.randn(traj.shape, generator=gen) * cfg.traj_noise if traj is not None and cfg.traj_noise > 0 else None
    erase = torch.rand(n, 5, generator=gen) if cfg.erase > 0 else None

    if app is not None:
        dev = app.device
        mask = flip.to(dev).view(n, 1, 1, 1)
        app = torch.where(mask, hflip_appearance(app), app)
        if cfg.rotate_deg > 0 or cfg.scale > 0 or cfg.shift > 0:
            app = warp_crops(app, theta)
        if cfg.brightness > 0:
            app = (app * gain.to(dev, app.dtype).view(n, 1, 1, 1)).clamp_(0.0, 1.0)
        if contrast is not None:
            mean = app.mean(dim=(1, 2, 3), keepdim=True)
            app = ((app - mean) * contrast.to(dev, app.dtype).view(n, 1, 1, 1) + mean).clamp_(0.0, 1.0)
        if gamma is not None:
            app = app.clamp(min=1e-6) ** gamma.to(dev, app.dtype).view(n, 1, 1, 1)
        if sigma is not None:
            app = gaussian_blur(app, sigma.to(dev, app.dtype))
        if erase is not None:
            app = random_erase(app, erase, cfg.erase)
    if traj is not None:
        dev = traj.device
        mask = flip.to(dev).view(n, *([1] * (traj.dim() - 1)))
        traj = torch.where(mask, hflip_trajectory(traj), traj)
        if noise is not None:
            traj = traj + noise.to(dev, traj.dtype)
    return app, traj
