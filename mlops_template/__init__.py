"""mlops-template: the logic behind the DVC pipeline, the BentoML service and their operation.

- :mod:`~mlops_template.core`: what every side shares (config, paths, I/O, the data contract,
  row-wise features, model artifacts). Imports neither BentoML, MLflow nor DVC.
- :mod:`~mlops_template.pipeline`: what runs offline in the DVC stages (validation, splits,
  training, evaluation, the gate, MLflow tracking, packaging).
- :mod:`~mlops_template.serving`: exactly what the bento ships and runs per request.
- :mod:`~mlops_template.ops`: what operates the deployment (deployment records, promotion,
  ingest, retrain, canary, rollback, experiments).
- :mod:`~mlops_template.monitoring`: drift and live-quality jobs.

One command line, ``mlops-template <command>`` (or ``python -m mlops_template <command>``), lives
in :mod:`~mlops_template.cli`; its exit codes in :mod:`~mlops_template.core.exitcodes`. The other
modules at this level are the old spellings (``python -m mlops_template.X``), deprecated.
"""
