"""Installs the request guards on the app, outermost first: the access log (request id), the
body-size limit, authentication, rate limits; and the 403 handler."""

from __future__ import annotations

import os
from collections.abc import Mapping

from fastapi import FastAPI

from schemas.config import CapServeConfig
from server.api.access_log import AccessLogMiddleware
from server.api.auth.authenticator import Authenticator
from server.api.auth.middleware import AuthMiddleware
from server.api.auth.permissions import install_forbidden_handler
from server.api.body_limit import BodyLimitMiddleware
from server.api.dashboard import DASHBOARD_PATH
from server.api.rate_limits import RateLimitMiddleware


def install_security(
    app: FastAPI, config: CapServeConfig, environ: Mapping[str, str] | None = None
) -> None:
    """Raises AuthConfigError for unusable keys or JWT settings."""
    authenticator = Authenticator.from_config(config, os.environ if environ is None else environ)
    install_forbidden_handler(app)
    # add_middleware puts each one outside those added before it.
    app.add_middleware(RateLimitMiddleware, config=config.rate_limits)
    app.add_middleware(
        AuthMiddleware,
        authenticator=authenticator,
        protect_metrics=config.auth.protect_metrics,
        basic_paths=(DASHBOARD_PATH,),
    )
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=config.limits.max_body_bytes)
    app.add_middleware(AccessLogMiddleware)
