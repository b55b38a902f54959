"""The model registry: model versions of finished runs, and the aliases that point at them."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import Response

from training.api.deps import RegistryDep, json_body
from training.api.errors import responses
from training.api.schemas import AliasTarget, ModelVersions, json_response
from training.store.records import AliasInfo

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
def move_alias(name: str, body: AliasTarget, registry: RegistryDep) -> Response:
    """Point an alias at a registered model version (promote)."""
    return json_response(registry.promote(body.model_tag, name))


@router.post("/aliases/{name}/rollback", response_model=AliasInfo, responses=responses(404))
def rollback_alias(name: str, registry: RegistryDep) -> Response:
    """Move an alias back to the target it had before its last promote."""
    return json_response(registry.rollback(name))
