"""relayq.operator: scales worker Deployments on their priority's Redis backlog (kopf)."""
