"""Stream completions through the official openai SDK (async) over a pool of API keys.

    pip install 'keyrelay[httpx2]' openai
    export OPENAI_BASE_URL=https://api.openai.com/v1      # or any OpenAI-compatible upstream
    export KEYRELAY_KEYS=sk-...one,sk-...two,sk-...three
    python examples/openai_async_stream.py

A stream whose first event is an error (a spent key, an overloaded upstream) is retried on
another key before a byte reaches your code; once the answer has started, it is yours.
"""

from __future__ import annotations

import asyncio
import os
import sys

from openai import AsyncOpenAI

import keyrelay


async def ask(client: AsyncOpenAI, model: str, question: str) -> str:
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        stream=True,
        stream_options={"include_usage": True},  # lets keyrelay count tokens per key
    )
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    return "".join(parts)


async def main() -> int:
    keys = [k.strip() for k in os.environ.get("KEYRELAY_KEYS", "").split(",") if k.strip()]
    if not keys:
        print("set KEYRELAY_KEYS to a comma-separated list of API keys", file=sys.stderr)
        return 2
    base_url = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
    model = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")

    async with keyrelay.Pool.from_keys(keys, base_url=base_url) as pool:
        async with AsyncOpenAI(
            api_key="keyrelay", base_url=pool.base_url, max_retries=0, http_client=keyrelay.async_httpx_client(pool)
        ) as client:
            questions = ["Say hello.", "Name a colour.", "Count to three.", "Name a planet."]
            answers = await asyncio.gather(*(ask(client, model, q) for q in questions))
            for q, a in zip(questions, answers, strict=True):
                print(f"{q} -> {a}")

        print("\nkeys:")
        for key in await asyncio.to_thread(pool.keys):
            c = key.counters
            print(
                f"  {key.masked:14} {key.state.value:9} requests={c.requests} tokens={c.prompt_tokens + c.completion_tokens}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
