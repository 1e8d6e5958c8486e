"""Joins FlashDmAttn.Bench --gpu output with peers.py output (same case strings) into a ratio table.
   python3 compare.py ours.txt peers.txt   ->  case | ours ms | TFLOP/s | best peer (ms) | speedup vs best | vs sdpa-flash | ours timed from an idle GPU (host launch overhead included)"""
import sys
def read(path):
    rows = {}
    for line in open(path):
        parts = line.strip().split("|")
        if len(parts) < 4 or line.startswith("#"): continue
        kv = dict(x.split("=", 1) for x in parts[2:] if "=" in x)
        try: rows.setdefault(parts[1], {})[parts[0]] = (float(kv["ms"]), float(kv.get("tflops", "nan")), kv.get("kernel", ""), kv.get("idle_start_ms", "-"))
        except (KeyError, ValueError): pass
    return rows
ours, peers = read(sys.argv[1]), read(sys.argv[2])
print(f"{'case':58} {'ours ms':>9} {'TFLOP/s':>8} {'best peer':>22} {'x best':>7} {'x flash':>8} {'idle-start ms':>13}")
for case, r in ours.items():
    ms, tf, kern, idle = r["FlashDmAttn"]
    pr = peers.get(case, {})
    best = min(pr.items(), key=lambda kv: kv[1][0]) if pr else None
    flash = pr.get("sdpa-flash")
    bs = f"{best[0]} {best[1][0]:.3f}" if best else "-"
    xb = f"{best[1][0] / ms:.2f}" if best else "-"
    xf = f"{flash[0] / ms:.2f}" if flash else "-"
    print(f"{case:58} {ms:9.3f} {tf:8.1f} {bs:>22} {xb:>7} {xf:>8} {idle:>13}  {kern}")
