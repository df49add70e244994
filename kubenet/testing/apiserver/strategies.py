"""Per-kind behaviour: defaults, status handling, validation, allocation.

Upstream calls these REST strategies (``pkg/registry/core/<kind>/strategy.go``): what a
create or an update does to an object beyond storing it.  A :class:`Strategy` works on
plain dicts in place.  The generic one validates metadata; the kinds below add what
kube-apiserver does for them:

* Namespace: ``spec.finalizers: [kubernetes]``, ``status.phase: Active`` and the
  ``kubernetes.io/metadata.name`` label.
* Pod: the common defaults (restart and DNS policy, pull policy, ...), ``status.phase:
  Pending`` on create (no kubelet runs here, so pods stay Pending unless a client
  writes ``pods/status``), and that containers exist and have images.
* Service: defaults, IP families, ClusterIP and NodePort allocation, port checks.
* EndpointSlice: address type and address checks, port defaults.
"""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

from kubenet.testing.apiserver import validation as v
from kubenet.testing.apiserver.allocators import (
    Exhausted,
    ServiceAllocations,
    cluster_ips,
    node_ports,
)
from kubenet.testing.apiserver.errors import Cause
from kubenet.testing.apiserver.resources import ResourceType

JsonObject = dict[str, Any]


def _dict(obj: JsonObject, key: str) -> JsonObject:
    """``obj[key]`` as a dict, creating it when absent or not a dict."""
    value = obj.get(key)
    if not isinstance(value, dict):
        value = {}
        obj[key] = value
    return value


def _list(obj: JsonObject, key: str) -> list[Any]:
    value = obj.get(key)
    return value if isinstance(value, list) else []


class Strategy:
    """Generic behaviour: metadata validation only; status kept apart if the kind has one."""

    #: How names are checked: "subdomain" (RFC 1123), "label" or "dns1035".
    name_check = "subdomain"

    def __init__(self, rtype: ResourceType) -> None:
        self.rtype = rtype

    def prepare_create(self, obj: JsonObject) -> None:
        """Defaults and system fields on create (status reset for kinds that have one)."""

    def prepare_update(self, new: JsonObject, old: JsonObject) -> None:
        """A write to the main resource cannot change status."""
        if self.rtype.has_status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)

    def prepare_status_update(self, new: JsonObject, old: JsonObject) -> None:
        """A write to /status changes only status (upstream's ResetObjectMetaForStatus)."""
        status = new.get("status")
        new.clear()
        new.update(copy.deepcopy(old))
        if status is None:
            new.pop("status", None)
        else:
            new["status"] = status

    def default(self, obj: JsonObject) -> None:
        """Field defaults (applied on every write, like upstream's defaulting on decode)."""

    def validate(self, obj: JsonObject, old: JsonObject | None) -> list[Cause]:
        return v.metadata(obj.get("metadata"), self.name_check, namespaced=self.rtype.namespaced)

    def allocate(self, obj: JsonObject, old: JsonObject | None) -> list[Cause]:
        """Claim server-assigned values (cluster IPs, node ports); errors are 422 causes."""
        return []


class NamespaceStrategy(Strategy):
    name_check = "label"

    def prepare_create(self, obj: JsonObject) -> None:
        _dict(obj, "spec")["finalizers"] = ["kubernetes"]
        obj["status"] = {"phase": "Active"}

    def default(self, obj: JsonObject) -> None:
        # Since 1.21 every namespace carries its own name as an immutable label.
        meta = _dict(obj, "metadata")
        if meta.get("name"):
            _dict(meta, "labels")["kubernetes.io/metadata.name"] = meta["name"]


class NodeStrategy(Strategy):
    """Nodes keep the status they are created with: kubelet creates them that way."""


class PodStrategy(Strategy):
    def prepare_create(self, obj: JsonObject) -> None:
        obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj)}

    def default(self, obj: JsonObject) -> None:
        spec = _dict(obj, "spec")
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("securityContext", {})
        spec.setdefault("enableServiceLinks", True)
        for kind in ("containers", "initContainers"):
            for c in _list(spec, kind):
                if not isinstance(c, dict):
                    continue
                image = str(c.get("image", ""))
                tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
                latest = image.endswith(":latest") or not tagged
                c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
                c.setdefault("terminationMessagePath", "/dev/termination-log")
                c.setdefault("terminationMessagePolicy", "File")
                c.setdefault("resources", {})
                for p in _list(c, "ports"):
                    if isinstance(p, dict):
                        p.setdefault("protocol", "TCP")

    def validate(self, obj: JsonObject, old: JsonObject | None) -> list[Cause]:
        causes = super().validate(obj, old)
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [*causes, v.required("spec.containers")]
        containers = spec.get("containers")
        if not isinstance(containers, list) or not containers:
            causes.append(v.required("spec.containers"))
            return causes
        seen: set[str] = set()
        for i, c in enumerate(containers):
            path = f"spec.containers[{i}]"
            if not isinstance(c, dict):
                causes.append(v.invalid(path, c, "must be an object"))
                continue
            name = c.get("name")
            if not name:
                causes.append(v.required(f"{path}.name"))
            elif not isinstance(name, str):
                causes.append(v.invalid(f"{path}.name", name, "must be a string"))
            else:
                causes.extend(v.invalid(f"{path}.name", name, e) for e in v.dns1123_label(name))
                if name in seen:
                    causes.append(v.duplicate(f"{path}.name", name))
                seen.add(name)
            if not c.get("image"):
                causes.append(v.required(f"{path}.image"))
            for j, p in enumerate(_list(c, "ports")):
                if isinstance(p, dict):
                    causes.extend(
                        v.port_number(f"{path}.ports[{j}].containerPort", p.get("containerPort"))
                    )
        if old is not None:
            old_names = [c.get("name") for c in _list(old.get("spec") or {}, "containers")]
            new_names = [c.get("name") for c in containers if isinstance(c, dict)]
            if old_names != new_names:
                causes.append(
                    v.forbidden(
                        "spec",
                        "pod updates may not change fields other than "
                        "`spec.containers[*].image`, `spec.initContainers[*].image`, "
                        "`spec.activeDeadlineSeconds`, `spec.tolerations` (only "
                        "additions to existing tolerations), "
                        "`spec.terminationGracePeriodSeconds` (allow it to be set to "
                        "1 if it was previously negative)",
                    )
                )
        return causes


def _qos_class(pod: JsonObject) -> str:
    """BestEffort without any requests or limits; Guaranteed if every container's
    requests equal its limits for cpu and memory; Burstable otherwise."""
    containers = [c for c in _list(pod.get("spec") or {}, "containers") if isinstance(c, dict)]
    resources = [c.get("resources") or {} for c in containers]
    if not any((r.get("requests") or r.get("limits")) for r in resources):
        return "BestEffort"
    for r in resources:
        limits = r.get("limits") or {}
        requests = r.get("requests") or limits
        for res in ("cpu", "memory"):
            if res not in limits or requests.get(res) != limits[res]:
                return "Burstable"
    return "Guaranteed"


_SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
_PROTOCOLS = ("SCTP", "TCP", "UDP")
_FAMILY_POLICIES = ("PreferDualStack", "RequireDualStack", "SingleStack")


def _family_of(ip: str) -> str:
    return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"


def _needs_node_ports(spec: JsonObject) -> bool:
    kind = spec.get("type", "ClusterIP")
    if kind == "NodePort":
        return True
    return kind == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts", True) is not False


class ServiceStrategy(Strategy):
    name_check = "dns1035"

    def __init__(self, rtype: ResourceType, allocations: ServiceAllocations) -> None:
        super().__init__(rtype)
        self.alloc = allocations

    def prepare_create(self, obj: JsonObject) -> None:
        obj["status"] = {"loadBalancer": {}}

    def prepare_update(self, new: JsonObject, old: JsonObject) -> None:
        super().prepare_update(new, old)
        spec, old_spec = _dict(new, "spec"), old.get("spec") or {}
        new_type = spec.get("type", "ClusterIP")
        old_type = old_spec.get("type", "ClusterIP")
        # Keep values the server allocated when a client resubmits its own manifest
        # (upstream's patchAllocatedValues).
        if new_type != "ExternalName" and old_type != "ExternalName":
            if not spec.get("clusterIP") and old_spec.get("clusterIP"):
                spec["clusterIP"] = old_spec["clusterIP"]
            same_ip = spec.get("clusterIP") == old_spec.get("clusterIP")
            if not spec.get("clusterIPs") and old_spec.get("clusterIPs") and same_ip:
                spec["clusterIPs"] = old_spec["clusterIPs"]
        if _needs_node_ports(spec) and _needs_node_ports(old_spec):
            by_name = {p.get("name", ""): p.get("nodePort") for p in _list(old_spec, "ports")}
            used = {p.get("nodePort") for p in _list(spec, "ports") if isinstance(p, dict)}
            for p in _list(spec, "ports"):
                if isinstance(p, dict) and not p.get("nodePort"):
                    prior = by_name.get(p.get("name", ""))
                    if prior and prior not in used:
                        p["nodePort"] = prior
        elif not _needs_node_ports(spec):
            # Moving away from NodePort/LoadBalancer releases the node ports.
            for p in _list(spec, "ports"):
                if isinstance(p, dict) and old_type in ("NodePort", "LoadBalancer"):
                    p.pop("nodePort", None)
        local_lb = new_type == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"
        if local_lb and not spec.get("healthCheckNodePort") and old_spec.get("healthCheckNodePort"):
            spec["healthCheckNodePort"] = old_spec["healthCheckNodePort"]
        if new_type != "LoadBalancer":
            _dict(new, "status")["loadBalancer"] = {}

    def default(self, obj: JsonObject) -> None:
        spec = _dict(obj, "spec")
        kind = spec.setdefault("type", "ClusterIP")
        if kind == "ExternalName":
            return
        spec.setdefault("sessionAffinity", "None")
        if spec["sessionAffinity"] == "ClientIP":
            cfg = _dict(_dict(spec, "sessionAffinityConfig"), "clientIP")
            cfg.setdefault("timeoutSeconds", 10800)
        spec.setdefault("internalTrafficPolicy", "Cluster")
        if kind in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        if kind == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        for p in _list(spec, "ports"):
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
                if "targetPort" not in p and "port" in p:
                    p["targetPort"] = p["port"]
        if spec.get("clusterIP") and not spec.get("clusterIPs"):
            spec["clusterIPs"] = [spec["clusterIP"]]

    def validate(self, obj: JsonObject, old: JsonObject | None) -> list[Cause]:
        causes = super().validate(obj, old)
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [*causes, v.required("spec")]
        kind = spec.get("type", "ClusterIP")
        if kind not in _SERVICE_TYPES:
            causes.append(v.not_supported("spec.type", kind, _SERVICE_TYPES))
            return causes
        headless = spec.get("clusterIP") == "None"
        ports = spec.get("ports")
        if kind == "ExternalName":
            if not spec.get("externalName"):
                causes.append(v.required("spec.externalName"))
            if spec.get("clusterIP"):
                causes.append(
                    v.forbidden("spec.clusterIP", "may not be set for ExternalName services")
                )
        elif not ports and not headless:
            causes.append(v.required("spec.ports"))
        if ports is not None and not isinstance(ports, list):
            causes.append(v.invalid("spec.ports", ports, "must be a list"))
            ports = []
        causes.extend(self._validate_ports(spec, ports or [], kind))
        affinity = spec.get("sessionAffinity", "None")
        if affinity not in ("ClientIP", "None"):
            causes.append(v.not_supported("spec.sessionAffinity", affinity, ("ClientIP", "None")))
        timeout = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get(
            "timeoutSeconds"
        )
        if timeout is not None and (not isinstance(timeout, int) or not 0 < timeout <= 86400):
            causes.append(
                v.invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    timeout,
                    "must be greater than 0 and less than 86400",
                )
            )
        for field in ("externalTrafficPolicy", "internalTrafficPolicy"):
            value = spec.get(field)
            if value is not None and value not in ("Cluster", "Local"):
                causes.append(v.not_supported(f"spec.{field}", value, ("Cluster", "Local")))
        if spec.get("externalTrafficPolicy") and kind not in ("NodePort", "LoadBalancer"):
            causes.append(
                v.invalid(
                    "spec.externalTrafficPolicy",
                    spec["externalTrafficPolicy"],
                    "may only be set for externally-accessible services",
                )
            )
        policy = spec.get("ipFamilyPolicy")
        if policy is not None and policy not in _FAMILY_POLICIES:
            causes.append(v.not_supported("spec.ipFamilyPolicy", policy, _FAMILY_POLICIES))
        for i, fam in enumerate(_list(spec, "ipFamilies")):
            if fam not in ("IPv4", "IPv6"):
                causes.append(v.not_supported(f"spec.ipFamilies[{i}]", fam, ("IPv4", "IPv6")))
        for i, ip in enumerate(_list(spec, "clusterIPs")):
            if ip != "None":
                causes.extend(v.ip_address(f"spec.clusterIPs[{i}]", ip))
        for i, ip in enumerate(_list(spec, "externalIPs")):
            causes.extend(v.ip_address(f"spec.externalIPs[{i}]", ip))
        for i, cidr in enumerate(_list(spec, "loadBalancerSourceRanges")):
            try:
                ipaddress.ip_network(str(cidr).strip(), strict=False)
            except ValueError:
                causes.append(
                    v.invalid(
                        f"spec.loadBalancerSourceRanges[{i}]",
                        cidr,
                        "must be a list of IP ranges. For example, 10.240.0.0/24,10.250.0.0/24 ",
                    )
                )
        if old is not None:
            old_spec = old.get("spec") or {}
            if (
                kind != "ExternalName"
                and old_spec.get("type", "ClusterIP") != "ExternalName"
                and old_spec.get("clusterIP")
                and spec.get("clusterIP") != old_spec.get("clusterIP")
            ):
                causes.append(v.immutable("spec.clusterIPs[0]", spec.get("clusterIP", "")))
        return causes

    def _validate_ports(self, spec: JsonObject, ports: list[Any], kind: str) -> list[Cause]:
        causes: list[Cause] = []
        names: set[str] = set()
        keys: set[tuple[Any, Any]] = set()
        for i, p in enumerate(ports):
            path = f"spec.ports[{i}]"
            if not isinstance(p, dict):
                causes.append(v.invalid(path, p, "must be an object"))
                continue
            name = p.get("name", "")
            if len(ports) > 1 and not name:
                causes.append(v.required(f"{path}.name"))
            elif name:
                if not isinstance(name, str):
                    causes.append(v.invalid(f"{path}.name", name, "must be a string"))
                else:
                    causes.extend(v.invalid(f"{path}.name", name, e) for e in v.dns1123_label(name))
                    if name in names:
                        causes.append(v.duplicate(f"{path}.name", name))
                    names.add(name)
            causes.extend(v.port_number(f"{path}.port", p.get("port")))
            protocol = p.get("protocol", "TCP")
            if protocol not in _PROTOCOLS:
                causes.append(v.not_supported(f"{path}.protocol", protocol, _PROTOCOLS))
            key = (p.get("port"), protocol)
            if key in keys:
                causes.append(v.duplicate(path, f"{key[0]}/{key[1]}"))
            keys.add(key)
            target = p.get("targetPort")
            if isinstance(target, str):
                causes.extend(
                    v.invalid(f"{path}.targetPort", target, e) for e in v.port_name(target)
                )
            elif target is not None:
                causes.extend(v.port_number(f"{path}.targetPort", target))
            node_port = p.get("nodePort")
            if node_port:
                if kind in ("ClusterIP", "ExternalName"):
                    causes.append(
                        v.forbidden(f"{path}.nodePort", f"may not be used when `type` is '{kind}'")
                    )
                else:
                    causes.extend(v.port_number(f"{path}.nodePort", node_port))
        return causes

    # -- allocation --------------------------------------------------------------------

    def allocate(self, obj: JsonObject, old: JsonObject | None) -> list[Cause]:
        spec = _dict(obj, "spec")
        own_ips = set(cluster_ips(old)) if old else set()
        own_ports = set(node_ports(old)) if old else set()
        if spec.get("type") == "ExternalName":
            for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                spec.pop(key, None)
            return []
        causes = self._allocate_ips(spec, own_ips)
        if causes:
            return causes
        return self._allocate_node_ports(spec, own_ports)

    def _allocate_ips(self, spec: JsonObject, own: set[str]) -> list[Cause]:
        given = [ip for ip in _list(spec, "clusterIPs") if ip]
        headless = given[:1] == ["None"]
        policy = spec.get("ipFamilyPolicy") or "SingleStack"
        families = list(_list(spec, "ipFamilies"))
        if not families:
            families = [_family_of(ip) for ip in given if ip != "None"] or [self.alloc.families[0]]
        dual_capable = len(self.alloc.families) > 1
        if policy == "RequireDualStack" and not dual_capable:
            return [
                v.invalid(
                    "spec.ipFamilyPolicy",
                    policy,
                    "this cluster is not configured for dual-stack services",
                )
            ]
        if policy != "SingleStack" and dual_capable and len(families) == 1:
            families.append(next(f for f in self.alloc.families if f != families[0]))
        if policy == "SingleStack" and len(families) > 1:
            return [
                v.invalid(
                    "spec.ipFamilies",
                    families,
                    "when spec.ipFamilyPolicy is SingleStack, only one ipFamily is allowed",
                )
            ]
        if len(set(families)) != len(families):
            return [v.duplicate("spec.ipFamilies[1]", families[1])]
        for i, fam in enumerate(families):
            if self.alloc.range_for(fam) is None:
                return [v.invalid(f"spec.ipFamilies[{i}]", fam, "not configured on this cluster")]
        spec["ipFamilyPolicy"] = policy
        spec["ipFamilies"] = families
        if headless:
            spec["clusterIP"] = "None"
            spec["clusterIPs"] = ["None"]
            return []
        ips: list[str] = []
        for i, fam in enumerate(families):
            rng = self.alloc.range_for(fam)
            assert rng is not None
            path = f"spec.clusterIPs[{i}]"
            if i < len(given):
                ip = given[i]
                if _family_of(ip) != fam:
                    return [
                        v.invalid(
                            path, ip, f"expected an {fam} value as indicated by `ipFamilies[{i}]`"
                        )
                    ]
                if not rng.contains(ip):
                    return [
                        v.invalid(
                            path,
                            ip,
                            f"failed to allocate IP {ip}: the provided IP ({ip}) is "
                            f"not in the valid range. The range of valid IPs is {rng}",
                        )
                    ]
                if ip in rng.used and ip not in own:
                    return [
                        v.invalid(
                            path,
                            ip,
                            f"failed to allocate IP {ip}: provided IP is already allocated",
                        )
                    ]
                ips.append(ip)
            else:
                try:
                    ips.append(rng.allocate())
                except Exhausted:
                    return [
                        v.invalid(
                            path, "", f"failed to allocate a serviceIP: range is full ({rng})"
                        )
                    ]
        spec["clusterIPs"] = ips
        spec["clusterIP"] = ips[0]
        return []

    def _allocate_node_ports(self, spec: JsonObject, own: set[int]) -> list[Cause]:
        rng = self.alloc.node_ports
        claimed: set[int] = set()

        def claim(path: str, port: Any) -> list[Cause]:
            if not rng.contains(port):
                return [
                    v.invalid(
                        path,
                        port,
                        "provided port is not in the valid range. "
                        f"The range of valid ports is {rng}",
                    )
                ]
            if (port in rng.used and port not in own) or port in claimed:
                return [v.invalid(path, port, "provided port is already allocated")]
            claimed.add(port)
            return []

        ports = [p for p in _list(spec, "ports") if isinstance(p, dict)]
        if _needs_node_ports(spec):
            # Two ports with the same number but different protocols share a node port.
            by_number: dict[Any, int] = {}
            for i, p in enumerate(ports):
                if p.get("nodePort"):
                    if p["nodePort"] in claimed and by_number.get(p.get("port")) == p["nodePort"]:
                        continue
                    errs = claim(f"spec.ports[{i}].nodePort", p["nodePort"])
                    if errs:
                        return errs
                    by_number[p.get("port")] = p["nodePort"]
            for i, p in enumerate(ports):
                if not p.get("nodePort"):
                    try:
                        p["nodePort"] = by_number.get(p.get("port")) or rng.allocate(claimed)
                    except Exhausted:
                        return [v.invalid(f"spec.ports[{i}].nodePort", 0, "range is full")]
                    claimed.add(p["nodePort"])
                    by_number[p.get("port")] = p["nodePort"]
        needs_hc = (
            spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"
        )
        if needs_hc:
            hc = spec.get("healthCheckNodePort")
            if hc:
                errs = claim("spec.healthCheckNodePort", hc)
                if errs:
                    return errs
            else:
                spec["healthCheckNodePort"] = rng.allocate(claimed)
        else:
            spec.pop("healthCheckNodePort", None)
        return []


_ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")


class EndpointSliceStrategy(Strategy):
    def default(self, obj: JsonObject) -> None:
        for p in _list(obj, "ports"):
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
                p.setdefault("name", "")

    def validate(self, obj: JsonObject, old: JsonObject | None) -> list[Cause]:
        causes = super().validate(obj, old)
        kind = obj.get("addressType")
        if not kind:
            causes.append(v.required("addressType"))
        elif kind not in _ADDRESS_TYPES:
            causes.append(v.not_supported("addressType", kind, _ADDRESS_TYPES))
        elif old is not None and old.get("addressType") != kind:
            causes.append(v.immutable("addressType", kind))
        endpoints = obj.get("endpoints")
        if endpoints is not None and not isinstance(endpoints, list):
            return [*causes, v.invalid("endpoints", endpoints, "must be a list")]
        if endpoints and len(endpoints) > 1000:
            causes.append(
                Cause(
                    "FieldValueTooMany",
                    f"Too many: {len(endpoints)}: must have at most 1000 items",
                    "endpoints",
                )
            )
        family = {"IPv4": 4, "IPv6": 6}.get(str(kind))
        for i, ep in enumerate(endpoints or []):
            path = f"endpoints[{i}]"
            if not isinstance(ep, dict):
                causes.append(v.invalid(path, ep, "must be an object"))
                continue
            addresses = ep.get("addresses")
            if not isinstance(addresses, list) or not addresses:
                causes.append(v.required(f"{path}.addresses", "must contain at least 1 address"))
                continue
            if len(addresses) > 100:
                causes.append(
                    Cause(
                        "FieldValueTooMany",
                        f"Too many: {len(addresses)}: must have at most 100 items",
                        f"{path}.addresses",
                    )
                )
            for j, addr in enumerate(addresses):
                if family is not None:
                    causes.extend(v.ip_address(f"{path}.addresses[{j}]", addr, family))
                elif isinstance(addr, str):
                    causes.extend(
                        v.invalid(f"{path}.addresses[{j}]", addr, e)
                        for e in v.dns1123_subdomain(addr)
                    )
        names: set[str] = set()
        for i, p in enumerate(_list(obj, "ports")):
            path = f"ports[{i}]"
            if not isinstance(p, dict):
                causes.append(v.invalid(path, p, "must be an object"))
                continue
            name = p.get("name") or ""
            if name:
                causes.extend(
                    v.invalid(f"{path}.name", name, e) for e in v.dns1123_label(str(name))
                )
            if name in names:
                causes.append(v.duplicate(f"{path}.name", name))
            names.add(name)
            if p.get("port") is not None:
                causes.extend(v.port_number(f"{path}.port", p.get("port"), allow_zero=True))
            protocol = p.get("protocol", "TCP")
            if protocol not in _PROTOCOLS:
                causes.append(v.not_supported(f"{path}.protocol", protocol, _PROTOCOLS))
        return causes


class ConfigMapStrategy(Strategy):
    def validate(self, obj: JsonObject, old: JsonObject | None) -> list[Cause]:
        causes = super().validate(obj, old)
        total = 0
        for field in ("data", "binaryData"):
            data = obj.get(field)
            if data is None:
                continue
            if not isinstance(data, dict):
                causes.append(v.invalid(field, data, "must be a map"))
                continue
            for key, value in data.items():
                if not v._CONFIG_KEY.match(key) or len(key) > 253:
                    causes.append(
                        v.invalid(
                            f"{field}[{key}]",
                            key,
                            "a valid config key must consist of "
                            "alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
                            "'KEY_NAME',  or 'key-name', regex used for validation is "
                            "'[-._a-zA-Z0-9]+')",
                        )
                    )
                if not isinstance(value, str):
                    causes.append(v.invalid(f"{field}[{key}]", value, "must be a string"))
                else:
                    total += len(value)
        if total > 1024 * 1024:
            causes.append(v.too_long("", 1024 * 1024))
        return causes
