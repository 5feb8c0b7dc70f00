"""Rate limiting by route policy: one token of the client's bucket per request, 429 when the bucket is empty.

The client is the resolved IP (IPv6 by /64) set by the request-id middleware, or for user-keyed policies the
verified user id when the request has one. Answers carry the RateLimit-Policy / RateLimit headers of
draft-ietf-httpapi-ratelimit-headers; a refusal also carries Retry-After.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway import client_address, context, keys, metrics
from gateway.auth import identity
from gateway.errors import ApiError, RateLimited
from gateway.ratelimit.policies import Policy, ratelimit_header, retry_after_seconds
from gateway.routing import options_for

log = logging.getLogger("gateway.ratelimit")

WEBHOOK_POLICY = "webhook"
WEBHOOK_LIMITED_MESSAGE = "Webhook rate limit exceeded (429)"


async def client_for(request: web.Request, policy: Policy) -> str:
    if policy.key_by == "user":
        user_id = await identity.identify(request)
        if user_id is not None:
            return "user:" + user_id
    return "ip:" + client_address.rate_limit_key(context.get_context(request).client_ip)


def rate_limit_middleware() -> Middleware:
    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        policy_name = options_for(request).rate_limit
        if policy_name is None:
            return await handler(request)
        limiter = request.config_dict[keys.RATE_LIMITER]  # the app of the route, or a parent app
        policy = limiter.policy(policy_name)
        decision = await limiter.check(policy, await client_for(request, policy))
        if decision is None:  # the store is down and RATE_LIMIT_FAIL_OPEN lets the request through
            return await handler(request)
        headers = {
            "RateLimit-Policy": policy.policy_header(),
            "RateLimit": ratelimit_header(policy, decision),
        }
        if not decision.allowed:
            metrics.RATE_LIMITED.labels(policy.name).inc()
            route = context.get_context(request).route
            extra = {"code": RateLimited.code, "status": RateLimited.status, "route": route}
            if policy.name == WEBHOOK_POLICY:
                log.warning(WEBHOOK_LIMITED_MESSAGE, extra=extra)
            else:
                log.info("Rate limit exceeded", extra={**extra, "reason": policy.name})
            headers["Retry-After"] = str(retry_after_seconds(decision))
            raise RateLimited(headers=headers)
        try:
            response = await handler(request)
        except ApiError as exc:  # the error middleware builds that answer: hand it the headers
            exc.headers.update(headers)
            raise
        if not response.prepared:
            response.headers.update(headers)
        return response

    return rate_limit
