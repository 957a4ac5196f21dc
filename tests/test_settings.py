"""One settings model for every endpoint and credential: environment, optional file, secrets masked."""

from __future__ import annotations

import json
import logging

import pytest
from typer.testing import CliRunner

from cli.main import app
from fleet.core.settings import Settings, SettingsError

SECRETS = {
    "PREFECT_API_KEY": "pnu_abc123-secret",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-pw-secret",
    "MLFLOW_TRACKING_TOKEN": "tok-secret-9",
    "PREFECT_API_AUTH_STRING": "admin:auth-secret",
}


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in (
        "FLEET_ENV_FILE",
        "FLEET_STORE",
        "FLEET_TASK_RUNNER",
        "MLFLOW_TRACKING_URI",
        "PREFECT_API_URL",
        "AWS_ENDPOINT_URL",
        *SECRETS,
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    return monkeypatch


def test_file_then_environment(clean_env, tmp_path):
    f = tmp_path / "fleet.env"
    f.write_text(
        "FLEET_STORE=s3://bucket/fleet\nMLFLOW_TRACKING_URI=http://mlflow:5000\nFLEET_TASK_RUNNER=dask\n"
        "PREFECT_API_KEY=from-file-secret\n"
    )
    clean_env.setenv("FLEET_ENV_FILE", str(f))
    clean_env.setenv("FLEET_TASK_RUNNER", "deployments")  # the environment wins over the file
    s = Settings.load()
    assert s.store_url == "s3://bucket/fleet" and s.tracking_uri == "http://mlflow:5000"
    assert s.task_runner == "deployments" and s.prefect_api_key.get_secret_value() == "from-file-secret"
    assert s.artifacts is None  # a tracking server decides where artifacts go
    assert s.exported()["PREFECT_API_KEY"] == "from-file-secret"  # handed to the libraries, not printed


def test_embedded_defaults(clean_env, tmp_path):
    s = Settings.load()
    assert s.home == (tmp_path / "home").resolve() and s.task_runner == "threads"
    assert s.tracking_uri.startswith("sqlite:///") and s.artifacts.endswith("mlflow/artifacts")


def test_artifacts_stay_under_the_home_after_apply(clean_env, tmp_path):
    """apply() exports the SQLite tracking URI for the libraries; settings read after it (a task, a Dask worker)
    must still put artifacts under the home, not in MLflow's default ./mlruns of the working directory."""
    import os

    saved = dict(os.environ)
    try:
        first = Settings.load().apply()
        again = Settings.load()
    finally:  # apply() exports to os.environ: put it back
        os.environ.clear()
        os.environ.update(saved)
        import mlflow

        mlflow.set_tracking_uri(None)
    assert again.tracking_uri == first.tracking_uri
    assert again.artifacts == first.artifacts == str((tmp_path / "home" / "mlflow" / "artifacts").resolve())
    clean_env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")  # a database, not a server
    assert Settings.load().artifacts == first.artifacts
    clean_env.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.com")
    assert Settings.load().artifacts is None


def test_bad_settings_are_named(clean_env, tmp_path):
    clean_env.setenv("FLEET_ENV_FILE", str(tmp_path / "missing.env"))
    with pytest.raises(SettingsError, match=r"missing\.env: no such settings file"):
        Settings.load()
    clean_env.delenv("FLEET_ENV_FILE")
    clean_env.setenv("FLEET_TASK_RUNNER", "spark")
    r = CliRunner().invoke(app, ["settings"])
    assert r.exit_code == 2 and "FLEET_TASK_RUNNER='spark'" in r.output


def test_secrets_never_printed_or_logged(clean_env, caplog):
    for k, v in SECRETS.items():
        clean_env.setenv(k, v)
    s = Settings.load()
    texts = [repr(s), str(s), json.dumps(s.public()), s.model_dump_json()]
    with caplog.at_level(logging.INFO):
        logging.getLogger("fleet.test").info("settings: %s", s)
    texts.append(caplog.text)
    for args in (["settings"], ["settings", "--json"]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
        texts.append(r.output)
    assert "**********" in texts[-1]
    for text in texts:
        for secret in SECRETS.values():
            assert secret not in text


def test_a_short_or_empty_serve_token_is_refused(monkeypatch, tmp_path):
    from fleet.core.settings import Settings, SettingsError

    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    for weak in ("", "   ", "secret"):
        monkeypatch.setenv("FLEET_SERVE_TOKEN", weak)
        with pytest.raises(SettingsError, match="FLEET_SERVE_TOKEN"):
            Settings.load()
    monkeypatch.setenv("FLEET_SERVE_TOKEN", "x" * 24)
    settings = Settings.load()
    assert settings.serve_token is not None and "x" * 24 not in str(settings.public())  # never printed
