"""The lab: node-proxy on a real (namespaced) kernel, a person at the keyboard.

``node-proxy lab up`` builds network namespaces for a client, a node and four pods
(:mod:`kubenet.testing.netns`), gives each pod a tiny HTTP and UDP server
(:mod:`kubenet.lab.podserver`), starts the embedded API server with the example
cluster inside the node namespace, and runs ``node-proxy run`` there. Then
``lab curl``, ``lab scale``, ``lab trace`` and ``lab rules`` show real packets
reaching pods through real rules, and the rules changing as the cluster does;
``lab down`` removes everything.

The rooms:

* :mod:`kubenet.lab.layout`: the lab's fixed shape (addresses, pods, node name);
* :mod:`kubenet.lab.state`: what a running lab recorded, so any later process (and
  ``lab down`` after a crash) knows what to talk to and what to remove;
* :mod:`kubenet.lab.supervisor`: the process that builds and holds the lab;
* :mod:`kubenet.lab.inside`: running code and HTTP requests inside a namespace;
* :mod:`kubenet.lab.client`: the few API calls the lab makes;
* :mod:`kubenet.lab.scale`: a Service's EndpointSlice for N pods (pure);
* :mod:`kubenet.lab.teardown`: ``lab down``;
* :mod:`kubenet.lab.cli`: the Typer app mounted as ``node-proxy lab``.

Everything lives inside namespaces the lab made: the host's own network and
firewall are never touched.
"""
