from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.servers import _spawn, group_processes, peer_server_command
from processors.precision import Hardware
from server.settings import load_config

REPO = Path(__file__).resolve().parents[2]


def test_peer_servers_mirror_capserves_engine_settings():
    amx = Hardware("cpu", frozenset({"amx_bf16"}))
    config = load_config(REPO / "configs" / "default.yaml", environ={}, hardware=amx)
    llm = peer_server_command("smollm2", config.models["smollm2"], "/models/llm", 8101)
    assert llm[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]

    def flag(command: list[str], name: str) -> str:
        return command[command.index(name) + 1]

    assert flag(llm, "--model") == "/models/llm"
    assert flag(llm, "--served-model-name") == "smollm2"
    assert flag(llm, "--host") == "127.0.0.1"
    assert flag(llm, "--dtype") == "bfloat16"  # capserve's own dtype, auto resolved
    assert flag(llm, "--block-size") == "32"
    assert flag(llm, "--max-model-len") == "2048"
    assert flag(llm, "--runner") == "generate"
    assert {"--enforce-eager", "--enable-prefix-caching", "--enable-prompt-tokens-details"} <= set(
        llm
    )
    embed = peer_server_command("minilm", config.models["minilm"], "/models/emb", 8102)
    assert flag(embed, "--runner") == "pooling"
    assert "--no-enable-prefix-caching" in embed  # as capserve's minilm engine


def test_stop_ends_the_server_and_every_child(tmp_path: Path):
    # A parent that starts a child and ignores SIGTERM, as a stuck engine might.
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "time.sleep(600)\n"
    )
    server = _spawn(
        "stuck", [sys.executable, "-c", script], {}, tmp_path / "log", "http://127.0.0.1:1"
    )
    deadline = time.monotonic() + 20
    while len(group_processes(server.process.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(group_processes(server.process.pid)) == 2
    assert server.cpu_seconds() >= 0.0
    server.stop(grace=1.0)
    assert server.process.returncode is not None
    assert group_processes(server.process.pid) == []


def test_cpu_split_counts_the_server_process_apart_from_its_engines(tmp_path: Path):
    # The child stands in for an engine core: it burns CPU while the parent sleeps.
    burn = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\n"
    script = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {burn!r} + 'time.sleep(600)'])\n"
        "time.sleep(600)\n"
    )
    server = _spawn("split", [sys.executable, "-c", script], {}, tmp_path / "log", "http://x:1")
    try:
        deadline = time.monotonic() + 30
        while server.cpu_split().engines < 0.4 and time.monotonic() < deadline:
            time.sleep(0.1)
        split = server.cpu_split()
        assert split.engines >= 0.4
        assert split.front_end < split.engines
        assert abs(split.front_end + split.engines - server.cpu_seconds()) < 0.1
    finally:
        server.stop(grace=1.0)
