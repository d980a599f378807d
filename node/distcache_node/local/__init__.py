"""Local mode: a multi-node cluster of real processes on this machine, no Kubernetes."""
