# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gateway admin API client and the base class of the resource modules.

Private to the collection: it may change without notice. It needs only the Python standard
library and ansible-core on the target (requests go through ``ansible.module_utils.urls``).

A resource module is a subclass of :class:`GatewayResource` that names its API kind and maps
its options to the object's ``spec``; the base class does the rest:

* read the object (``GET``; 404 means absent);
* compare the stored object with the desired one, both normalised with the API's documented
  defaults, on name, labels and spec only (never status);
* create (``POST``), update (``PUT``) or delete (``DELETE``) -- in check mode it only predicts
  the result and calls no mutating endpoint;
* return ``changed``, ``operation`` (create, update, delete or none), the object, and a
  before/after ``diff`` of name, labels and spec in diff mode.
"""

from __future__ import annotations

import copy
import http.client
import json
import ssl
from urllib.error import HTTPError, URLError
from urllib.parse import quote

from ansible.module_utils.urls import open_url

DEFAULT_SOCKET = "/run/clusterlink/admin.sock"

OPERATION_CREATE = "create"
OPERATION_UPDATE = "update"
OPERATION_DELETE = "delete"
OPERATION_NONE = "none"


def api_argument_spec():
    """Connection options shared by every admin-API module (doc fragment gateway_api)."""
    return dict(
        socket=dict(type="path", default=DEFAULT_SOCKET),
        url=dict(type="str"),
        client_cert=dict(type="path"),
        client_key=dict(type="path", no_log=False),
        ca_path=dict(type="path"),
        timeout=dict(type="int", default=30),
    )


class APIError(Exception):
    """The admin API answered with an error status; ``message`` is the API's own text."""

    def __init__(self, status, message, field=None, details=None, body=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.details = details or []
        self.body = body if isinstance(body, dict) else {}  # the whole JSON error body


class Unreachable(Exception):
    """The admin API could not be reached at all (no socket, daemon down, refused, timeout)."""


def _os_error(exc):
    """The innermost OSError with an errno in an exception's cause/context chain, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        reason = getattr(exc, "reason", None)
        if isinstance(reason, BaseException) and id(reason) not in seen:
            exc = reason
            continue
        exc = exc.__cause__ or exc.__context__
    return None


class AdminAPI:
    """JSON requests to one gateway's admin API, over its unix socket or its TCP listener."""

    def __init__(self, params):
        self.url = (params.get("url") or "").rstrip("/") or None
        self.socket = params.get("socket") or DEFAULT_SOCKET
        self.timeout = params.get("timeout") or 30
        self.client_cert = params.get("client_cert")
        self.client_key = params.get("client_key")
        self.ca_path = params.get("ca_path")

    @property
    def target(self):
        return self.url or self.socket

    def _unreachable(self, exc):
        reason = getattr(exc, "reason", None) or exc
        os_error = _os_error(exc)
        if os_error is not None:
            reason = os_error.strerror or os_error
            hint = {
                2: "is the clusterlink-gateway service running?",
                111: "is the clusterlink-gateway service running?",
                13: "run as root (become) or as a member of the socket's group",
            }.get(os_error.errno)
            if hint and not self.url:
                reason = f"{reason} ({hint})"
        tls_refusal = isinstance(exc, (http.client.RemoteDisconnected, ssl.SSLError)) or isinstance(
            getattr(exc, "reason", None), ssl.SSLError
        )
        if self.url and tls_refusal:
            reason = (
                f"{reason} (the admin listener accepts only client certificates from the admin "
                "CA, and its own certificate must verify against ca_path)"
            )
        return Unreachable(f"cannot reach the gateway admin API at {self.target}: {reason}")

    def request(self, method, path, body=None):
        """One request; returns the parsed JSON body (None when empty).

        Raises APIError for an error status and Unreachable when there is no answer.
        """
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        if self.url:
            url = self.url + path
            extra = dict(
                client_cert=self.client_cert,
                client_key=self.client_key,
                ca_path=self.ca_path,
                validate_certs=True,
            )
        else:
            url = "http://localhost" + path
            extra = dict(unix_socket=self.socket, use_proxy=False)
        try:
            response = open_url(
                url,
                data=data,
                headers=headers,
                method=method,
                timeout=self.timeout,
                follow_redirects="none",
                http_agent="clusterlink.fabric",
                **extra,
            )
            raw = response.read()
        except HTTPError as exc:
            raise self._api_error(exc) from None
        except (URLError, OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        return self._parse(raw)

    def _parse(self, raw):
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise Unreachable(
                f"the admin API at {self.target} did not answer with JSON: {raw[:200]!r}"
            ) from None

    @staticmethod
    def _api_error(exc):
        try:
            raw = exc.read()
        except Exception:  # the body of an error response is best effort
            raw = b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("message"):
            return APIError(
                exc.code, str(body["message"]), body.get("field"), body.get("details"), body
            )
        text = raw.decode("utf-8", "replace").strip() if raw else ""
        return APIError(exc.code, text or str(exc.reason or "request failed"))

    # Convenience wrappers

    def path(self, kind, name=None):
        path = f"/v1/{kind}"
        if name is not None:
            path += "/" + quote(str(name), safe="")
        return path

    def get(self, kind, name):
        """The object, or None when the API says 404."""
        try:
            return self.request("GET", self.path(kind, name))
        except APIError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind):
        return self.request("GET", self.path(kind)) or []


def label_value(value):
    """Label values are strings; YAML may have made numbers or booleans of them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def normalize_labels(labels):
    return {str(key): label_value(value) for key, value in (labels or {}).items()}


def normalize_selector(selector, client_cidrs=False):
    """A label selector with the API's defaults filled in (``{}`` matches everything)."""
    selector = selector or {}
    out = {
        "matchLabels": normalize_labels(selector.get("matchLabels")),
        "matchExpressions": [
            {
                "key": expr.get("key"),
                "operator": expr.get("operator"),
                "values": [label_value(v) for v in expr.get("values") or []],
            }
            for expr in selector.get("matchExpressions") or []
        ],
    }
    if client_cidrs:
        out["clientCIDRs"] = [str(c) for c in selector.get("clientCIDRs") or []]
    return out


def fail_api_error(module, exc, doing, **result):
    """fail_json with the API's message, naming the field it names."""
    msg = f"{doing}: {exc.message}"
    if exc.field and exc.field not in exc.message:
        msg += f" (field {exc.field})"
    module.fail_json(msg=msg, status=exc.status, field=exc.field, details=exc.details, **result)


class GatewayResource:
    """Base class of the resource modules: one object of one kind, present or absent."""

    kind = None  # URL segment, for example 'exports'
    kind_name = None  # the API's kind, for example 'Export'
    singular = None  # in messages, for example 'export'
    result_key = None  # the key of the object in the result, for example 'exported_service'

    # Options of the module beyond name, labels, state and the connection options, and the
    # ones that state=present needs.
    spec_options = {}
    required_for_present = []

    @classmethod
    def argument_spec(cls):
        spec = dict(
            name=dict(type="str", required=True),
            labels=dict(type="dict", default={}),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        )
        spec.update(copy.deepcopy(cls.spec_options))
        spec.update(api_argument_spec())
        return spec

    @classmethod
    def module_kwargs(cls):
        """Keyword arguments for AnsibleModule."""
        kwargs = dict(argument_spec=cls.argument_spec(), supports_check_mode=True)
        if cls.required_for_present:
            kwargs["required_if"] = [("state", "present", list(cls.required_for_present))]
        return kwargs

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.api = AdminAPI(module.params)

    # What subclasses provide

    def spec_from_params(self):
        """The object's spec from the module options."""
        raise NotImplementedError

    def normalize_spec(self, spec):
        """``spec`` with the API's documented defaults filled in (a new dict)."""
        raise NotImplementedError

    # Comparison

    def comparable(self, obj):
        """The parts of an object the module manages: name, labels and spec, normalised."""
        return {
            "name": obj.get("name"),
            "labels": normalize_labels(obj.get("labels")),
            "spec": self.normalize_spec(copy.deepcopy(obj.get("spec") or {})),
        }

    def desired(self):
        return self.comparable(
            {
                "name": self.params["name"],
                "labels": self.params["labels"],
                "spec": self.spec_from_params(),
            }
        )

    # The run

    def run(self):
        name = self.params["name"]
        check = self.module.check_mode
        result = dict(changed=False, operation=OPERATION_NONE)
        before = after = {}
        try:
            current = self.api.get(self.kind, name)
            if current is not None:
                before = self.comparable(current)
            if self.params["state"] == "absent":
                obj = None
                if current is not None:
                    result.update(changed=True, operation=OPERATION_DELETE)
                    if not check:
                        self._call("DELETE", name, "delete")
            else:
                desired = self.desired()
                if current is None:
                    result.update(changed=True, operation=OPERATION_CREATE)
                    obj = (
                        dict(kind=self.kind_name, **desired)
                        if check
                        else self._call("POST", None, "create", desired)
                    )
                elif before != desired:
                    result.update(changed=True, operation=OPERATION_UPDATE)
                    if check:
                        obj = dict(kind=self.kind_name, **desired)
                        if "status" in current:
                            obj["status"] = current["status"]
                    else:
                        obj = self._call("PUT", name, "update", desired)
                else:
                    obj = current
                after = self.comparable(obj) if obj else desired
                if not check and result["changed"] and after != desired:
                    self.module.warn(
                        f"the gateway stored {self.singular} {name!r} differently from what "
                        f"was sent; the next run may report a change again. Sent: {desired}; "
                        f"stored: {after}"
                    )
                result[self.result_key] = obj
        except Unreachable as exc:
            self.module.fail_json(msg=str(exc), changed=False, operation=OPERATION_NONE)
        if self.module._diff:
            result["diff"] = dict(
                before=self.diff_view(before) if before else before,
                after=self.diff_view(after) if after else after,
            )
        return result

    def diff_view(self, comparable):
        """What diff mode shows of a compared object (a subclass may hide or summarise)."""
        return comparable

    def _call(self, method, name, verb, body=None):
        path = self.api.path(self.kind, name)
        try:
            return self.api.request(method, path, body)
        except APIError as exc:
            fail_api_error(
                self.module,
                exc,
                f"the gateway refused to {verb} {self.singular} {self.params['name']!r}",
                changed=False,
                operation=OPERATION_NONE,
            )
        return None  # not reached: fail_json exits

    @classmethod
    def main(cls, module_class):
        """The whole main() of a resource module."""
        module = module_class(**cls.module_kwargs())
        resource = cls(module)
        try:
            result = resource.run()
        except APIError as exc:
            fail_api_error(module, exc, f"the gateway admin API answered {exc.status}")
        module.exit_json(**result)
