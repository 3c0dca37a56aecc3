"""The webhook's OpenAPI description (drf-spectacular), served at /api/schema/.

The webhook reads its body itself (no DRF serializer), so the request bodies, the two
authentication schemes and every response are described here by hand, as PRODUCT.md §2
states them. Message fields are described, not typed: the webhook matches field names
ignoring case and ignores a field of the wrong type when the message holds without it.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiRequest, OpenApiResponse, extend_schema


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "ingest.authentication.ApiKeyAuthentication"
    name = ["basicAuth", "bearerAuth"]

    def get_security_requirement(self, auto_schema):
        return [{"basicAuth": []}, {"bearerAuth": []}]  # either one

    def get_security_definition(self, auto_schema):
        return [
            {
                "type": "http",
                "scheme": "basic",
                "description": "The API key as the user name, an empty password (what Segment sends).",
            },
            {"type": "http", "scheme": "bearer", "description": "The API key as a Bearer token."},
        ]


MESSAGE = {
    "type": "object",
    "description": (
        "One Segment message. `identify` is recorded; `delete` removes the user's contacts; "
        "any other type is answered 501. Field names are matched ignoring case."
    ),
    "properties": {
        "type": {"type": "string", "description": "identify, or delete; others are answered 501"},
        "messageId": {"description": "Processed once per workspace; a replay answers duplicate"},
        "timestamp": {"description": "ISO-8601; required for identify; at most 24 hours ahead"},
        "userId": {"description": "Kept as the contact's user_id; the email when it is one"},
        "email": {"description": "Used when traits.email and context.traits.email are absent"},
        "traits": {"description": "Merged into the contact's traits (newest timestamp wins per key)"},
        "context": {"description": "context.traits.email, context.page.url; context.personas marks an Engage sync"},
        "page": {"description": "page.url describes the interaction"},
        "properties": {"description": "properties.email, properties.url"},
        "url": {"description": "Describes the interaction"},
        "event": {"description": "Describes the interaction when there is no URL"},
    },
    "required": ["type"],
    "additionalProperties": True,
}
BODY = {
    "anyOf": [
        MESSAGE,
        {"type": "array", "items": MESSAGE, "maxItems": 4000, "description": "A batch (Webhooks (Actions))"},
        {
            "type": "object",
            "properties": {"batch": {"type": "array", "items": MESSAGE, "maxItems": 4000}},
            "required": ["batch"],
            "description": "A batch, as {\"batch\": [...]}",
        },
    ]
}
RESULT = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["created", "merged", "duplicate", "traits_updated", "deleted"]},
        "code": {"type": "integer", "enum": [200]},
        "email": {"type": "string"},
        "day": {"type": "string", "format": "date"},
        "deleted": {"type": "integer"},
        "index": {"type": "integer"},
    },
    "required": ["status", "code"],
}
REJECTED_IN_BATCH = {
    "type": "object",
    "properties": {
        "status": {"type": "integer", "description": "The status this message alone would get"},
        "code": {"type": "integer"},
        "message": {"type": "string"},
        "index": {"type": "integer"},
    },
    "required": ["status", "code", "message"],
}
BATCH_RESULT = {
    "type": "object",
    "properties": {
        "accepted": {"type": "integer"},
        "rejected": {"type": "integer"},
        "results": {"type": "array", "items": {"anyOf": [RESULT, REJECTED_IN_BATCH]}},
    },
    "required": ["accepted", "rejected", "results"],
}
ERROR = {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}


def error(description):
    return OpenApiResponse(response=ERROR, description=description)


webhook_schema = extend_schema(
    operation_id="segment_webhook",
    summary="Receive Segment identify calls",
    description="The Segment destination (subscription webhook). JSON in, JSON out; never a 500.",
    tags=["ingest"],
    request={
        "application/json": OpenApiRequest(
            request=BODY,
            examples=[
                OpenApiExample(
                    "identify",
                    value={
                        "type": "identify",
                        "messageId": "ajs-1",
                        "timestamp": "2024-06-01T09:00:00Z",
                        "traits": {"email": "jane@example.com"},
                    },
                    request_only=True,
                )
            ],
        )
    },
    parameters=[
        OpenApiParameter(
            "Content-Encoding", OpenApiTypes.STR, OpenApiParameter.HEADER, enum=["gzip", "deflate", "identity"],
            description="gzip is accepted; the size caps apply to the decompressed body",
        ),
        OpenApiParameter(
            "X-Signature", OpenApiTypes.STR, OpenApiParameter.HEADER,
            description="Hex HMAC-SHA1 of the raw body, when the workspace has a signing secret",
        ),
        OpenApiParameter(
            "Retry-After", OpenApiTypes.INT, OpenApiParameter.HEADER, response=[429, 503],
            description="Seconds to wait before retrying", required=True,
        ),
        OpenApiParameter(
            "WWW-Authenticate", OpenApiTypes.STR, OpenApiParameter.HEADER, response=[401], required=True,
            description='Basic realm="natsite"',
        ),
    ],
    responses={
        200: OpenApiResponse(
            response={"anyOf": [RESULT, BATCH_RESULT]},
            description="One message: its status. A batch: one result per message, in order.",
        ),
        400: error("Not JSON, or the message is invalid (missing email, invalid timestamp, ...)"),
        401: error("Missing, unknown, revoked or expired API key, or a bad X-Signature"),
        405: error("Only POST"),
        413: error("Over 4 MiB of body, 32 KiB per message or 4,000 messages per batch"),
        415: error("A Content-Type that is not JSON, or a Content-Encoding other than gzip"),
        429: error("Over the per-key rate limit"),
        501: error("A message type other than identify or delete"),
        503: error("The database is unavailable: retry later"),
    },
)
