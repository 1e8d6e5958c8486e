#!/usr/bin/env bash
# One device call for a kernel change: ptxas -v (gpu-check's ptx step; carry the PTX in .gpu/ptx to skip the dump),
# compute-sanitizer (memcheck, racecheck) beside the GPU test category, then a short bench with the GPU to itself.
# Logs packed into $OUT/logs.tgz (a call brings back at most 8 files).
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/logs
OUT=/tmp/logs bash tools/gpu-check.sh ptx > /dev/null
grep -E "^==|stack frame|registers" /tmp/logs/ptxas.txt
bash .gpu/run.sh FlashDmAttn.Bench --list-tests > /dev/null 2>&1 # unpacks the runtime once
OUT=/tmp/logs bash tools/gpu-check.sh sanitize > "$OUT/sanitize.txt" 2>&1 &
OUT=/tmp/logs bash tools/gpu-check.sh tests
wait
cat "$OUT/sanitize.txt"
tar czf "$OUT/logs.tgz" -C /tmp logs
bash .gpu/run.sh FlashDmAttn.Bench --gpu --cases "${BENCH:-maskbias:B=2,H=12,L=4096,D=128,w=1024,causal=1;maskbias:B=1,H=16,L=8192,D=128,w=2048,causal=1;perkey:B=2,H=12,L=4096,D=128,w=1024,causal=1;perkey:B=1,H=16,L=8192,D=128,w=2048,causal=1;dense:B=4,H=16,L=4096,D=128,causal=1}" | tee "$OUT/bench.txt"
