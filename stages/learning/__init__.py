"""Learning: the networks (models/), their inputs from preprocessed records (inputs/), augmentation and training."""
