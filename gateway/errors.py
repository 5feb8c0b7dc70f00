"""The exception tree of the gateway. Each error knows its HTTP status and code; the error middleware turns any of
them (and aiohttp's own HTTP exceptions) into the one JSON error shape."""

from __future__ import annotations

from collections.abc import Mapping


class ApiError(Exception):
    status = 500
    code = "internal_error"
    message = "Internal server error"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        details: object = None,
    ) -> None:
        super().__init__(message or self.message)
        if message is not None:
            self.message = message
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})
        self.details = details


class BadRequest(ApiError):
    status = 400
    code = "bad_request"
    message = "The request is not valid"


class ValidationFailed(BadRequest):
    status = 422
    code = "validation_failed"
    message = "The request body is not valid"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"
    message = "Authentication required"

    def __init__(self, message: str | None = None, *, code: str | None = None, error: str = "invalid_token") -> None:
        super().__init__(message, code=code, headers={"WWW-Authenticate": f'Bearer error="{error}"'})


class Forbidden(ApiError):
    status = 403
    code = "forbidden"
    message = "Not allowed"


class NotFound(ApiError):
    status = 404
    code = "not_found"
    message = "Not found"


class Conflict(ApiError):
    status = 409
    code = "conflict"
    message = "Conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"
    message = "Request body too large"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"
    message = "Too many requests"


class BadGateway(ApiError):
    status = 502
    code = "upstream_error"
    message = "The payment provider failed"


class ServiceUnavailable(ApiError):
    status = 503
    code = "service_unavailable"
    message = "Service temporarily unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    message = "Database unavailable, retry later"

    def __init__(self, message: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
