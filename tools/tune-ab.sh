#!/usr/bin/env bash
# A/B of variants chosen by an environment switch (VAR, default FLASHDMATTN_TC_TUNE=bits, see TcTune) on the GPU host,
# alternating the values REPEAT times (run-to-run spread is 1-2 %), then the peers in the same call and a per-case
# summary (median of the repeats). Usage (device run, carry .gpu): TUNES="0 8" REPEAT=3 bash tools/tune-ab.sh, or
# VAR=FLASHDMATTN_TC_CHUNK TUNES="1 heads 0" ...; logs under $OUT.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
C=${C:-"dense:B=16,H=16,L=1024,D=128,causal=0;dense:B=16,H=16,L=1024,D=128,causal=1;dense:B=4,H=16,L=4096,D=128,causal=0;dense:B=4,H=16,L=4096,D=128,causal=1;dense:B=1,H=16,L=16384,D=128,causal=0;dense:B=1,H=16,L=16384,D=128,causal=1;dense:B=4,H=32,L=4096,D=64,causal=0;dense:B=4,H=32,L=4096,D=64,causal=1"}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
bash .gpu/run.sh FlashDmAttn.Bench --list-tests > /dev/null 2>&1 # unpacks the runtime once
for r in $(seq 1 "${REPEAT:-1}"); do
  for t in ${TUNES:-0 8}; do
    env "${VAR:-FLASHDMATTN_TC_TUNE}=$t" bash .gpu/run.sh FlashDmAttn.Bench --gpu --cases "$C" | grep -v '^#' | sed "s/^FlashDmAttn|/tune$t|/" | tee -a "$OUT/tune.txt"
  done
done
[ -n "${PEERS:-sdpa-flash}" ] && PYTHONUNBUFFERED=1 python3 .gpu/peers.py --cases "$C" --peers "${PEERS:-sdpa-flash}" | tee "$OUT/peers.txt"
python3 tools/ab-summary.py "$OUT/tune.txt" "$OUT/peers.txt"
