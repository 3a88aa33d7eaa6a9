"""`seqfer compare`: the model family cross-validated under one protocol, one table and plot."""
