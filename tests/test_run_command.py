"""The run command: the whole exchange from one process, on the embedded PostgreSQL and Redis.

Runs `scripts/bourse.py run` the way `scripts/run.sh` does (minus the pip step) with no
DATABASE_URL / REDIS_URL and a var/ directory of its own, twice on the same var/.
"""

from __future__ import annotations

import http.cookiejar
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "scripts" / "bourse.py"
READY_TIMEOUT = 120
STOP_TIMEOUT = 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(var_dir: Path) -> dict[str, str]:
    """The caller's environment without the servers of the test suite: embedded defaults."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "STATIC_ROOT"}
    }
    env["BOURSE_VAR_DIR"] = str(var_dir)
    # No demo markets or market maker: the tests set up (and trade on) their own markets.
    env["BOURSE_DEMO"] = "0"
    return env


def _processes_of(var_dir: Path) -> dict[int, str]:
    """Every live process whose command line or environment names this run's var/ directory.

    That is the launcher and everything it started: daphne and the workers inherit
    BOURSE_VAR_DIR, PostgreSQL runs with -D var/postgres, Redis with --dir var/redis.
    """
    needle = str(var_dir).encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        if state != "Z" and (needle in cmdline or needle in environ):
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def _wait_no_processes(var_dir: Path, timeout: float = 5) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while (left := _processes_of(var_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _embedded_env(var_dir: Path) -> dict[str, str]:
    lines = (var_dir / "embedded.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


@contextmanager
def _launched(var_dir: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(LAUNCHER), "run", "--port", str(port)],
            cwd=ROOT,
            env=_env(var_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:  # the test failed midway: do not leave a run behind
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_signup_page(proc: subprocess.Popen[bytes], port: int, log: Path) -> str:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the launcher exited with {proc.returncode} before serving:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/signup/", timeout=5) as response:
                if response.status == 200:
                    return response.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    pytest.fail(f"no sign-up page within {READY_TIMEOUT} s:\n{log.read_text()[-4000:]}")


def _admin_login(port: int, username: str, password: str) -> str:
    """Log in through the admin's login form; returns the path the browser lands on."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = f"http://127.0.0.1:{port}"
    with opener.open(f"{base}/admin/login/?next=/admin/", timeout=10) as response:
        form = response.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token, "no CSRF token on the admin login page"
    data = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token.group(1), "username": username, "password": password, "next": "/admin/"}
    ).encode()
    request = urllib.request.Request(f"{base}/admin/login/?next=/admin/", data=data, headers={"Referer": base})
    with opener.open(request, timeout=10) as response:
        # A refused login renders the form again at /admin/login/; a good one redirects.
        return urllib.parse.urlsplit(response.geturl()).path


def _stop(proc: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
    started = time.monotonic()
    proc.send_signal(signum)
    try:
        code = proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the launcher did not exit within {STOP_TIMEOUT} s of {signal.Signals(signum).name}")
    assert time.monotonic() - started < STOP_TIMEOUT
    return code


@pytest.mark.slow
def test_run_serves_the_exchange_stops_cleanly_and_keeps_its_data(tmp_path: Path) -> None:
    import redis

    var_dir = tmp_path / "var"
    port = _free_port()

    # First run: fresh var/ -> initdb, migrate, bootstrap, the sign-up page is served.
    log1 = tmp_path / "run1.log"
    with _launched(var_dir, port, log1) as proc:
        page = _wait_for_signup_page(proc, port, log1)
        assert "<form" in page and 'name="username"' in page and 'name="password1"' in page

        # `manage.py` typed by hand reaches the embedded servers through var/embedded.env.
        embedded = _embedded_env(var_dir)
        assert set(embedded) == {"DATABASE_URL", "REDIS_URL"}
        manage_env = _env(var_dir) | {
            "DJANGO_SETTINGS_MODULE": "exchange_site.settings.local",
            "DJANGO_SUPERUSER_USERNAME": "alice",
            "DJANGO_SUPERUSER_EMAIL": "alice@example.com",
            "DJANGO_SUPERUSER_PASSWORD": "kept-across-runs-42",
        }
        subprocess.run(
            [sys.executable, "manage.py", "createsuperuser", "--noinput"],
            cwd=ROOT, env=manage_env, check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        client = redis.Redis.from_url(embedded["REDIS_URL"])
        client.set("bourse:test-run-command", "kept")
        client.close()

        started = _processes_of(var_dir)
        # launcher, PostgreSQL (several), Redis, daphne, the RQ scheduler at least
        assert len(started) >= 5, started
        assert _stop(proc, signal.SIGTERM) == 0

    assert not (var_dir / "embedded.env").exists()
    assert _wait_no_processes(var_dir) == {}, "processes of the first run are still alive"

    # Second run on the same var/: what the first run stored is still there.
    log2 = tmp_path / "run2.log"
    with _launched(var_dir, port, log2) as proc:
        _wait_for_signup_page(proc, port, log2)
        assert _admin_login(port, "alice", "wrong-password") == "/admin/login/"
        assert _admin_login(port, "alice", "kept-across-runs-42") == "/admin/"
        client = redis.Redis.from_url(_embedded_env(var_dir)["REDIS_URL"])
        assert client.get("bourse:test-run-command") == b"kept"
        client.close()

        # A process that dies takes the whole run down, with a failure exit code.
        web = [pid for pid, cmd in _processes_of(var_dir).items() if "daphne" in cmd]
        assert len(web) == 1, _processes_of(var_dir)
        os.kill(web[0], signal.SIGKILL)
        try:
            code = proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail("the launcher kept running after the web process died")
        assert code != 0

    assert "web exited" in log2.read_text()
    assert not (var_dir / "embedded.env").exists()
    assert _wait_no_processes(var_dir) == {}, "processes of the second run are still alive"


@pytest.mark.django_db
def test_bootstrap_exchange_creates_the_defaults_once_and_keeps_staff_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.contrib.auth import get_user_model

    from accounts.models import Asset

    monkeypatch.setenv("BOURSE_ADMIN_PASSWORD", "first-password-123")
    call_command("bootstrap_exchange", stdout=io.StringIO())

    assets = {a.symbol: (a.kind, a.precision) for a in Asset.objects.all()}
    assert assets == {"USD": ("cash", 2), "AAPL": ("stock", 0), "MSFT": ("stock", 0), "TSLA": ("stock", 0)}
    users = get_user_model().objects
    assert users.filter(username=settings.BOURSE_HOUSE_USERNAME).exists()
    admin = users.get(username="admin")
    assert admin.is_superuser and admin.check_password("first-password-123")

    # Staff renamed an asset and changed the admin password; a later start keeps both.
    Asset.objects.filter(symbol="TSLA").update(name="Tesla")
    admin.set_password("changed-by-staff-456")
    admin.save()
    monkeypatch.setenv("BOURSE_ADMIN_PASSWORD", "first-password-123")
    call_command("bootstrap_exchange", stdout=io.StringIO())

    assert Asset.objects.count() == 4
    assert Asset.objects.get(symbol="TSLA").name == "Tesla"
    assert users.get(username="admin").check_password("changed-by-staff-456")
    assert users.filter(username=settings.BOURSE_HOUSE_USERNAME).count() == 1
