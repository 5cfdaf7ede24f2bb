"""The OpenAPI 3.1 document of the admin API, generated from the models it validates with."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from .. import __version__
from ..model.common import DNS_LABEL
from ..model.objects import KINDS, Kind
from .openapi_grants import grant_paths

REF = "#/components/schemas/{model}"

ERROR_SCHEMA = {
    "type": "object",
    "required": ["status", "reason", "message"],
    "properties": {
        "status": {"type": "integer"},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "field": {"type": "string", "description": "the failing field, e.g. spec.port"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
OFFER_REF = REF.format(model="Offer")

OFFER_SCHEMA = {
    "type": "object",
    "required": ["name", "labels"],
    "properties": {
        "name": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

CERTIFICATE_SCHEMA = {
    "type": "object",
    "description": "expiry of a certificate the gateway uses (follows reloads)",
    "required": [
        "kind",
        "subject",
        "fingerprint_sha256",
        "not_after",
        "expires_in_seconds",
        "expired",
    ],
    "properties": {
        "kind": {
            "enum": ["gateway", "ca", "admin"],
            "description": "gateway: this gateway's fabric certificate; ca: a CA of the fabric "
            "bundle; admin: the admin TCP listener's certificate (when admin.tcp is set)",
        },
        "subject": {"type": "string", "description": "RFC 4514 subject, e.g. CN=west"},
        "fingerprint_sha256": {
            "type": "string",
            "description": "SHA-256 of the DER certificate, lower-case hex",
        },
        "not_after": {
            "type": "string",
            "format": "date-time",
            "description": "notAfter, ISO 8601 UTC (e.g. 2027-01-01T00:00:00Z)",
        },
        "expires_in_seconds": {
            "type": "integer",
            "description": "seconds until not_after; negative once expired",
        },
        "expired": {"type": "boolean"},
    },
}

_NULLABLE_STRING = {"type": ["string", "null"]}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

DECISION_SCHEMA = {
    "type": "object",
    "description": "a policy decision and why: the deciding policy, its tier, the matching "
    "selectors",
    "required": ["allowed", "action", "tier", "policy", "summary", "selector", "outranked"],
    "properties": {
        "allowed": {"type": "boolean"},
        "action": {"enum": ["allow", "deny"]},
        "tier": {
            "enum": ["privileged", "regular", "default"],
            "description": "default: no policy matched (the default deny)",
        },
        "policy": {**_NULLABLE_STRING, "description": "the deciding policy; null: default deny"},
        "summary": {"type": "string", "description": "e.g. deny by privileged policy no-west"},
        "selector": {
            "type": ["object", "null"],
            "description": "the deciding policy's first matching from and to element, keyed "
            "from[i] and to[j], each as written in the policy; null for the default deny",
            "additionalProperties": {"type": "object"},
        },
        "outranked": {
            "type": "array",
            "description": "other matching policies that lost, in evaluation order",
            "items": {
                "type": "object",
                "required": ["policy", "action", "tier"],
                "properties": {
                    "policy": {"type": "string"},
                    "action": {"type": "string"},
                    "tier": {"type": "string"},
                },
            },
        },
        "client_ip_known": {
            "type": "boolean",
            "description": "false: no client address, so selectors with clientCIDRs did not match",
        },
        "cidrs_skipped": {
            "type": "boolean",
            "description": "true: no client address and some policy has clientCIDRs (it might "
            "decide otherwise for a client address: give one)",
        },
    },
}

CHECK_SCHEMA = {
    "type": "object",
    "description": "one gateway's decision for one direction",
    "required": [
        "gateway",
        "side",
        "import",
        "answered",
        "allowed",
        "decided_by",
        "result",
        "decision",
        "client_ip",
        "attributes",
        "note",
    ],
    "properties": {
        "gateway": {"type": "string", "description": "the gateway that decides"},
        "side": {"enum": ["egress", "ingress"]},
        "import": {
            **_NULLABLE_STRING,
            "description": "egress: the importing gateway's Import taking the export (null: "
            "none, decided as for an import without labels)",
        },
        "answered": {
            "type": "boolean",
            "description": "false: the peer could not be asked or did not answer (see result)",
        },
        "allowed": {"type": ["boolean", "null"], "description": "null when not answered"},
        "decided_by": {
            "enum": ["policy", "allowed_peers", "unknown-export", "not-a-peer", None],
        },
        "result": {"type": "string", "description": "one line for people"},
        "decision": {"anyOf": [{"$ref": REF.format(model="Decision")}, {"type": "null"}]},
        "client_ip": {
            **_NULLABLE_STRING,
            "description": "the client address the decision used (an exporter may ignore the "
            "one an importer asserts)",
        },
        "attributes": {
            "type": ["object", "null"],
            "description": "the source and destination attributes the policies saw",
            "properties": {
                "source": {"anyOf": [_STRING_MAP, {"type": "null"}]},
                "destination": {"anyOf": [_STRING_MAP, {"type": "null"}]},
            },
        },
        "note": _NULLABLE_STRING,
    },
}

EXPLANATION_SCHEMA = {
    "type": "object",
    "required": ["gateway", "peer", "export", "client_ip", "directions"],
    "properties": {
        "gateway": {"type": "string", "description": "this gateway"},
        "peer": {"type": "string"},
        "export": {"type": "string"},
        "client_ip": _NULLABLE_STRING,
        "directions": {
            "type": "array",
            "description": "import: this gateway imports the export from the peer (our egress, "
            "then the peer's ingress); export: the peer imports our export (our ingress, then "
            "the peer's egress). Each direction that applies, at least one",
            "items": {
                "type": "object",
                "required": ["direction", "importer", "exporter", "allowed", "checks"],
                "properties": {
                    "direction": {"enum": ["import", "export"]},
                    "importer": {"type": "string"},
                    "exporter": {"type": "string"},
                    "allowed": {
                        "type": ["boolean", "null"],
                        "description": "true: some egress check and the ingress check allow; "
                        "false: an end refuses; null: an end did not answer",
                    },
                    "checks": {"type": "array", "items": {"$ref": REF.format(model="Check")}},
                },
            },
        },
    },
}

STATUS_SCHEMA = {
    "type": "object",
    "required": [
        "peer_name",
        "labels",
        "version",
        "ready",
        "peers",
        "exports",
        "imports",
        "certificates",
    ],
    "properties": {
        "peer_name": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "version": {"type": "string"},
        "uptime_seconds": {"type": "number"},
        "ready": {"type": "boolean"},
        "peers": {"type": "array", "items": {"type": "object"}},
        "exports": {"type": "array", "items": {"type": "object"}},
        "imports": {"type": "array", "items": {"type": "object"}},
        "policies": {"type": "array", "items": {"type": "object"}},
        "certificates": {
            "type": "array",
            "description": "the gateway certificate, then each fabric CA, then the admin one",
            "items": {"$ref": REF.format(model="Certificate")},
        },
        "invalid": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["kind", "name", "error"],
                "properties": {
                    "kind": {"type": "string"},
                    "name": {"type": "string"},
                    "error": {"type": "string"},
                },
            },
        },
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json({"$ref": REF.format(model="Error")})}


def _output_schema(kind: Kind) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["kind", "name", "labels", "spec", "status"],
        "properties": {
            "kind": {"const": kind.kind},
            "name": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "spec": {"$ref": REF.format(model=f"{kind.kind}Spec")},
            "status": {"$ref": REF.format(model=kind.status_model.__name__)},
        },
    }


def _write_errors() -> dict[str, Any]:
    return {
        "400": _error(
            "malformed body: not JSON, not an object, a duplicate key, NaN, or nested deeper "
            "than 32 levels"
        ),
        "408": _error("the body did not arrive within admin.body_timeout; the connection closes"),
        "413": _error("body larger than the configured limit"),
        "415": _error("Content-Type is not application/json"),
        "422": _error(
            "validation failed; `field` names the failing field (also an import's `spec.bind` "
            "that is not an address of this host)"
        ),
        "507": _error("the state store could not be written (e.g. disk full)"),
    }


def _kind_paths(kind: Kind) -> dict[str, Any]:
    obj = {"$ref": REF.format(model=f"{kind.kind}Object")}
    body = {"required": True, "content": _json({"$ref": REF.format(model=kind.kind)})}
    put_body = {
        "required": True,
        "content": _json({"$ref": REF.format(model=f"{kind.kind}Update")}),
    }
    write_errors = _write_errors()
    tag = [kind.plural]
    return {
        f"/v1/{kind.plural}": {
            "get": {
                "operationId": f"list{kind.kind}s",
                "tags": tag,
                "responses": {
                    "200": {
                        "description": "all objects",
                        "content": _json({"type": "array", "items": obj}),
                    }
                },
            },
            "post": {
                "operationId": f"create{kind.kind}",
                "tags": tag,
                "requestBody": body,
                "responses": {
                    "201": {
                        "description": "created; the stored object",
                        "headers": {"Location": {"schema": {"type": "string"}, "required": True}},
                        "content": _json(obj),
                    },
                    "409": _error("an object of this name exists"),
                    **write_errors,
                },
            },
        },
        f"/v1/{kind.plural}/{{name}}": {
            "parameters": [NAME_PARAM],
            "get": {
                "operationId": f"get{kind.kind}",
                "tags": tag,
                "responses": {
                    "200": {"description": "the object", "content": _json(obj)},
                    "404": _error("no such object"),
                },
            },
            "put": {
                "operationId": f"replace{kind.kind}",
                "tags": tag,
                "requestBody": put_body,
                "responses": {
                    "200": {"description": "replaced; the stored object", "content": _json(obj)},
                    "404": _error("no such object"),
                    **write_errors,
                },
            },
            "delete": {
                "operationId": f"delete{kind.kind}",
                "tags": tag,
                "responses": {
                    "204": {"description": "deleted"},
                    "404": _error("no such object"),
                    "507": write_errors["507"],
                },
            },
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    """The whole document; computed once."""
    models = [(k.model, "validation") for k in KINDS.values()]
    models += [(k.status_model, "validation") for k in KINDS.values()]
    _, defs = models_json_schema(models, ref_template=REF, by_alias=True)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    for kind in KINDS.values():
        schemas[f"{kind.kind}Object"] = _output_schema(kind)
        update = dict(schemas[kind.kind])
        update["required"] = [f for f in update["required"] if f != "name"]
        update["description"] = "as for create; `name` may be omitted (taken from the URL)"
        schemas[f"{kind.kind}Update"] = update
    schemas["Error"] = ERROR_SCHEMA
    schemas["Offer"] = OFFER_SCHEMA
    schemas["Status"] = STATUS_SCHEMA
    schemas["Certificate"] = CERTIFICATE_SCHEMA
    schemas["Decision"] = DECISION_SCHEMA
    schemas["Check"] = CHECK_SCHEMA
    schemas["Explanation"] = EXPLANATION_SCHEMA
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "responses": {
                    "200": {
                        "description": "the daemon is alive",
                        "content": _json({"type": "object"}),
                    }
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "responses": {
                    "200": {"description": "ready", "content": _json({"type": "object"})},
                    "503": {
                        "description": "starting or stopping",
                        "content": _json({"type": "object"}),
                    },
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/v1/status": {
            "get": {
                "operationId": "status",
                "responses": {
                    "200": {
                        "description": "summary",
                        "content": _json({"$ref": REF.format(model="Status")}),
                    }
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "responses": {
                    "200": {"description": "this document", "content": _json({"type": "object"})}
                },
            }
        },
    }
    for kind in KINDS.values():
        paths.update(_kind_paths(kind))
    paths["/v1/peers/{name}/offers"] = {
        "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "get": {
            "operationId": "getPeerOffers",
            "tags": ["peers"],
            "responses": {
                "200": {
                    "description": "the exports the peer offers to this gateway",
                    "content": _json(
                        {"type": "array", "items": {"$ref": REF.format(model="Offer")}}
                    ),
                },
                "404": _error("no such peer"),
                "502": _error("the peer could not be asked"),
            },
        },
    }
    paths["/v1/explain"] = {
        "get": {
            "operationId": "explain",
            "description": "Which policy decides a connection between this gateway and a peer "
            "for an export, here and (asked over the peer link) at the peer, in each direction "
            "that applies. Read-only.",
            "parameters": [
                {
                    "name": "peer",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "pattern": DNS_LABEL, "maxLength": 63},
                },
                {
                    "name": "export",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "pattern": DNS_LABEL, "maxLength": 63},
                },
                {
                    "name": "client_ip",
                    "in": "query",
                    "required": False,
                    "description": "the client's address (for clientCIDRs)",
                    "schema": {
                        "anyOf": [
                            {"type": "string", "format": "ipv4"},
                            {"type": "string", "format": "ipv6"},
                        ]
                    },
                },
            ],
            "responses": {
                "200": {
                    "description": "the explanation",
                    "content": _json({"$ref": REF.format(model="Explanation")}),
                },
                "400": _error("a parameter is missing or malformed; `field` names it"),
                "404": _error(
                    "no such peer, or the export is neither exported here, imported from the "
                    "peer here, nor known to the peer; `field` names which"
                ),
            },
        },
    }
    grant_paths_, grant_schemas = grant_paths(_error, _write_errors())
    paths.update(grant_paths_)
    schemas.update(grant_schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "ClusterLink gateway admin API", "version": __version__},
        "paths": paths,
        "components": {"schemas": schemas},
    }
