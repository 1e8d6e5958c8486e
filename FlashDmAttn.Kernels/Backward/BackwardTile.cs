using ILGPU;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Numerics;

namespace FlashDmAttn.Kernels.Backward;

/// <summary>
/// The steps of FlashAttention-2's backward on one (query tile × key tile) in shared memory, fp32, shared by the
/// query-block kernel (dq) and the key-block kernel (dk, dv): row state (LSE and D = rowsum(dO∘O)), tile loads,
/// visibility, the recomputed probabilities P = exp(s − LSE) with the score's slope, and dS = P∘(dO·Vᵀ − D).
/// Rows are query rows i0 + r (r &lt; br), columns are key slots k0 + c (c &lt; bc) of the group's key list; every loop
/// strides by the group's size. The score, its order (scale, softcap, bias) and visibility are the forward's
/// (<see cref="MaskBias"/>, <see cref="BlockInfo"/>), so the gradient is the derivative of what the forward computed.
/// </summary>
internal static class BackwardTile
{
    /// <summary>
    /// LSE and D of rows i0.. into shared memory. The LSE is the forward's, less a key-broadcast bias of the row (the
    /// forward added it after the softmax); rows that see no key (LSE −∞, a masked row) get −∞: all their P are 0.
    /// </summary>
    public static void LoadRowState<TElem, TCodec>(ArrayView<float> smem, int lseAt, int dAt, in BwdArgs a,
        ArrayView<float> lse, ArrayView<float> dvec, ArrayView<byte> mask, ArrayView<TElem> bias,
        in BlockInfo blk, int b, int h, int i0, int rows, int br)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        for (int r = Group.IdxX; r < br; r += Group.DimX)
        {
            float l = float.NegativeInfinity, dv = 0f;
            if (r < rows)
            {
                int i = i0 + r;
                dv = dvec[LseAt(a, blk, b, h, i)];
                float rowBias = a.L.HasRowBias != 0 ? TCodec.ToFloat(bias[RowBiasIndex(a, b, h, i)]) : 0f;
                l = RowLse(a, lse, mask, blk, b, h, i, rowBias);
            }
            smem[lseAt + r] = l;
            smem[dAt + r] = dv;
        }
    }

    /// <summary>Where row i of (b, h) sits in the LSE's layout (and in D's).</summary>
    public static long LseAt(in BwdArgs a, in BlockInfo blk, int b, int h, int i)
        => b * a.F.LseStrideB + h * a.F.LseStrideH + blk.RowQ0 + i;

    /// <summary>Element index of row i's key-broadcast bias (when <see cref="BwdLayout.HasRowBias"/>).</summary>
    public static long RowBiasIndex(in BwdArgs a, int b, int h, int i)
        => b * a.L.RowBiasStrideB + (h / a.L.RowBiasHeadDiv) * a.L.RowBiasStrideH + i * a.L.RowBiasStrideQ;

    /// <summary>
    /// The LSE the probabilities of row i (inside the sequence) are recomputed from: the forward's, less the row's
    /// key-broadcast bias <paramref name="rowBias"/> (the forward added it after the softmax); a row that sees no key
    /// (LSE −∞, a row mask) gives −∞: all its P are 0.
    /// </summary>
    public static float RowLse(in BwdArgs a, ArrayView<float> lse, ArrayView<byte> mask, in BlockInfo blk, int b, int h, int i, float rowBias)
    {
        float l = lse[LseAt(a, blk, b, h, i)];
        if (a.L.HasRowMask != 0)
        {
            long mi = b * a.L.RowMaskStrideB + (h / a.L.RowMaskHeadDiv) * a.L.RowMaskStrideH + i * a.L.RowMaskStrideQ;
            if (!MaskBias.ElementVisible(mask, mi * a.L.RowMaskElemBytes, a.L.RowMaskElemBytes)) l = float.NegativeInfinity;
        }
        if (a.L.HasRowBias != 0 && l != float.NegativeInfinity)
        {
            l -= rowBias;
            if (float.IsNaN(l)) l = float.NegativeInfinity; // an infinite shift (+∞ − +∞): the row's softmax is lost, its gradient 0
        }
        return l;
    }

    /// <summary>Query-side rows i0.. of q or dO (head h) → shared, fp32, zero past <paramref name="rows"/>.</summary>
    public static void LoadRows<TElem, TCodec>(ArrayView<float> smem, int at, ArrayView<TElem> src,
        long strideB, long strideL, long strideH, in BlockInfo blk, int i0, int rows, int h, int d, int br)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        for (int e = Group.IdxX; e < br * d; e += Group.DimX)
        {
            int r = e / d, c = e - r * d;
            smem[at + e] = r < rows ? TCodec.ToFloat(src[blk.QOffset(strideB, strideL, strideH, i0 + r, h) + c]) : 0f;
        }
    }

    /// <summary>Key slots k0.. of k or v (kv head hk) → shared, fp32, zero past <paramref name="cols"/> and past the
    /// sequence (a key list of one tile may run past a varlen sequence's end).</summary>
    public static void LoadKeys<TElem, TCodec>(ArrayView<float> smem, int at, ArrayView<TElem> src,
        long strideB, long strideL, long strideH, in KernelArgs p, ArrayView<int> seqInfo, in BlockInfo blk,
        int gRow, int k0, int cols, int hk, int d, int bc)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        for (int e = Group.IdxX; e < bc * d; e += Group.DimX)
        {
            int r = e / d, c = e - r * d;
            float x = 0f;
            if (r < cols)
            {
                int j = BlockInfo.KeyAt(p, seqInfo, gRow, k0 + r);
                if (j < blk.SeqK)
                    x = TCodec.ToFloat(src[blk.KOffset(p, seqInfo, strideB, strideL, strideH, j, hk) + c]);
            }
            smem[at + e] = x;
        }
    }

    /// <summary>
    /// Marks the visible entries of the tile (1) and the rest (0) in <paramref name="pAt"/>; true when this thread saw a
    /// visible one (the caller ORs it over the group and skips an empty tile before loading anything for it).
    /// </summary>
    public static bool MarkVisible(ArrayView<float> smem, int pAt, in KernelArgs p, ArrayView<byte> mask, ArrayView<int> seqInfo,
        in BlockInfo blk, int b, int h, int i0, int rows, int gRow, int k0, int cols, int br, int bc)
    {
        bool any = false;
        for (int e = Group.IdxX; e < br * bc; e += Group.DimX)
        {
            int r = e / bc, c = e - r * bc;
            bool vis = false;
            if (r < rows && c < cols)
            {
                int i = i0 + r, j = BlockInfo.KeyAt(p, seqInfo, gRow, k0 + c);
                vis = j < blk.SeqK && MaskBias.CausalVisible(p, blk, i, j);
                if (vis && p.HasMask != 0 && p.GatherKeys == 0)
                    vis = MaskBias.MaskVisible(p, mask, MaskBias.MaskIndex(p, b, h, i), j);
            }
            smem[pAt + e] = vis ? 1f : 0f;
            any |= vis;
        }
        return any;
    }

    /// <summary>
    /// The tile's P (<paramref name="pAt"/>), dS (<paramref name="dsAt"/>) and dS∘slope (<paramref name="gAt"/>) from the
    /// visibility marks in <paramref name="pAt"/>, the Q/dO rows and K/V slots in shared memory and the row state:
    /// <see cref="Probabilities{TElem, TCodec}"/>, a barrier, <see cref="ScoreGradients"/>. The caller's barrier follows.
    /// </summary>
    public static void Gradients<TElem, TCodec>(ArrayView<float> smem, int pAt, int gAt, int dsAt, int qAt, int kAt, int doAt, int vAt,
        int lseAt, int dAt, in KernelArgs p, ArrayView<TElem> bias, ArrayView<int> seqInfo, int b, int h, int i0, int gRow, int k0,
        int d, int br, int bc)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        Probabilities<TElem, TCodec>(smem, pAt, gAt, qAt, kAt, lseAt, p, bias, seqInfo, b, h, i0, gRow, k0, d, br, bc);
        Group.Barrier();
        ScoreGradients(smem, pAt, gAt, dsAt, doAt, vAt, dAt, d, br, bc);
    }

    /// <summary>
    /// P = exp(s − LSE) of the visible entries (0 elsewhere) into <paramref name="pAt"/>, and the score's slope
    /// ds/d(q·k) into <paramref name="gAt"/>. Q rows at <paramref name="qAt"/>, K slots at <paramref name="kAt"/>.
    /// </summary>
    public static void Probabilities<TElem, TCodec>(ArrayView<float> smem, int pAt, int gAt, int qAt, int kAt, int lseAt,
        in KernelArgs p, ArrayView<TElem> bias, ArrayView<int> seqInfo, int b, int h, int i0, int gRow, int k0, int d, int br, int bc)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        for (int e = Group.IdxX; e < br * bc; e += Group.DimX)
        {
            int r = e / bc, c = e - r * bc;
            float lse = smem[lseAt + r];
            if (smem[pAt + e] == 0f || lse == float.NegativeInfinity)
            {
                smem[pAt + e] = 0f;
                smem[gAt + e] = 0f;
                continue;
            }
            float dot = 0f;
            for (int x = 0; x < d; x++)
                dot += smem[qAt + r * d + x] * smem[kAt + c * d + x];
            int j = BlockInfo.KeyAt(p, seqInfo, gRow, k0 + c);
            float s = MaskBias.ScoreWithSlope<TElem, TCodec>(p, dot, bias, MaskBias.BiasIndex(p, b, h, i0 + r), j, out float slope);
            smem[pAt + e] = OnlineSoftmax.Prob(s, lse);
            smem[gAt + e] = slope;
        }
    }

    /// <summary>
    /// dS = P∘(dO·Vᵀ − D) into <paramref name="dsAt"/> (the gradient of the score, and of an added bias), and
    /// dS times the slope into <paramref name="gAt"/> (the gradient of q·k). dO rows at <paramref name="doAt"/>, V slots
    /// at <paramref name="vAt"/>.
    /// </summary>
    public static void ScoreGradients(ArrayView<float> smem, int pAt, int gAt, int dsAt, int doAt, int vAt, int dAt, int d, int br, int bc)
    {
        for (int e = Group.IdxX; e < br * bc; e += Group.DimX)
        {
            int r = e / bc, c = e - r * bc;
            float pr = smem[pAt + e];
            float ds = 0f;
            if (pr != 0f)
            {
                float dp = 0f;
                for (int x = 0; x < d; x++)
                    dp += smem[doAt + r * d + x] * smem[vAt + c * d + x];
                ds = pr * (dp - smem[dAt + r]);
            }
            smem[dsAt + e] = ds;
            smem[gAt + e] *= ds;
        }
    }
}
