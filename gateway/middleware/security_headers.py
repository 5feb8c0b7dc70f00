"""Security headers for a JSON API on every answer (helmet-like).

Installed as an `on_response_prepare` signal rather than a middleware so that the answers built by the error
mapper (which sits outside every other middleware) carry them too.
"""

from __future__ import annotations

from aiohttp import web

from gateway import context

STATIC_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Permitted-Cross-Domain-Policies": "none",
    # aiohttp adds its name and version only when the header is missing.
    "Server": "",
}
HSTS = "max-age=63072000; includeSubDomains"


async def apply_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    ctx = request.get(context.CONTEXT_KEY)
    response.headers.update(STATIC_HEADERS)
    if ctx is not None and ctx.secure:
        response.headers["Strict-Transport-Security"] = HSTS
    if (ctx is not None and ctx.authenticated) or "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"
    vary = response.headers.get("Vary", "")
    if "origin" not in vary.lower():
        response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"


def install(app: web.Application) -> None:
    app.on_response_prepare.append(apply_security_headers)
