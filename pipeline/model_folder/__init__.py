"""Model folders (what `seqfer train` writes) and CV run folders read as one ensemble.

- :mod:`~pipeline.model_folder.format`: the layout (file names, ensemble members) and which folder a MODEL names;
- :mod:`~pipeline.model_folder.folder`: writing a model folder whole (temp folder + swap), model.json facts;
- :mod:`~pipeline.model_folder.load`: reading one back as a :class:`~pipeline.model_folder.load.ModelBundle`;
- :mod:`~pipeline.model_folder.fingerprint`: what identifies a model and its settings, compared across runs;
- :mod:`~pipeline.model_folder.card`: the model card (README.md).
"""
