# Copied unchanged (but for this comment) on 2026-12-03 from the team's shared GPU scripts (shared/gpu/peers.py
# beside the project checkout), so that a device run needs nothing outside the repository. Run by tools/gpu.sh
# (bench, ab) with the case lists of tools/gpu/cases.txt; by hand, e.g. for fwd+bwd:
#   python3 tools/gpu/peers.py --cases "$(tools/gpu.sh cases default | paste -sd";")" --backward
"""Times PyTorch's own attention kernels on the GPU host, on given shapes, for side-by-side ratios.

  python3 peers.py --cases "dense:B=4,H=16,L=4096,D=128,causal=0;maskbias:B=2,H=12,L=4096,D=128,w=1024,causal=1" [--backward] [--csv FILE]

Workloads (bf16 inputs, layout (B,L,H,D) as the library's):
  dense     no mask, no bias.
  maskbias  dense bias (B,H,L,L) ~ N(0,1); mask keeps the top-w bias entries of each query row, AND causal if causal=1;
            column 0 is always kept so no row is empty. Peers get it as one additive mask (bias, -inf where masked).
  perkey    bias (B,H,1,L) shared by all queries; mask keeps the top-w keys of each (b,h), AND causal if causal=1,
            column 0 always kept. Peers get it expanded to (B,H,L,L).
  doge      the Doge model's dynamic mask: bias (B,H,1,L) shared by all queries; query i keeps the top-w of the bias among
            the keys it may see (keys <= i when causal=1), as the reference library's own equivalence benchmark builds it.
            Peers get bias and mask expanded to (B,H,L,L).
  decode    a few queries over a long cache: decode:B=4,H=32,Hkv=8,Lq=1,Lk=32768,D=128 (GQA when Hkv < H; no mask, not
            causal: with Lq <= 16 over a long cache the causal band changes nothing measurable). Prints GB/s of K/V read.
Peers: sdpa-flash, sdpa-cudnn, sdpa-efficient, sdpa-math (small only), flex (FlexAttention, compiled, with a block mask).
Prints one line per (case, peer):  PEER|case-string|ms=...|tflops=...   (median of CUDA-event timings;
TFLOP/s counts 4*B*H*L*L*D, halved when causal, times 3.5 with --backward: the dense-equivalent rate).
"""
import argparse, math, sys, time
import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
from triton.testing import do_bench

ap = argparse.ArgumentParser()
ap.add_argument("--cases", required=True)
ap.add_argument("--backward", action="store_true")
ap.add_argument("--csv")
ap.add_argument("--peers", default="sdpa-flash,sdpa-cudnn,sdpa-efficient,sdpa-math,flex")
args = ap.parse_args()
torch._dynamo.config.cache_size_limit = 1000
torch._dynamo.config.recompile_limit = 1000
dev, dt = "cuda", torch.bfloat16
lines = []

def parse(case):
    kind, _, rest = case.partition(":")
    kv = dict(x.split("=") for x in rest.split(",") if x)
    return kind.strip(), {k.strip(): int(v) for k, v in kv.items()}

def make(kind, p):
    B, H, L, D = p["B"], p["H"], p["L"], p["D"]; causal = bool(p.get("causal", 0)); w = p.get("w", L)
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(B, H, L, D, device=dev, dtype=dt, generator=g) for _ in range(3))
    add = None; mask = None; bias = None
    if kind == "maskbias":
        bias = torch.randn(B, H, L, L, device=dev, dtype=dt, generator=g)
        mask = torch.zeros(B, H, L, L, device=dev, dtype=torch.bool)
        mask.scatter_(-1, torch.topk(bias, min(w, L), dim=-1, sorted=False).indices, True)
    elif kind == "perkey":
        bias = torch.randn(B, H, 1, L, device=dev, dtype=dt, generator=g)
        mask = torch.zeros(B, H, 1, L, device=dev, dtype=torch.bool)
        mask.scatter_(-1, torch.topk(bias, min(w, L), dim=-1, sorted=False).indices, True)
    elif kind == "doge":
        bias = torch.randn(B, H, 1, L, device=dev, dtype=dt, generator=g)
        full = bias.expand(B, H, L, L)
        if causal:
            full = full.masked_fill(~torch.ones(L, L, device=dev, dtype=torch.bool).tril(), float("-inf"))
        vals, idx = torch.topk(full, min(w, L), dim=-1, sorted=False)
        mask = torch.zeros(B, H, L, L, device=dev, dtype=torch.bool)
        mask.scatter_(-1, idx, vals != float("-inf"))
        del full, vals, idx
    if mask is not None:
        if causal: mask = mask & torch.ones(L, L, device=dev, dtype=torch.bool).tril()
        mask = mask.expand(B, H, L, L).clone(); mask[..., 0] = True
        add = bias.expand(B, H, L, L).masked_fill(~mask, float("-inf")).contiguous()
    return q, k, v, add, mask, bias, causal

def timed(fn, q, k, v):
    if args.backward:
        for t in (q, k, v): t.requires_grad_(True)
        do = torch.randn_like(q)
        def step():
            out = fn(); out.backward(do)
        f = step
    else:
        f = fn
    f(); torch.cuda.synchronize()
    return do_bench(f, warmup=25, rep=100, return_mode="median")

flex = None
if "flex" in args.peers:
    try:
        from torch.nn.attention.flex_attention import flex_attention, create_block_mask
        flex = torch.compile(flex_attention, dynamic=False)
    except Exception as e:
        print("flex|unavailable|" + str(e)[:100])

def decode_case(case, p):
    B, H, D = p["B"], p["H"], p["D"]; Hkv, Lq, Lk = p.get("Hkv", H), p.get("Lq", 1), p["Lk"]
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(B, H, Lq, D, device=dev, dtype=dt, generator=g)
    k, v = (torch.randn(B, Hkv, Lk, D, device=dev, dtype=dt, generator=g) for _ in range(2))
    fl, kv_bytes = 4.0 * B * H * Lq * Lk * D * (3.5 if args.backward else 1.0), 2.0 * B * Hkv * Lk * D * 2
    for peer in args.peers.split(","):
        be = {"sdpa-flash": SDPBackend.FLASH_ATTENTION, "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
              "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION}.get(peer)
        try:
            if be is not None:
                def fn():
                    with sdpa_kernel(be):
                        return F.scaled_dot_product_attention(q, k, v, enable_gqa=Hkv != H)
            elif peer == "flex" and flex is not None:
                fn = lambda: flex(q, k, v, enable_gqa=Hkv != H)
            else:
                continue
            ms = timed(fn, q, k, v)
            line = f"{peer}|{case}|ms={ms:.4f}|tflops={fl / ms / 1e9:.1f}|GB/s={kv_bytes / ms / 1e6:.0f}"
        except Exception as e:
            line = f"{peer}|{case}|failed: {str(e).splitlines()[0][:120]}"
        print(line, flush=True); lines.append(line)
    del q, k, v
    torch.cuda.empty_cache()

for case in [c for c in args.cases.split(";") if c.strip()]:
    kind, p = parse(case)
    if kind == "decode":
        decode_case(case, p); continue
    q, k, v, add, mask, bias, causal = make(kind, p)
    B, H, L, D = p["B"], p["H"], p["L"], p["D"]
    fl = 4.0 * B * H * L * L * D * (0.5 if causal else 1.0) * (3.5 if args.backward else 1.0)
    for peer in args.peers.split(","):
        be = {"sdpa-flash": SDPBackend.FLASH_ATTENTION, "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
              "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION, "sdpa-math": SDPBackend.MATH}.get(peer)
        try:
            if peer == "sdpa-math" and B * H * L * L > 2**31: continue
            if be is not None:
                def fn():
                    with sdpa_kernel(be):
                        return F.scaled_dot_product_attention(q, k, v, attn_mask=add, is_causal=causal and add is None)
            elif peer == "flex" and flex is not None:
                if mask is None:
                    bm = create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, L, L, device=dev) if causal else None
                    fn = lambda: flex(q, k, v, block_mask=bm)
                else:
                    m, bb = mask, bias.expand(B, H, L, L) if bias.shape[2] == 1 else bias
                    bm = create_block_mask(lambda b, h, qi, ki: m[b, h, qi, ki], B, H, L, L, device=dev)
                    fn = lambda: flex(q, k, v, score_mod=lambda s, b, h, qi, ki: s + bb[b, h, qi, ki].float(), block_mask=bm)
            else:
                continue
            ms = timed(fn, q, k, v)
            line = f"{peer}|{case}|ms={ms:.4f}|tflops={fl / ms / 1e9:.1f}"
        except Exception as e:
            line = f"{peer}|{case}|failed: {str(e).splitlines()[0][:120]}"
        print(line, flush=True); lines.append(line)
    del q, k, v, add, mask, bias
    torch.cuda.empty_cache()
if args.csv:
    open(args.csv, "w").write("\n".join(lines) + "\n")
