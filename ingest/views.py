"""The Segment webhook: POST /ingest/segment (PRODUCT.md §2)."""

import hashlib
import hmac
import json
import logging
import zlib

import orjson
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpResponse
from rest_framework import exceptions, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from ingest import ratelimit
from ingest.authentication import REALM, ApiKeyAuthentication
from ingest.bodies import IngestError, check_within_limits, parse_messages
from ingest.openapi import webhook_schema
from ingest.services import Result, record_checked, remember_rejections
from ingest.serializers import COMPACT_JSON, oversized, too_large_message

logger = logging.getLogger(__name__)

JSON_TYPES = ("application/json", "text/json")


def _database_unavailable(exc) -> bool:
    return isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DatabaseError) and "lock" in str(exc).lower()
    )


def _unavailable_answer() -> tuple[dict, int, dict]:
    return (
        {"message": "Database unavailable, retry later"},
        status.HTTP_503_SERVICE_UNAVAILABLE,
        {"Retry-After": str(settings.INGEST_RETRY_AFTER_SECONDS)},
    )


def _error_answer(exc: exceptions.APIException) -> tuple[dict, int, dict]:
    """({"message": ...}, status, headers) for a refusal: every error is JSON."""
    detail = exc.detail
    message = str(detail) if not isinstance(detail, (list, dict)) else json.dumps(detail)
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = REALM
    return {"message": message}, exc.status_code, headers


def exception_handler(exc, context):
    """DRF's answer for the methods it still dispatches (405, OPTIONS); a database
    outage is 503 so Segment retries."""
    if _database_unavailable(exc):
        logger.warning("ingest: database unavailable: %s", exc)
        data, code, headers = _unavailable_answer()
        return Response(data, status=code, headers=headers)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    response.data, _, headers = _error_answer(exc)
    for name, value in headers.items():
        response[name] = value
    return response


def json_answer(data, code: int = 200, headers=None) -> HttpResponse:
    """What DRF's JSONRenderer would write (compact UTF-8), without its machinery: by
    orjson, which writes the same bytes for the answers' strings, numbers and lists, in a
    fraction of the time, or by the json module for what orjson refuses."""
    try:
        body = orjson.dumps(data)
    except TypeError:
        body = COMPACT_JSON.encode(data).encode()
    response = HttpResponse(body, status=code, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return not media or media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


def read_body(request) -> bytes:
    """The raw body as sent, within the size cap (before any decompression)."""
    cap = settings.INGEST_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise IngestError(400, "Invalid Content-Length") from None
    if declared > cap:
        raise IngestError(413, f"Body larger than {cap} bytes")
    stream = request
    if not declared and request.META.get("wsgi.input_terminated"):
        # A chunked body has no Content-Length, and Django would read it as empty; the
        # server (gunicorn) marks its input as ending where the body ends.
        stream = request.META["wsgi.input"]
    body = stream.read(cap + 1)
    if len(body) > cap:
        raise IngestError(413, f"Body larger than {cap} bytes")
    return body


def decode_body(request, body: bytes) -> bytes:
    """Undo Content-Encoding, with the size cap applied to the decompressed bytes."""
    encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise IngestError(415, f"Unsupported Content-Encoding {encoding!r}: use gzip or none")
    cap = settings.INGEST_MAX_BODY_BYTES
    # wbits 47 reads a gzip or zlib header; decompressing at most cap + 1 bytes keeps a
    # gzip bomb from ever being expanded in memory.
    inflater = zlib.decompressobj(47) if encoding != "deflate" else zlib.decompressobj()
    try:
        data = inflater.decompress(body, cap + 1)
    except zlib.error:
        raise IngestError(400, f"Body is not valid {encoding} data") from None
    if len(data) > cap or inflater.unconsumed_tail:
        raise IngestError(413, f"Decompressed body larger than {cap} bytes")
    return data


def check_signature(workspace, raw_body: bytes, request) -> None:
    if not workspace.signing_secret:
        return
    sent = request.META.get("HTTP_X_SIGNATURE", "").strip().lower()
    if not sent:
        raise exceptions.AuthenticationFailed("Missing X-Signature")
    expected = hmac.new(workspace.signing_secret.encode(), raw_body, hashlib.sha1).hexdigest()
    # Compared as bytes: a header may carry any Latin-1 character, and compare_digest
    # refuses non-ASCII str.
    if not hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), expected.encode()):
        raise exceptions.AuthenticationFailed("Invalid X-Signature")


def remember_request_rejection(workspace, body: bytes, error) -> None:
    # The body as decoded, when it got that far (a gzipped body's bytes say nothing).
    excerpt = body[:1000].decode("utf-8", "replace")
    result = Result(status="rejected", code=error.status_code, message=str(error.detail))
    remember_rejections(workspace=workspace, rejected=[(result, excerpt)])


def ingest_within_limits(*, workspace, messages, measured=False) -> list[Result]:
    """check_within_limits, then the valid messages recorded."""
    return record_checked(workspace=workspace, checked=check_within_limits(messages, measured))


class AlwaysJson(BaseContentNegotiation):
    """The answer is JSON whatever Accept says: a 406 would make Segment drop the message."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class SegmentWebhook(APIView):
    """DRF describes the endpoint (OpenAPI) and answers the other methods (405, OPTIONS);
    a POST is handled by post() on Django's own request, since DRF's Request wrapper,
    content negotiation and renderer cost a single message more than its SQL does. The
    answers are the same JSON either way."""

    authentication_classes = [ApiKeyAuthentication]
    permission_classes = []
    content_negotiation_class = AlwaysJson

    def dispatch(self, request, *args, **kwargs):
        if request.method == "POST":
            return self.post(request)
        return super().dispatch(request, *args, **kwargs)

    def perform_authentication(self, request):
        # A GET from a browser or a probe learns the method is wrong (405), not that it
        # lacks a key: the endpoint only ever takes a POST.
        if request.method not in ("POST", "OPTIONS"):
            raise exceptions.MethodNotAllowed(request.method)
        super().perform_authentication(request)

    @webhook_schema
    def post(self, request):
        """request: Django's HttpRequest (see dispatch)."""
        try:
            return self.refuse_or_record(request)
        except DatabaseError as error:
            if not _database_unavailable(error):
                raise
            logger.warning("ingest: database unavailable: %s", error)
            return json_answer(*_unavailable_answer())

    def refuse_or_record(self, request):
        api_key = None
        try:
            api_key = ApiKeyAuthentication().authenticate(request)[1]
            return self.record(request, api_key)
        except (IngestError, exceptions.AuthenticationFailed) as error:
            # The whole request was refused after the key was known: keep it in the
            # workspace's rejected log, since Segment drops what gets a 4xx.
            if api_key is not None and error.status_code != 429:
                remember_request_rejection(api_key.workspace, getattr(request, "_natsite_body", b""), error)
            return json_answer(*_error_answer(error))

    def record(self, request, api_key):
        workspace = api_key.workspace
        if not _is_json(request.META.get("CONTENT_TYPE", "")):
            raise IngestError(415, "Content-Type must be application/json")
        raw_body = read_body(request)
        check_signature(workspace, raw_body, request)
        body = request._natsite_body = decode_body(request, raw_body)
        messages, is_batch = parse_messages(body)
        # The cap is on the message as decoded (a gzipped body is much smaller than it).
        if not is_batch and len(body) > settings.INGEST_MAX_MESSAGE_BYTES and oversized(messages[0]):
            raise IngestError(413, too_large_message())

        wait = ratelimit.admit(api_key.pk, max(1, len(messages)))
        if wait is not None:
            raise IngestError(429, "Rate limit exceeded, retry later", headers={"Retry-After": str(wait)})

        # A single message was measured above; in a batch, each is measured on its own.
        results = ingest_within_limits(workspace=workspace, messages=messages, measured=not is_batch)
        remember_rejections(
            workspace=workspace, rejected=[(r, messages[i]) for i, r in enumerate(results) if not r.accepted]
        )
        if not is_batch:
            result = results[0]
            if not result.accepted:
                return json_answer({"message": result.message}, result.code)
            return json_answer(result.to_dict())
        accepted = sum(1 for r in results if r.accepted)
        return json_answer(
            {
                "accepted": accepted,
                "rejected": len(results) - accepted,
                "results": [dict(r.to_dict(), index=i) for i, r in enumerate(results)],
            }
        )
