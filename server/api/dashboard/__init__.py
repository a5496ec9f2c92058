"""GET /dashboard: the operator page, served by capserve itself from this package's `static/`
files (plain HTML, CSS and JS; no CDN, no chart library), and the stats it refreshes from."""

from __future__ import annotations

# The prefix of every dashboard route; the auth middleware also accepts HTTP Basic under it.
DASHBOARD_PATH = "/dashboard"
