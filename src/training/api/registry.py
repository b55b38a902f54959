"""The model registry: model versions of finished runs, and the aliases that point at them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from training.api.deps import CallerDep, RegistryDep, json_body
from training.api.errors import responses
from training.api.schemas import AliasTarget, DeploymentList, ModelVersions, json_response
from training.store.deployments import Deployments
from training.store.records import AliasInfo
from training.store.registry import check_alias_name

router = APIRouter(tags=["registry"])


@router.get("/models", response_model=ModelVersions, responses=responses())
def list_models(registry: RegistryDep, name: str | None = None) -> Response:
    """Registered model versions, newest first, with the aliases pointing at each."""
    return json_response(ModelVersions(models=registry.list_models(name)))


@router.get("/aliases/{name}", response_model=AliasInfo, responses=responses(404))
def get_alias(name: str, registry: RegistryDep) -> Response:
    """Where an alias points, and every move it made."""
    return json_response(registry.get_alias(name))


@router.put(
    "/aliases/{name}",
    response_model=AliasInfo,
    responses=responses(404, 415),
    dependencies=[Depends(json_body)],
)
def move_alias(name: str, body: AliasTarget, registry: RegistryDep, by: CallerDep) -> Response:
    """Point an alias at a registered model version (promote). A running stack that serves
    the alias rolls the version out (see GET /deployments)."""
    return json_response(registry.promote(body.model_tag, name, requested_by=by))


@router.post("/aliases/{name}/rollback", response_model=AliasInfo, responses=responses(404))
def rollback_alias(name: str, registry: RegistryDep, by: CallerDep) -> Response:
    """Move an alias back to the target it had before its last promote."""
    return json_response(registry.rollback(name, requested_by=by))


@router.get("/deployments", response_model=DeploymentList, responses=responses(400))
def list_deployments(
    registry: RegistryDep,
    alias: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Response:
    """Rollouts of aliases to the running stack, newest first: from and to which tag, who
    asked, when it started and went live, and how it ended (with the error of a failed one)."""
    if alias is not None:
        check_alias_name(alias)
    return json_response(DeploymentList(deployments=Deployments(registry.db).recent(alias, limit)))
