"""A Ray head on 127.0.0.1 for the quick start and the tests (`ray start --head`, the real thing).

The head is started from this interpreter's virtualenv so that `ray job submit -- python ...`
runs the project's Python, and with the object-store credentials/endpoint in its environment:
Ray's workers and job drivers inherit the head's environment, not the submitting shell's.

Each head keeps its files in a temp folder of its own (`ray start --temp-dir`), not Ray's shared
/tmp/ray: Ray's job supervisor finds the cluster a submitted job belongs to by reading
`ray_current_cluster` in the head's temp folder, and in a shared one the head started last wins, so
a job submitted to one local head (the quick start's) could run on another (the test suite's).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# A head's own temp folder is "ray-<port>-<random>": stop() recognises it by that, and leaves any other
# folder (Ray's shared /tmp/ray, where a head started by older code keeps its session) in place.
_TEMP_DIR_PREFIX = "ray-"


@dataclass(frozen=True, kw_only=True)
class LocalRayConfig:
    num_cpus: int = 2
    object_store_mib: int = 512
    port: int = 0  # GCS port; 0 = a free one
    dashboard_port: int = 8265  # 0 = a free one


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def venv_bin() -> Path:
    return Path(sys.executable).parent


class LocalRayHead:
    def __init__(self, config: LocalRayConfig = LocalRayConfig(), env: dict[str, str] | None = None) -> None:
        self.config = config
        self.port = config.port or free_port()
        self.dashboard_port = config.dashboard_port or free_port()
        self.extra_env = dict(env or {})
        self.temp_dir = ""  # this head's own Ray temp folder (holds its session folder), made by start()
        self.session_dir = ""  # this head's Ray session folder, known once started

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def environment(self) -> dict[str, str]:
        env = {**os.environ, **self.extra_env}
        env["PATH"] = f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}"
        env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # Ray 2.60 turns token auth on by itself when ~/.ray/auth_token exists; a loopback-only
        # cluster for the quick start and tests must not depend on what a home folder holds.
        env.setdefault("RAY_AUTH_MODE", "disabled")
        return env

    def start(self, timeout_s: float = 300.0) -> LocalRayHead:
        self.temp_dir = make_own_temp_dir(self.port)
        command = [
            str(venv_bin() / "ray"), "start", "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={self.port}",
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={self.config.num_cpus}",
            f"--object-store-memory={self.config.object_store_mib * 2**20}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            # the agent's default port (52365) is the same for every cluster on a machine
            f"--dashboard-agent-listen-port={free_port()}",
            "--disable-usage-stats",
        ]  # fmt: skip
        result = subprocess.run(
            command, env=self.environment(), capture_output=True, text=True, timeout=timeout_s
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"`ray start --head` failed ({result.returncode}; Ray's logs under {self.temp_dir}):\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )
        self._wait_for_dashboard(timeout_s)
        self.session_dir = session_dir_of_gcs(self.port)
        return self

    def _wait_for_dashboard(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"Ray dashboard did not answer at {self.dashboard_url} within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ends this head's processes only (`ray stop` would end every Ray cluster on the machine), its Ray
        Client server too, and removes its temp folder (Ray's record of it as the current cluster with
        it), so that nothing left misleads the next run. The GCS and raylet can take half a minute to
        honour SIGTERM; a local head holds nothing worth that wait, so they get `timeout_s` and then
        SIGKILL. A head started by another process (`quickstart.sh stop`) is found by its GCS port."""
        session_dir = self.session_dir or session_dir_of_gcs(self.port)
        temp_dir = self.temp_dir or os.path.dirname(session_dir)
        self._end_processes(session_dir, timeout_s)
        _forget_current_cluster_record(self.port, temp_dir or None)
        if is_own_temp_dir(temp_dir, self.port):  # never Ray's shared /tmp/ray (a head of older code)
            shutil.rmtree(temp_dir, ignore_errors=True)

    def _end_processes(self, session_dir: str, timeout_s: float) -> None:
        pids = (processes_using(session_dir) if session_dir else []) + client_servers_of(self.port)
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.2)
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s  # gone, not only signalled, when stop returns
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.1)

    def submit_job(
        self,
        entrypoint: list[str],
        *,
        working_dir: str | Path = ".",
        timeout_s: float = 1800,
        capture: bool = False,
        chatter_log: Path | None = None,
    ) -> subprocess.CompletedProcess:
        """`ray job submit` and wait; output streams to this process's stdout unless captured. With
        `chatter_log`, Ray's own INFO lines (packaging, submission banners, connection notices) go there
        and the console keeps the job's output and every warning and error."""
        command = [
            str(venv_bin() / "ray"), "job", "submit",
            f"--address={self.dashboard_url}",
            f"--working-dir={working_dir}",
            "--", *entrypoint,
        ]  # fmt: skip
        if chatter_log is None or capture:
            return subprocess.run(
                command, env=self.environment(), timeout=timeout_s, capture_output=capture, text=True
            )
        return _run_sorting_chatter(command, self.environment(), timeout_s, chatter_log)

    def __enter__(self) -> LocalRayHead:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Ray's own log lines: "2026-01-01 12:00:00,123<TAB>INFO cli.py:42 -- ...", and the C++ core's notice
# that Ray Train's PreemptionWatcher actor keeps its arguments in the object store (Ray's, not ours).
_RAY_CHATTER = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\t(DEBUG|INFO|SUCC)\b"
    r"|^Running entrypoint for job "
    r"|WARNING working_dir\.py:\d+ -- Directory '[^']+' is now ignored by default"
    r"|core_worker\.cc:\d+: Actor with class name: 'PreemptionWatcher'"
)


def _run_sorting_chatter(
    command: list[str], env: dict[str, str], timeout_s: float, chatter_log: Path
) -> subprocess.CompletedProcess:
    deadline = time.monotonic() + timeout_s
    with (
        open(chatter_log, "a") as log,
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as process,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            (log if _RAY_CHATTER.search(line) else sys.stdout).write(line)
            if time.monotonic() > deadline:
                process.kill()
                raise subprocess.TimeoutExpired(command, timeout_s)
        sys.stdout.flush()
        return subprocess.CompletedProcess(command, process.wait())


def make_own_temp_dir(port: int) -> str:
    """A fresh, short Ray temp folder for the head on `port`, beside Ray's default /tmp/ray (Ray's own
    choice of parent: $RAY_TMPDIR, else $TMPDIR, else /tmp). Short because Ray's unix socket paths
    (<temp>/session_<date>_<pid>/sockets/plasma_store) must stay within 107 bytes."""
    from ray._common.utils import get_default_system_temp_dir

    return tempfile.mkdtemp(prefix=f"{_TEMP_DIR_PREFIX}{port}-", dir=get_default_system_temp_dir())


def is_own_temp_dir(path: str, port: int) -> bool:
    """Whether `path` is a temp folder `make_own_temp_dir(port)` made (and so one stop() may remove)."""
    return bool(path) and os.path.basename(path).startswith(f"{_TEMP_DIR_PREFIX}{port}-")


def session_dir_of_gcs(port: int) -> str:
    """The session folder of the Ray head whose GCS listens on `port` ("" if none runs)."""
    for _, cmdline in _command_lines():
        if b"gcs_server" in cmdline and f"--gcs_server_port={port}".encode() in cmdline:
            match = re.search(rb"--log_dir=(\S+?/session_[^/\x00]+)/logs", cmdline)
            if match:
                return match.group(1).decode()
    return ""


def client_servers_of(port: int) -> list[int]:
    """Pids of the Ray Client server (`python -m ray.util.client.server --address=<ip>:<port>`) of the head
    whose GCS listens on `port`: it is started by the head but does not name its session folder."""
    address = re.compile(rb"--address=[^\x00]*:" + str(port).encode() + rb"\x00")
    return [
        pid
        for pid, cmdline in _command_lines()
        if b"ray.util.client.server" in cmdline and address.search(cmdline)
    ]


def _forget_current_cluster_record(port: int, temp_dir: str | None) -> None:
    """Removes the `ray_current_cluster` record in `temp_dir` (None: Ray's default, where a head of older
    code, started without a temp folder of its own, wrote it) if it names the head on `port`."""
    from ray._private.utils import get_ray_address_file, read_ray_address

    if (read_ray_address(temp_dir) or "").endswith(f":{port}"):
        with contextlib.suppress(OSError):
            os.remove(get_ray_address_file(temp_dir))


def processes_using(session_dir: str) -> list[int]:
    """Pids whose command line names the session folder: the head's GCS, raylet, dashboard, workers."""
    needle = session_dir.encode()
    return [pid for pid, cmdline in _command_lines() if needle in cmdline]


def _command_lines() -> list[tuple[int, bytes]]:
    lines = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                lines.append((int(entry), file.read()))
        except OSError:  # exited meanwhile, or not ours to read
            continue
    return lines


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().split(")")[-1].split()[0] != "Z"  # a zombie is as good as gone
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
