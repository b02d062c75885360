"""Do two runs of one experiment agree? ``python -m emu.report.compare A/results.csv B/results.csv``.

Prints how many cells the two runs share, the cells whose 95 % intervals do not overlap, the rankings that
differ, and which of those contradict (one run puts a variant ahead of another, the other behind it), from
``emu.report.summary.compare``; exit status 0 when they agree, 1 when they do not, 2 on bad usage.
docs/measuring.md uses it for two consecutive runs of experiments/cross_node.py.
"""

import sys
from typing import Sequence

from emu.report.results import read_results
from emu.report.summary import compare


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m emu.report.compare RUN_A/results.csv RUN_B/results.csv", file=sys.stderr)
        return 2
    result = compare(read_results(argv[0]), read_results(argv[1]))
    print(
        f"{result.cells} cells in both runs; {len(result.apart)} with intervals apart; "
        f"{len(result.rankings)} rankings differ, {len(result.contradictions)} of them contradict"
    )
    for line in result.apart + result.rankings:
        print(f"  {line}" + ("   <- contradiction" if line in result.contradictions else ""))
    return 0 if result.agree else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
