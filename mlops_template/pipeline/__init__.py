"""What the DVC stages run offline: validation, splits, training, evaluation, the gate, tracking
(the only MLflow caller), packaging, and adopting a new dataset. Never imports :mod:`..ops`."""
