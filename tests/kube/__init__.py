"""Tests of the Kubernetes test control plane (tests/kube/cluster.py)."""
