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
python3 tools/ab-summary.py "$OUT/ab.txt" "$OUT/peers.txt" --base old
