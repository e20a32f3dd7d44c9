"""One table from exception to gRPC status, used by every handler (Act, ActStream, admin, ...).

A handler raises; :func:`status_of` says which status code and message the client gets. Anything not
in the table is a bug in the runtime: INTERNAL, logged with its traceback (a test throws generated
requests at a live server and fails on INTERNAL or UNKNOWN).
"""

from __future__ import annotations

import grpc

from runtime.deployment import DeploymentError, UnknownAgents
from runtime.model import ModelLoadError
from runtime.names import InvalidName
from runtime.repository import ModelNotFound, SignatureChanged


class RequestError(Exception):
    """A request the runtime refuses, with its status code and the field at fault."""

    def __init__(self, code: grpc.StatusCode, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.code, self.field = code, field


def invalid(field: str, message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, field, message)


class Undecodable(Exception):
    """Request bytes that do not parse as the method's message (the deserializer hands this on)."""

    def __init__(self, message_type: str, size: int, why: str):
        super().__init__(f"request: {size} bytes do not decode as {message_type} ({why})")
        self.field = "request"


class Oversized(Undecodable):
    """Request bytes above ``max_message_bytes`` (the deserializer hands this on, so it is counted)."""

    def __init__(self, message_type: str, size: int, limit: int):
        Exception.__init__(self, f"request: {size} bytes exceed max_message_bytes={limit} ({message_type})")
        self.field = "request"


_S = grpc.StatusCode
# (exception type, status code, message prefix); the first match wins, so subclasses come first.
TABLE: tuple[tuple[type[BaseException], grpc.StatusCode, str], ...] = (
    (InvalidName, _S.INVALID_ARGUMENT, ""),
    (Oversized, _S.RESOURCE_EXHAUSTED, ""),
    (Undecodable, _S.INVALID_ARGUMENT, ""),
    (UnknownAgents, _S.INVALID_ARGUMENT, ""),
    (ModelNotFound, _S.NOT_FOUND, ""),
    (SignatureChanged, _S.FAILED_PRECONDITION, "the served version keeps serving: "),
    (ModelLoadError, _S.FAILED_PRECONDITION, "version rejected, old version keeps serving: "),
    (DeploymentError, _S.FAILED_PRECONDITION, ""),
)


def status_of(err: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client gets for ``err`` (INTERNAL for anything unexpected)."""
    if isinstance(err, RequestError):
        return err.code, str(err)
    for kind, code, prefix in TABLE:
        if isinstance(err, kind):
            return code, prefix + str(err)
    return _S.INTERNAL, f"internal error: {type(err).__name__}"


def field_of(err: BaseException) -> str:
    """The request field an INVALID_ARGUMENT names, reduced to its top-level name (a bounded label)."""
    field = getattr(err, "field", "") or "request"
    return field.split("[")[0].split(".")[0]
