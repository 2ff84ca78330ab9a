"""The method scoreboard: every method on the fixed world tasks, scored by the world judge (a CLIP that did not guide).

    python bench/scoreboard.py                     # every row, 20 tasks each (about 30 minutes on 2 CPU cores)
    python bench/scoreboard.py --quick             # 2 tasks per row (a few minutes)
    python bench/scoreboard.py --methods edit-prompt,enhance-rave --seed 1
    python bench/scoreboard.py --methods nada --merge   # one row again, the others kept from the last board

Writes ``scoreboard.md`` and ``scoreboard-tasks.csv`` (one line per task) to ``--out``, and a contact sheet per row
(baseline or input | result) under ``--out/scoreboard-images``. The work is in ``clipkit.scoreboard``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clipkit.scoreboard import ROWS, run_board

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="", help=f"comma-separated rows or methods (default: all): {', '.join(ROWS)}")
    p.add_argument("--quick", action="store_true", help="a subset: the first 2 tasks of each row")
    p.add_argument("--seed", type=int, default=0, help="seed of the methods (task k runs at seed + k)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on shared cores a second thread mostly spin-waits)")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows not run now from the board already in --out (same task list)")
    a = p.parse_args(argv)
    rows = None
    if a.methods:
        wanted = [m.strip() for m in a.methods.split(",") if m.strip()]
        rows = [name for name, r in ROWS.items() if name in wanted or r.method in wanted]
        unknown = [m for m in wanted if m not in ROWS and all(r.method != m for r in ROWS.values())]
        if unknown or not rows:
            p.error(f"unknown rows/methods {unknown}; rows: {', '.join(ROWS)}")
    run_board(rows, quick=a.quick, seed=a.seed, out=a.out, threads=a.threads, merge=a.merge)


if __name__ == "__main__":
    main()
