"""The OpenAPI description of the peering-grant routes (``api.grants``)."""

from __future__ import annotations

from typing import Any

from ..model.common import DNS_LABEL

REF = "#/components/schemas/{model}"
REASONS = [
    "expired",
    "used-up",
    "replayed",
    "tampered",
    "revoked",
    "unknown",
    "bad-request",
    "rate-limited",
    "error",
]

# durations up to 30 days (also accepted: any "<n>s" / "<n>m" within it)
DURATION = r"^(([1-9]|[12][0-9]|30)d|([1-9]|[1-9][0-9]|[1-6][0-9]{2}|7[01][0-9]|720)h)$"
ENDPOINTS = {
    "type": "array",
    "minItems": 1,
    "maxItems": 16,
    "items": {"$ref": REF.format(model="Gateway")},
    "description": "this gateway's peer port as the other party dials it "
    "(default: listen.address and listen.port)",
}

GRANT_SCHEMA = {
    "type": "object",
    "required": ["id", "peer_name", "state", "created", "expires", "uses", "uses_left"],
    "properties": {
        "id": {"type": "string"},
        "peer_name": {"type": "string"},
        "state": {"enum": ["active", "used-up", "expired", "revoked"]},
        "created": {"type": "integer", "description": "unix seconds"},
        "expires": {"type": "integer", "description": "unix seconds"},
        "uses": {"type": "integer"},
        "uses_left": {"type": "integer"},
        "revoked": {"type": "boolean"},
        "redemptions": {"type": "array", "items": {"type": "object"}},
        "grant": {
            "type": "string",
            "description": "the grant text: only in the answer to its creation",
        },
    },
}

GRANT_CREATE = {
    "type": "object",
    "required": ["peer_name"],
    "additionalProperties": False,
    "properties": {
        "peer_name": {
            "type": "string",
            "pattern": DNS_LABEL,
            "maxLength": 63,
            "description": "the name the redeeming site will have (not this gateway's own)",
        },
        "expires": {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": 30 * 86400},
                {"type": "string", "pattern": DURATION},
            ],
            "description": "seconds, or a duration like 90s, 15m, 24h, 7d (default 24h, max 30d)",
        },
        "uses": {
            "type": "integer",
            "minimum": 1,
            "maximum": 100,
            "description": "redemptions allowed (default 1)",
        },
        "endpoints": ENDPOINTS,
    },
}

REDEEM = {
    "type": "object",
    "required": ["grant"],
    "additionalProperties": False,
    "properties": {
        "grant": {"type": "string", "description": "the grant text"},
        "endpoints": ENDPOINTS,
    },
}

REDEEMED = {
    "type": "object",
    "required": ["result", "changed", "grant", "peers"],
    "properties": {
        "result": {"enum": ["accepted", "already-redeemed"]},
        "changed": {"type": "boolean"},
        "grant": {"type": "string"},
        "peers": {"type": "array", "items": {"type": "string"}},
    },
}

REFUSED = {
    "type": "object",
    "required": ["status", "reason", "message", "result"],
    "properties": {
        "status": {"const": 409},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "field": {"type": "string"},
        "result": {"enum": REASONS},
        "changed": {"const": False},
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def grant_paths(error: Any, write_errors: dict[str, Any]) -> tuple[dict, dict]:
    """(paths, component schemas); ``error(description)`` is an Error response."""
    schemas = {
        "Grant": GRANT_SCHEMA,
        "GrantCreate": GRANT_CREATE,
        "GrantRedeem": REDEEM,
        "GrantRedeemed": REDEEMED,
        "GrantRefused": REFUSED,
    }
    grant = {"$ref": REF.format(model="Grant")}
    paths = {
        "/v1/grants": {
            "get": {
                "operationId": "listGrants",
                "tags": ["grants"],
                "responses": {
                    "200": {
                        "description": "grants issued here (never their secret)",
                        "content": _json({"type": "array", "items": grant}),
                    }
                },
            },
            "post": {
                "operationId": "createGrant",
                "tags": ["grants"],
                "requestBody": {
                    "required": True,
                    "content": _json({"$ref": REF.format(model="GrantCreate")}),
                },
                "responses": {
                    "201": {"description": "the grant, with its text", "content": _json(grant)},
                    "409": error("a Peer of that name exists already"),
                    **write_errors,
                },
            },
        },
        "/v1/grants/{id}": {
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "delete": {
                "operationId": "revokeGrant",
                "tags": ["grants"],
                "responses": {
                    "200": {"description": "revoked", "content": _json(grant)},
                    "404": error("no such grant"),
                    "507": error("the state store could not be written"),
                },
            },
        },
        "/v1/grants/redeem": {
            "post": {
                "operationId": "redeemGrant",
                "tags": ["grants"],
                "requestBody": {
                    "required": True,
                    "content": _json({"$ref": REF.format(model="GrantRedeem")}),
                },
                "responses": {
                    "200": {
                        "description": "redeemed (or already redeemed here: nothing changed)",
                        "content": _json({"$ref": REF.format(model="GrantRedeemed")}),
                    },
                    "409": {
                        "description": "refused; `result` is the reason",
                        "content": _json(
                            {
                                "anyOf": [
                                    {"$ref": REF.format(model="GrantRefused")},
                                    {"$ref": REF.format(model="Error")},
                                ]
                            }
                        ),
                    },
                    "502": error("the granting gateway could not be reached"),
                    **write_errors,
                },
            },
        },
    }
    return paths, schemas
