"""Per-case medians of an A/B log and the best peer from the same call (`tools/gpu.sh ab`: two bundles' benches).

  python3 tools/gpu/ab-summary.py AB_LOG [PEERS_LOG] [--base LABEL]

AB_LOG lines: LABEL|case|ms=...|...  (a label per build, any number of repeats); PEERS_LOG: peers.py's
PEER|case|ms=... lines. Prints, per case, each label's median (and repeat count), each label's ratio to --base, and the
fastest peer with our first label's speed relative to it.
"""
import collections, os, statistics, sys

args = [a for a in sys.argv[1:]]
base = None
if "--base" in args:
    i = args.index("--base"); base = args[i + 1]; del args[i:i + 2]
ms = collections.defaultdict(list)
for line in open(args[0]):
    f = line.strip().split("|")
    if len(f) > 2 and f[2].startswith("ms="): ms[(f[1], f[0])].append(float(f[2][3:]))
best = {}
if len(args) > 1 and os.path.exists(args[1]):
    for line in open(args[1]):
        f = line.strip().split("|")
        if len(f) > 2 and f[2].startswith("ms="):
            v = float(f[2][3:]); best[f[1]] = min(best.get(f[1], (v, f[0])), (v, f[0]))
labels = sorted({l for _, l in ms}, key=lambda l: (l == base, l))
others = [l for l in labels if l != base] if base else []
print("case".ljust(50) + "".join(l.rjust(16) for l in labels) + "".join(f"{l}/{base}".rjust(12) for l in others) + "   best peer")
for c in sorted({c for c, _ in ms}):
    med = {l: statistics.median(ms[(c, l)]) for l in labels if ms.get((c, l))}
    row = c.ljust(50) + "".join((f"{med[l]:.4f} ({len(ms[(c, l)])})" if l in med else "-").rjust(16) for l in labels)
    row += "".join((f"{med[l] / med[base]:.3f}" if l in med and base in med else "-").rjust(12) for l in others)
    bp, first = best.get(c), med.get(labels[0])
    row += f"   {bp[1]} {bp[0]:.4f} (ours {bp[0] / first:.2f}x)" if bp and first else "   -"
    print(row)
