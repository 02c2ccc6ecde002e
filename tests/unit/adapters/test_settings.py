"""Settings precedence: flags > environment > YAML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from modelgate.settings import load_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELGATE_CONFIG", raising=False)
    monkeypatch.delenv("MODELGATE_HTTP_PORT", raising=False)
    settings = load_settings()
    assert (settings.host, settings.http_port, settings.grpc_port) == ("127.0.0.1", 8000, 8001)


def test_flags_beat_environment_beat_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "modelgate.yaml"
    config.write_text("http_port: 7001\ngrpc_port: 7002\nhost: 0.0.0.0\nworkers: 3\n")
    monkeypatch.setenv("MODELGATE_HTTP_PORT", "7101")
    monkeypatch.setenv("MODELGATE_GRPC_PORT", "7102")
    settings = load_settings({"http_port": 7201, "host": None}, str(config))
    assert settings.http_port == 7201  # flag
    assert settings.grpc_port == 7102  # environment over the file
    assert settings.host == "0.0.0.0"  # file over the default; an unset flag does not count
    assert settings.workers == 3


def test_config_file_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model_repository: /srv/models\n")
    monkeypatch.setenv("MODELGATE_CONFIG", str(config))
    assert load_settings().model_repository == Path("/srv/models")


def test_bad_values_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("http_prot: 1\n")
    with pytest.raises(ValidationError):
        load_settings(config_file=str(config))
    with pytest.raises(ValidationError):
        load_settings({"http_port": 70000})
    with pytest.raises(FileNotFoundError):
        load_settings(config_file=str(tmp_path / "missing.yaml"))
