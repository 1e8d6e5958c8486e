set -u
OUT=${OUT:-/tmp/out}
ALL="dense:B=16,H=16,L=1024,D=128,causal=0;dense:B=16,H=16,L=1024,D=128,causal=1;dense:B=4,H=16,L=4096,D=128,causal=0;dense:B=4,H=16,L=4096,D=128,causal=1;dense:B=1,H=16,L=16384,D=128,causal=0;dense:B=1,H=16,L=16384,D=128,causal=1;dense:B=16,H=32,L=1024,D=64,causal=0;dense:B=16,H=32,L=1024,D=64,causal=1;dense:B=4,H=32,L=4096,D=64,causal=0;dense:B=4,H=32,L=4096,D=64,causal=1;dense:B=1,H=32,L=16384,D=64,causal=0;dense:B=1,H=32,L=16384,D=64,causal=1;maskbias:B=2,H=12,L=4096,D=128,w=1024,causal=1;maskbias:B=1,H=16,L=8192,D=128,w=2048,causal=1;maskbias:B=1,H=8,L=16384,D=128,w=2048,causal=1;perkey:B=2,H=12,L=4096,D=128,w=1024,causal=1;perkey:B=1,H=16,L=8192,D=128,w=2048,causal=1;perkey:B=1,H=8,L=16384,D=128,w=2048,causal=1"
MB="maskbias:B=2,H=12,L=4096,D=128,w=1024,causal=1;maskbias:B=1,H=16,L=8192,D=128,w=2048,causal=1;maskbias:B=1,H=8,L=16384,D=128,w=2048,causal=1;perkey:B=2,H=12,L=4096,D=128,w=1024,causal=1"
BIG="dense:B=4,H=16,L=4096,D=128,causal=0;dense:B=4,H=16,L=4096,D=128,causal=1;dense:B=1,H=16,L=16384,D=128,causal=0;dense:B=1,H=16,L=16384,D=128,causal=1;dense:B=1,H=32,L=16384,D=64,causal=0;dense:B=1,H=32,L=16384,D=64,causal=1"
(cd .gpu/ptx && for f in *.ptx; do n=${f%.ptx}; ptxas -arch=sm_90 -v $f -o /dev/null 2>&1 | grep -E "registers|spill" | sed "s/^/$n: /"; done) | tee $OUT/ptxas.txt
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
bash .gpu/run.sh FlashDmAttn.Bench --list-tests > /dev/null 2>&1
bash .gpu/run.sh FlashDmAttn.Bench --gpu --cases "$ALL" | tee $OUT/ours.txt
FLASHDMATTN_TC_MB=bc32 bash .gpu/run.sh FlashDmAttn.Bench --gpu --cases "$MB" | grep -v '^#' | sed 's/^FlashDmAttn|/bc32|/' | tee $OUT/ab.txt
for r in 1 2; do
  FLASHDMATTN_TC_TUNE=4 bash .gpu/run.sh FlashDmAttn.Bench --gpu --cases "$BIG" | grep -v '^#' | sed "s/^FlashDmAttn|/tune4.$r|/" | tee -a $OUT/ab.txt
  bash .gpu/run.sh FlashDmAttn.Bench --gpu --cases "$BIG" | grep -v '^#' | sed "s/^FlashDmAttn|/tune0.$r|/" | tee -a $OUT/ab.txt
done
PYTHONUNBUFFERED=1 python3 .gpu/peers.py --cases "$ALL" --peers sdpa-flash,sdpa-cudnn,flex > $OUT/peers.txt 2> $OUT/peers.err; echo "peers rc=$?"
python3 .gpu/compare.py $OUT/ours.txt $OUT/peers.txt | tee $OUT/compare.txt
