"""Rotate a pool of API keys inside the official openai SDK — sync, no gateway needed.

    pip install 'keyrelay[httpx2]' openai
    export OPENAI_BASE_URL=https://api.openai.com/v1      # or any OpenAI-compatible upstream
    export KEYRELAY_KEYS=sk-...one,sk-...two,sk-...three
    python examples/openai_sync.py

Every request goes out with a key of the pool; a key that answers "invalid" or "quota spent" is
retired and the request is sent again with another key before the SDK sees anything. Keys are
kept in memory here; use ``keyrelay.Pool.open("sqlite:///keys.db")`` to share the pool (and
its states) with a keyrelay gateway and other processes.
"""

from __future__ import annotations

import os
import sys

from openai import OpenAI

import keyrelay


def main() -> int:
    keys = [k.strip() for k in os.environ.get("KEYRELAY_KEYS", "").split(",") if k.strip()]
    if not keys:
        print("set KEYRELAY_KEYS to a comma-separated list of API keys", file=sys.stderr)
        return 2
    base_url = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
    model = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")

    with keyrelay.Pool.from_keys(keys, base_url=base_url) as pool:
        # api_key is a placeholder: the transport swaps in a pool key for every attempt.
        # max_retries=0: keyrelay already retried on other keys; see docs/library.md.
        client = OpenAI(
            api_key="keyrelay", base_url=pool.base_url, max_retries=0, http_client=keyrelay.httpx_client(pool)
        )
        with client:
            for question in ("Say hello.", "Name a colour.", "Count to three."):
                reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}])
                print(f"{question} -> {reply.choices[0].message.content}")

        print("\nkeys:")
        records = pool.keys()
        for key in records:
            print(f"  {key.masked:14} {key.state.value:9} {key.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
