"""Print one markdown table row from a run folder: final val PSNR beside the trivial references.

Usage: python scripts/qs_row.py RUN_DIR "description"
"""

import json
import sys
from pathlib import Path

run, label = Path(sys.argv[1]), sys.argv[2]
rows = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines() if x.strip()]
ep = [r for r in rows if "val/psnr" in r][-1]
secs = sum(r.get("perf/epoch_s", 0) + r.get("perf/val_s", 0) for r in rows if "epoch/loss" in r)
p, rf, mf, sp = ep["val/psnr"], ep["val/psnr_repeat_first"], ep["val/psnr_mean_frame"], ep["val/psnr_shifted_pose"]
print(f"| {label} | {ep['step']} | {p:.2f} | {p - rf:+.2f} | {p - mf:+.2f} | {p - sp:+.2f} | {secs:.0f} |")
