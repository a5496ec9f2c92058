"""Admin endpoints: operations on the running server, not classification.

They live in a router of their own so that the admin key of the hardening issue protects them
all with one dependency (`APIRouter(dependencies=[Depends(require_admin_key)])`) and nothing
else changes.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from schemas.api import ModelChangesBody, ReloadResponse, VersionChangeBody
from server.api.auth.permissions import require_admin
from server.runtime import Runtime

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])


@router.post("/reload", response_model=ReloadResponse)
async def reload_capabilities(
    request: Request,
    dry_run: bool = Query(
        default=False, description="Validate the folder and the models; change nothing."
    ),
) -> ReloadResponse:
    """Re-reads the capabilities folder and the config file's `models`, starting the engines of
    added or changed models before the swap; a set with problems, or an engine that fails to
    start, is a 422 and changes nothing."""
    runtime: Runtime = request.app.state.runtime
    report = await runtime.reload(dry_run=dry_run)
    changes = report.changes
    return ReloadResponse(
        reloaded=report.reloaded,
        dry_run=report.dry_run,
        capabilities=report.capabilities,
        added=list(changes.added),
        removed=list(changes.removed),
        changed=[VersionChangeBody(**vars(change)) for change in changes.changed],
        unchanged=changes.unchanged,
        models=ModelChangesBody(
            added=list(report.models.added),
            replaced=list(report.models.replaced),
            removed=list(report.models.removed),
        ),
        restart_required=list(report.restart_required),
    )
