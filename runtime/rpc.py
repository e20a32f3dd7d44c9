"""How every RPC is run: decode the bytes, call the handler, map what it raises to a status, count it.

gRPC's generated registration parses request bytes before the handler runs, and a parse failure
becomes UNKNOWN with a traceback per call. :func:`add_service` registers a servicer with a
deserializer that hands undecodable bytes to the handler as :class:`~runtime.errors.Undecodable`
instead, so they get INVALID_ARGUMENT (one warning line, counted) like any other bad field. Requests
above ``max_message_bytes`` arrive as :class:`~runtime.errors.Oversized` (RESOURCE_EXHAUSTED, counted);
gRPC's own limit sits at :data:`GRPC_LIMIT_FACTOR` times it, so only larger ones are refused uncounted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf.message_factory import GetMessageClass

from runtime.errors import Oversized, Undecodable, field_of, status_of
from runtime.metrics import Metrics

log = logging.getLogger("inspo.runtime.rpc")
UNKNOWN_MODEL = "_unknown"  # the one label value every model name the server does not know shares
GRPC_LIMIT_FACTOR = 4  # gRPC's receive limit, in multiples of max_message_bytes (see the module docstring)


def deserializer(cls, max_bytes: int | None = None) -> Callable[[bytes], object]:
    parse = cls.FromString
    name = cls.DESCRIPTOR.name

    def decode(data: bytes):
        if max_bytes is not None and len(data) > max_bytes:
            return Oversized(name, len(data), max_bytes)
        try:
            return parse(data)
        except Exception as err:  # noqa: BLE001 - DecodeError and friends: a client error, not ours
            return Undecodable(name, len(data), type(err).__name__)

    return decode


def add_service(server: grpc.aio.Server, servicer, descriptor, max_bytes: int | None = None) -> None:
    """Register ``servicer``'s methods for the service ``descriptor`` with the tolerant deserializer."""
    handlers = {}
    for method in descriptor.methods:
        request_cls, response_cls = GetMessageClass(method.input_type), GetMessageClass(method.output_type)
        kind = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = kind(
            getattr(servicer, method.name),
            request_deserializer=deserializer(request_cls, max_bytes),
            response_serializer=response_cls.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))


class Calls:
    """Runs handlers: status from :mod:`runtime.errors`, and ``requests_total`` with the code returned.

    ``known(name)`` says whether a model name may be a label value; any other name is counted as
    :data:`UNKNOWN_MODEL`, so clients cannot grow the metrics by inventing names.
    """

    def __init__(self, metrics: Metrics, known: Callable[[str], bool]):
        self.metrics, self.known = metrics, known
        self.inflight = 0  # exported by the inflight gauge at scrape time

    def label(self, request) -> str:
        name = getattr(request, "model", "")
        if not name:
            return "-"
        return name if self.known(name) else UNKNOWN_MODEL

    def failed(self, method: str, label: str, err: BaseException) -> tuple[grpc.StatusCode, str]:
        """Map ``err`` to a status, log it the way it deserves and count an invalid request."""
        code, message = status_of(err)
        if code == grpc.StatusCode.INTERNAL:
            log.error("%s failed", method, exc_info=err)
        elif isinstance(err, Undecodable):
            log.warning("%s: %s", method, err)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            self.metrics.invalid.labels(label, field_of(err)).inc()
        return code, message

    async def unary(self, method: str, request, context, fn: Callable[[object, object], Awaitable]):
        """Run ``fn(request, context)``; abort with the mapped status when it raises."""
        started = time.perf_counter()
        label = "-" if isinstance(request, Undecodable) else self.label(request)
        self.inflight += 1
        code, message = grpc.StatusCode.OK, ""
        try:
            if isinstance(request, Undecodable):
                raise request
            return await fn(request, context)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:  # a handler that aborted by itself already set its status
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except Exception as err:  # noqa: BLE001 - every error becomes a status from the table
            code, message = self.failed(method, label, err)
        finally:
            self.inflight -= 1
            self.metrics.request(method, label, code.name).inc()
            self.metrics.duration(method, label).observe(time.perf_counter() - started)
        await context.abort(code, message)
