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
            // Splits four at a time: their loads are independent, so four are in flight at once (the loop is not
            // unrolled; one load per trip would wait out the memory latency once per split).
            long step = groups * rows, ls = lseBase + row, os = row * d + x, ostep = step * d;
            int s4 = splits & ~3;
            float m = float.NegativeInfinity;
            for (int s = 0; s < s4; s += 4)
            {
                float a = work[ls + s * step], b2 = work[ls + (s + 1) * step], c = work[ls + (s + 2) * step], e = work[ls + (s + 3) * step];
                m = XMath.Max(m, XMath.Max(XMath.Max(a, b2), XMath.Max(c, e)));
            }
            for (int s = s4; s < splits; s++)
                m = XMath.Max(m, work[ls + s * step]);
            float val = 0f, l = float.NegativeInfinity;
            if (m != float.NegativeInfinity)
            {
                float sum = 0f, acc = 0f;
                for (int s = 0; s < s4; s += 4)
                {
                    float e0 = work[ls + s * step], e1 = work[ls + (s + 1) * step], e2 = work[ls + (s + 2) * step], e3 = work[ls + (s + 3) * step];
                    float o0 = work[os + s * ostep], o1 = work[os + (s + 1) * ostep], o2 = work[os + (s + 2) * ostep], o3 = work[os + (s + 3) * ostep];
                    e0 = XMath.Exp(e0 - m); e1 = XMath.Exp(e1 - m); e2 = XMath.Exp(e2 - m); e3 = XMath.Exp(e3 - m);
                    sum += (e0 + e1) + (e2 + e3);
                    acc += (e0 * o0 + e1 * o1) + (e2 * o2 + e3 * o3);
                }
                for (int s = s4; s < splits; s++)
                {
                    float e = XMath.Exp(work[ls + s * step] - m);
                    sum += e;
                    acc += e * work[os + s * ostep];
                }
                val = acc / sum;
                l = m + XMath.Log(sum);
            }
            o[blk.QOffset(p.OStrideB, p.OStrideL, p.OStrideH, i, h) + x] = TCodec.FromFloat(val);
            if (x == 0 && p.WriteLse != 0)
                lse[b * p.LseStrideB + h * p.LseStrideH + blk.RowQ0 + i] = l;
        }
    }
}
