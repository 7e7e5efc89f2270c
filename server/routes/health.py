"""`/health`, `/ready`, `/metrics` (open: probes and Prometheus carry no key) and
`/v1/models` (a key, as every /v1 route)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import APIError, error_body
from ..keys.auth import CallerDep
from ..schemas import ModelCard, ModelList
from ..state import GatewayDep

router = APIRouter()


@router.get("/health")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/ready")
async def ready(gateway: GatewayDep) -> JSONResponse:
    try:
        listing = await gateway.upstream.get_json("/v1/models", timeout_s=5)
    except APIError as e:
        return JSONResponse(error_body(503, e.message, "not_ready"), status_code=503)
    models = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)]
    if not models:
        return JSONResponse(
            error_body(503, "the model server has no model loaded", "not_ready"), 503
        )
    return JSONResponse({"status": "ready", "models": [await gateway.model_name()]})


@router.get("/metrics")
async def metrics_endpoint(gateway: GatewayDep) -> Response:
    return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models", response_model=ModelList)
async def models(gateway: GatewayDep, _: CallerDep) -> ModelList:
    # The one model, by its public name (vLLM's card holds the checkpoint's path).
    return ModelList(data=[ModelCard(id=await gateway.model_name())])


@router.get("/v1/models/{model_id}", response_model=ModelCard)
async def model_card(model_id: str, gateway: GatewayDep, _: CallerDep) -> ModelCard:
    name = await gateway.model_name()
    if model_id != name:
        raise APIError(
            404,
            f"no model {model_id[:64]!r}; this gateway serves {name!r}",
            "model_not_found",
            param="model",
        )
    return ModelCard(id=name)
