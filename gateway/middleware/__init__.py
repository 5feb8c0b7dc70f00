"""The middleware stack. Its order is set here and nowhere else (outside in).

Security headers are not in this list: they are added by an `on_response_prepare` signal
(`security_headers.install`) so that the answers built by the outermost error mapper carry them too.
"""

from __future__ import annotations

from aiohttp.typedefs import Middleware

from gateway.middleware.access import access_middleware
from gateway.middleware.auth import auth_middleware
from gateway.middleware.body_limit import body_limit_middleware
from gateway.middleware.cors import cors_preflight_middleware
from gateway.middleware.errors import error_middleware
from gateway.middleware.rate_limit import rate_limit_middleware
from gateway.middleware.request_id import request_id_middleware
from gateway.middleware.trusted_hosts import trusted_hosts_middleware
from gateway.settings import Settings


def build_middlewares(settings: Settings) -> list[Middleware]:
    return [
        request_id_middleware(settings),
        error_middleware(settings),
        access_middleware(settings),
        trusted_hosts_middleware(settings),
        cors_preflight_middleware(),
        rate_limit_middleware(),
        body_limit_middleware(settings),
        auth_middleware(),
    ]
