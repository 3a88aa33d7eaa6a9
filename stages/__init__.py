"""Processing stages and models: decode, landmarks, align, trajectories, cache, models.

A stage is a plain function of its inputs and its config section; it knows nothing of Ray, the CLI or run folders.
"""
