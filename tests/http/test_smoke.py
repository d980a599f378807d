import aiohttp


async def test_set_then_get_roundtrip(node_url: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{node_url}/set", json={"key": "user:1", "value": "Alice"}) as resp:
        assert resp.status == 200
    async with http.get(f"{node_url}/get", params={"key": "user:1"}) as resp:
        assert resp.status == 200
        assert await resp.json() == {"key": "user:1", "value": "Alice", "ttl": None}
