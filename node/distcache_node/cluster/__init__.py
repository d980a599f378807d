"""Clustering: ring placement, peers, membership, replication and migration."""
