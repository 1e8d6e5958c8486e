using ILGPU;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Numerics;

namespace FlashDmAttn.Kernels.Backward;

/// <summary>
/// The element-wise steps around the backward's tile kernels: D = rowsum(dO∘O) before them (FlashAttention-2's
/// preprocessing), and after them the sums over broadcast dimensions, in a fixed order: dk and dv over a kv head's
/// query heads (GQA), the bias gradient over every dimension the bias was broadcast along. Each thread strides over
/// the elements by the grid's size.
/// </summary>
internal static class BackwardReduce
{
    /// <summary>
    /// D of every (batch, head, row) in the LSE's layout; rows past a sequence's end are left alone. One warp per row at
    /// a time: lane x sums elements 4x … 4x + 3, then 4x + 4·warp size …, then the lanes' sums are added by xor
    /// shuffles, a fixed order. The group size must be a multiple of the warp size
    /// (<see cref="WarpRowsConfig"/>).
    /// </summary>
    public static void RowDot<TElem, TCodec>(ArrayView<TElem> o, ArrayView<TElem> dO, ArrayView<int> seqInfo, ArrayView<float> dvec, BwdArgs a)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        var p = a.F;
        long total = (long)p.Batch * p.Heads * p.SeqQ;
        int ws = Warp.WarpSize, lane = Warp.LaneIdx;
        for (long w = FirstWarpRow(out long warps); w < total; w += warps)
        {
            long bh = Split(w, p.SeqQ, out int i);
            int b = (int)Split(bh, p.Heads, out int h);
            var blk = BlockInfo.Create(p, seqInfo, b);
            if (i >= blk.SeqQ) continue; // uniform over the warp
            long ro = blk.QOffset(p.OStrideB, p.OStrideL, p.OStrideH, i, h);
            long rd = blk.QOffset(a.L.DoStrideB, a.L.DoStrideL, a.L.DoStrideH, i, h);
            // Lane x takes elements 4x … 4x + 3 (then 4x + 4·ws …): a warp's four loads of a tensor read one
            // contiguous run and are independent, so a row's bytes are in flight together (one element per lane and
            // load kept 64 bytes a warp in flight).
            float acc = 0f;
            for (int x = 4 * lane; x < p.HeadDim; x += 4 * ws)
            {
                if (x + 4 <= p.HeadDim)
                {
                    float o0 = TCodec.ToFloat(o[ro + x]), o1 = TCodec.ToFloat(o[ro + x + 1]);
                    float o2 = TCodec.ToFloat(o[ro + x + 2]), o3 = TCodec.ToFloat(o[ro + x + 3]);
                    float d0 = TCodec.ToFloat(dO[rd + x]), d1 = TCodec.ToFloat(dO[rd + x + 1]);
                    float d2 = TCodec.ToFloat(dO[rd + x + 2]), d3 = TCodec.ToFloat(dO[rd + x + 3]);
                    acc += o0 * d0 + o1 * d1 + (o2 * d2 + o3 * d3);
                }
                else
                {
                    for (int y = x; y < p.HeadDim; y++)
                        acc += TCodec.ToFloat(o[ro + y]) * TCodec.ToFloat(dO[rd + y]);
                }
            }
            for (int m = ws >> 1; m > 0; m >>= 1)
                acc += Warp.ShuffleXor(acc, m);
            if (lane == 0) dvec[b * p.LseStrideB + h * p.LseStrideH + blk.RowQ0 + i] = acc;
        }
    }

    /// <summary>This warp's first row in the warp-per-row kernels, and (<paramref name="warps"/>) the grid's warp count,
    /// the stride to its next row.</summary>
    private static long FirstWarpRow(out long warps)
    {
        warps = (long)Grid.DimX * Group.DimX / Warp.WarpSize;
        return ((long)Grid.IdxX * Group.DimX + Group.IdxX) / Warp.WarpSize;
    }

    /// <summary>An index split by its innermost dim: the outer index, and <paramref name="inner"/> the index within it.</summary>
    private static long Split(long index, int dim, out int inner)
    {
        long outer = index / dim;
        inner = (int)(index - outer * dim);
        return outer;
    }

    /// <summary>The launch of the warp-per-row kernels (<see cref="RowDot{TElem, TCodec}"/>,
    /// <see cref="KeyHeads{TElem, TCodec}"/>): one warp per row, 8 warps a group (one on the CPU accelerator, whose
    /// group threads are OS threads), at most 4 096 groups (a warp takes its rows one after another beyond that).</summary>
    public static KernelConfig WarpRowsConfig(Accelerator accelerator, long rows)
    {
        int ws = accelerator.WarpSize;
        int group = accelerator.AcceleratorType == AcceleratorType.CPU ? ws : Math.Min(8 * ws, accelerator.MaxNumThreadsPerGroup / ws * ws);
        long groups = (rows * ws + group - 1) / group;
        return new KernelConfig((int)Math.Clamp(groups, 1, 4096), group);
    }

    /// <summary>dk and dv of each (batch, key, kv head): the sum of the query heads' fp32 scratch rows, in head order,
    /// stored in the input dtype at the key's place in k's layout (through the block table when paged). One warp per
    /// (batch, key, kv head) row at a time, lane x on elements x, x + warp size, …: the row's index arithmetic (64-bit
    /// divisions, the sequence bounds, the layout offset) is paid once per row, not once per element. Launched like
    /// <see cref="RowDot{TElem, TCodec}"/> (<see cref="WarpRowsConfig"/>).</summary>
    public static void KeyHeads<TElem, TCodec>(ArrayView<float> dkh, ArrayView<float> dvh, ArrayView<int> seqInfo,
        ArrayView<TElem> dk, ArrayView<TElem> dv, BwdArgs a)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        var p = a.F;
        int d = p.HeadDim, g = p.HeadGroup;
        long rows = (long)p.Batch * p.SeqK * p.KvHeads;
        int ws = Warp.WarpSize, lane = Warp.LaneIdx;
        for (long w = FirstWarpRow(out long warps); w < rows; w += warps)
        {
            if (!KeyRow(a, seqInfo, w, out long bj, out int hk, out long ok, out long ov)) continue; // uniform over the warp
            long src = (bj * p.Heads + (long)hk * g) * d;
            for (int x = lane; x < d; x += ws)
            {
                float sk = 0f, sv = 0f;
                for (int u = 0; u < g; u++)
                {
                    sk += dkh[src + (long)u * d + x];
                    sv += dvh[src + (long)u * d + x];
                }
                dk[ok + x] = TCodec.FromFloat(sk);
                dv[ov + x] = TCodec.FromFloat(sv);
            }
        }
    }

    /// <summary>Zeros in dk and dv at every (batch, key, kv head) row, in k's layout (through the block table when
    /// paged): before key blocks that store only the rows of the keys in their lists (<see cref="Planning.BackwardPlan.KvZero"/>).
    /// One warp per row, launched as <see cref="KeyHeads{TElem, TCodec}"/>.</summary>
    public static void ZeroKeys<TElem, TCodec>(ArrayView<int> seqInfo, ArrayView<TElem> dk, ArrayView<TElem> dv, BwdArgs a)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        var p = a.F;
        long rows = (long)p.Batch * p.SeqK * p.KvHeads;
        int ws = Warp.WarpSize, lane = Warp.LaneIdx;
        TElem zero = TCodec.FromFloat(0f);
        for (long w = FirstWarpRow(out long warps); w < rows; w += warps)
        {
            if (!KeyRow(a, seqInfo, w, out _, out _, out long ok, out long ov)) continue; // uniform over the warp
            for (int x = lane; x < p.HeadDim; x += ws)
            {
                dk[ok + x] = zero;
                dv[ov + x] = zero;
            }
        }
    }

    /// <summary>Row <paramref name="w"/> of the (batch, key, kv head) rows: bj = batch·SeqK + key, the kv head, and the
    /// row's offsets in dk and dv; false past its sequence's keys.</summary>
    private static bool KeyRow(in BwdArgs a, ArrayView<int> seqInfo, long w, out long bj, out int hk, out long ok, out long ov)
    {
        var p = a.F;
        bj = Split(w, p.KvHeads, out hk);
        int b = (int)Split(bj, p.SeqK, out int j);
        var blk = BlockInfo.Create(p, seqInfo, b);
        ok = ov = 0;
        if (j >= blk.SeqK) return false;
        ok = blk.KOffset(p, seqInfo, a.L.DkStrideB, a.L.DkStrideL, a.L.DkStrideH, j, hk);
        ov = blk.KOffset(p, seqInfo, a.L.DvStrideB, a.L.DvStrideL, a.L.DvStrideH, j, hk);
        return true;
    }

    /// <summary>
    /// Each element (bb, hb, qb, kb) of the bias gradient, in the bias's shape: the sum of the scratch (B, H, rows, cols)
    /// over the batches, heads and rows that the bias broadcast to it (batch-major, fixed order).
    /// Scratch rows are SeqQ or 1 and columns SeqK or 1, matching the bias's own query and key dims unless the bias is
    /// broadcast over queries while the scratch is not (then every row adds in).
    /// </summary>
    public static void BiasBroadcast<TElem, TCodec>(ArrayView<float> scratch, ArrayView<TElem> dbias, BwdArgs a, int rows, int cols)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        var p = a.F;
        long total = (long)a.L.DbB * a.L.DbH * a.L.DbQ * a.L.DbK;
        int headsPer = p.Heads / a.L.DbH;
        for (long w = Grid.GlobalIndex.X; w < total; w += (long)Grid.DimX * Group.DimX)
        {
            int kb = (int)(w % a.L.DbK);
            long t = w / a.L.DbK;
            int qb = (int)(t % a.L.DbQ);
            t /= a.L.DbQ;
            int hb = (int)(t % a.L.DbH);
            int bb = (int)(t / a.L.DbH);
            int b0 = a.L.DbB == 1 ? 0 : bb, b1 = a.L.DbB == 1 ? p.Batch : bb + 1;
            int r0 = rows == a.L.DbQ ? qb : 0, r1 = rows == a.L.DbQ ? qb + 1 : rows;
            float acc = 0f;
            for (int b = b0; b < b1; b++)
                for (int h = hb * headsPer; h < (hb + 1) * headsPer; h++)
                    for (int r = r0; r < r1; r++)
                        acc += scratch[(((long)b * p.Heads + h) * rows + r) * cols + kb];
            dbias[bb * a.L.DbStrideB + hb * a.L.DbStrideH + qb * a.L.DbStrideQ + kb * a.L.DbStrideK] = TCodec.FromFloat(acc);
        }
    }
}
