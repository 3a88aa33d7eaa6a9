"""Dataset manifests: scanners for CK+, Oulu-CASIA and user folders, the manifest schema, folds, demo data.

A manifest is one row per sequence (see :mod:`data_manifests.schema`). Nothing here decodes or processes images
except the demo-data generator in :mod:`data_manifests.demo`, which writes datasets rather than reading them.
"""
