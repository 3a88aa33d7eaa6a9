"""Model folders (what `seqfer train` writes) and CV run folders: their format, loading, fingerprints and model card."""
