"""`/health`, `/ready` and the OpenAPI document, at the root."""

from __future__ import annotations

from app.settings import Settings
from tests.integration.conftest import AppFactory, Client, RedisServer, error_code, with_redis


async def test_health_answers_while_the_process_serves(api: Client) -> None:
    response = await api.get("/health")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_ready_when_postgres_and_redis_answer(api: Client) -> None:
    response = await api.get("/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}


async def test_not_ready_names_redis_when_it_is_down(
    settings: Settings, make_client: AppFactory, redis_server: RedisServer
) -> None:
    # Given a web process whose Redis has died
    client = await make_client(with_redis(settings, redis_server.url))
    assert (await client.get("/ready")).status_code == 200
    redis_server.kill()

    # When the orchestrator asks whether it is ready
    response = await client.get("/ready")

    # Then it is 503 SERVICE_UNAVAILABLE naming Redis, with PostgreSQL still fine
    assert response.status_code == 503
    assert error_code(response) == "SERVICE_UNAVAILABLE"
    assert "redis" in response.json()["error"]["message"]
    assert response.json()["error"]["details"] == {"checks": {"postgres": "ok", "redis": "unavailable"}}
    # And liveness is unaffected
    assert (await client.get("/health")).status_code == 200


async def test_the_openapi_document_lists_the_auth_routes(api: Client) -> None:
    response = await api.get("/schema/openapi.json")

    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    for path in ("/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/auth/refresh",
                 "/api/v1/auth/logout", "/api/v1/auth/logout-all", "/api/v1/me"):
        assert path in document["paths"], path


async def test_the_openapi_document_lists_the_webhooks_under_the_api_prefix_only(api: Client) -> None:
    document = (await api.get("/schema/openapi.json")).json()

    # The contract's paths are documented (POST); the root aliases answer but are not listed
    for path in ("/api/v1/webhooks/stripe", "/api/v1/webhooks/twilio/status"):
        assert "post" in document["paths"].get(path, {}), path
    assert "/webhooks/stripe" not in document["paths"]
    assert "/webhooks/twilio/status" not in document["paths"]


async def test_the_openapi_document_says_a_rides_dispatch_round_is_never_null(api: Client) -> None:
    ride = (await api.get("/schema/openapi.json")).json()["components"]["schemas"]["RideOut"]

    assert ride["properties"]["dispatchRound"] == {"type": "integer"}
    assert "dispatchRound" in ride["required"]


async def test_a_wrong_method_names_the_methods_the_route_has(api: Client) -> None:
    # When a client DELETEs a route that only answers GET
    response = await api.delete("/health")

    # Then it is the contract's 404, naming GET among the methods there are
    assert response.status_code == 404
    details = response.json()["error"]["details"]
    assert details["reason"] == "METHOD_NOT_ALLOWED"
    assert "GET" in details["allowed"]
