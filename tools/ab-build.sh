#!/usr/bin/env bash
# A/B of this build against an earlier one on the GPU host, alternating REPEAT times, then the peers in the same call.
# Prepare on the CPU machine: publish the earlier commit's bench into .gpu/old/FlashDmAttn.Bench (git worktree +
# dotnet publish as ../shared/gpu/bundle.sh does), then tools/gpu-bundle.sh. Then (device run, carry .gpu):
#   C="case;case" REPEAT=2 bash tools/ab-build.sh      logs under $OUT (ab.txt, peers.txt, summary on stdout)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
C=${C:-"maskbias:B=2,H=12,L=4096,D=128,w=1024,causal=1;maskbias:B=1,H=16,L=8192,D=128,w=2048,causal=1;maskbias:B=1,H=8,L=16384,D=128,w=2048,causal=1;perkey:B=2,H=12,L=4096,D=128,w=1024,causal=1;perkey:B=1,H=16,L=8192,D=128,w=2048,causal=1;dense:B=4,H=16,L=4096,D=128,causal=0;dense:B=4,H=16,L=4096,D=128,causal=1;dense:B=4,H=32,L=4096,D=64,causal=1"}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
bash .gpu/run.sh FlashDmAttn.Bench --list-tests > /dev/null 2>&1 # unpacks the runtime once
old() { DOTNET_ROOT=/tmp/dotnet-gpu PATH="/tmp/dotnet-gpu:$PATH" .gpu/old/FlashDmAttn.Bench/FlashDmAttn.Bench "$@"; }
for r in $(seq 1 "${REPEAT:-2}"); do
  bash .gpu/run.sh FlashDmAttn.Bench --gpu --cases "$C" | grep -v '^#' | sed "s/^FlashDmAttn|/new|/" | tee -a "$OUT/ab.txt"
  old --gpu --cases "$C" | grep -v '^#' | sed "s/^FlashDmAttn|/old|/" | tee -a "$OUT/ab.txt"
done
[ -n "${PEERS-flex,sdpa-flash,sdpa-cudnn}" ] && PYTHONUNBUFFERED=1 python3 .gpu/peers.py --cases "$C" --peers "${PEERS-flex,sdpa-flash,sdpa-cudnn}" 2>"$OUT/peers.err" | tee "$OUT/peers.txt"
python3 - "$OUT/ab.txt" "$OUT/peers.txt" <<'PY'
import sys, statistics, collections, os
ms = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.strip().split("|")
    if len(f) > 2 and f[2].startswith("ms="): ms[(f[1], f[0])].append(float(f[2][3:]))
best = {}
if os.path.exists(sys.argv[2]):
    for line in open(sys.argv[2]):
        f = line.strip().split("|")
        if len(f) > 2 and f[2].startswith("ms="):
            v = float(f[2][3:]); best[f[1]] = min(best.get(f[1], (v, f[0])), (v, f[0]))
print("case".ljust(50) + "new ms".rjust(10) + "old ms".rjust(10) + "  new/old   best peer")
for c in sorted({c for c, _ in ms}):
    n, o = statistics.median(ms[(c, "new")]), statistics.median(ms[(c, "old")]) if ms.get((c, "old")) else float("nan")
    bp = best.get(c)
    print(c.ljust(50) + f"{n:10.4f}{o:10.4f}  {n / o:7.3f}   " + (f"{bp[1]} {bp[0]:.4f} (ours {bp[0] / n:.2f}x)" if bp else "-"))
PY
