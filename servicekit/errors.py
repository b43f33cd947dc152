"""Domain errors. Code raises these; one interceptor (servicekit.edge) turns them into gRPC
statuses with google.rpc details. Nothing else decides a status code."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

# How much of a value an error message quotes (errors.shown).
QUOTE_CHARS = 100


def shown(value: object, limit: int = QUOTE_CHARS) -> str:
    """A value as an error message quotes it: repr of at most its first `limit` characters,
    and its length when it is longer ('aaaa…' (4194304 characters)). Never the whole of
    something a client sent: an error must fit in a response's trailers."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class ServiceError(Exception):
    """Base of every error a client may see. `reason` becomes google.rpc.ErrorInfo.reason."""

    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        violations: list[FieldViolation] | FieldViolation,
        message: str | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        self.violations = violations if isinstance(violations, list) else [violations]
        text = message or "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(text, reason=reason)

    def within(self, prefix: str) -> InvalidArgument:
        """The same violations, named from an enclosing message: a check that names
        `page.slug` raised for item 3 of a batch becomes `requests[3].page.slug`."""
        return InvalidArgument(
            [FieldViolation(prefix + v.field, v.description) for v in self.violations],
            reason=self.reason,
        )


def invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(FieldViolation(field, description))


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"

    def __init__(self, resource: str, key: str) -> None:
        super().__init__(f"{resource} {shown(key)} not found")
        self.resource = resource


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Aborted(ServiceError):
    code = grpc.StatusCode.ABORTED
    reason = "ABORTED"


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"
