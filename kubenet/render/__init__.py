"""Renderers: a ServiceMap and the node's options in, a plan for one backend out.

Each backend has its own module (``iptables``, ``nftables``, ``ipvs``); every renderer
is pure and deterministic. :func:`render` picks one by proxy mode.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from kubenet.model import ServiceMap
from kubenet.options import RenderOptions

if TYPE_CHECKING:
    from kubenet.render.iptables import IptablesPlan
    from kubenet.render.ipvs import IpvsPlan
    from kubenet.render.nftables import NftablesPlan

    Plan = IptablesPlan | NftablesPlan | IpvsPlan


class ProxyMode(enum.StrEnum):
    """--proxy-mode."""

    IPTABLES = "iptables"
    NFTABLES = "nftables"
    IPVS = "ipvs"


def render(
    service_map: ServiceMap,
    options: RenderOptions,
    mode: ProxyMode,
    *,
    ipvs_scheduler: str = "rr",
) -> Plan:
    """Render ``service_map`` for ``options.ip_family`` with the backend of ``mode``.

    ``ipvs_scheduler`` is ``--ipvs-scheduler``; only the IPVS mode uses it.
    """
    if mode is ProxyMode.IPTABLES:
        from kubenet.render import iptables

        return iptables.render(service_map, options)
    if mode is ProxyMode.NFTABLES:
        from kubenet.render import nftables

        return nftables.render(service_map, options)
    if mode is ProxyMode.IPVS:
        from kubenet.render import ipvs

        return ipvs.render(service_map, options, scheduler=ipvs_scheduler)
    raise ValueError(f"unknown proxy mode {mode!r}")
