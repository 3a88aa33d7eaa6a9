"""`seqfer predict` and its Python API.

- :mod:`~pipeline.predict.inputs`: what predict accepts (videos, frame folders, images, globs, manifests, lists),
  as sequence sources;
- :mod:`~pipeline.predict.predictor`: the Python API, :class:`~pipeline.predict.predictor.Predictor`: load a model
  once, predict many inputs (no Ray, no files written);
- :mod:`~pipeline.predict.visualize`: pictures of a prediction (key-frame strip, probability timeline);
- :mod:`~pipeline.predict.rows`: one input into its result row, with its side files;
- :mod:`~pipeline.predict.on_ray`: many inputs on Ray actors, a crash or timeout becoming that input's row;
- :mod:`~pipeline.predict.resume`: the resume journal that lets a re-run reuse finished rows;
- :mod:`~pipeline.predict.results`: the results file (CSV or JSONL, its columns, its atomic write);
- :mod:`~pipeline.predict.run`: the batch driver of `seqfer predict`, tying the above together.
"""
