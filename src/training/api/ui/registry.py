"""The Models and aliases page: versions, where each alias points and which tag its running
stack serves (the rollouts' record), every move; promote and rollback, as PUT
/aliases/{name} and POST /aliases/{name}/rollback do them."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from training.api.deps import RegistryDep
from training.api.ui.dashboard import FormDep, MemberDep, PageRoute, Visit
from training.errors import UserError
from training.store.deployments import Deployments
from training.store.registry import Registry

router = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)
VERSIONS_SHOWN = 100
DEPLOYMENTS_SHOWN = 10


def models_page(
    visit: Visit, registry: Registry, status: int = 200, error: str | None = None, alias: str = ""
) -> Response:
    aliases = registry.list_aliases()
    live = {a.live_tag: a.name for a in aliases if a.live_tag}
    return visit.page(
        "models.html",
        status,
        versions=registry.list_models(limit=VERSIONS_SHOWN),
        shown=VERSIONS_SHOWN,
        aliases=aliases,
        live=live,
        deployments=Deployments(registry.db).recent(limit=DEPLOYMENTS_SHOWN),
        error=error,
        moved=alias,
    )


@router.get("/models")
def models(visit: MemberDep, registry: RegistryDep, moved: str = "") -> Response:
    return models_page(visit, registry, alias=moved)


def _moved(form_visit: Visit, registry: Registry, alias: str, move: str, tag: str = "") -> Response:
    """Promote or roll back; the page again, with the move or with why it was refused."""
    try:
        if move == "promote":
            registry.promote(tag, alias, requested_by=form_visit.session.caller)
        else:
            registry.rollback(alias, requested_by=form_visit.session.caller)
    except UserError as exc:
        return models_page(form_visit, registry, exc.status_code, exc.message, alias)
    return form_visit.redirect(f"/models?moved={alias}#alias-{alias}")


@router.post("/models/promote")
def promote(form: FormDep, registry: RegistryDep) -> Response:
    """Point an alias (production unless another is named) at a version."""
    alias = form.fields.get("alias") or "production"
    return _moved(form.visit, registry, alias, "promote", form.fields.get("model_tag"))


@router.post("/aliases/{name}/rollback")
def rollback(name: str, form: FormDep, registry: RegistryDep) -> Response:
    return _moved(form.visit, registry, name, "rollback")
