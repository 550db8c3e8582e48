"""Shared by the pipeline and the service: config, paths, I/O, contract, features, artifacts.

Nothing here imports BentoML, MLflow or DVC (``tests/unit/test_import_boundaries.py``).
"""
