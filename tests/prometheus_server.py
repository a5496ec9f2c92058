"""A real `prometheus` of the tests' own: loopback, a free port, a temporary TSDB, scraping one
target every second.

Tests start and stop it themselves (`running_prometheus`). `make test` installs Debian's
prometheus when it is missing (`make test-services`).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.redis_server import free_port

START_TIMEOUT_S = 60.0
JOB = "capserve"
SCRAPE_INTERVAL_S = 1


class PrometheusQueryError(RuntimeError):
    """The query API answered with an error (a bad expression, a timeout)."""


@dataclass
class PrometheusServer:
    directory: Path
    # host:port of the /metrics endpoint to scrape.
    target: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "prometheus.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def write_config(self) -> Path:
        interval = f"{SCRAPE_INTERVAL_S}s"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "scrape_interval": interval,
                    "scrape_timeout": interval,
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": [self.target]}],
                }
            ],
        }
        path = self.directory / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start(self) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: run `make test-services`")
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        command = [
            binary,
            f"--config.file={self.write_config()}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"prometheus exited with {code}:\n{self.log()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus not ready after {START_TIMEOUT_S} s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def _api(self, path: str, params: dict[str, str]) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = response.json()
        if body.get("status") != "success":
            raise PrometheusQueryError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at now: its result vector (a scalar comes back as one sample)."""
        data = self._api("query", {"query": expr})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        """Grafana's label_values(match, label): the values `label` takes on series of `match`."""
        values: list[str] = self._api(f"label/{label}/values", {"match[]": match})
        return values

    def scrapes_since(self, started: float) -> int:
        """Successful scrapes of the target since the Unix time `started`."""
        window = max(1, math.ceil(time.time() - started))
        result = self.query(f'sum_over_time(up{{job="{JOB}"}}[{window}s])')
        return int(float(result[0]["value"][1])) if result else 0

    def wait_for_scrapes(self, started: float, count: int, timeout_s: float = 60.0) -> None:
        """Waits until the target was scraped successfully `count` times since `started`."""
        deadline = time.monotonic() + timeout_s
        while (seen := self.scrapes_since(started)) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{seen} successful scrapes of {self.target} in {timeout_s:.0f} s, "
                    f"wanted {count}:\n{self.log()[-2000:]}"
                )
            time.sleep(0.5)


@contextlib.contextmanager
def running_prometheus(directory: Path, target: str) -> Iterator[PrometheusServer]:
    """Prometheus scraping `target` (host:port) every second, stopped at the end."""
    server = PrometheusServer(directory, target)
    server.start()
    try:
        yield server
    finally:
        server.stop()
