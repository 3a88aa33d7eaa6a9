"""`seqfer predict`: inputs, the Predictor API (load once, predict many), the batch driver and its pictures."""
