"""Security headers for a JSON API on every answer (helmet-like).

The outermost layer (`request_id`) stamps them on every answer that comes out of the stack, the error mapper's
included, and on redirects raised as exceptions. A handler that streams (prepares its own response) must call
`apply` before `prepare()`.
"""

from __future__ import annotations

from multidict import CIMultiDict, istr

STATIC_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # aiohttp adds its name and version only when the header is missing.
    "Server": "",
}
HSTS = "max-age=63072000; includeSubDomains"

CACHE_CONTROL = istr("Cache-Control")
VARY = istr("Vary")
STRICT_TRANSPORT_SECURITY = istr("Strict-Transport-Security")
_MARKER = istr("X-Content-Type-Options")  # present: the answer started from JSON_DEFAULTS
# Built once: updating from (or copying) a CIMultiDict takes its keys as they are.
_STATIC = CIMultiDict(STATIC_HEADERS)
_STATIC_NOT_STORED = CIMultiDict({**STATIC_HEADERS, CACHE_CONTROL: "no-store", VARY: "Origin"})
# What every JSON answer starts from (gateway.responses.json_response): the static headers and the defaults
# below, one copy of a ready dict; `apply` then only completes it. A handler's own headers are merged over it.
JSON_DEFAULTS = CIMultiDict({**_STATIC_NOT_STORED, "Content-Type": "application/json"})


def apply(headers: CIMultiDict[str], *, secure: bool, authenticated: bool) -> None:
    """Complete an answer's headers with the security headers.

    `Cache-Control: no-store` unless a public answer chose its own cache policy (an authenticated answer is
    never stored); `Vary: Origin` always, after any Vary the handler set; HSTS when the request came over HTTPS.
    """
    if _MARKER not in headers:  # not built by json_response: a preflight, a redirect, a 304 ...
        if CACHE_CONTROL not in headers and VARY not in headers:
            headers.update(_STATIC_NOT_STORED)
            authenticated = False  # no-store is set
        else:
            headers.update(_STATIC)
            if CACHE_CONTROL not in headers:
                headers[CACHE_CONTROL] = "no-store"
    if authenticated:
        headers[CACHE_CONTROL] = "no-store"
    vary = headers.get(VARY)
    if not vary:
        headers[VARY] = "Origin"
    elif vary != "Origin" and "origin" not in vary.lower():
        headers[VARY] = f"{vary}, Origin"
    if secure:
        headers[STRICT_TRANSPORT_SECURITY] = HSTS
