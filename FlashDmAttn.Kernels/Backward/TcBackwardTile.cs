using System.Runtime.CompilerServices;
using ILGPU;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.TensorCore;

namespace FlashDmAttn.Kernels.Backward;

/// <summary>
/// The steps the tensor-core backward kernels share on one 64 × 64 tile, per lane: its two rows' state (the LSE in log2
/// units and D = rowsum(dO∘O)), visibility bits, and the recomputed probabilities. Scores, visibility and the bias are
/// the forward's tensor-core parts (<see cref="TcScore"/>, <see cref="TcVisibility"/>), so the gradient is the
/// derivative of what the forward computed; fragment layouts are the forward's (row g and g + 8 of the warp's 16 rows,
/// keys in <see cref="TcKeyOrder"/>).
/// </summary>
internal static class TcBackwardTile
{
    /// <summary>Query rows (and keys) per tile of the backward kernels.</summary>
    public const int Rows = 64;

    /// <summary>Row stride in bytes of a 16-bit score tile in shared memory (P, dS): 64 values + 16 bytes, an odd number
    /// of 16-byte chunks, so the transposed ldmatrix rows are conflict-free.</summary>
    public const int ScoreRowBytes = 2 * Rows + 16;

    /// <summary>16-bit elements of one tile of the dS scratch: 64 rows of 64 values, rows 128 bytes apart.</summary>
    public const int TileElems = Rows * Rows;

    /// <summary>
    /// A shared score tile (rows <see cref="ScoreRowBytes"/> apart) to the dS scratch at <paramref name="g"/> (16-byte
    /// aligned, rows 128 bytes apart), in 16-byte chunks, by all the group's threads.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreTile(uint s, ulong g, int tid)
    {
        for (int e = tid; e < Rows * 8; e += TcBackwardKernels.Threads)
        {
            int r = e >> 3, c = e & 7;
            Ptx.StGlobalV4U32(g + (ulong)(r * 2 * Rows + c * 16), Ptx.LdSharedV4U32(s + (uint)(r * ScoreRowBytes + c * 16)));
        }
    }

    /// <summary>cp.async of a tile of the dS scratch at <paramref name="g"/> into a shared score tile (the inverse of
    /// <see cref="StoreTile"/>), by all the group's threads.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadTile(ulong g, uint s, int tid)
    {
        for (int e = tid; e < Rows * 8; e += TcBackwardKernels.Threads)
        {
            int r = e >> 3, c = e & 7;
            Ptx.CpAsync16(s + (uint)(r * ScoreRowBytes + c * 16), g + (ulong)(r * 2 * Rows + c * 16), 16u);
        }
    }

    /// <summary>
    /// Row r's LSE in log2 units (+∞ for a row past the sequence or one that sees no key: all its P are then 0, as
    /// 2^(s − ∞) = 0 for every finite or −∞ score) and its D.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void RowState<TE>(in BwdArgs a, ArrayView<float> lse, ArrayView<float> dvec, ArrayView<byte> mask,
        ArrayView<ushort> bias, in BlockInfo blk, int b, int h, int r, out float m2, out float d)
        where TE : struct, ITcElem
    {
        m2 = float.PositiveInfinity;
        d = 0f;
        if (r >= blk.SeqQ) return;
        float rowBias = a.L.HasRowBias != 0 ? TE.ToFloat(bias[BackwardTile.RowBiasIndex(a, b, h, r)]) : 0f;
        float l = BackwardTile.RowLse(a, lse, mask, blk, b, h, r, rowBias);
        if (l != float.NegativeInfinity) m2 = l * TcScore.Log2E;
        d = dvec[BackwardTile.LseAt(a, blk, b, h, r)];
    }

    /// <summary>
    /// Visibility bits (bit 4j + e, as in <see cref="TcScore.Tile{TE, THd, TF}"/>) of the lane's rows rA and rA + 8 for
    /// the tile of keys (slots) from k0: the rows' limits (Lq, the key range, the causal band; gathered keys by rank)
    /// and, with a mask, its bytes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Bits<THd, TF>(in KernelArgs p, in BlockInfo blk, ArrayView<int> seqInfo, ArrayView<byte> mask, int gRow,
        int b, int h, int rA, int k0, int kEnd, int col0, bool causal, bool hasMask, bool gather, ulong maskG, bool maskVec)
        where THd : struct, ITcHeadDim where TF : struct, ITcFlags
    {
        int limA = TcVisibility.RowLimit(p, blk, seqInfo, gRow, rA, kEnd, causal, gather);
        int limB = TcVisibility.RowLimit(p, blk, seqInfo, gRow, rA + 8, kEnd, causal, gather);
        if (!hasMask) return TcGeom.FromLimits(THd.Bc, k0 + col0, limA, limB);
        return TcVisibility.TileBits<THd, TF>(p, blk, mask, k0, rA, MaskBias.MaskIndex(p, b, h, rA), MaskBias.MaskIndex(p, b, h, rA + 8),
            col0, limA, limB, maskG, maskVec);
    }

    /// <summary>Row stride in bytes of a byte-mask tile in shared memory (<see cref="LoadMaskTile{THd}"/>): 64 keys + 16.</summary>
    public const int MaskRowBytes = Rows + 16;

    /// <summary>
    /// cp.async of the byte mask of query rows i0 … i0 + 63 and the 64 keys from k0 into a shared tile (rows
    /// <see cref="MaskRowBytes"/> apart), by all the group's threads; rows past the sequence are zero-filled. The
    /// caller checks that mask rows are 16-byte aligned and the keys lie inside the key range.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadMaskTile(in KernelArgs p, in BlockInfo blk, ulong maskG, uint s, int b, int h, int i0, int k0, int tid)
    {
        for (int e = tid; e < Rows * 4; e += TcBackwardKernels.Threads)
        {
            int r = e >> 2, c = e & 3, i = i0 + r;
            bool ok = i < blk.SeqQ;
            long src = MaskBias.MaskIndex(p, b, h, ok ? i : blk.SeqQ - 1) + k0 + 16 * c;
            Ptx.CpAsync16(s + (uint)(r * MaskRowBytes + 16 * c), maskG + (ulong)src, ok ? 16u : 0u);
        }
    }

    /// <summary>
    /// <see cref="Bits{THd, TF}"/> with the mask's bytes from a shared tile (<see cref="LoadMaskTile"/>) of 64 keys:
    /// the lane's rows are <paramref name="r"/> and r + 8 of the tile, its 16 keys at <paramref name="col0"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint SharedMaskBits<THd>(in KernelArgs p, in BlockInfo blk, ArrayView<int> seqInfo, int gRow, int rA, int k0,
        int kEnd, int col0, bool causal, uint s, int r) where THd : struct, ITcHeadDim
    {
        int limA = TcVisibility.RowLimit(p, blk, seqInfo, gRow, rA, kEnd, causal, false);
        int limB = TcVisibility.RowLimit(p, blk, seqInfo, gRow, rA + 8, kEnd, causal, false);
        uint at = s + (uint)(r * MaskRowBytes + col0);
        U4 a = Ptx.LdSharedV4U32(at), c = Ptx.LdSharedV4U32(at + 8 * MaskRowBytes);
        RowWords w = default;
        w.A0 = a.X & 0xFFFFu; w.A1 = a.X >> 16; w.A2 = a.Y & 0xFFFFu; w.A3 = a.Y >> 16;
        w.A4 = a.Z & 0xFFFFu; w.A5 = a.Z >> 16; w.A6 = a.W & 0xFFFFu; w.A7 = a.W >> 16;
        w.B0 = c.X & 0xFFFFu; w.B1 = c.X >> 16; w.B2 = c.Y & 0xFFFFu; w.B3 = c.Y >> 16;
        w.B4 = c.Z & 0xFFFFu; w.B5 = c.Z >> 16; w.B6 = c.W & 0xFFFFu; w.B7 = c.W >> 16;
        return Frag.MaskBits<THd>(w) & TcGeom.FromLimits(THd.Bc, k0 + col0, limA, limB);
    }

    /// <summary>
    /// The bias of the lane's rows for the tile whose keys start at sa.Col0 − (lane's offset) as 32-bit pairs (the
    /// forward's prefetch): <paramref name="v4"/> 16-byte vector loads, else 4-byte ones. The caller checks that the tile
    /// lies inside the key range and that the rows are 4-byte (16-byte) aligned.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RowWords BiasWords<THd>(in ScoreArgs sa, bool v4) where THd : struct, ITcHeadDim
    {
        ulong cb = (ulong)(2 * sa.Col0);
        return v4 ? Frag.LoadWords32V4<THd>(sa.BiasA + cb, sa.BiasB + cb) : Frag.LoadWords32<THd>(sa.BiasA + cb, sa.BiasB + cb);
    }

    /// <summary>
    /// P = exp(score − LSE) of the tile in fp32 from the raw dot products <paramref name="s"/>: the forward's score
    /// (scale, softcap, bias; invisible elements −∞) in the log2 domain, then 2^(x − m) with the rows' LSE in log2 units
    /// (<see cref="RowState{TE}"/>). With <paramref name="pre"/> the bias comes from <paramref name="bw"/>
    /// (<see cref="BiasWords{THd}"/>), else element by element where visible.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SAcc Probabilities<TE, THd, TF>(SAcc s, uint bits, in ScoreArgs sa, bool hasBias, bool pre, RowWords bw, float mA, float mB)
        where TE : struct, ITcElem where THd : struct, ITcHeadDim where TF : struct, ITcFlags
    {
        s = TcScore.Apply<TE, THd, TF>(s, bits, sa, false, hasBias, pre, false, bw, 0u, 0u);
        return Frag.Probs<THd>(s, TcScore.Raw<TF>() ? sa.ScaleLog2 : 1f, mA, mB);
    }
}
