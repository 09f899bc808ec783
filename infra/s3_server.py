"""An S3-compatible server (moto) on loopback, for the tests and the README quick start.

    python -m infra.s3_server --port 9000 --bucket demo              # foreground, until Ctrl-C / SIGTERM
    python -m infra.s3_server --port 9000 --bucket demo --detach --pid-file s3.pid   # background
    kill "$(cat s3.pid)"                                             # stops the detached server

stdout carries only `export NAME=VALUE` lines (so `eval "$(python -m infra.s3_server --detach ...)"`
works); everything meant for people goes to stderr. Production points AWS_ENDPOINT_URL at MinIO,
Ceph RGW or AWS S3 instead; nothing else changes.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pipelines.cli import parse_config

# Fake credentials: moto accepts any, boto3 refuses to sign without some.
_FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_STDERR_TAIL_BYTES = 4000


@dataclass(frozen=True, kw_only=True)
class S3ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port
    bucket: str = "clip4clip"
    start_timeout_s: float = 30.0  # how long to wait for the server to answer HTTP
    log_path: Path | None = None  # server stdout/stderr; None = a fresh temp file


class S3ServerError(RuntimeError):
    """The moto server did not start (the message carries the tail of its log)."""


class LocalS3Server:
    """A `moto_server` process on loopback with one bucket created; a context manager."""

    def __init__(self, config: S3ServerConfig | None = None) -> None:
        self.config = config or S3ServerConfig()
        self._process: subprocess.Popen[bytes] | None = None
        self._port = self.config.port
        self.log_path = self.config.log_path
        self._owns_log = self.log_path is None  # a temp log we made is removed again on stop

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.config.host}:{self._port}"

    @property
    def bucket(self) -> str:
        return self.config.bucket

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def env(self) -> dict[str, str]:
        """Environment that points boto3 (and so pipelines.storage) at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint_url, **_FAKE_CREDENTIALS}

    def start(self, *, new_session: bool = False) -> LocalS3Server:
        """Start the server, wait until it answers, create the bucket. `new_session` detaches it from
        this terminal's process group (for --detach: Ctrl-C in the shell must not stop it)."""
        assert self._process is None, "server already started"
        if self._port == 0:
            self._port = _free_port(self.config.host)
        if self.log_path is None:
            log_fd, log_name = tempfile.mkstemp(prefix="moto-s3-", suffix=".log")
            os.close(log_fd)
            self.log_path = Path(log_name)
        with open(self.log_path, "ab") as log_file:
            self._process = subprocess.Popen(
                [*_moto_server_command(), "-H", self.config.host, "-p", str(self._port)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
            )
        atexit.register(self.stop)
        try:
            self._wait_until_answering()
            self._create_bucket()
        except BaseException:
            self._owns_log = False  # the error message points at the log: keep it
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s); safe to call twice."""
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._owns_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def detach(self) -> int:
        """Leave the server running after this process exits; returns its pid (stop it with kill)."""
        assert self._process is not None, "server not started"
        pid = self._process.pid
        self._process = None
        atexit.unregister(self.stop)
        return pid

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as log_file:
            log_file.seek(max(0, self.log_path.stat().st_size - _STDERR_TAIL_BYTES))
            return log_file.read().decode(errors="replace")

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + self.config.start_timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise S3ServerError(self._failure_message(f"exited with code {self._process.returncode}"))
            if _answers_http(self.endpoint_url):
                return
            time.sleep(0.1)
        raise S3ServerError(self._failure_message(f"did not answer within {self.config.start_timeout_s} s"))

    def _failure_message(self, what: str) -> str:
        return (
            f"moto S3 server on {self.endpoint_url} {what} (is the port free? is moto[server] installed?). "
            f"Log {self.log_path}, last lines:\n{self.log_tail()}"
        )

    def _create_bucket(self) -> None:
        """A plain HTTP PUT (moto does not ask a local server's requests to be signed): boto3 stays the
        business of pipelines.storage alone. 409 = it exists already, which is as good."""
        request = urllib.request.Request(f"{self.endpoint_url}/{self.bucket}", method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=30):
                pass
        except urllib.error.HTTPError as error:
            if error.code != 409:
                raise


def _moto_server_command() -> list[str]:
    """The `moto_server` console script of this interpreter's environment, else `python -m moto.server`."""
    script = Path(sys.executable).parent / "moto_server"
    if script.exists():
        return [str(script)]
    on_path = shutil.which("moto_server")
    return [on_path] if on_path else [sys.executable, "-m", "moto.server"]


def _free_port(host: str) -> int:
    # The OS picks a free port; the server binds it a moment later (a small race, fine on loopback).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------
# Command line


@dataclass(frozen=True, kw_only=True)
class ServeArgs:
    """Start an S3-compatible server (moto) on loopback and print the environment to use it."""

    host: str = "127.0.0.1"
    port: int = 9000
    bucket: str = "clip4clip"
    detach: bool = False  # start in the background, write --pid-file, and return
    pid_file: Path = Path("s3_server.pid")  # with --detach: where the server's pid goes
    log_file: Path | None = None  # server log; default: next to --pid-file (detached) or a temp file


def serve(args: ServeArgs) -> int:
    config = S3ServerConfig(host=args.host, port=args.port, bucket=args.bucket, log_path=args.log_file)
    if args.detach:
        return _serve_detached(args, config)
    return _serve_foreground(LocalS3Server(config))


def _serve_detached(args: ServeArgs, config: S3ServerConfig) -> int:
    log_path = args.log_file or args.pid_file.with_suffix(".log")
    server = LocalS3Server(dataclasses.replace(config, log_path=log_path))
    server.start(new_session=True)
    pid = server.detach()
    args.pid_file.write_text(f"{pid}\n")
    _print_environment(server, pid, f"stop it with: kill $(cat {args.pid_file})")
    return 0


def _serve_foreground(server: LocalS3Server) -> int:
    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())
    with server:
        _print_environment(server, server.pid, "stop it with Ctrl-C (or SIGTERM)")
        while not stop_requested.wait(0.5):
            if not server.is_running():
                print(f"moto server exited unexpectedly:\n{server.log_tail()}", file=sys.stderr)
                return 1
    return 0


def _print_environment(server: LocalS3Server, pid: int | None, how_to_stop: str) -> None:
    print(
        f"S3-compatible server (moto) at {server.endpoint_url}, bucket s3://{server.bucket} "
        f"(pid {pid}, log {server.log_path}); {how_to_stop}",
        file=sys.stderr,
    )
    for name, value in server.env().items():
        print(f"export {name}={value}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:

    return serve(parse_config(ServeArgs, argv))


if __name__ == "__main__":
    sys.exit(main())
