"""Fallback upstream for the benchmarks (when nginx is not installed): keyrelay's fake OpenAI
server with every key healthy, serving /v1/chat/completions and /v1/sse (a streamed answer).

    python bench/upstream.py PORT
"""

from __future__ import annotations

import asyncio
import sys

from keyrelay.testing.fake_upstream import Behavior, FakeUpstream


async def main(port: int) -> None:
    fake = FakeUpstream(default=Behavior.OK)
    fake.app.router.add_post("/v1/sse", fake.sse_handler)
    await fake.start(port=port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
