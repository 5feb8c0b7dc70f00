"""The local fake of Stripe's API (tests/fakes/stripe_api.py), driven by the official SDK's async client."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import stripe

from gateway.settings import DEFAULT_STRIPE_API_VERSION
from tests import stripe_events as se
from tests.fakes.stripe_api import FakeStripe, close_sdk_client, decode_stripe_params

API_KEY = "sk_test_fakestripe123"


@pytest.fixture
async def client(fake_stripe: FakeStripe) -> AsyncIterator[stripe.StripeClient]:
    sdk = stripe.StripeClient(
        API_KEY,
        base_addresses={"api": fake_stripe.base_url},
        http_client=stripe.AIOHTTPClient(),
        stripe_version=DEFAULT_STRIPE_API_VERSION,
        max_network_retries=0,
    )
    yield sdk
    await close_sdk_client(sdk)


def session_params(order_id: str, *, unit_amount: int = 1999, quantity: int = 2) -> dict[str, Any]:
    return {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": "eur",
                    "unit_amount": unit_amount,
                    "product_data": {"name": "Widget"},
                },
                "quantity": quantity,
            }
        ],
        "client_reference_id": "user-1",
        "metadata": {"order_id": order_id},
        "payment_intent_data": {"metadata": {"order_id": order_id}},
        "success_url": "https://shop.example/ok?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://shop.example/cancel",
    }


async def test_create_session_records_request_and_decodes_params(
    fake_stripe: FakeStripe, client: stripe.StripeClient
) -> None:
    order = str(uuid.uuid4())
    session = await client.v1.checkout.sessions.create_async(
        params=session_params(order), options={"idempotency_key": f"checkout:{order}"}
    )
    assert session.id.startswith("cs_test_")
    assert session.url == f"https://checkout.stripe.com/c/pay/{session.id}"
    assert session.status == "open" and session.payment_status == "unpaid"
    assert session.amount_total == 3998 and session.currency == "eur"
    assert session.metadata["order_id"] == order
    assert session.client_reference_id == "user-1"
    assert session.expires_at > session.created

    (req,) = fake_stripe.requests_to("POST", "/v1/checkout/sessions")
    assert req.idempotency_key == f"checkout:{order}"
    assert req.stripe_version == DEFAULT_STRIPE_API_VERSION
    assert req.authorization == f"Bearer {API_KEY}"
    assert req.params["line_items"][0]["price_data"]["unit_amount"] == "1999"
    assert req.params["line_items"][0]["price_data"]["product_data"] == {"name": "Widget"}
    assert req.params["payment_intent_data"] == {"metadata": {"order_id": order}}
    assert req.params["metadata"] == {"order_id": order}


async def test_same_idempotency_key_gives_same_session(fake_stripe: FakeStripe, client: stripe.StripeClient) -> None:
    order = str(uuid.uuid4())
    key = f"checkout:{order}"
    first = await client.v1.checkout.sessions.create_async(
        params=session_params(order), options={"idempotency_key": key}
    )
    second = await client.v1.checkout.sessions.create_async(
        params=session_params(order), options={"idempotency_key": key}
    )
    assert second.id == first.id
    assert second.to_dict() == first.to_dict()
    assert len(fake_stripe.sessions) == 1
    assert len(fake_stripe.requests_to("POST", "/v1/checkout/sessions")) == 2
    # Another key creates another session.
    third = await client.v1.checkout.sessions.create_async(
        params=session_params(order), options={"idempotency_key": key + ":2"}
    )
    assert third.id != first.id


async def test_same_key_other_params_is_an_idempotency_error(client: stripe.StripeClient) -> None:
    order = str(uuid.uuid4())
    await client.v1.checkout.sessions.create_async(params=session_params(order), options={"idempotency_key": "k1"})
    with pytest.raises(stripe.IdempotencyError):
        await client.v1.checkout.sessions.create_async(
            params=session_params(order, quantity=3), options={"idempotency_key": "k1"}
        )


async def test_forced_500_surfaces_as_api_error(fake_stripe: FakeStripe, client: stripe.StripeClient) -> None:
    order = str(uuid.uuid4())
    fake_stripe.fail_next(1, status=500)
    with pytest.raises(stripe.APIError) as info:
        await client.v1.checkout.sessions.create_async(
            params=session_params(order), options={"idempotency_key": f"checkout:{order}"}
        )
    assert info.value.http_status == 500
    assert not fake_stripe.sessions
    # The failure was not stored under the key: the retry with the same key creates the session.
    session = await client.v1.checkout.sessions.create_async(
        params=session_params(order), options={"idempotency_key": f"checkout:{order}"}
    )
    assert session.id in fake_stripe.sessions


async def test_sdk_retries_reuse_the_idempotency_key(fake_stripe: FakeStripe) -> None:
    sdk = fake_stripe.sdk_client(API_KEY, max_network_retries=2)
    try:
        fake_stripe.fail_next(1, status=500, path="/v1/checkout/sessions")
        session = await sdk.v1.checkout.sessions.create_async(params=session_params(str(uuid.uuid4())))
    finally:
        await close_sdk_client(sdk)
    attempts = fake_stripe.requests_to("POST", "/v1/checkout/sessions")
    assert len(attempts) == 2
    assert attempts[0].idempotency_key and attempts[0].idempotency_key == attempts[1].idempotency_key
    assert list(fake_stripe.sessions) == [session.id]


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, stripe.InvalidRequestError),
        (401, stripe.AuthenticationError),
        (402, stripe.CardError),
        (429, stripe.RateLimitError),
        (503, stripe.APIError),
    ],
)
async def test_forced_errors_map_to_sdk_classes(
    fake_stripe: FakeStripe, client: stripe.StripeClient, status: int, error_class: type[Exception]
) -> None:
    fake_stripe.fail_next(2, status=status, method="GET", path="/v1/events*")
    for _ in range(2):
        with pytest.raises(error_class):
            await client.v1.events.list_async()
    page = await client.v1.events.list_async()  # the third call is answered normally
    assert page.data == []


async def test_slow_answer_times_out_in_the_sdk(fake_stripe: FakeStripe) -> None:
    sdk = stripe.StripeClient(
        API_KEY,
        base_addresses={"api": fake_stripe.base_url},
        http_client=stripe.AIOHTTPClient(timeout=0.2),
        stripe_version=DEFAULT_STRIPE_API_VERSION,
        max_network_retries=0,
    )
    try:
        fake_stripe.delay_next(1, 2.0)
        with pytest.raises(stripe.APIConnectionError):
            await sdk.v1.events.list_async()
        page = await sdk.v1.events.list_async()  # not delayed any more
        assert page.data == []
    finally:
        await close_sdk_client(sdk)


async def test_concurrent_request_with_same_key_gets_409(fake_stripe: FakeStripe) -> None:
    fake_stripe.delay_next(1, 1.0, path="/v1/checkout/sessions")
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": "same"}
    form = {
        "mode": "payment",
        "line_items[0][price_data][currency]": "eur",
        "line_items[0][price_data][unit_amount]": "100",
        "line_items[0][quantity]": "1",
    }
    async with aiohttp.ClientSession() as http:
        first = asyncio.create_task(
            http.post(fake_stripe.base_url + "/v1/checkout/sessions", data=form, headers=headers)
        )
        async with asyncio.timeout(5):
            await fake_stripe.wait_for_requests(1)  # the first request is inside the fake (and delayed)
        async with http.post(fake_stripe.base_url + "/v1/checkout/sessions", data=form, headers=headers) as resp:
            assert resp.status == 409
            assert (await resp.json())["error"]["type"] == "idempotency_error"
        first_resp = await first
        assert first_resp.status == 200
        first_resp.release()
        async with http.post(fake_stripe.base_url + "/v1/checkout/sessions", data=form, headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Idempotent-Replayed"] == "true"


async def test_retrieve_and_expire_session(fake_stripe: FakeStripe, client: stripe.StripeClient) -> None:
    created = await client.v1.checkout.sessions.create_async(params=session_params(str(uuid.uuid4())))
    fetched = await client.v1.checkout.sessions.retrieve_async(created.id)
    assert fetched.id == created.id and fetched.status == "open"
    expired = await client.v1.checkout.sessions.expire_async(created.id)
    assert expired.status == "expired" and expired.url is None
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.checkout.sessions.expire_async(created.id)
    with pytest.raises(stripe.InvalidRequestError) as info:
        await client.v1.checkout.sessions.retrieve_async("cs_test_missing")
    assert info.value.http_status == 404
    assert info.value.code == "resource_missing"


async def test_complete_session_helper(fake_stripe: FakeStripe, client: stripe.StripeClient) -> None:
    created = await client.v1.checkout.sessions.create_async(params=session_params(str(uuid.uuid4())))
    done = fake_stripe.complete_session(created.id, payment_intent="pi_test_1")
    assert done["status"] == "complete" and done["payment_status"] == "paid"
    fetched = await client.v1.checkout.sessions.retrieve_async(created.id)
    assert fetched.payment_intent == "pi_test_1"


async def test_expires_at_window_and_validation(fake_stripe: FakeStripe, client: stripe.StripeClient) -> None:
    params = session_params(str(uuid.uuid4()))
    with pytest.raises(stripe.InvalidRequestError) as info:
        await client.v1.checkout.sessions.create_async(params={**params, "expires_at": 1})
    assert info.value.param == "expires_at"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await client.v1.checkout.sessions.create_async(params={k: v for k, v in params.items() if k != "mode"})
    assert missing.value.param == "mode"
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.checkout.sessions.create_async(
            params={**params, "line_items": [{"price": "price_unknown", "quantity": 1}]}
        )
    fake_stripe.add_price("price_known", 500, "eur")
    ok = await client.v1.checkout.sessions.create_async(
        params={**params, "line_items": [{"price": "price_known", "quantity": 3}]}
    )
    assert ok.amount_total == 1500


def preload_events(fake: FakeStripe, count: int, *, start: int = 1_700_000_000) -> list[dict[str, Any]]:
    events = []
    for i in range(count):
        order = str(uuid.uuid4())
        kind = "checkout.session.completed" if i % 2 == 0 else "payment_intent.succeeded"
        obj = se.checkout_session(order) if i % 2 == 0 else se.payment_intent(order)
        # Two events per second on purpose: ties on `created` must still paginate without loss or repeat.
        event = se.make_event(kind, obj, event_id=f"evt_{i:04d}", created=start + i // 2)
        events.append(event)
        fake.add_event(event)
    return events


async def test_events_listing_pagination(fake_stripe: FakeStripe, client: stripe.StripeClient) -> None:
    events = preload_events(fake_stripe, 25)
    seen: list[str] = []
    page = await client.v1.events.list_async(params={"limit": 10})
    pages = 1
    while True:
        seen.extend(e.id for e in page.data)
        if not page.has_more:
            break
        page = await client.v1.events.list_async(params={"limit": 10, "starting_after": page.data[-1].id})
        pages += 1
    assert pages == 3
    assert sorted(seen) == sorted(e["id"] for e in events)
    assert len(seen) == len(set(seen))
    created = [fake_stripe._event(i)["created"] for i in seen]
    assert created == sorted(created, reverse=True)  # newest first

    # The SDK's async auto-pagination walks the same list.
    first = await client.v1.events.list_async(params={"limit": 7})
    walked = [e.id async for e in first.auto_paging_iter()]
    assert walked == seen

    request = fake_stripe.requests_to("GET", "/v1/events")[1]
    assert request.query == {"limit": "10", "starting_after": seen[9]}


async def test_events_listing_filters(fake_stripe: FakeStripe, client: stripe.StripeClient) -> None:
    preload_events(fake_stripe, 20, start=1_700_000_000)
    recent = await client.v1.events.list_async(params={"created": {"gte": 1_700_000_005}, "limit": 100})
    assert {e.created for e in recent.data} == set(range(1_700_000_005, 1_700_000_010))
    assert len(recent.data) == 10 and not recent.has_more
    window = await client.v1.events.list_async(params={"created": {"gt": 1_700_000_001, "lte": 1_700_000_003}})
    assert {e.created for e in window.data} == {1_700_000_002, 1_700_000_003}
    typed = await client.v1.events.list_async(params={"type": "payment_intent.succeeded", "limit": 100})
    assert len(typed.data) == 10 and all(e.type == "payment_intent.succeeded" for e in typed.data)
    wildcard = await client.v1.events.list_async(params={"types": ["checkout.session.*"], "limit": 100})
    assert len(wildcard.data) == 10
    req = fake_stripe.requests_to("GET", "/v1/events")[0]
    assert req.query["created"] == {"gte": "1700000005"}
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.events.list_async(params={"starting_after": "evt_unknown"})
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.events.list_async(params={"limit": 101})


async def test_events_retrieve(fake_stripe: FakeStripe, client: stripe.StripeClient) -> None:
    fixture = se.load_fixture("stripe-events/sync-engine/charge.dispute.created__2020-03-02_3KtQThJDPo.json")
    fake_stripe.add_event(fixture)
    event = await client.v1.events.retrieve_async(fixture["id"])
    assert event.type == "charge.dispute.created"
    assert event.data.object.id == fixture["data"]["object"]["id"]
    with pytest.raises(stripe.InvalidRequestError) as info:
        await client.v1.events.retrieve_async("evt_missing")
    assert info.value.http_status == 404


async def test_unauthenticated_and_unknown_route(fake_stripe: FakeStripe) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(fake_stripe.base_url + "/v1/events") as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["type"] == "invalid_request_error"
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with http.get(fake_stripe.base_url + "/v1/customers", headers=headers) as resp:
            assert resp.status == 404
            assert "Unrecognized request URL" in (await resp.json())["error"]["message"]


def test_decode_stripe_params() -> None:
    pairs = [
        ("mode", "payment"),
        ("line_items[0][price]", "price_1"),
        ("line_items[0][quantity]", "2"),
        ("line_items[1][price_data][currency]", "eur"),
        ("metadata[order_id]", "o-1"),
        ("metadata[empty]", ""),
        ("expand[]", "payment_intent"),
        ("expand[]", "customer"),
        ("created[gte]", "10"),
    ]
    assert decode_stripe_params(pairs) == {
        "mode": "payment",
        "line_items": [{"price": "price_1", "quantity": "2"}, {"price_data": {"currency": "eur"}}],
        "metadata": {"order_id": "o-1", "empty": ""},
        "expand": ["payment_intent", "customer"],
        "created": {"gte": "10"},
    }


# ---- webhook endpoints, objects, 429 with Retry-After


async def test_webhook_endpoints_secret_only_on_create(fake_stripe: FakeStripe, client: stripe.StripeClient) -> None:
    created = await client.v1.webhook_endpoints.create_async(
        params={
            "url": "https://pay.example.com/stripe/webhook",
            "enabled_events": ["charge.refunded", "checkout.session.completed"],
            "api_version": "2025-03-31.basil",  # type: ignore[typeddict-item]
        }
    )
    assert created.secret.startswith("whsec_") and created.status == "enabled"
    fetched = await client.v1.webhook_endpoints.retrieve_async(created.id)
    assert fetched.api_version == "2025-03-31.basil" and "secret" not in fetched.to_dict()
    listed = await client.v1.webhook_endpoints.list_async()
    assert [e.id for e in listed.data] == [created.id] and "secret" not in listed.data[0].to_dict()

    updated = await client.v1.webhook_endpoints.update_async(
        created.id, params={"disabled": True, "enabled_events": ["charge.refunded"]}
    )
    assert updated.status == "disabled" and updated.enabled_events == ["charge.refunded"]
    with pytest.raises(stripe.InvalidRequestError, match="unknown parameter: api_version"):
        await client.v1.webhook_endpoints.update_async(
            created.id,
            params={"api_version": "2020-08-27"},  # type: ignore[typeddict-unknown-key]
        )
    with pytest.raises(stripe.InvalidRequestError, match="Missing required param: enabled_events"):
        await client.v1.webhook_endpoints.create_async(params={"url": "https://x.example/h"})  # type: ignore[typeddict-item]
    deleted = await client.v1.webhook_endpoints.delete_async(created.id)
    assert deleted.deleted is True and fake_stripe.webhook_endpoints == {}


async def test_events_types_filter_takes_at_most_20(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError, match="at most 20"):
        await client.v1.events.list_async(params={"types": [f"a.b{i}" for i in range(21)]})


async def test_objects_retrieve_list_and_expand(fake_stripe: FakeStripe, client: stripe.StripeClient) -> None:
    live = se.subscription(price_id="price_a", customer="cus_a")
    ended = se.subscription(price_id="price_a", customer="cus_a", status="canceled")
    fake_stripe.store_subscription(live)
    fake_stripe.store_subscription(ended)
    fake_stripe.store_subscription(se.subscription(price_id="price_a", customer="cus_b"))
    default = await client.v1.subscriptions.list_async(params={"customer": "cus_a"})
    assert [s.id for s in default.data] == [live["id"]]  # canceled ones only with status=all, as Stripe
    every = await client.v1.subscriptions.list_async(params={"customer": "cus_a", "status": "all"})
    assert sorted(s.id for s in every.data) == sorted([live["id"], ended["id"]])
    assert (await client.v1.subscriptions.retrieve_async(ended["id"])).status == "canceled"

    charge = se.charge(None, 500)
    intent = se.payment_intent(None, 500, charge_id=charge["id"])
    fake_stripe.store_charge(charge)
    fake_stripe.store_payment_intent(intent)
    plain = await client.v1.payment_intents.retrieve_async(intent["id"])
    assert plain.latest_charge == charge["id"]
    expanded = await client.v1.payment_intents.retrieve_async(intent["id"], params={"expand": ["latest_charge"]})
    assert expanded.to_dict()["latest_charge"]["id"] == charge["id"]
    with pytest.raises(stripe.InvalidRequestError, match="No such subscription"):
        await client.v1.subscriptions.retrieve_async("sub_missing")


async def test_429_carries_retry_after(fake_stripe: FakeStripe, client: stripe.StripeClient) -> None:
    fake_stripe.fail_next(1, status=429, path="/v1/events", retry_after=12)
    with pytest.raises(stripe.RateLimitError) as raised:
        await client.v1.events.list_async()
    assert raised.value.http_status == 429 and raised.value.headers["Retry-After"] == "12"
