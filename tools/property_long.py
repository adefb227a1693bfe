"""Run the property tests of ``tests/test_property.py`` with a long hypothesis profile.

    python tools/property_long.py --examples 2000 [--seed 1] [--only prune,dead] [--max-blocks 8]
                                  [--json out.json]

Each property (see ``tests/randgraph.py``) runs ``--examples`` random examples (random seed
unless ``--seed``; no example database). A failing property is shrunk by hypothesis and
reported with its minimal example; the other properties still run. Prints a JSON summary:
examples run per property (every call of the property, shrinking replays included), failures
(property, error, minimal example), and seconds.
Exit status 1 when any property failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hypothesis import HealthCheck, given, seed as hseed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from randgraph import properties  # noqa: E402

PROPERTIES = properties()


def _failures(exc: BaseException) -> list[dict]:
    """One entry per distinct failure (hypothesis raises an ExceptionGroup for several), with
    the minimal falsifying example hypothesis attached as a note."""
    subs = getattr(exc, "exceptions", None)  # an ExceptionGroup (the backport on Python 3.10)
    if isinstance(subs, (list, tuple)) and all(isinstance(e, BaseException) for e in subs):
        return [f for sub in subs for f in _failures(sub)]
    notes = "\n".join(getattr(exc, "__notes__", []))
    return [{"error": f"{type(exc).__name__}: {str(exc).strip()[:1500]}", "example": notes[:6000],
             "where": "".join(traceback.format_tb(exc.__traceback__)[-3:])[-2000:]}]


def run_property(name: str, examples: int, seed: int | None, max_blocks: int) -> dict:
    strategies, check = properties(max_blocks)[name]
    count = {"examples": 0}

    def body(args):
        count["examples"] += 1
        check(*args)

    test = given(st.tuples(*strategies))(body)
    test = settings(max_examples=examples, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])(test)
    if seed is not None:
        test = hseed(seed)(test)
    start = time.perf_counter()
    failures = []
    try:
        test()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - report every failure, including ExceptionGroups
        failures = [{"property": name, **f} for f in _failures(exc)]
    return {"property": name, "examples": count["examples"],
            "seconds": round(time.perf_counter() - start, 2),
            "failures": failures}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="examples per property (default 2000)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    parser.add_argument("--only", default=",".join(PROPERTIES),
                        help=f"comma-separated subset of {', '.join(PROPERTIES)}")
    parser.add_argument("--json", default=None, help="also write the summary to this file")
    parser.add_argument("--max-blocks", type=int, default=5, help="blocks between stem and head (default 5)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROPERTIES]
    if unknown:
        parser.error(f"unknown properties {unknown}; choose from {', '.join(PROPERTIES)}")
    start = time.perf_counter()
    results = []
    for name in names:
        results.append(run_property(name, args.examples, args.seed, args.max_blocks))
        print(f"{name}: {results[-1]['examples']} examples, {results[-1]['seconds']} s, "
              f"{'FAILED' if results[-1]['failures'] else 'ok'}", file=sys.stderr)
    summary = {
        "examples_per_property": args.examples,
        "seed": args.seed,
        "max_blocks": args.max_blocks,
        "examples_run": sum(r["examples"] for r in results),
        "properties": {r["property"]: {"examples": r["examples"], "seconds": r["seconds"],
                                        "failures": len(r["failures"])} for r in results},
        "failures": [f for r in results for f in r["failures"]],
        "seconds": round(time.perf_counter() - start, 2),
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
