"""``python -m kubenet.lab``: the lab's commands without the node-proxy wrapper."""

from kubenet.lab.cli import main

main()
