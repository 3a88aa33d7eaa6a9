"""Per-sequence preprocessing steps: decode, landmarks (backends), align, trajectory, landmark tables, the cache."""
