using ILGPU;
using FlashDmAttn.Kernels.Numerics;

namespace FlashDmAttn.Kernels.Forward;

/// <summary>
/// The portable forward kernel: runs on every ILGPU accelerator (no PTX), covers every head dim and dtype,
/// and is the fallback for what the tensor-core kernel does not cover.
/// One group computes TileQ query rows of one (batch, head); it walks the key tiles inside the causal band,
/// skips tiles that the causal band and the mask leave empty before reading their K/V or bias, and keeps
/// its running output in shared memory in fp32.
/// Grid: (ceil(max Lq / TileQ), Batch·Heads). Any group size works; all loops stride by Group.DimX.
/// </summary>
internal static class PortableForwardKernel
{
    /// <summary>Dynamic shared memory in floats for a tile shape.</summary>
    public static int SharedFloats(int tileQ, int tileK, int headDim)
        => 2 * tileQ * headDim + 2 * tileK * headDim + tileQ * tileK + 3 * tileQ;

    public static void Run<TElem, TCodec>(
        ArrayView<TElem> q, ArrayView<TElem> k, ArrayView<TElem> v, ArrayView<TElem> o,
        ArrayView<TElem> bias, ArrayView<byte> mask, ArrayView<float> lse, ArrayView<int> seqInfo,
        KernelArgs p)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        var smem = SharedMemory.GetDynamic<float>();
        int tid = Group.IdxX, nt = Group.DimX;
        int d = p.HeadDim, br = p.TileQ, bc = p.TileK;
        int qs = 0, ks = br * d, vs = ks + bc * d, ss = vs + bc * d, os = ss + br * bc;
        int rm = os + br * d, rl = rm + br, ra = rl + br;

        // (batch, head) pairs run along y, then z (a grid's y size is at most 65535).
        int bh = Grid.IdxZ * Grid.DimY + Grid.IdxY;
        if (bh >= p.Batch * p.Heads) return; // the last z slice is partly empty; uniform over the group
        int b = bh / p.Heads, h = bh - b * p.Heads, hk = h / p.HeadGroup;
        var blk = BlockInfo.Create(p, seqInfo, b);
        int q0 = Grid.IdxX * br;
        if (q0 >= blk.SeqQ) return; // uniform over the group
        int rows = blk.SeqQ - q0 < br ? blk.SeqQ - q0 : br;

        // Q tile → shared (fp32), running state reset.
        for (int e = tid; e < br * d; e += nt)
        {
            int r = e / d, c = e - r * d;
            smem[qs + e] = r < rows ? TCodec.ToFloat(q[blk.QOffset(p.QStrideB, p.QStrideL, p.QStrideH, q0 + r, h) + c]) : 0f;
            smem[os + e] = 0f;
        }
        for (int r = tid; r < br; r += nt)
        {
            smem[rm + r] = float.NegativeInfinity;
            smem[rl + r] = 0f;
        }
        Group.Barrier();

        // Key slots: 0..kEnd, or the gathered visible keys of a query-broadcast mask (ascending key indices).
        int kEnd = blk.KeyEnd(p, q0 + rows);
        int gRow = blk.GatherRow(p, h);
        int slots = BlockInfo.KeySlots(p, seqInfo, gRow, kEnd);
        for (int k0 = 0; k0 < slots; k0 += bc)
        {
            if (BlockInfo.KeyAt(p, seqInfo, gRow, k0) >= kEnd)
                break; // gathered keys ascend: the rest lie past the causal band / sequence
            int cols = slots - k0 < bc ? slots - k0 : bc;

            // 1. Visibility of the tile (lengths, causal band, mask): 0 = visible, −∞ = not.
            bool anyVisible = false;
            for (int e = tid; e < br * bc; e += nt)
            {
                int r = e / bc, c = e - r * bc;
                bool vis = false;
                if (r < rows && c < cols)
                {
                    int j = BlockInfo.KeyAt(p, seqInfo, gRow, k0 + c);
                    vis = j < kEnd && MaskBias.CausalVisible(p, blk, q0 + r, j);
                    if (vis && p.HasMask != 0 && p.GatherKeys == 0)
                        vis = MaskBias.MaskVisible(p, mask, MaskBias.MaskIndex(p, b, h, q0 + r), j);
                }
                smem[ss + e] = vis ? 0f : float.NegativeInfinity;
                anyVisible |= vis;
            }
            if (!Group.BarrierOr(anyVisible))
                continue; // the whole tile is masked: its K, V and bias are never read

            // 2. K/V tile → shared.
            for (int e = tid; e < bc * d; e += nt)
            {
                int r = e / d, c = e - r * d;
                float kv = 0f, vv = 0f;
                int j = r < cols ? BlockInfo.KeyAt(p, seqInfo, gRow, k0 + r) : kEnd;
                if (j < kEnd) // gathered keys of one tile may run past the band or the sequence
                {
                    kv = TCodec.ToFloat(k[blk.KOffset(p, seqInfo, p.KStrideB, p.KStrideL, p.KStrideH, j, hk) + c]);
                    vv = TCodec.ToFloat(v[blk.KOffset(p, seqInfo, p.VStrideB, p.VStrideL, p.VStrideH, j, hk) + c]);
                }
                smem[ks + e] = kv;
                smem[vs + e] = vv;
            }
            Group.Barrier();

            // 3. Scores of the visible entries.
            for (int e = tid; e < br * bc; e += nt)
            {
                if (smem[ss + e] == float.NegativeInfinity) continue;
                int r = e / bc, c = e - r * bc;
                float dot = 0f;
                for (int x = 0; x < d; x++)
                    dot += smem[qs + r * d + x] * smem[ks + c * d + x];
                // A gathered bias is stored in slot order (see KeyGatherKernel.GatherBias).
                smem[ss + e] = MaskBias.Score<TElem, TCodec>(p, dot, bias, MaskBias.BiasIndex(p, b, h, q0 + r),
                    p.GatherKeys != 0 ? k0 + c : BlockInfo.KeyAt(p, seqInfo, gRow, k0 + c));
            }
            Group.Barrier();

            // 4. Online softmax per row: scores become probabilities, the rescale factor goes to ra.
            for (int r = tid; r < br; r += nt)
            {
                float tileMax = float.NegativeInfinity;
                for (int c = 0; c < bc; c++)
                {
                    float s = smem[ss + r * bc + c];
                    tileMax = s > tileMax ? s : tileMax;
                }
                float alpha = OnlineSoftmax.Rescale(smem[rm + r], tileMax, out float mNew);
                float sum = 0f;
                for (int c = 0; c < bc; c++)
                {
                    float pr = OnlineSoftmax.Prob(smem[ss + r * bc + c], mNew);
                    smem[ss + r * bc + c] = pr;
                    sum += pr;
                }
                smem[rm + r] = mNew;
                smem[rl + r] = smem[rl + r] * alpha + sum;
                smem[ra + r] = alpha;
            }
            Group.Barrier();

            // 5. O ← O·alpha + P·V.
            for (int e = tid; e < br * d; e += nt)
            {
                int r = e / d, c = e - r * d;
                float acc = smem[os + e] * smem[ra + r];
                for (int j = 0; j < cols; j++)
                    acc += smem[ss + r * bc + j] * smem[vs + j * d + c];
                smem[os + e] = acc;
            }
            Group.Barrier();
        }

        // Epilogue: normalise and write; empty rows give 0 and LSE −∞.
        for (int e = tid; e < rows * d; e += nt)
        {
            int r = e / d, c = e - r * d;
            float val = smem[os + e] * OnlineSoftmax.Normaliser(smem[rl + r]);
            o[blk.QOffset(p.OStrideB, p.OStrideL, p.OStrideH, q0 + r, h) + c] = TCodec.FromFloat(val);
        }
        if (p.WriteLse != 0)
        {
            for (int r = tid; r < rows; r += nt)
                lse[b * p.LseStrideB + h * p.LseStrideH + blk.RowQ0 + q0 + r] = OnlineSoftmax.LogSumExp(smem[rm + r], smem[rl + r]);
        }
    }
}
