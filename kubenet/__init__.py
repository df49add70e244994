"""kubenet: kube-proxy and kubectl proxy, side by side, over one shared core."""

from kubenet.model import (
    Endpoint,
    IPFamily,
    LoadBalancerIngress,
    Protocol,
    ServiceMap,
    ServicePort,
    ServicePortName,
    TrafficPolicy,
)
from kubenet.options import DetectLocalMode, LocalDetector, RenderOptions

__all__ = [
    "DetectLocalMode",
    "Endpoint",
    "IPFamily",
    "LoadBalancerIngress",
    "LocalDetector",
    "Protocol",
    "RenderOptions",
    "ServiceMap",
    "ServicePort",
    "ServicePortName",
    "TrafficPolicy",
]
__version__ = "0.1.0"
