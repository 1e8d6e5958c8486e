using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;
using FlashDmAttn.Kernels.Forward;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>Running max and sum of this lane's two rows of one m-tile (log2 domain).</summary>
internal struct MRow { public float MA, MB, LA, LB; }

/// <summary>One m-tile's softmax step: P fragments, the new row state and the rescale factors of O.</summary>
internal struct Smx { public PFrag P; public MRow R; public float AlA, AlB; }

/// <summary>The online softmax of one m-tile (FlashAttention's softmax.h): running max, exponentials, lazy rescale of O.</summary>
internal static class TcSoftmax
{
    /// <summary>
    /// Online-softmax step of one m-tile. Scores are in the log2 domain, or raw (TcScore.Raw) with
    /// <paramref name="scaleLog2"/> ≥ 0 applied to their row max and inside the exponent, or natural (TcScore.Natural)
    /// with log2(e) applied there. Row state is in log2 units.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Smx Step<TE, THd, TF>(SAcc s, MRow r, float scaleLog2)
        where TE : struct, ITcElem where THd : struct, ITcHeadDim where TF : struct, ITcFlags
    {
        F2 mx = Frag.RowMax<THd>(s);
        mx.A = TcScore.Max(mx.A, Warp.ShuffleXor(mx.A, 1));
        mx.A = TcScore.Max(mx.A, Warp.ShuffleXor(mx.A, 2));
        mx.B = TcScore.Max(mx.B, Warp.ShuffleXor(mx.B, 1));
        mx.B = TcScore.Max(mx.B, Warp.ShuffleXor(mx.B, 2));
        float c = 1f;
        if (TcScore.Raw<TF>() || TcScore.Natural<THd, TF>())
        {
            c = TcScore.Raw<TF>() ? scaleLog2 : TcScore.Log2E;
            mx.A *= c;
            mx.B *= c;
        }
        float nA = TcScore.Max(r.MA, mx.A), nB = TcScore.Max(r.MB, mx.B);
        // Lazy rescaling: a row keeps its running max while the tile's exceeds it by at most LazyMax (P ≤ 2^LazyMax,
        // exact in relative terms in fp32 sums and 16-bit P), so O and the sums need no rescale (α = 1). A first
        // finite max always replaces −∞ (the difference is +∞); −∞ − −∞ is NaN and keeps −∞.
        if (nA - r.MA <= LazyMax) nA = r.MA;
        if (nB - r.MB <= LazyMax) nB = r.MB;
        var res = new Smx();
        res.AlA = nA == r.MA ? 1f : Ptx.Ex2(r.MA - nA);
        res.AlB = nB == r.MB ? 1f : Ptx.Ex2(r.MB - nB);
        PExp pe = Frag.Exp<TE, THd>(s, c, nA == float.NegativeInfinity ? 0f : nA, nB == float.NegativeInfinity ? 0f : nB);
        res.P = pe.P;
        res.R = new MRow { MA = nA, MB = nB, LA = r.LA * res.AlA + pe.La, LB = r.LB * res.AlB + pe.Lb };
        return res;
    }

    /// <summary>Largest growth of a row's max (log2 units) absorbed without rescaling O.</summary>
    internal const float LazyMax = 8f;

    /// <summary>
    /// O·α for the warp's m-tiles (α of m-tile 1 unused when Mt = 1). Policies with <see cref="TcTune.SkipRescale"/> skip it
    /// in a lane whose rows (all its m-tiles') kept their max; the others always multiply.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static OAcc2 Rescale<THd>(OAcc2 o, float a0, float b0, float a1, float b1) where THd : struct, ITcHeadDim
    {
        bool skip = (THd.Tune & TcTune.SkipRescale) != 0;
        if (!skip || a0 != 1f || b0 != 1f || (THd.Mt > 1 && (a1 != 1f || b1 != 1f)))
        {
            o.A = Frag.Rescale<THd>(o.A, a0, b0);
            if (THd.Mt > 1) o.B = Frag.Rescale<THd>(o.B, a1, b1);
        }
        return o;
    }

    /// <summary>The lane's two rows' softmax sums over the quad (the four lanes that share a row).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void RowSums(in MRow st, out float lA, out float lB)
    {
        lA = st.LA;
        lB = st.LB;
        lA += Warp.ShuffleXor(lA, 1);
        lA += Warp.ShuffleXor(lA, 2);
        lB += Warp.ShuffleXor(lB, 1);
        lB += Warp.ShuffleXor(lB, 2);
    }

    /// <summary>
    /// The end of the online softmax for one m-tile: row sums across the quad, O normalised by them and written (packed
    /// 32-bit stores when <paramref name="oVec"/>), and the log-sum-exp (natural log) of each row; a row with no visible
    /// key gives output 0 and LSE −∞.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Epilogue<TE, THd>(in KernelArgs p, in BlockInfo blk, OAcc acc, MRow st, ArrayView<ushort> o,
        ArrayView<float> lse, ulong oG, bool oVec, int b, int h, int rA, int t)
        where TE : struct, ITcElem where THd : struct, ITcHeadDim
    {
        RowSums(st, out float lA, out float lB);
        int rB = rA + 8;
        bool okA = rA < blk.SeqQ, okB = rB < blk.SeqQ;
        long oA = blk.QOffset(p.OStrideB, p.OStrideL, p.OStrideH, rA, h) + 2 * t;
        long oB = blk.QOffset(p.OStrideB, p.OStrideL, p.OStrideH, rB, h) + 2 * t;
        float ia = OnlineSoftmax.Normaliser(lA), ib = OnlineSoftmax.Normaliser(lB);
        if (oVec)
            Frag.Store32<TE, THd>(acc, oG + (ulong)(2 * oA), oG + (ulong)(2 * oB), okA, okB, ia, ib);
        else
            Frag.Store<TE, THd>(acc, o, oA, oB, okA, okB, ia, ib);
        if (p.WriteLse != 0 && t == 0)
        {
            long lrow = b * p.LseStrideB + h * p.LseStrideH + blk.RowQ0;
            if (okA) lse[lrow + rA] = lA > 0f ? st.MA * TcScore.Ln2 + XMath.Log(lA) : float.NegativeInfinity;
            if (okB) lse[lrow + rB] = lB > 0f ? st.MB * TcScore.Ln2 + XMath.Log(lB) : float.NegativeInfinity;
        }
    }
}
