from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from chatdesk import settings as chatdesk_settings
from chatdesk.checks import check_settings
from chatdesk.settings import env_bool, env_float, env_int, env_list
from tests.support.agent_process import REPO_ROOT


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("TRUE", True), (" yes ", True), ("on", True),
                                               ("0", False), ("false", False), ("No", False), ("", False)])  # fmt: skip
def test_env_bool_reads_the_usual_spellings(monkeypatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("CHATDESK_TEST_FLAG", raw)
    assert env_bool("CHATDESK_TEST_FLAG", not expected) is expected


def test_env_helpers_fall_back_to_their_default_when_unset(monkeypatch) -> None:
    monkeypatch.delenv("CHATDESK_TEST_VALUE", raising=False)
    assert env_bool("CHATDESK_TEST_VALUE", True) is True
    assert env_int("CHATDESK_TEST_VALUE", 7) == 7
    assert env_float("CHATDESK_TEST_VALUE", 1.5) == 1.5
    assert env_list("CHATDESK_TEST_VALUE", ["a"]) == ["a"]


def test_env_bool_refuses_anything_else_naming_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("CHATDESK_TEST_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"CHATDESK_TEST_FLAG must be a boolean .*'maybe'"):
        env_bool("CHATDESK_TEST_FLAG")


@pytest.mark.parametrize("raw", ["ten", "1.5", "0x10", "3 apples"])
def test_env_int_refuses_a_non_integer_naming_the_variable(monkeypatch, raw: str) -> None:
    monkeypatch.setenv("CHATDESK_TEST_INT", raw)
    with pytest.raises(ImproperlyConfigured, match=f"CHATDESK_TEST_INT must be an integer, got '{raw}'"):
        env_int("CHATDESK_TEST_INT", 1)


def test_env_int_enforces_its_minimum(monkeypatch) -> None:
    monkeypatch.setenv("CHATDESK_TEST_INT", "0")
    with pytest.raises(ImproperlyConfigured, match="CHATDESK_TEST_INT must be at least 1, got 0"):
        env_int("CHATDESK_TEST_INT", 5, minimum=1)
    monkeypatch.setenv("CHATDESK_TEST_INT", " 12 ")
    assert env_int("CHATDESK_TEST_INT", 5, minimum=1) == 12


def test_env_float_refuses_bad_values(monkeypatch) -> None:
    monkeypatch.setenv("CHATDESK_TEST_FLOAT", "soon")
    with pytest.raises(ImproperlyConfigured, match="CHATDESK_TEST_FLOAT must be a number"):
        env_float("CHATDESK_TEST_FLOAT", 1.0)
    monkeypatch.setenv("CHATDESK_TEST_FLOAT", "-1")
    with pytest.raises(ImproperlyConfigured, match="at least 0"):
        env_float("CHATDESK_TEST_FLOAT", 1.0, minimum=0)


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch) -> None:
    monkeypatch.setenv("CHATDESK_TEST_LIST", " a.example, b.example ,,")
    assert env_list("CHATDESK_TEST_LIST", []) == ["a.example", "b.example"]


def test_secret_key_is_generated_once_into_var_with_mode_0600(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.setattr(chatdesk_settings, "VAR_DIR", tmp_path)
    key = chatdesk_settings._secret_key()
    path = tmp_path / "secret_key"
    assert len(key) >= 50
    assert path.read_text().strip() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert chatdesk_settings._secret_key() == key


def test_secret_key_from_the_environment_wins(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SECRET_KEY", "from-the-environment")
    monkeypatch.setattr(chatdesk_settings, "VAR_DIR", tmp_path)
    assert chatdesk_settings._secret_key() == "from-the-environment"
    assert not (tmp_path / "secret_key").exists()


def _ids(**overrides: object) -> set[str | None]:
    with override_settings(**overrides):
        return {problem.id for problem in check_settings(None)}


def test_system_checks_pass_on_the_test_settings() -> None:
    assert _ids() == set()


def test_system_checks_flag_conflicting_settings() -> None:
    assert "chatdesk.W001" in _ids(CHATDESK_KEEP_SCREENSHOTS=0)
    assert "chatdesk.E001" in _ids(DEBUG=False, SECRET_KEY="django-insecure-abc")
    assert "chatdesk.E002" in _ids(REDIS_URL="localhost:6379")
    assert "chatdesk.W002" in _ids(CHATDESK_TURN_LEASE_SECONDS=10, CHATDESK_SWEEP_INTERVAL=15.0)
    assert "chatdesk.W003" in _ids(CHATDESK_BASH_TIMEOUT_SECONDS=600.0, CHATDESK_TURN_TIME_LIMIT=300)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CHATDESK_BASH_TIMEOUT_SECONDS", "0.5", "must be at least 1"),
        ("CHATDESK_BASH_TIMEOUT_SECONDS", "7200", "must be at most 3600"),
        ("CHATDESK_BASH_OUTPUT_LIMIT", "100", "must be at least 1000"),
        ("CHATDESK_BASH_OUTPUT_LIMIT", str(20 * 1024 * 1024), "must be at most 10485760"),
        ("CHATDESK_EDITOR_MAX_CHARACTERS", "abc", "must be an integer"),
    ],
)
def test_workspace_tool_settings_outside_their_bounds_fail_loudly(
    name: str, value: str, message: str
) -> None:
    result = _load_settings({name: value}, name)
    assert result.returncode != 0 and "ImproperlyConfigured" in result.stderr and message in result.stderr


@pytest.mark.parametrize(
    ("value", "loaded"),
    [
        ("10.0.0.0/8, agents.example.com ,[fd00::]/8", "['10.0.0.0/8', 'agents.example.com', '[fd00::]/8']"),
        (None, "['127.0.0.0/8', '::1/128', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7']"),
    ],
)
def test_agent_url_allow_is_read_from_the_environment(value: str | None, loaded: str) -> None:
    result = _load_settings({"CHATDESK_AGENT_URL_ALLOW": value}, "CHATDESK_AGENT_URL_ALLOW")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == loaded


def test_a_malformed_agent_url_allow_fails_loudly() -> None:
    result = _load_settings({"CHATDESK_AGENT_URL_ALLOW": "10.0.0.0/33"}, "CHATDESK_AGENT_URL_ALLOW")
    assert result.returncode != 0
    assert (
        "ImproperlyConfigured: CHATDESK_AGENT_URL_ALLOW: '10.0.0.0/33' is neither an IP network"
        in result.stderr
    )


def test_encryption_keys_are_a_comma_separated_list() -> None:
    result = _load_settings({"CHATDESK_ENCRYPTION_KEY": "new-key, old-key"}, "CHATDESK_ENCRYPTION_KEY")
    assert result.stdout.strip() == "['new-key', 'old-key']"


def _load_settings(env: dict[str, str | None], name: str) -> subprocess.CompletedProcess[str]:
    """Import the settings in a fresh interpreter with ``env`` applied (None unsets); print ``name``."""
    child = {k: v for k, v in os.environ.items() if k not in env}
    child.update({k: v for k, v in env.items() if v is not None})
    return subprocess.run(
        [sys.executable, "-c", f"import chatdesk.settings as s; print(s.{name})"],
        cwd=REPO_ROOT, env=child, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
