#!/usr/bin/env python3
"""What each part of the product's dialplan costs Asterisk itself: CPU per call and INVITE -> 200 latency of the
testbed's `[bench-cost]` extensions (testbed/asterisk/extensions.conf), each against the baseline 7100 (Answer,
Wait(1), Hangup), same run, interleaved round by round so drift of the machine hits them alike. No securelink process
is involved: this measures Asterisk's share of an admission (issue 24), which `bench/e2e.py` can only see whole.

    python3 bench/asterisk_cost.py [--calls 300] [--rate 50] [--rounds 3] [--only 7107,7108] [--out FILE.json]

Asterisk's CPU is read from /proc (user + system, clock ticks of 10 ms: use a few hundred calls per try). Needs the
testbed up with its configuration installed (`scripts/asterisk-testbed up` or `reload`).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests" / "e2e")]

from e2e import pct, print_result, run_sipp, timed_scenario  # noqa: E402

VARIANTS = {
    "7100": "baseline: Answer, Wait(1), Hangup",
    "7101": "+30 priorities (NoOp)",
    "7102": "+33 channel variables in 3 MSet",
    "7103": "+5 UserEvent",
    "7104": "+a hangup handler sending one UserEvent",
    "7105": "+the product's hangup handler ([securelink-end], CDR(answer,u))",
    "7106": "+the two CDR fields (CDR(securelink_device), CDR(securelink_method))",
    "7107": "an admitted call's dialplan without Stasis (clear, verdict, admitted; hangup handler)",
    "7108": "the same without the hangup handler",
    "7109": "a floor: 7107's variables, event, fields and handler in 9 priorities, no check, no expression",
}


def asterisk_cpu_s() -> float:
    pids = subprocess.run(["pgrep", "-x", "asterisk"], capture_output=True, text=True).stdout.split()
    if not pids:
        raise SystemExit("bench: Asterisk is not running (scripts/asterisk-testbed up)")
    fields = Path(f"/proc/{pids[0]}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=300, help="calls per extension per round")
    ap.add_argument("--rate", type=float, default=50.0, help="calls per second")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", help="comma-separated extensions to run (7100, the baseline, always runs)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    chosen = {"7100", *args.only.split(",")} if args.only else set(VARIANTS)
    if chosen - set(VARIANTS):
        raise SystemExit(f"bench: no such variant: {', '.join(sorted(chosen - set(VARIANTS)))}")
    variants = {ext: what for ext, what in VARIANTS.items() if ext in chosen}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    rtts: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="securelink-cost-") as tmp:
        scenario = timed_scenario(Path(tmp) / "uac.xml")
        for r in range(args.rounds):
            for ext in variants:
                before = asterisk_cpu_s()
                got = run_sipp([("15550001000", ext)] * args.calls, args.rate, scenario)
                answered = got["codes"].count("200")
                if answered != args.calls:
                    raise SystemExit(f"bench: {ext} answered {answered} of {args.calls} calls (testbed reloaded?)")
                cpu[ext].append((asterisk_cpu_s() - before) * 1000 / answered)
                rtts[ext].extend(got["rtts_ms"])
                print(f"[cost] round {r + 1} {ext}: {cpu[ext][-1]:.2f} ms CPU/call", file=sys.stderr, flush=True)
    base_cpu = statistics.median(cpu["7100"])
    base_p50 = pct(rtts["7100"], 50)
    table = {
        ext: {
            "what": what,
            "asterisk_cpu_ms_per_call": round(statistics.median(cpu[ext]), 3),
            "cpu_over_baseline_ms": round(statistics.median(cpu[ext]) - base_cpu, 3),
            "cpu_per_round_ms": [round(c, 3) for c in cpu[ext]],
            "p50_ms": round(pct(rtts[ext], 50), 3),
            "p50_over_baseline_ms": round(pct(rtts[ext], 50) - base_p50, 3),
        }
        for ext, what in variants.items()
    }
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "argv": sys.argv[1:],
        "variants": table,
    }
    print_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
