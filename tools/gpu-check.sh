#!/usr/bin/env bash
# On the GPU host (device run, carry .gpu): GPU-category tests, ptxas -v on the tensor-core PTX, benchmarks with
# the peers measured in the same command. Logs under $OUT. Usage: bash tools/gpu-check.sh [tests|ptx|bench|sanitize]...
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
CASES=${CASES:-"dense:B=4,H=16,L=4096,D=128,causal=0;dense:B=4,H=16,L=4096,D=128,causal=1;maskbias:B=2,H=12,L=4096,D=128,w=1024,causal=1;perkey:B=2,H=12,L=4096,D=128,w=1024,causal=1"}
for step in "$@"; do
  case $step in
    tests)
      nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv | tee "$OUT/gpu.txt"
      FLASHDMATTN_KERNEL=${KERNEL:-} bash .gpu/run.sh FlashDmAttn.Tests --filter "TestCategory=GPU" --output detailed > "$OUT/tests${KERNEL:+-$KERNEL}.log" 2>&1
      echo "tests rc=$?"; grep -E "^failed" -A3 "$OUT/tests${KERNEL:+-$KERNEL}.log" | head -40; tail -6 "$OUT/tests${KERNEL:+-$KERNEL}.log" ;;
    ptx)
      mkdir -p /tmp/ptx && bash .gpu/run.sh FlashDmAttn.Bench --ptx /tmp/ptx > /dev/null
      for f in /tmp/ptx/*.ptx; do echo "== $(basename $f)"; ptxas -arch=sm_90 -v "$f" -o /dev/null 2>&1 | grep -E "registers|spill|stack|error" ; done | tee "$OUT/ptxas.txt" ;;
    bench)
      bash .gpu/run.sh FlashDmAttn.Bench --gpu --cases "$CASES" | tee "$OUT/ours.txt"
      [ -n "${PORTABLE_TOO:-}" ] && FLASHDMATTN_KERNEL=portable bash .gpu/run.sh FlashDmAttn.Bench --gpu --cases "$CASES" --reps 5 | sed 's/^FlashDmAttn|/portable|/' | tee -a "$OUT/ours.txt"
      PYTHONUNBUFFERED=1 python3 .gpu/peers.py --cases "$CASES" --peers "${PEERS:-sdpa-flash,sdpa-cudnn,flex}" > "$OUT/peers.txt" 2>"$OUT/peers.err"; echo "peers rc=$?"
      python3 .gpu/compare.py "$OUT/ours.txt" "$OUT/peers.txt" | tee "$OUT/compare.txt" ;;
  esac
done
