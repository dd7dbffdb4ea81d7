"""`python -m avatar_core.parity DIR`: run every check DIR's fixtures support, one ok/FAIL line each.

Exit code 0 when every check passes, 1 when one fails (or none ran), 2 when DIR is not a fixture folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def run(fixture_dir: Path) -> list:
    if (fixture_dir / "tiny_llava_config.json").is_file():
        from . import text
        return text.checks(fixture_dir)
    if (fixture_dir / "tiny_config.json").is_file():
        from . import transformer
        return transformer.checks(fixture_dir)
    raise FileNotFoundError(f"{fixture_dir}: neither tiny_config.json (shared/fixtures/parity format) nor "
                            "tiny_llava_config.json (shared/fixtures/text format): not a parity fixture folder")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m avatar_core.parity",
                                 description="Check avatar_core against official-code parity fixtures.")
    ap.add_argument("fixture_dir", type=Path)
    args = ap.parse_args(argv)
    # Fixture models are tiny: thread start-up costs more than the math (10x slower on a busy 2-core box).
    torch.set_num_threads(1)
    try:
        results = run(args.fixture_dir)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    for r in results:
        print(r.line())
    failed = [r for r in results if not r.ok]
    skipped = [r for r in results if r.skipped]
    print(f"{len(results) - len(failed) - len(skipped)} passed, {len(failed)} failed, {len(skipped)} skipped")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    raise SystemExit(main())
