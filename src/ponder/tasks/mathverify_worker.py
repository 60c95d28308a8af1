"""math-verify in a process of its own, so that whoever grades can bound its time from any thread.

Reads one JSON request a line, `[gold, answer]`, from stdin and writes `1` or `0` a line to stdout (after a first
line `ready`). `ponder.tasks.answers` runs it by path, so it imports nothing of Ponder; that module kills it when a
comparison runs past its deadline, so math-verify's own timeouts (signals, which only a main thread may set) are off.
"""

from __future__ import annotations

import json
import logging
import sys


def main() -> None:
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its warnings that its own timeouts are off
    replies, sys.stdout = sys.stdout, sys.stderr  # whatever a library prints cannot be taken for a reply
    print("ready", file=replies, flush=True)
    for line in sys.stdin:
        gold, answer = json.loads(line)
        try:
            parsed_gold = parse(f"${gold}$", parsing_timeout=None)
            parsed = parse(f"${answer}$", parsing_timeout=None)
            right = bool(parsed_gold and parsed and verify(parsed_gold, parsed, timeout_seconds=None))
        except Exception:  # a malformed expression is graded wrong
            right = False
        print(int(right), file=replies, flush=True)


if __name__ == "__main__":
    main()
