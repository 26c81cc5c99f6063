"""Input the API refuses cleanly (NUL characters, trailing newlines, huge durations) and the security
headers on every answer, seen through the real app."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import PASSWORD, Accounts, Client, bearer, error_code
from tests.integration.rides_support import ensure_region, ride_body

NUL = "\u0000"


def register_body(**fields: Any) -> dict[str, Any]:
    body = {"email": "nul@example.com", "password": PASSWORD, "fullName": "Nul Tester",
            "phone": "+4917012345678", "role": "customer"}
    body.update(fields)
    return body


@pytest.mark.parametrize(("field", "value"), [("email", f"a{NUL}b@example.com"), ("fullName", f"Ann{NUL}"),
                                              ("password", f"{PASSWORD}{NUL}")])
async def test_a_nul_in_a_registration_is_a_400_naming_the_field_and_creates_nothing(
    api: Client, accounts: Accounts, field: str, value: str
) -> None:
    # When someone registers with a NUL in one field
    response = await api.post("/api/v1/auth/register", json=register_body(**{field: value}))

    # Then it is 400 VALIDATION_ERROR naming that field, not a 500
    assert response.status_code == 400, response.text
    assert error_code(response) == "VALIDATION_ERROR"
    assert list(response.json()["error"]["details"]) == [field]
    # And no account was made: the same registration without the NUL works
    clean = await api.post("/api/v1/auth/register", json=register_body())
    assert clean.status_code == 201, clean.text


async def test_a_nul_deep_in_a_ride_is_named_by_its_path(api: Client, accounts: Accounts) -> None:
    await ensure_region(api)
    customer = await accounts.register("customer")
    body = ride_body()
    body["pickup"]["address"] = f"Alexanderplatz{NUL}1"

    response = await api.post("/api/v1/rides", json=body, headers=bearer(customer["accessToken"]))

    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == {
        "pickup.address": "contains a NUL character (U+0000), which is not allowed"}
    rides = await api.get("/api/v1/rides", headers=bearer(customer["accessToken"]))
    assert rides.json()["items"] == []


async def test_a_nul_in_a_login_or_a_query_is_a_400(api: Client, accounts: Accounts) -> None:
    login = await api.post("/api/v1/auth/login",
                           json={"email": f"x{NUL}@example.com", "password": "whatever"})
    assert login.status_code == 400 and error_code(login) == "VALIDATION_ERROR"

    admin = await accounts.admin()
    listed = await api.get("/api/v1/admin/jobs/failed?actor=pay%00ments",
                           headers=bearer(admin["accessToken"]))
    assert listed.status_code == 400 and error_code(listed) == "VALIDATION_ERROR"


async def test_the_text_backslash_u0000_is_not_a_nul_and_is_kept(api: Client, accounts: Accounts) -> None:
    # Given a customer whose ride notes quote the six characters \u0000 (JSON: "\\u0000")
    await ensure_region(api)
    customer = await accounts.register("customer")
    body = ride_body(notes="escape: \\u0000 stays text")

    response = await api.post("/api/v1/rides", json=body, headers=bearer(customer["accessToken"]))

    assert response.status_code == 201, response.text
    assert response.json()["notes"] == "escape: \\u0000 stays text"


@pytest.mark.parametrize("fields", [{"phone": "+4917012345678\n"}, {"email": "nl@example.com\n"}])
async def test_a_trailing_newline_does_not_pass_a_pattern(api: Client, fields: dict[str, str]) -> None:
    response = await api.post("/api/v1/auth/register", json=register_body(**fields))

    assert response.status_code == 400, response.text
    assert error_code(response) == "VALIDATION_ERROR"
    assert list(response.json()["error"]["details"]) == list(fields)


async def test_a_trailing_newline_in_a_region_or_a_currency_is_refused(
    api: Client, accounts: Accounts
) -> None:
    await ensure_region(api)
    customer = await accounts.register("customer")
    response = await api.post("/api/v1/rides", json=ride_body(region="BER\n"),
                              headers=bearer(customer["accessToken"]))
    assert response.status_code == 400 and "region" in response.json()["error"]["details"]

    ride = (await api.post("/api/v1/rides", json=ride_body(), headers=bearer(customer["accessToken"]))).json()
    driver = await accounts.register("driver")
    bid = await api.post(f"/api/v1/rides/{ride['id']}/bids",
                         json={"price": {"amount": 1500, "currency": "EUR\n"}, "etaMinutes": 5},
                         headers=bearer(driver["accessToken"]))
    assert bid.status_code == 400, bid.text
    assert error_code(bid) == "VALIDATION_ERROR"


async def test_a_duration_too_large_for_a_date_is_a_400(api: Client, accounts: Accounts) -> None:
    admin = await accounts.admin()
    for since in ("99999999999999999w", "9" * 30 + "d", "99999999999d"):
        response = await api.get("/api/v1/admin/jobs/failed", params={"since": since},
                                 headers=bearer(admin["accessToken"]))
        assert response.status_code == 400, (since, response.text)
        assert response.json()["error"]["details"] == {"since": since}


EXPECTED_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "frame-ancestors 'none'",
}


async def test_every_answer_carries_the_security_headers(api: Client, accounts: Accounts) -> None:
    customer = await accounts.register("customer")
    answers = [
        await api.get("/health"),  # 200
        await api.get("/api/v1/me", headers=bearer(customer["accessToken"])),  # 200, authenticated
        await api.get("/api/v1/me"),  # 401
        await api.get("/api/v1/no-such-route"),  # 404 from the router
        await api.post("/api/v1/auth/login", json={"email": 1}),  # 400
        await api.get("/schema/openapi.json"),
    ]
    for response in answers:
        for name, value in EXPECTED_HEADERS.items():
            assert response.headers.get(name) == value, (response.request.url, name, response.status_code)
        # Plain HTTP: no HSTS (it would mean nothing, and pins nothing)
        assert "strict-transport-security" not in response.headers


async def test_hsts_is_sent_when_served_over_tls(api: Client) -> None:
    response = await api.get("/health", headers={"X-Forwarded-Proto": "https"})

    assert response.headers["strict-transport-security"] == "max-age=31536000"
