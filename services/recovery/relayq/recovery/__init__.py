"""relayq.recovery: the recovery job (a Kubernetes CronJob, `relayq recovery`)."""
