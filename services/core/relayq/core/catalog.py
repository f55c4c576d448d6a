"""The registry a process runs with: built-in job types plus configured modules.

A job module is any importable module with a `JOB_TYPES` list of JobType; name
them, comma-separated, in RELAYQ_JOB_MODULES.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from relayq.core.diagnostics import DIAGNOSTIC_TYPES
from relayq.core.jobs import JobType, Registry


def load_registry(modules: Iterable[str] = ()) -> Registry:
    # Imported here: the relayer's job module itself opens clients (a cycle at import time).
    from relayq.core.relayer.jobs import JOB_TYPES as RELAYER_TYPES

    registry = Registry([*DIAGNOSTIC_TYPES, *RELAYER_TYPES])
    for name in modules:
        module = importlib.import_module(name)
        job_types: Iterable[JobType] = module.JOB_TYPES
        for job_type in job_types:
            registry.add(job_type)
    return registry
