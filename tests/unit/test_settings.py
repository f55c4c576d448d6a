from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from relayq.core.priorities import DEFAULT_CLASSES, Priority
from relayq.core.settings import Settings, SettingsError


def test_from_env_with_empty_environment_gives_documented_defaults() -> None:
    s = Settings.from_env({})
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.key_prefix == "relayq"
    assert s.mongo_url == "mongodb://127.0.0.1:27017/"
    assert s.mongo_database == "relayq"
    assert s.lease_seconds == 30.0
    assert s.max_deliveries == 5
    assert s.drain_seconds == 25.0
    assert s.metrics_port == 9100
    assert s.log_level == "INFO"
    assert s.job_modules == ()
    assert dict(s.classes) == DEFAULT_CLASSES


def test_default_worker_id_is_hostname_and_pid() -> None:
    assert Settings.from_env({}).worker_id == f"{socket.gethostname()}-{os.getpid()}"


def test_default_priority_classes_match_the_architecture_table() -> None:
    s = Settings.from_env({})
    table = {
        Priority.CRITICAL: (1.0, 20, 5),
        Priority.HIGH: (5.0, 10, 3),
        Priority.MEDIUM: (30.0, 5, 2),
        Priority.LOW: (300.0, 2, 1),
        Priority.BATCH: (None, 1, 1),
    }
    for priority, (sla, concurrency, attempts) in table.items():
        cls = s.priority_class(priority)
        assert cls.priority is priority
        assert (cls.sla_seconds, cls.concurrency, cls.max_attempts) == (sla, concurrency, attempts)
        assert cls.backoff_base_seconds == 2.0
        assert cls.backoff_max_seconds == 300.0


def test_from_env_without_argument_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYQ_MONGO_DATABASE", "from-os-environ")
    assert Settings.from_env().mongo_database == "from-os-environ"


def test_every_global_variable_overrides_its_setting() -> None:
    s = Settings.from_env(
        {
            "RELAYQ_REDIS_URL": "redis://redis.example:6380/2",
            "RELAYQ_KEY_PREFIX": "rq-test",
            "RELAYQ_MONGO_URL": "mongodb://mongo.example:27018/",
            "RELAYQ_MONGO_DATABASE": "jobs",
            "RELAYQ_LEASE_SECONDS": "12.5",
            "RELAYQ_MAX_DELIVERIES": "9",
            "RELAYQ_DRAIN_SECONDS": "0",
            "RELAYQ_METRICS_PORT": "0",
            "RELAYQ_LOG_LEVEL": "WARNING",
            "RELAYQ_WORKER_ID": "worker-7",
        }
    )
    assert s.redis_url == "redis://redis.example:6380/2"
    assert s.key_prefix == "rq-test"
    assert s.mongo_url == "mongodb://mongo.example:27018/"
    assert s.mongo_database == "jobs"
    assert s.lease_seconds == 12.5
    assert s.max_deliveries == 9 and isinstance(s.max_deliveries, int)
    assert s.drain_seconds == 0.0
    assert s.metrics_port == 0 and isinstance(s.metrics_port, int)
    assert s.log_level == "WARNING"
    assert s.worker_id == "worker-7"


def test_log_level_is_case_insensitive() -> None:
    assert Settings.from_env({"RELAYQ_LOG_LEVEL": "debug"}).log_level == "DEBUG"


def test_empty_numeric_variable_keeps_the_default() -> None:
    s = Settings.from_env({"RELAYQ_LEASE_SECONDS": "", "RELAYQ_HIGH_CONCURRENCY": ""})
    assert s.lease_seconds == 30.0
    assert s.priority_class(Priority.HIGH).concurrency == 10


@pytest.mark.parametrize("priority", list(Priority))
def test_per_priority_variables_override_only_their_class(priority: Priority) -> None:
    p = priority.value.upper()
    s = Settings.from_env(
        {
            f"RELAYQ_{p}_CONCURRENCY": "7",
            f"RELAYQ_{p}_MAX_ATTEMPTS": "4",
            f"RELAYQ_{p}_BACKOFF_SECONDS": "0.25",
            f"RELAYQ_{p}_SLA_SECONDS": "42",
            f"RELAYQ_{p}_BACKOFF_MAX_SECONDS": "9.5",
        }
    )
    cls = s.priority_class(priority)
    assert cls.concurrency == 7 and isinstance(cls.concurrency, int)
    assert cls.max_attempts == 4 and isinstance(cls.max_attempts, int)
    assert cls.backoff_base_seconds == 0.25
    assert cls.sla_seconds == 42.0
    assert cls.backoff_max_seconds == 9.5
    for other in Priority:
        if other is not priority:
            assert s.priority_class(other) == DEFAULT_CLASSES[other]


def test_batch_sla_can_be_set_although_it_defaults_to_none() -> None:
    assert Settings.from_env({}).priority_class(Priority.BATCH).sla_seconds is None
    s = Settings.from_env({"RELAYQ_BATCH_SLA_SECONDS": "3600"})
    assert s.priority_class(Priority.BATCH).sla_seconds == 3600.0


def test_job_modules_are_split_on_commas_and_stripped() -> None:
    s = Settings.from_env({"RELAYQ_JOB_MODULES": " app.jobs , ,other.jobs,"})
    assert s.job_modules == ("app.jobs", "other.jobs")


def test_empty_job_modules_gives_no_modules() -> None:
    assert Settings.from_env({"RELAYQ_JOB_MODULES": " , "}).job_modules == ()


@pytest.mark.parametrize(
    "name",
    [
        "RELAYQ_LEASE_SECONDS",
        "RELAYQ_MAX_DELIVERIES",
        "RELAYQ_DRAIN_SECONDS",
        "RELAYQ_METRICS_PORT",
        "RELAYQ_CRITICAL_CONCURRENCY",
        "RELAYQ_HIGH_MAX_ATTEMPTS",
        "RELAYQ_MEDIUM_BACKOFF_SECONDS",
        "RELAYQ_LOW_SLA_SECONDS",
        "RELAYQ_BATCH_BACKOFF_MAX_SECONDS",
    ],
)
def test_non_number_is_rejected_naming_the_variable(name: str) -> None:
    with pytest.raises(SettingsError, match=name) as info:
        Settings.from_env({name: "ten"})
    assert "not a number" in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RELAYQ_LEASE_SECONDS", "0.4"),
        ("RELAYQ_MAX_DELIVERIES", "0"),
        ("RELAYQ_DRAIN_SECONDS", "-1"),
        ("RELAYQ_METRICS_PORT", "-1"),
        ("RELAYQ_CRITICAL_CONCURRENCY", "0"),
        ("RELAYQ_HIGH_MAX_ATTEMPTS", "0"),
        ("RELAYQ_MEDIUM_BACKOFF_SECONDS", "0"),
        ("RELAYQ_LOW_SLA_SECONDS", "0"),
        ("RELAYQ_BATCH_BACKOFF_MAX_SECONDS", "0"),
    ],
)
def test_value_below_minimum_is_rejected_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name) as info:
        Settings.from_env({name: value})
    assert "below its minimum" in str(info.value)


def test_minimum_values_themselves_are_accepted() -> None:
    s = Settings.from_env(
        {
            "RELAYQ_LEASE_SECONDS": "0.5",
            "RELAYQ_MAX_DELIVERIES": "1",
            "RELAYQ_DRAIN_SECONDS": "0",
            "RELAYQ_HIGH_CONCURRENCY": "1",
        }
    )
    assert s.lease_seconds == 0.5
    assert s.max_deliveries == 1
    assert s.drain_seconds == 0
    assert s.priority_class(Priority.HIGH).concurrency == 1


@pytest.mark.parametrize("level", ["TRACE", "CRITICAL", "verbose", ""])
def test_unknown_log_level_is_rejected_naming_the_variable(level: str) -> None:
    with pytest.raises(SettingsError, match="RELAYQ_LOG_LEVEL"):
        Settings.from_env({"RELAYQ_LOG_LEVEL": level})


@pytest.mark.parametrize("prefix", ["relayq{x}", "{relayq", "relayq}", ""])
def test_key_prefix_with_braces_or_empty_is_rejected_naming_the_variable(prefix: str) -> None:
    with pytest.raises(SettingsError, match="RELAYQ_KEY_PREFIX"):
        Settings.from_env({"RELAYQ_KEY_PREFIX": prefix})


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


def test_mongo_tls_files_are_read_when_they_exist(tmp_path: Path) -> None:
    ca, pem = tmp_path / "ca.crt", tmp_path / "client.pem"
    ca.write_text("ca")
    pem.write_text("cert and key")
    settings = Settings.from_env(
        {"RELAYQ_MONGO_TLS_CA_FILE": str(ca), "RELAYQ_MONGO_TLS_CERTIFICATE_KEY_FILE": str(pem)}
    )
    assert settings.mongo_tls_ca_file == str(ca)
    assert settings.mongo_tls_certificate_key_file == str(pem)
    unset = Settings.from_env({"RELAYQ_MONGO_TLS_CA_FILE": ""})
    assert unset.mongo_tls_ca_file is None and unset.mongo_tls_certificate_key_file is None


@pytest.mark.parametrize(
    "name", ["RELAYQ_MONGO_TLS_CA_FILE", "RELAYQ_MONGO_TLS_CERTIFICATE_KEY_FILE"]
)
def test_a_missing_mongo_tls_file_is_rejected_naming_the_variable(
    name: str, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match=f"{name}=.*not a readable file"):
        Settings.from_env({name: str(tmp_path / "absent.pem")})
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: str(tmp_path)})  # a directory is no file either
