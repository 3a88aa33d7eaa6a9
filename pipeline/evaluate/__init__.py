"""`seqfer evaluate`: score a model on any labelled dataset that `seqfer manifest` reads.

- :mod:`~pipeline.evaluate.data`: the dataset to score: scanned without folds, one split kept, its classes
  matched to the model's (excluded and unlabelled sequences counted);
- :mod:`~pipeline.evaluate.metrics`: the prediction table and its scores (accuracy, mean class accuracy, over the
  model's classes and restricted to the shared ones; confusion);
- :mod:`~pipeline.evaluate.report`: the output folder's files and the summary a user reads;
- :mod:`~pipeline.evaluate.run`: the driver of `seqfer evaluate`, predicting through `seqfer predict`'s machinery.
"""
