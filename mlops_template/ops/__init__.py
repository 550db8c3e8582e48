"""What operates the deployment: the deployment records (their only reader and writer), the
promotion policy, the bad-batch guard, retrain, canary, rollback, experiments, process helpers."""
