"""node-proxy's daemon: kube-proxy's job, kept right while the cluster changes.

The rooms, in the order data flows through them:

* :mod:`kubenet.node.config`: the settings (kube-proxy's flags and its
  KubeProxyConfiguration v1alpha1 file, flags winning);
* :mod:`kubenet.watch` (outside this package) lists and watches Services,
  EndpointSlices and the node's own Node;
* :mod:`kubenet.node.changes`: the objects as last seen, which Services changed, and
  their translation (``kubenet.translate.translate_service``) into service ports;
* :mod:`kubenet.node.backends`: one small adapter per proxy mode (nftables,
  iptables, ipvs) that turns changed ports into kernel updates, applies them, reads
  the rules back and cleans up;
* :mod:`kubenet.node.stale`: which UDP conntrack entries a change leaves stale;
* :mod:`kubenet.node.proxier`: the rate-limited sync loop that ties them together;
* :mod:`kubenet.node.health` and :mod:`kubenet.node.metrics`: ``/healthz``,
  ``/livez``, the health-check node ports, ``/metrics`` and ``/rules``;
* :mod:`kubenet.node.daemon`: one asyncio event loop running all of it.
"""
