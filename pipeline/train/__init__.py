"""`seqfer train`: one deployable model on every labelled subject, written as a model folder."""
