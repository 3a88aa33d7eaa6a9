"""From preprocessed records to model tensors: stream inputs, declared extras and targets, the face mask."""
