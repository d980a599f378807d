"""`distcache-node`: run one cache node."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from distcache_node.app import create_app
from distcache_node.config import ConfigError, load_config
from distcache_node.serve import serve


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"distcache-node: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass

    async def run() -> None:
        await serve(create_app(config), config)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
