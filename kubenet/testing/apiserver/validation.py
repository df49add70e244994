"""Field validation with upstream's messages (``k8s.io/apimachinery/pkg/util/validation``).

Validators return lists of :class:`~kubenet.testing.apiserver.errors.Cause`; the
caller turns a non-empty list into 422 Invalid.  Only the checks that matter for
the kinds served here are implemented; they reject what kube-apiserver rejects for
the common mistakes (bad names, labels, ports, addresses, missing fields).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from typing import Any

from kubenet.testing.apiserver.errors import Cause
from kubenet.testing.apiserver.selectors import label_value_errors, qualified_name_errors

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_IANA_SVC_NAME = re.compile(r"^[-a-z0-9]+$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


def show(value: Any) -> str:
    """How upstream prints a rejected value: strings quoted, numbers bare."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return repr(value)


def required(path: str, detail: str = "") -> Cause:
    msg = "Required value" + (f": {detail}" if detail else "")
    return Cause("FieldValueRequired", msg, path)


def invalid(path: str, value: Any, detail: str = "") -> Cause:
    msg = f"Invalid value: {show(value)}" + (f": {detail}" if detail else "")
    return Cause("FieldValueInvalid", msg, path)


def not_supported(path: str, value: Any, supported: Iterable[str]) -> Cause:
    options = ", ".join(f'"{s}"' for s in supported)
    return Cause(
        "FieldValueNotSupported",
        f"Unsupported value: {show(value)}: supported values: {options}",
        path,
    )


def duplicate(path: str, value: Any) -> Cause:
    return Cause("FieldValueDuplicate", f"Duplicate value: {show(value)}", path)


def forbidden(path: str, detail: str) -> Cause:
    return Cause("FieldValueForbidden", f"Forbidden: {detail}", path)


def too_long(path: str, limit: int) -> Cause:
    return Cause("FieldValueTooLong", f"Too long: may not be more than {limit} bytes", path)


def immutable(path: str, value: Any) -> Cause:
    return invalid(path, value, "field is immutable")


# --- names --------------------------------------------------------------------------


def dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.match(value):
        errs.append(DNS1123_LABEL_MSG)
    return errs


def dns1035_label(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1035_LABEL.match(value):
        errs.append(DNS1035_LABEL_MSG)
    return errs


def dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.match(value):
        errs.append(DNS1123_SUBDOMAIN_MSG)
    return errs


def port_name(value: str) -> list[str]:
    """An IANA service name, as used for container and service port names."""
    errs = []
    if len(value) > 15:
        errs.append("must be no more than 15 characters")
    if not _IANA_SVC_NAME.match(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    elif "--" in value:
        errs.append("must not contain consecutive hyphens")
    if value and not re.search("[a-z]", value):
        errs.append("must contain at least one letter (a-z)")
    if value.startswith("-") or value.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def port_number(path: str, value: Any, *, allow_zero: bool = False) -> list[Cause]:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535:
        return [invalid(path, value, f"must be between {low} and 65535, inclusive")]
    return []


_IP_HINT = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"


def ip_address(path: str, value: Any, family: int | None = None) -> list[Cause]:
    """An IP address in the family given (4 or 6), if any.

    socket.inet_pton rather than ipaddress: it is what bulk EndpointSlice loads spend
    their time on, and it is an order of magnitude faster.
    """
    if not isinstance(value, str):
        return [invalid(path, value, _IP_HINT)]
    if family != 6:
        try:
            socket.inet_pton(socket.AF_INET, value)
            return []
        except OSError:
            if family == 4:
                return [invalid(path, value, "must be a valid IPv4 address")]
    try:
        socket.inet_pton(socket.AF_INET6, value)
    except OSError:
        return [
            invalid(path, value, _IP_HINT if family is None else "must be a valid IPv6 address")
        ]
    if family == 4:
        return [invalid(path, value, "must be a valid IPv4 address")]
    return []


# --- metadata -----------------------------------------------------------------------

_TOTAL_ANNOTATION_SIZE = 256 * 1024


def metadata(meta: Any, name_check: str, *, namespaced: bool) -> list[Cause]:
    """ValidateObjectMeta: name (by the kind's rule), labels and annotations."""
    if not isinstance(meta, dict):
        return [required("metadata")]
    causes: list[Cause] = []
    name = meta.get("name")
    if not name:
        if not meta.get("generateName"):
            causes.append(required("metadata.name", "name or generateName is required"))
    elif not isinstance(name, str):
        causes.append(invalid("metadata.name", name, "must be a string"))
    else:
        check = {"label": dns1123_label, "dns1035": dns1035_label}.get(
            name_check, dns1123_subdomain
        )
        causes.extend(invalid("metadata.name", name, e) for e in check(name))
    if namespaced:
        ns = meta.get("namespace")
        if isinstance(ns, str) and ns:
            causes.extend(invalid("metadata.namespace", ns, e) for e in dns1123_label(ns))
    labels = meta.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            causes.append(invalid("metadata.labels", labels, "must be a map of strings"))
        else:
            for key, value in labels.items():
                causes.extend(
                    invalid("metadata.labels", key, e) for e in qualified_name_errors(key)
                )
                if not isinstance(value, str):
                    causes.append(invalid("metadata.labels", value, "must be a string"))
                else:
                    causes.extend(
                        invalid("metadata.labels", value, e) for e in label_value_errors(value)
                    )
    annotations = meta.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict):
            causes.append(invalid("metadata.annotations", annotations, "must be a map of strings"))
        else:
            size = 0
            for key, value in annotations.items():
                causes.extend(
                    invalid("metadata.annotations", key, e)
                    for e in qualified_name_errors(key.lower())
                )
                if not isinstance(value, str):
                    causes.append(
                        invalid(f"metadata.annotations[{key}]", value, "must be a string")
                    )
                else:
                    size += len(key) + len(value)
            if size > _TOTAL_ANNOTATION_SIZE:
                causes.append(too_long("metadata.annotations", _TOTAL_ANNOTATION_SIZE))
    return causes
