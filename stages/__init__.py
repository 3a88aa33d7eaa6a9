"""Processing stages and models, one sub-package per job.

- ``stages.preprocess``: the per-sequence steps (decode, landmarks, align, trajectory, cache).
- ``stages.learning``: the networks, their inputs, augmentation and training.
- Shared vocabulary at this level: ``record`` (what preprocessing produces), ``face_geometry`` (68-point
  geometry), ``image`` (colour layouts), ``atomic_io`` (the one way to write a file), ``errors``, ``timing``.

A stage is a plain function of its inputs and its config section; it knows nothing of Ray, the CLI or run folders.
"""
