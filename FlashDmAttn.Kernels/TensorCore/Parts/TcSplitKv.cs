using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Numerics;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>
/// Split-KV (FlashAttention-2's flash_fwd_split_kv and combine kernels). When the (batch·head, query block) groups
/// would leave the GPU underfilled (decode: one query over a long cache), each block's key tiles are cut into
/// KvSplits consecutive ranges and every range runs as its own group: the same loop over fewer tiles. Each range
/// writes its rows' normalised O and LSE (fp32) into the work buffer, and <see cref="Combine{TElem, TCodec}"/> merges
/// the ranges in split order (deterministic) into O and LSE: LSE = log Σ e^{lse_s}, O = Σ e^{lse_s − LSE}·O_s. A range
/// that sees no key of a row has LSE −∞ and weight 0; a row no range sees gives O = 0 and LSE −∞, as unsplit.
/// Work buffer (floats), with G = KvSplits, N = Batch·Heads and R = SeqQ in the kernel's coordinates (after GQA
/// packing): O of (split s, group n, row r) at ((s·N + n)·R + r)·D, then the LSEs at G·N·R·D + (s·N + n)·R + r.
/// </summary>
internal static class TcSplitKv
{
    /// <summary>Tiles [start, end) of split <paramref name="split"/> of <paramref name="tiles"/>: equal runs of
    /// ⌈tiles / splits⌉; returns end (a split past the last tile gets an empty range).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Range(int tiles, int splits, int split, out int start)
    {
        int per = (tiles + splits - 1) / splits;
        start = split * per;
        int end = start + per;
        return end < tiles ? end : tiles;
    }

    /// <summary>Floats of the work buffer for a launch of <paramref name="splits"/> splits over
    /// <paramref name="groups"/> (batch·head) groups of <paramref name="rows"/> rows of head dim <paramref name="headDim"/>.</summary>
    public static long WorkFloats(int splits, long groups, int rows, int headDim)
        => (long)splits * groups * rows * (headDim + 1);

    /// <summary>
    /// Kernel side: one m-tile's rows rA and rA + 8 of this split: row sums across the quad, O normalised by them into
    /// the work buffer (fp32, this lane's columns), and the rows' LSE (natural log; −∞ for a row this split never saw).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void StorePartial<THd>(in KernelArgs p, in BlockInfo blk, OAcc acc, MRow st, ArrayView<float> work,
        int slot, int rA, int t) where THd : struct, ITcHeadDim
    {
        TcSoftmax.RowSums(st, out float lA, out float lB);
        int rB = rA + 8;
        bool okA = rA < blk.SeqQ, okB = rB < blk.SeqQ;
        long at = (long)slot * p.SeqQ;
        var o = Frag.Rescale<THd>(acc, OnlineSoftmax.Normaliser(lA), OnlineSoftmax.Normaliser(lB));
        Frag.StoreF32<THd>(o, work, (at + rA) * THd.D + 2 * t, (at + rB) * THd.D + 2 * t, okA, okB);
        if (t == 0)
        {
            long lb = (long)p.KvSplits * p.Batch * p.Heads * p.SeqQ * THd.D + at;
            if (okA) work[lb + rA] = lA > 0f ? st.MA * TcScore.Ln2 + XMath.Log(lA) : float.NegativeInfinity;
            if (okB) work[lb + rB] = lB > 0f ? st.MB * TcScore.Ln2 + XMath.Log(lB) : float.NegativeInfinity;
        }
    }

    /// <summary>
    /// The combine kernel, one thread per output element (b, h, i, x) of the problem as the caller posed it
    /// (<paramref name="p"/>: original heads, rows, output and LSE layout). Its row in the work buffer: (b·Heads + h, i),
    /// or with packed GQA (<paramref name="pack"/> query heads per kv head) (b·KvHeads + h / pack, (h % pack)·SeqQ + i).
    /// Rows past a sequence's end are left alone.
    /// </summary>
    public static void Combine<TElem, TCodec>(ArrayView<float> work, ArrayView<TElem> o, ArrayView<float> lse,
        ArrayView<int> seqInfo, KernelArgs p, int splits, int pack)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        int d = p.HeadDim;
        long total = (long)p.Batch * p.Heads * p.SeqQ * d;
        int heads = pack > 1 ? p.KvHeads : p.Heads, rows = pack > 1 ? pack * p.SeqQ : p.SeqQ;
        long groups = (long)p.Batch * heads;
        long lseBase = (long)splits * groups * rows * d;
        for (long w = Grid.GlobalIndex.X; w < total; w += (long)Grid.DimX * Group.DimX)
        {
            int x = (int)(w % d);
            long r = w / d;
            int i = (int)(r % p.SeqQ);
            r /= p.SeqQ;
            int h = (int)(r % p.Heads), b = (int)(r / p.Heads);
            var blk = BlockInfo.Create(p, seqInfo, b);
            if (i >= blk.SeqQ) continue;
            long row = pack > 1 ? ((long)b * heads + h / pack) * rows + (h % pack) * p.SeqQ + i : ((long)b * heads + h) * rows + i;
            // One pass, eight splits a trip: a trip's 16 loads are independent, so a row waits out the memory latency
            // once per eight splits (the loop is not unrolled); splits past the last read nothing and weigh 0. The
            // running max rescales what is summed so far, in split order: deterministic.
            long step = groups * rows, ls = lseBase + row, os = row * d + x, ostep = step * d;
            float m = float.NegativeInfinity, sum = 0f, acc = 0f;
            for (int s = 0; s < splits; s += 8)
            {
                float l0 = Lse(work, ls, step, s, splits), l1 = Lse(work, ls, step, s + 1, splits);
                float l2 = Lse(work, ls, step, s + 2, splits), l3 = Lse(work, ls, step, s + 3, splits);
                float l4 = Lse(work, ls, step, s + 4, splits), l5 = Lse(work, ls, step, s + 5, splits);
                float l6 = Lse(work, ls, step, s + 6, splits), l7 = Lse(work, ls, step, s + 7, splits);
                float o0 = Out(work, os, ostep, s, splits), o1 = Out(work, os, ostep, s + 1, splits);
                float o2 = Out(work, os, ostep, s + 2, splits), o3 = Out(work, os, ostep, s + 3, splits);
                float o4 = Out(work, os, ostep, s + 4, splits), o5 = Out(work, os, ostep, s + 5, splits);
                float o6 = Out(work, os, ostep, s + 6, splits), o7 = Out(work, os, ostep, s + 7, splits);
                float mn = XMath.Max(m, XMath.Max(XMath.Max(XMath.Max(l0, l1), XMath.Max(l2, l3)), XMath.Max(XMath.Max(l4, l5), XMath.Max(l6, l7))));
                if (mn == float.NegativeInfinity) continue; // no split so far saw a key of this row
                float c = XMath.Exp(m - mn); // 0 while m is −∞
                float e0 = XMath.Exp(l0 - mn), e1 = XMath.Exp(l1 - mn), e2 = XMath.Exp(l2 - mn), e3 = XMath.Exp(l3 - mn);
                float e4 = XMath.Exp(l4 - mn), e5 = XMath.Exp(l5 - mn), e6 = XMath.Exp(l6 - mn), e7 = XMath.Exp(l7 - mn);
                sum = sum * c + (((e0 + e1) + (e2 + e3)) + ((e4 + e5) + (e6 + e7)));
                acc = acc * c + (((e0 * o0 + e1 * o1) + (e2 * o2 + e3 * o3)) + ((e4 * o4 + e5 * o5) + (e6 * o6 + e7 * o7)));
                m = mn;
            }
            float val = 0f, l = float.NegativeInfinity;
            if (m != float.NegativeInfinity)
            {
                val = acc / sum;
                l = m + XMath.Log(sum);
            }
            o[blk.QOffset(p.OStrideB, p.OStrideL, p.OStrideH, i, h) + x] = TCodec.FromFloat(val);
            if (x == 0 && p.WriteLse != 0)
                lse[b * p.LseStrideB + h * p.LseStrideH + blk.RowQ0 + i] = l;
        }
    }

    /// <summary>Split s's LSE of a row (−∞ past the last split: weight 0, nothing read).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Lse(ArrayView<float> work, long at, long step, int s, int splits)
        => s < splits ? work[at + s * step] : float.NegativeInfinity;

    /// <summary>Split s's normalised O element of a row (0 past the last split).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Out(ArrayView<float> work, long at, long step, int s, int splits)
        => s < splits ? work[at + s * step] : 0f;
}
