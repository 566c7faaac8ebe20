"""API keys and TLS in the config file, and `pointillist keygen`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.auth import ApiKey, KeyRing, Role, hash_key
from server.settings import ConfigError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pointillist.toml"
    path.write_text(text)
    return path


def test_keygen_prints_a_key_and_an_entry_the_config_accepts(tmp_path):
    printed = subprocess.run(
        [sys.executable, "-m", "pointillist.cli", "keygen", "--name", "ops", "--role", "admin"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    key = printed.split("key:", 1)[1].split()[0]
    entry = printed[printed.index("[[server.api_keys]]") :]

    settings = load_settings(write(tmp_path, entry), environ={})

    assert key.startswith("pk_") and len(key) > 40
    assert settings.api_keys == (ApiKey("ops", Role.ADMIN, hash_key(key)),)
    caller = KeyRing(settings.api_keys).identify([("authorization", f"Bearer {key}")])
    assert caller is not None and (caller.name, caller.role) == ("ops", Role.ADMIN)
    assert KeyRing(settings.api_keys).identify([("authorization", "Bearer pk_wrong")]) is None


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ('name = "a"\nsha256 = "abc"', "64 hex digits"),
        (f'sha256 = "{"0" * 64}"', "'name' is required"),
        (f'name = "a"\nrole = "root"\nsha256 = "{"0" * 64}"', "'user' or 'admin'"),
        (f'name = "a"\nkey = "pk_plain"\nsha256 = "{"0" * 64}"', "unknown keys key"),
    ],
)
def test_bad_key_entries_stop_the_server_at_start(tmp_path, entry, words):
    with pytest.raises(ConfigError, match=words):
        load_settings(write(tmp_path, f"[[server.api_keys]]\n{entry}\n"), environ={})


def test_duplicate_key_names_are_refused(tmp_path):
    entry = f'[[server.api_keys]]\nname = "a"\nsha256 = "{"0" * 64}"\n'
    with pytest.raises(ConfigError, match="unique"):
        load_settings(write(tmp_path, entry * 2), environ={})


def test_tls_settings_are_checked_at_start(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("not read until both are set")
    with pytest.raises(ConfigError, match="go together"):
        load_settings(write(tmp_path, f'[server]\ntls_cert = "{cert}"\n'), environ={})
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(
            write(tmp_path, f'[server]\ntls_cert = "{cert}"\ntls_key = "{missing}"\n'), environ={}
        )
    with pytest.raises(ConfigError, match="needs tls_cert"):
        load_settings(write(tmp_path, f'[server]\ntls_client_ca = "{cert}"\n'), environ={})


def test_limits_and_reflection_are_server_and_scheduler_keys(tmp_path):
    text = (
        "[server]\nmax_streams_per_caller = 3\nreflection = false\n"
        "[scheduler]\nmax_queued_per_caller = 5\n"
    )
    settings = load_settings(write(tmp_path, text), environ={})

    assert settings.max_streams_per_caller == 3 and settings.reflection is False
    assert settings.scheduler.max_queued_per_caller == 5


def test_keys_from_an_api_keys_file_join_the_config_file_keys(tmp_path):
    """The Kubernetes Secret holds the hashes in their own file (api_keys_file)."""
    keys = tmp_path / "api-keys.toml"
    keys.write_text(f'[[api_keys]]\nname = "farm"\nsha256 = "{"1" * 64}"\n')
    config = (
        f'[server]\napi_keys_file = "{keys}"\n'
        f'[[server.api_keys]]\nname = "ops"\nrole = "admin"\nsha256 = "{"2" * 64}"\n'
    )
    settings = load_settings(write(tmp_path, config), environ={})
    assert {(key.name, key.role) for key in settings.api_keys} == {
        ("farm", Role.USER),
        ("ops", Role.ADMIN),
    }

    keys.write_text(f'[[api_keys]]\nname = "ops"\nsha256 = "{"3" * 64}"\n')
    with pytest.raises(ConfigError, match="unique"):
        load_settings(write(tmp_path, config), environ={})
    keys.unlink()
    with pytest.raises(ConfigError, match="not found"):
        load_settings(write(tmp_path, config), environ={})
