"""What operates the deployment: the deployment records (their only reader and writer), the
promotion policy, the transitions (the only code that changes what serves) and their lease, the
bad-batch guard, retrain, canary, rollback, experiments, process helpers."""
