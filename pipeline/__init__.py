"""Orchestration: config, CLI, Ray runs and run folders. Drives `stages` over `data_manifests` manifests."""
