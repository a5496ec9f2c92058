"""The secured server's configuration: two API keys (a tenant limited to three capabilities,
and a rate-limited admin), HS256 JWTs, a small body limit and JSON logs. The `secured`
fixture (conftest.py, module scope) starts one for test_security.py, which also holds the
client's and the file job's auth-on tests (a server start costs minutes on a 2-core CPU)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.live_server import write_config
from tests.integration.security_secrets import ADMIN_KEY, USER_KEY, sha256

ADMIN_RATE = 6  # requests per minute: only test_security.py's last test may spend it
MAX_BODY = 64 * 1024
# What tenant-a (USER_KEY) may run.
USER_CAPABILITIES = ["sentiment", "pii", "alerts"]


def secured_config(folder: Path) -> Path:
    overrides = {
        "auth": {
            "keys": [
                {"name": "tenant-a", "sha256": sha256(USER_KEY),
                 "capabilities": USER_CAPABILITIES},
                {"name": "ops", "sha256": sha256(ADMIN_KEY), "admin": True,
                 "rate_limit": f"{ADMIN_RATE}/minute"},
            ],
            "jwt": {"algorithm": "HS256", "secret_env": "CAPSERVE_JWT_SECRET"},
        },
        "limits": {"max_body_bytes": MAX_BODY},
        "server": {"log_format": "json"},
    }  # fmt: skip
    return write_config(folder, overrides, test_capabilities=False)
