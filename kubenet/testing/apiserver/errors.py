"""API errors and the ``Status`` objects that carry them.

Every failure the server reports is a ``metav1.Status`` shaped like kube-apiserver's
(``k8s.io/apimachinery/pkg/api/errors``): the same HTTP code, ``reason``, message
wording and ``details``, because clients branch on those (client-go's
``IsNotFound``, kubectl's "Error from server (NotFound): ..." lines, the Python
client's ``ApiException.status``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Cause:
    """One ``details.causes`` entry: why a field was rejected."""

    reason: str
    message: str
    field: str = ""

    def to_json(self) -> JsonObject:
        out: JsonObject = {"reason": self.reason, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out


@dataclass
class ApiError(Exception):
    """A request failure that becomes a Status response."""

    code: int
    reason: str
    message: str
    details: JsonObject | None = None
    continue_token: str = ""
    retry_after: int | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"

    def status(self) -> JsonObject:
        """The ``Status`` object for this error."""
        metadata: JsonObject = {}
        if self.continue_token:
            metadata["continue"] = self.continue_token
        out: JsonObject = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": metadata,
            "status": "Failure",
            "message": self.message,
        }
        if self.reason:
            out["reason"] = self.reason
        if self.details is not None:
            out["details"] = self.details
        out["code"] = self.code
        return out

    def body(self) -> bytes:
        return json.dumps(self.status(), separators=(",", ":")).encode()


def success_status(details: JsonObject | None = None) -> JsonObject:
    """The Status a DELETE of a collection or a non-object answer returns."""
    out: JsonObject = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details is not None:
        out["details"] = details
    return out


def _details(group: str, kind: str, name: str) -> JsonObject:
    out: JsonObject = {}
    if name:
        out["name"] = name
    if group:
        out["group"] = group
    out["kind"] = kind
    return out


def _qualified(group: str, resource: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(group: str, resource: str, name: str) -> ApiError:
    what = _qualified(group, resource)
    message = f'{what} "{name}" not found' if name else f"{what} not found"
    return ApiError(404, "NotFound", message, _details(group, resource, name))


def unknown_path() -> ApiError:
    """What kube-apiserver answers for a URL no handler serves."""
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(group: str, resource: str, name: str) -> ApiError:
    message = f'{_qualified(group, resource)} "{name}" already exists'
    return ApiError(409, "AlreadyExists", message, _details(group, resource, name))


def conflict(group: str, resource: str, name: str, why: str) -> ApiError:
    message = f'Operation cannot be fulfilled on {_qualified(group, resource)} "{name}": {why}'
    return ApiError(409, "Conflict", message, _details(group, resource, name))


#: The reason upstream's storage layer gives for a stale resourceVersion on update.
MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def invalid(group: str, kind: str, name: str, causes: Sequence[Cause]) -> ApiError:
    """422 Invalid, with the message upstream builds from a field.ErrorList."""
    qualified_kind = f"{kind}.{group}" if group else kind
    parts = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = _details(group, kind, name)
    details["causes"] = [c.to_json() for c in causes]
    return ApiError(422, "Invalid", f'{qualified_kind} "{name}" is invalid: {joined}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def forbidden(message: str, group: str, resource: str, name: str) -> ApiError:
    return ApiError(403, "Forbidden", message, _details(group, resource, name))


def method_not_supported(group: str, resource: str, action: str) -> ApiError:
    message = f'{action} is not supported on resources of kind "{_qualified(group, resource)}"'
    return ApiError(405, "MethodNotAllowed", message, _details(group, resource, ""))


def method_not_allowed() -> ApiError:
    """A method no route serves on this path (POST to an object, PUT to a collection)."""
    return ApiError(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        {},
    )


def not_acceptable(message: str) -> ApiError:
    return ApiError(406, "NotAcceptable", message)


def expired(message: str, continue_token: str = "") -> ApiError:
    return ApiError(410, "Expired", message, continue_token=continue_token)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {limit}")


def unsupported_media_type(message: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", message)


def service_unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message)


def internal(message: str) -> ApiError:
    causes = [{"message": message}]
    return ApiError(500, "InternalError", f"Internal error occurred: {message}", {"causes": causes})


def too_large_resource_version(requested: int, current: int) -> ApiError:
    """Upstream's answer when a read asks for a revision the store has not reached."""
    return ApiError(
        504,
        "Timeout",
        f"Too large resource version: {requested}, current: {current}",
        {
            "causes": [
                {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
            ],
            "retryAfterSeconds": 1,
        },
        retry_after=1,
    )
