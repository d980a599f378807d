"""The Redis protocol edge (RESP2/RESP3): a sibling of the HTTP edge over the same Backend,
API keys, rate limiter and metrics. server.py starts it; see the README's "Redis protocol"."""
