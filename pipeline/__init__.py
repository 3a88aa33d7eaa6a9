"""Orchestration: one sub-package per verb (preprocess, cv, train, compare, predict), the model-folder format,
what the verbs read (data) and how they run (runtime); config and CLI at this level. Drives ``stages`` over
``data_manifests`` manifests. See ARCHITECTURE.md for the map."""

from pipeline.runtime.log import setup_logging as _setup_logging

_setup_logging()  # plain one-line messages on stderr for the Python API too; the CLI re-configures (-v/-q/--log-file)
