"""Production settings pass Django's deployment checklist, and the image's build step works.

Both run in a subprocess: the production settings module refuses to load without a long
SECRET_KEY, and the test process already has the test settings loaded.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _production_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"BOURSE_VAR_DIR", "STATIC_ROOT", "DEBUG"}}
    env.update(
        DJANGO_SETTINGS_MODULE="exchange_site.settings.production",
        SECRET_KEY=secrets.token_urlsafe(60)[:60],
        ALLOWED_HOSTS="example.com",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/bourse",
    )
    return env | extra


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_reports_no_issues() -> None:
    result = _manage("check", "--deploy", env=_production_env())
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output, output


def test_production_settings_refuse_a_short_secret_key() -> None:
    result = _manage("check", env=_production_env(SECRET_KEY="too-short"))
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


@pytest.mark.slow
def test_collectstatic_with_production_settings_as_the_image_build_does(tmp_path: Path) -> None:
    # The Dockerfile runs exactly this; the manifest storage fails on a missing reference.
    result = _manage("collectstatic", "--noinput", "--verbosity", "0", env=_production_env(STATIC_ROOT=str(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "staticfiles.json").exists()
