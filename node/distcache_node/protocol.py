"""Names on the wire that servers, peers and clients share: no imports, so every layer (the
HTTP edge, the cluster core, the client, the operator) can use them."""

# A node answers with the ring version it follows, so ring-aware clients refresh theirs.
RING_VERSION_HEADER = "X-DistCache-Ring-Version"
# Peer calls carry who sent them and on which ring, so a receiver on an older ring catches up.
FROM_HEADER = "X-DistCache-From"
RING_HEADER = RING_VERSION_HEADER
# The cluster secret: the peer credential when there is no mutual TLS.
SECRET_HEADER = "X-DistCache-Cluster-Secret"
# On every answer of a node that got SIGTERM and is draining: clients send elsewhere.
STOPPING_HEADER = "X-DistCache-Stopping"
# When the client stops waiting for this request (seconds since the Unix epoch). A write that
# reaches its node later is not applied: the client has given up on it and may have sent it
# again, and newer writes, elsewhere; applied late it would overwrite them (a request frozen
# in a stopped node's socket buffer and read once the node came back did exactly that).
DEADLINE_HEADER = "X-DistCache-Deadline"
