using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;
using FlashDmAttn.Kernels.Forward;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>Per-tile arguments of the score transform (this lane's two rows of one m-tile).</summary>
public struct ScoreArgs
{
    public float Scale, ScaleLog2, Cap;
    /// <summary>Byte addresses of this lane's bias rows (rows past the sequence clamped to its last row).</summary>
    public ulong BiasA, BiasB;
    /// <summary>Key index of this lane's first column in the tile: k0 + 2·(lane % 4).</summary>
    public int Col0;
}

internal static class TcScore
{
    public const float Log2E = 1.44269504088896340736f;
    public const float Ln2 = 0.693147180559945309417f;

    /// <summary>max.f32 (one instruction; a compare and select would be two).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Max(float a, float b) => XMath.Max(a, b);

    /// <summary>
    /// Scores stay raw dot products (no bias, no softcap, scale ≥ 0: the launcher sends a negative scale to the
    /// softcap specialisation): the row max is taken on them and the scale folds into the exponent's FFMA.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Raw<TF>() where TF : struct, ITcFlags => !TF.Bias && !TF.Softcap;

    /// <summary>s·scale → softcap → + bias, in the log2 domain (visibility applied by the caller); raw scores unchanged.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Elem<TF>(float dot, in ScoreArgs sa, float bias, bool hasBias) where TF : struct, ITcFlags
    {
        if (Raw<TF>()) return dot;
        if (!TF.Softcap) return TF.Bias && hasBias ? dot * sa.ScaleLog2 + bias * Log2E : dot * sa.ScaleLog2; // FMUL + FFMA
        float s = dot * sa.Scale;
        if (sa.Cap > 0f) s = sa.Cap * XMath.Tanh(s / sa.Cap);
        if (TF.Bias && hasBias) s += bias;
        return s * Log2E;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Lo<TE>(uint w) where TE : struct, ITcElem => TE.ToFloat((ushort)(w & 0xFFFFu));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Hi<TE>(uint w) where TE : struct, ITcElem => TE.ToFloat((ushort)(w >> 16));

    /// <summary>
    /// One n-tile: bits 0..3 = (row A, col), (row A, col+1), (row B, col), (row B, col+1); invisible → −∞.
    /// <paramref name="full"/> (a literal at every call): every element is visible. <paramref name="pre"/>: the bias
    /// pairs were prefetched as 32-bit words (<paramref name="wa"/>, <paramref name="wb"/>); otherwise the bias of
    /// invisible elements is not read.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static F4 Tile<TE, TF>(F4 v, uint bits, in ScoreArgs sa, int colOff, bool full, bool hasBias, bool pre, uint wa, uint wb)
        where TE : struct, ITcElem where TF : struct, ITcFlags
    {
        float b0 = 0f, b1 = 0f, b2 = 0f, b3 = 0f;
        if (TF.Bias && hasBias)
        {
            if (pre)
            {
                b0 = Lo<TE>(wa); b1 = Hi<TE>(wa); b2 = Lo<TE>(wb); b3 = Hi<TE>(wb);
            }
            else
            {
                ulong cb = (ulong)(2 * (sa.Col0 + colOff));
                if (full || (bits & 1u) != 0) b0 = TE.ToFloat((ushort)Ptx.LdGlobalNcU16(sa.BiasA + cb));
                if (full || (bits & 2u) != 0) b1 = TE.ToFloat((ushort)Ptx.LdGlobalNcU16(sa.BiasA + cb + 2));
                if (full || (bits & 4u) != 0) b2 = TE.ToFloat((ushort)Ptx.LdGlobalNcU16(sa.BiasB + cb));
                if (full || (bits & 8u) != 0) b3 = TE.ToFloat((ushort)Ptx.LdGlobalNcU16(sa.BiasB + cb + 2));
            }
        }
        float x = Elem<TF>(v.X, sa, b0, hasBias), y = Elem<TF>(v.Y, sa, b1, hasBias);
        float z = Elem<TF>(v.Z, sa, b2, hasBias), w = Elem<TF>(v.W, sa, b3, hasBias);
        if (full) return new F4(x, y, z, w);
        return new F4(
            (bits & 1u) != 0 ? x : float.NegativeInfinity,
            (bits & 2u) != 0 ? y : float.NegativeInfinity,
            (bits & 4u) != 0 ? z : float.NegativeInfinity,
            (bits & 8u) != 0 ? w : float.NegativeInfinity);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StorePair<TE>(F4 v, ArrayView<ushort> dst, long offA, long offB, bool okA, bool okB, float ia, float ib)
        where TE : struct, ITcElem
    {
        if (okA)
        {
            dst[offA] = TE.FromFloat(v.X * ia);
            dst[offA + 1] = TE.FromFloat(v.Y * ia);
        }
        if (okB)
        {
            dst[offB] = TE.FromFloat(v.Z * ib);
            dst[offB + 1] = TE.FromFloat(v.W * ib);
        }
    }
}

/// <summary>
/// Geometric visibility of a lane's fragment elements in closed form (a few ALU operations instead of a loop over
/// the 4·Bc/8 elements, which ILGPU does not unroll): element (j, e) is row rA + 8·(e ≥ 2), key c0 + 8j + (e &amp; 1);
/// it is visible when its key is at most its row's limit, the last key the row may see (−1: none). A row's limit
/// folds in Lq, the key range and the causal band, and is computed once per block (<see cref="Limit"/>, or from the
/// key ranks when keys are gathered), so a tile's bits cost two <see cref="Pairs"/>.
/// </summary>
public static class TcGeom
{
    /// <summary>Bits 4j + e (as in TcScore.Tile) for a tile of <paramref name="bc"/> keys whose lane column starts at <paramref name="c0"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Bits(int bc, int rA, int seqQ, int c0, int kEnd, bool causal, int diag)
        => FromLimits(bc, c0, Limit(rA, seqQ, kEnd, causal, diag), Limit(rA + 8, seqQ, kEnd, causal, diag));

    /// <summary>Bits of a tile from the limits of the lane's rows A (<paramref name="limA"/>) and B (<paramref name="limB"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint FromLimits(int bc, int c0, int limA, int limB)
        => Pairs(bc, limA - c0) | (Pairs(bc, limB - c0) << 2);

    /// <summary>Last key row <paramref name="r"/> may see: below kEnd and, with causal, at most r + diag; −1 past Lq.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Limit(int r, int seqQ, int kEnd, bool causal, int diag)
    {
        if (r >= seqQ) return -1;
        int lim = kEnd - 1;
        if (causal && r + diag < lim) lim = r + diag;
        return lim;
    }

    /// <summary>Bits 4j (offset 8j) and 4j + 1 (offset 8j + 1) of the offsets ≤ <paramref name="lim"/>, j &lt; bc / 8.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Pairs(int bc, int lim)
    {
        if (lim < 0) return 0u;
        int n = bc / 8;
        int n0 = lim / 8 + 1, n1 = (lim + 7) / 8; // j with 8j ≤ lim; j with 8j + 1 ≤ lim
        n0 = n0 < n ? n0 : n;
        n1 = n1 < n ? n1 : n;
        return (Low(4 * n0) & 0x11111111u) | (Low(4 * n1) & 0x22222222u);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Low(int bits) => bits >= 32 ? 0xFFFFFFFFu : (1u << bits) - 1u;
}

/// <summary>
/// This lane's rows (A = rA, B = rA + 8 of m-tiles 0 and 1) as the visibility code needs them: their mask row offsets,
/// the addresses of their 16-byte mask words (Quad path), and the last key (slot) each may see (TcGeom limits).
/// </summary>
public struct LaneMask
{
    public int RA0, RA1;
    public int LimA0, LimB0, LimA1, LimB1;
    public long RowA0, RowB0, RowA1, RowB1;
    public ulong QA0, QB0, QA1, QB1;
    /// <summary>Mask base address; Vec: byte mask with even strides (byte pairs); Quad: 16-byte words a tile ahead.</summary>
    public ulong G;
    public bool Vec, Quad;
}

/// <summary>Raw byte-mask words of this lane's rows for one tile: 16 bytes of row A and of row B per m-tile.</summary>
public struct MaskQuad { public U4 A0, B0, A1, B1; }

/// <summary>
/// Byte masks read 16 bytes per lane (ld.global.nc.v4): the 4 lanes of a quad hold one row's 64 tile bytes and
/// exchange them as bits, so a 64-key tile costs 2 loads per m-tile and lane instead of 16. Used for the look-ahead,
/// whose loads are issued a tile early so their latency hides behind the current tile's math.
/// </summary>
internal static class TcMask
{
    /// <summary>Nonzero bytes of a word → 4 bits (byte i → bit i).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Nz4(uint x)
    {
        uint y = ((((x & 0x7F7F7F7Fu) + 0x7F7F7F7Fu) | x) & 0x80808080u) >> 7; // bits 0, 8, 16, 24
        return ((y * 0x00204081u) >> 21) & 0xFu;                                 // → bits 21..24, no carries
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Nz16(U4 w) => Nz4(w.X) | (Nz4(w.Y) << 4) | (Nz4(w.Z) << 8) | (Nz4(w.W) << 12);

    /// <summary>Bits 0..7 of fragment visibility (n-tiles 2s, 2s + 1) from source lane s's word, pre-shifted by 2t.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Spread(uint x) => (x & 3u) | (((x >> 16) & 3u) << 2) | (((x >> 8) & 3u) << 4) | (((x >> 24) & 3u) << 6);

    /// <summary>
    /// Visibility bits (bit 4j+e as in TcScore.Tile) of a 64-key tile from this lane's 16 bytes of row A
    /// (<paramref name="a"/>) and row B (<paramref name="b"/>): lane t of a quad holds tile bytes [16t, 16t + 16).
    /// All lanes of the warp must call it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Bits(U4 a, U4 b, int lane)
    {
        uint u = Nz16(a) | (Nz16(b) << 16);
        int quad = lane & ~3;
        int sh = 2 * (lane & 3);
        uint v0 = Warp.Shuffle(u, quad) >> sh, v1 = Warp.Shuffle(u, quad + 1) >> sh;
        uint v2 = Warp.Shuffle(u, quad + 2) >> sh, v3 = Warp.Shuffle(u, quad + 3) >> sh;
        return Spread(v0) | (Spread(v1) << 8) | (Spread(v2) << 16) | (Spread(v3) << 24);
    }
}

/// <summary>Running max and sum of this lane's two rows of one m-tile (log2 domain).</summary>
public struct MRow { public float MA, MB, LA, LB; }

/// <summary>One m-tile's softmax step: P fragments, the new row state and the rescale factors of O.</summary>
public struct Smx { public PFrag P; public MRow R; public float AlA, AlB; }

/// <summary>
/// FlashAttention-2-style forward kernel on mma.sync m16n8k16 (bf16/fp16 in, fp32 accumulate), same semantics as
/// <see cref="PortableForwardKernel"/>. One group = 4 warps = 64·Mt query rows of one (batch, head); each warp owns
/// Mt m-tiles of 16 rows (every K/V ldmatrix fragment feeds Mt mma) and keeps S, P and O as register fragments.
/// K/V tiles of Bc keys (and bias tiles, when 16-byte aligned) are double-buffered in dynamic shared memory and loaded
/// with cp.async a tile ahead (ragged rows zero-filled). Specialised on <typeparamref name="TF"/> (static switch): a
/// feature that is off costs nothing. Tiles that every row sees whole (no mask, inside the causal band and the
/// lengths) skip the per-element visibility; the others compute it, one bit per fragment element (TcGeom, TcMask).
/// With a mask, the visibility of the next tile is computed first (from mask words loaded a tile earlier) and a tile
/// invisible to every row (Group.BarrierOr) is skipped before its K, V or bias is read.
/// Grid: (ceil(max Lq / Br), Batch·Heads), query blocks taken last-first; group 128 threads, shared bytes
/// <see cref="SharedBytes{THd}"/>.
/// </summary>
public static class TensorCoreForwardKernel
{
    public const int Threads = 128;

    /// <summary>Query rows per group.</summary>
    public static int RowsOf<THd>() where THd : struct, ITcHeadDim => 64 * THd.Mt;

    /// <summary>Q tile + double-buffered K and V tiles, + double-buffered bias tiles when the bias is staged.</summary>
    public static int SharedBytes<THd>(bool bias) where THd : struct, ITcHeadDim
        => (64 * THd.Mt + 4 * THd.Bc) * THd.RowBytes + (bias ? 2 * 64 * THd.Mt * BiasRowBytes<THd>() : 0);

    /// <summary>Row stride of a staged bias tile: Bc 16-bit values + 16 bytes (conflict-free ld.shared.u32 per quad).</summary>
    public static int BiasRowBytes<THd>() where THd : struct, ITcHeadDim => 2 * THd.Bc + 16;

    /// <summary>
    /// cp.async of the bias rows [q0, q0 + Rows) × keys [k0, k0 + Bc) into shared memory (the caller checks that the
    /// tile lies inside the key range and that rows are 16-byte aligned); rows past the sequence copy its last row.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LoadBiasTile<THd>(in FwdParams p, in BlockInfo blk, ulong biasG, uint dst, int b, int h, int q0, int k0, int tid)
        where THd : struct, ITcHeadDim
    {
        int cpr = THd.Bc / 8, step = Threads / cpr, rows = 64 * THd.Mt, rb = BiasRowBytes<THd>();
        int r0 = tid / cpr, c = tid - r0 * cpr;
        int last = blk.SeqQ - 1;
        long rowBase = MaskBias.BiasIndex(p, b, h, 0) + k0;
        for (int r = r0; r < rows; r += step)
        {
            int row = q0 + r < last ? q0 + r : last;
            Ptx.CpAsync16(dst + (uint)(r * rb + c * 16), biasG + (ulong)((rowBase + row * p.BiasStrideQ) * 2 + c * 16), 16u);
        }
    }

    /// <summary>This lane's 16 mask bytes of rows A and B of each m-tile for the tile at k0 (see TcMask).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static MaskQuad LoadMaskQuad<THd>(in LaneMask lm, int k0) where THd : struct, ITcHeadDim
    {
        var w = new MaskQuad();
        w.A0 = Ptx.LdGlobalNcV4U32(lm.QA0 + (ulong)k0);
        w.B0 = Ptx.LdGlobalNcV4U32(lm.QB0 + (ulong)k0);
        if (THd.Mt > 1)
        {
            w.A1 = Ptx.LdGlobalNcV4U32(lm.QA1 + (ulong)k0);
            w.B1 = Ptx.LdGlobalNcV4U32(lm.QB1 + (ulong)k0);
        }
        return w;
    }

    /// <summary>
    /// Visibility bits of both m-tiles (X: m-tile 0, Y: m-tile 1) of the tile at k0 under a mask: from 16-byte mask
    /// words where the tile takes that path (those prefetched a tile ago when <paramref name="usePf"/>, else loaded
    /// now), otherwise by <see cref="TileBits{THd, TF}"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static U2 MaskedBits<THd, TF>(in FwdParams p, in BlockInfo blk, ArrayView<byte> mask, in LaneMask lm, int k0,
        int fullEnd, int lane, int t, bool usePf, MaskQuad pf)
        where THd : struct, ITcHeadDim where TF : struct, ITcFlags
    {
        var r = new U2();
        if (TF.Mask && lm.Quad && k0 + THd.Bc <= blk.SeqK)
        {
            MaskQuad w = usePf ? pf : LoadMaskQuad<THd>(lm, k0);
            r.X = QuadTileBits<THd>(w.A0, w.B0, lane, k0, fullEnd, 2 * t, lm.LimA0, lm.LimB0);
            r.Y = THd.Mt > 1 ? QuadTileBits<THd>(w.A1, w.B1, lane, k0, fullEnd, 2 * t, lm.LimA1, lm.LimB1) : 0u;
            return r;
        }
        r.X = TileBits<THd, TF>(p, blk, mask, k0, lm.RA0, lm.RowA0, lm.RowB0, 2 * t, lm.LimA0, lm.LimB0, true, lm.G, lm.Vec);
        r.Y = THd.Mt > 1 ? TileBits<THd, TF>(p, blk, mask, k0, lm.RA1, lm.RowA1, lm.RowB1, 2 * t, lm.LimA1, lm.LimB1, true, lm.G, lm.Vec) : 0u;
        return r;
    }

    /// <summary>Score transform of one m-tile: bias from the staged shared tile (read per n-tile), else as prefetched.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static SAcc ApplyScores<TE, THd, TF>(SAcc s, uint bits, in ScoreArgs sa, bool full, bool hasBias, bool pre, bool staged,
        RowWords bw, uint bsA, uint bsB)
        where TE : struct, ITcElem where THd : struct, ITcHeadDim where TF : struct, ITcFlags
    {
        if (TF.Bias && staged) return Frag.ScoresShared<TE, THd, TF>(s, bits, sa, full, bsA, bsB);
        return Frag.Scores<TE, THd, TF>(s, bits, sa, full, hasBias, pre, bw);
    }

    /// <summary>Visibility bits of one m-tile from its mask words: the geometry only where the tile is not whole.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint QuadTileBits<THd>(U4 a, U4 b, int lane, int k0, int fullEnd, int col0, int limA, int limB)
        where THd : struct, ITcHeadDim
    {
        uint bits = TcMask.Bits(a, b, lane);
        if (k0 + THd.Bc <= fullEnd) return bits;
        return bits & TcGeom.FromLimits(THd.Bc, k0 + col0, limA, limB);
    }

    /// <summary>
    /// Visibility bits of this lane's fragment elements of the tile at k0 (bit 4j+e, see TcScore.Tile): the geometry
    /// from the rows' limits (<see cref="TcGeom"/>; key slots when keys are gathered), and the mask where there is one.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint TileBits<THd, TF>(in FwdParams p, in BlockInfo blk, ArrayView<byte> mask, int k0,
        int rA, long mRowA, long mRowB, int col0, int limA, int limB, bool hasMask, ulong maskG, bool maskVec)
        where THd : struct, ITcHeadDim where TF : struct, ITcFlags
    {
        uint geom = TcGeom.FromLimits(THd.Bc, k0 + col0, limA, limB);
        if (!TF.Mask || !hasMask) return geom;
        if (maskVec && k0 + THd.Bc <= blk.SeqK)
        {
            // Byte mask, tile inside the key range: all byte pairs of the tile in flight at once (rows past Lq read
            // the last row: in bounds, and their geometry bits are 0), then the geometry.
            int last = blk.SeqQ - 1;
            long ma = rA < blk.SeqQ ? mRowA : mRowA - (long)(rA - last) * p.MaskStrideQ;
            long mb = rA + 8 < blk.SeqQ ? mRowB : mRowB - (long)(rA + 8 - last) * p.MaskStrideQ;
            RowWords w = Frag.LoadWords16<THd>(maskG + (ulong)(ma + k0 + col0), maskG + (ulong)(mb + k0 + col0));
            return Frag.MaskBits<THd>(w) & geom;
        }
        // Other masks (dtype values, odd strides, the ragged last tile): element by element where the geometry allows.
        uint bits = 0;
        for (int j = 0; j < THd.Bc / 8; j++)
        {
            for (int e = 0; e < 4; e++)
            {
                uint bit = 1u << (4 * j + e);
                int c = k0 + 8 * j + col0 + (e & 1);
                if ((geom & bit) != 0 && MaskBias.MaskVisible(p, mask, (e & 2) != 0 ? mRowB : mRowA, c)) bits |= bit;
            }
        }
        return bits;
    }

    /// <summary>
    /// Last key (key slot, when keys are gathered) that row <paramref name="r"/> may see, −1 for none: below kEnd and,
    /// with causal, at most r + diag; gathered slots hold ascending keys, so the causal limit is the key's rank.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int RowLimit(in FwdParams p, in BlockInfo blk, ArrayView<int> seqInfo, int gRow, int r, int kEnd, bool causal)
    {
        int diag = blk.SeqK - blk.SeqQ;
        if (p.GatherKeys == 0 || !causal || r >= blk.SeqQ) return TcGeom.Limit(r, blk.SeqQ, kEnd, causal, diag);
        int lim = BlockInfo.SlotsBelow(p, seqInfo, gRow, kEnd, r + diag + 1) - 1;
        return lim < kEnd - 1 ? lim : kEnd - 1;
    }

    /// <summary>
    /// Gathered keys of one tile for <see cref="LoadKv{THd}"/>: lane l holds the key of tile row
    /// warp·nr + l % nr + step·(l / nr) (nr = 32 / cpr rows per copy pass of a warp), the rows its warp copies, so one
    /// load per lane (issued a tile ahead) replaces a dependent load per copied row; −1 past the walked slots.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int TileKeys<THd>(in FwdParams p, ArrayView<int> seqInfo, int gRow, int k0, int kEnd, int lane, int warp)
        where THd : struct, ITcHeadDim
    {
        int cpr = THd.D / 8, step = Threads / cpr, nr = 32 / cpr;
        int r = warp * nr + lane % nr + step * (lane / nr);
        int slot = k0 + r;
        return r < THd.Bc && slot < kEnd ? BlockInfo.KeyAt(p, seqInfo, gRow, slot) : -1;
    }

    /// <summary>
    /// cp.async of the K and V rows [k0, k0 + Bc) into shared memory; rows at or past kEnd are zero-filled. With
    /// <paramref name="gatherFast"/> (gathered keys, not paged, cpr dividing 32) the rows' keys come from
    /// <paramref name="keys"/> (<see cref="TileKeys{THd}"/>) by warp shuffles.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LoadKv<THd>(in FwdParams p, in BlockInfo blk, ArrayView<int> seqInfo, ulong kG, ulong vG,
        uint kS, uint vS, int k0, int kEnd, int hk, int tid, int gRow, bool gatherFast, int keys) where THd : struct, ITcHeadDim
    {
        int cpr = THd.D / 8;
        if (gatherFast)
        {
            int step = Threads / cpr, nr = 32 / cpr;
            int r0 = tid / cpr, c = tid - r0 * cpr, a = (tid & 31) / cpr;
            ulong kB = kG + (ulong)((blk.Batch * p.KStrideB + (long)blk.RowK0 * p.KStrideL + hk * p.KStrideH) * 2 + c * 16);
            ulong vB = vG + (ulong)((blk.Batch * p.VStrideB + (long)blk.RowK0 * p.VStrideL + hk * p.VStrideH) * 2 + c * 16);
            uint dst = (uint)(r0 * THd.RowBytes + c * 16);
            for (int i = 0; i < THd.Bc / step; i++)
            {
                int key = Warp.Shuffle(keys, a + nr * i);
                bool ok = key >= 0;
                Ptx.CpAsync16(kS + dst, ok ? kB + (ulong)(key * p.KStrideL * 2) : kG, ok ? 16u : 0u);
                Ptx.CpAsync16(vS + dst, ok ? vB + (ulong)(key * p.VStrideL * 2) : vG, ok ? 16u : 0u);
                dst += (uint)(step * THd.RowBytes);
            }
            return;
        }
        if (Threads % cpr == 0 && p.Paged == 0 && p.GatherKeys == 0)
        {
            // Each thread copies chunk column c of rows r0, r0 + step, ...: per-tile base addresses once, then adds.
            int step = Threads / cpr;
            int r0 = tid / cpr, c = tid - r0 * cpr;
            long row = blk.RowK0 + k0 + r0;
            ulong kA = kG + (ulong)((blk.Batch * p.KStrideB + row * p.KStrideL + hk * p.KStrideH) * 2 + c * 16);
            ulong vA = vG + (ulong)((blk.Batch * p.VStrideB + row * p.VStrideL + hk * p.VStrideH) * 2 + c * 16);
            ulong kStep = (ulong)(step * p.KStrideL * 2), vStep = (ulong)(step * p.VStrideL * 2);
            uint dst = (uint)(r0 * THd.RowBytes + c * 16);
            int j = k0 + r0;
            if (k0 + THd.Bc <= kEnd)
            {
                // Whole tile: no per-row bounds.
                for (int i = 0; i < THd.Bc / step; i++)
                {
                    Ptx.CpAsync16(kS + dst, kA, 16u);
                    Ptx.CpAsync16(vS + dst, vA, 16u);
                    kA += kStep;
                    vA += vStep;
                    dst += (uint)(step * THd.RowBytes);
                }
                return;
            }
            for (int i = 0; i < THd.Bc / step; i++)
            {
                bool ok = j < kEnd;
                Ptx.CpAsync16(kS + dst, ok ? kA : kG, ok ? 16u : 0u);
                Ptx.CpAsync16(vS + dst, ok ? vA : vG, ok ? 16u : 0u);
                kA += kStep;
                vA += vStep;
                dst += (uint)(step * THd.RowBytes);
                j += step;
            }
            return;
        }
        for (int e = tid; e < THd.Bc * cpr; e += Threads)
        {
            int r = e / cpr, c = e - r * cpr;
            int j = k0 + r;
            uint dst = (uint)(r * THd.RowBytes + c * 16);
            if (j < kEnd)
            {
                int key = BlockInfo.KeyAt(p, seqInfo, gRow, j); // j itself unless keys are gathered
                long ko = blk.KOffset(p, seqInfo, p.KStrideB, p.KStrideL, p.KStrideH, key, hk);
                long vo = blk.KOffset(p, seqInfo, p.VStrideB, p.VStrideL, p.VStrideH, key, hk);
                Ptx.CpAsync16(kS + dst, kG + (ulong)(ko * 2 + c * 16), 16u);
                Ptx.CpAsync16(vS + dst, vG + (ulong)(vo * 2 + c * 16), 16u);
            }
            else
            {
                Ptx.CpAsync16(kS + dst, kG, 0u);
                Ptx.CpAsync16(vS + dst, vG, 0u);
            }
        }
    }

    /// <summary>
    /// Online-softmax step of one m-tile. Scores are in the log2 domain, or raw (TcScore.Raw) with
    /// <paramref name="scaleLog2"/> ≥ 0 applied to their row max and inside the exponent. Row state is in log2 units.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Smx Softmax<TE, THd, TF>(SAcc s, MRow r, float scaleLog2)
        where TE : struct, ITcElem where THd : struct, ITcHeadDim where TF : struct, ITcFlags
    {
        F2 mx = Frag.RowMax<THd>(s);
        mx.A = TcScore.Max(mx.A, Warp.ShuffleXor(mx.A, 1));
        mx.A = TcScore.Max(mx.A, Warp.ShuffleXor(mx.A, 2));
        mx.B = TcScore.Max(mx.B, Warp.ShuffleXor(mx.B, 1));
        mx.B = TcScore.Max(mx.B, Warp.ShuffleXor(mx.B, 2));
        float c = 1f;
        if (TcScore.Raw<TF>())
        {
            c = scaleLog2;
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
    private const float LazyMax = 8f;

    /// <summary>
    /// O·α for one m-tile. With D ≥ 128 and two m-tiles per warp it is skipped when no row of the warp changed its max
    /// (a warp-uniform branch): measured −11 % time for dense D = 128; for D = 64 and the 64-row mask/bias shapes the
    /// branch cost more than the D/2 multiplies it saves (+6..16 %), so they always multiply (PERF-NOTES.md).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static OAcc Rescale<THd>(OAcc o, float a, float b) where THd : struct, ITcHeadDim
    {
        if (THd.D < 128 || THd.Mt < 2 || a != 1f || b != 1f) o = Frag.Rescale<THd>(o, a, b);
        return o;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ScoreArgs MakeArgs(in FwdParams p, in BlockInfo blk, ulong biasG, int b, int h, int rA, bool hasBias)
    {
        var sa = new ScoreArgs { Scale = p.Scale, ScaleLog2 = p.Scale * TcScore.Log2E, Cap = p.Softcap, Col0 = 0 };
        if (hasBias)
        {
            // Rows past the sequence read the last row's bias (in bounds); their output is never written.
            int last = blk.SeqQ - 1;
            int ra = rA < last ? rA : last, rb = rA + 8 < last ? rA + 8 : last;
            sa.BiasA = biasG + (ulong)(2 * MaskBias.BiasIndex(p, b, h, ra));
            sa.BiasB = biasG + (ulong)(2 * MaskBias.BiasIndex(p, b, h, rb));
        }
        return sa;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Epilogue<TE, THd>(in FwdParams p, in BlockInfo blk, OAcc acc, MRow st, ArrayView<ushort> o,
        ArrayView<float> lse, ulong oG, bool oVec, int b, int h, int rA, int t)
        where TE : struct, ITcElem where THd : struct, ITcHeadDim
    {
        float lA = st.LA, lB = st.LB;
        lA += Warp.ShuffleXor(lA, 1);
        lA += Warp.ShuffleXor(lA, 2);
        lB += Warp.ShuffleXor(lB, 1);
        lB += Warp.ShuffleXor(lB, 2);
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

    public static void Run<TE, THd, TF>(
        ArrayView<ushort> q, ArrayView<ushort> k, ArrayView<ushort> v, ArrayView<ushort> o,
        ArrayView<ushort> bias, ArrayView<byte> mask, ArrayView<float> lse, ArrayView<int> seqInfo,
        FwdParams p)
        where TE : struct, ITcElem
        where THd : struct, ITcHeadDim
        where TF : struct, ITcFlags
    {
        var smem = SharedMemory.GetDynamic<Chunk16>();
        uint sBase = Ptx.SharedAddr(ref smem[0]);
        int tid = Group.IdxX;
        int lane = Warp.LaneIdx, warp = tid >> 5;
        int g = lane >> 2, t = lane & 3;
        int Rows = 64 * THd.Mt;

        // Runtime features inside the static ones ("may have"): both fold to false when the flag is off.
        bool causal = TF.Causal && p.Causal != 0;
        bool hasMask = TF.Mask && p.HasMask != 0;
        bool hasBias = TF.Bias && p.HasBias != 0;

        int bh = Grid.IdxY;
        int b = bh / p.Heads, h = bh - b * p.Heads, hk = h / p.HeadGroup;
        var blk = BlockInfo.Create(p, seqInfo, b);
        // Query blocks in reverse order: with a causal band the longest rows start first, the short ones fill the tail.
        int q0 = (Grid.DimX - 1 - Grid.IdxX) * Rows;
        if (q0 >= blk.SeqQ) return; // uniform over the group
        int rows = blk.SeqQ - q0 < Rows ? blk.SeqQ - q0 : Rows;

        int rowBytes = THd.RowBytes;
        uint qS = sBase;
        uint kv0 = sBase + (uint)(Rows * rowBytes);
        uint tileBytes = (uint)(THd.Bc * rowBytes);
        uint biasS = kv0 + 4u * tileBytes; // staged bias tiles, two of stageBytes
        uint stageBytes = (uint)(Rows * BiasRowBytes<THd>());

        ulong qG = Ptx.GlobalAddr(ref q[0]);
        ulong kG = Ptx.GlobalAddr(ref k[0]);
        ulong vG = Ptx.GlobalAddr(ref v[0]);

        // Q tile → shared (rows past the sequence zero-filled).
        int cpr = THd.D / 8;
        for (int e = tid; e < Rows * cpr; e += Threads)
        {
            int r = e / cpr, c = e - r * cpr;
            uint dst = qS + (uint)(r * rowBytes + c * 16);
            if (r < rows)
                Ptx.CpAsync16(dst, qG + (ulong)(blk.QOffset(p.QStrideB, p.QStrideL, p.QStrideH, q0 + r, h) * 2 + c * 16), 16u);
            else
                Ptx.CpAsync16(dst, qG, 0u);
        }
        Ptx.CpAsyncCommit();

        // This lane's rows: m-tile m covers rows rA_m = q0 + warp·16·Mt + 16·m + g and rA_m + 8.
        int rA0 = q0 + warp * 16 * THd.Mt + g, rA1 = rA0 + 16;
        var lm = new LaneMask { RA0 = rA0, RA1 = rA1 };
        if (hasMask)
        {
            lm.RowA0 = MaskBias.MaskIndex(p, b, h, rA0); lm.RowB0 = MaskBias.MaskIndex(p, b, h, rA0 + 8);
            lm.RowA1 = MaskBias.MaskIndex(p, b, h, rA1); lm.RowB1 = MaskBias.MaskIndex(p, b, h, rA1 + 8);
        }
        ulong biasG = hasBias ? Ptx.GlobalAddr(ref bias[0]) : 0ul;
        bool biasVec = hasBias && ((p.BiasStrideB | p.BiasStrideH | p.BiasStrideQ) & 1) == 0 && (biasG & 3ul) == 0;
        lm.G = hasMask ? Ptx.GlobalAddrB(ref mask[0]) : 0ul;
        lm.Vec = hasMask && p.MaskElemBytes == 1 && ((p.MaskStrideB | p.MaskStrideH | p.MaskStrideQ) & 1) == 0 && (lm.G & 1ul) == 0;
        // Bias tiles go through shared memory with their K/V (cp.async, a tile ahead) when rows are 16-byte aligned
        // (a bias shared by all queries stays on the per-lane path: its one row lives in L1).
        bool biasStage = TF.Bias && biasVec && p.BiasStrideQ != 0 && ((p.BiasStrideB | p.BiasStrideH | p.BiasStrideQ) & 7) == 0 && (biasG & 15ul) == 0;
        uint bsLane = (uint)((warp * 16 * THd.Mt + g) * BiasRowBytes<THd>() + 4 * t);
        var sa0 = MakeArgs(p, blk, biasG, b, h, rA0, hasBias);
        var sa1 = THd.Mt > 1 ? MakeArgs(p, blk, biasG, b, h, rA1, hasBias) : sa0;

        int diag = blk.SeqK - blk.SeqQ;
        int kEnd = blk.SeqK;
        int fullEnd = kEnd; // keys below fullEnd are visible to every row of the group (rows past Lq included)
        if (causal)
        {
            int e1 = q0 + rows + diag;
            kEnd = e1 < 0 ? 0 : (e1 > blk.SeqK ? blk.SeqK : e1);
            int e0 = q0 + diag + 1;
            fullEnd = e0 < 0 ? 0 : (e0 > kEnd ? kEnd : e0);
        }
        // Gathered keys (a mask broadcast over queries): walk key slots; the bounds become slot counts.
        int gRow = blk.GatherRow(p, h);
        if (p.GatherKeys != 0)
        {
            int slots = BlockInfo.KeySlots(p, seqInfo, gRow, 0);
            kEnd = BlockInfo.SlotsBelow(p, seqInfo, gRow, slots, kEnd);
            fullEnd = BlockInfo.SlotsBelow(p, seqInfo, gRow, kEnd, fullEnd);
        }
        int nTiles = (kEnd + THd.Bc - 1) / THd.Bc;
        // The last key (slot) each of this lane's rows sees: tiles that are not whole get their geometry from these.
        lm.LimA0 = RowLimit(p, blk, seqInfo, gRow, rA0, kEnd, causal);
        lm.LimB0 = RowLimit(p, blk, seqInfo, gRow, rA0 + 8, kEnd, causal);
        lm.LimA1 = RowLimit(p, blk, seqInfo, gRow, rA1, kEnd, causal);
        lm.LimB1 = RowLimit(p, blk, seqInfo, gRow, rA1 + 8, kEnd, causal);

        // Mask look-ahead by 16-byte words (64-key tiles, 16-byte aligned rows, no gathered keys): the words of the
        // tile after next are loaded while this tile computes. Rows past the sequence read its last row.
        lm.Quad = TF.Mask && hasMask && THd.Bc == 64 && p.GatherKeys == 0 && p.MaskElemBytes == 1
                  && ((p.MaskStrideB | p.MaskStrideH | p.MaskStrideQ) & 15) == 0 && (lm.G & 15ul) == 0;
        if (lm.Quad)
        {
            int last = blk.SeqQ - 1;
            ulong lane16 = lm.G + (ulong)(16 * t);
            lm.QA0 = lane16 + (ulong)MaskBias.MaskIndex(p, b, h, rA0 < last ? rA0 : last);
            lm.QB0 = lane16 + (ulong)MaskBias.MaskIndex(p, b, h, rA0 + 8 < last ? rA0 + 8 : last);
            lm.QA1 = lane16 + (ulong)MaskBias.MaskIndex(p, b, h, rA1 < last ? rA1 : last);
            lm.QB1 = lane16 + (ulong)MaskBias.MaskIndex(p, b, h, rA1 + 8 < last ? rA1 + 8 : last);
        }

        // Gathered keys: K/V rows are found through the tile's key list, loaded a tile ahead (see TileKeys).
        bool gatherFast = TF.Mask && p.GatherKeys != 0 && p.Paged == 0 && 32 % cpr == 0;

        // First visible tile (without a mask every tile below nTiles has a visible element).
        int cur = 0;
        U2 curBits = default;
        if (hasMask)
        {
            while (cur < nTiles)
            {
                curBits = MaskedBits<THd, TF>(p, blk, mask, lm, cur * THd.Bc, fullEnd, lane, t, false, default);
                if (Group.BarrierOr((curBits.X | curBits.Y) != 0)) break;
                cur++;
            }
        }
        int keysPf = 0; // gathered keys of tile cur + 1
        if (cur < nTiles)
        {
            int keys = gatherFast ? TileKeys<THd>(p, seqInfo, gRow, cur * THd.Bc, kEnd, lane, warp) : 0;
            LoadKv<THd>(p, blk, seqInfo, kG, vG, kv0, kv0 + tileBytes, cur * THd.Bc, kEnd, hk, tid, gRow, gatherFast, keys);
            if (TF.Bias && biasStage && cur * THd.Bc + THd.Bc <= blk.SeqK)
                LoadBiasTile<THd>(p, blk, biasG, biasS, b, h, q0, cur * THd.Bc, tid);
            if (gatherFast) keysPf = TileKeys<THd>(p, seqInfo, gRow, (cur + 1) * THd.Bc, kEnd, lane, warp);
        }
        Ptx.CpAsyncCommit();
        MaskQuad pf = default; // mask words of tile cur + 1
        if (TF.Mask && lm.Quad && cur + 1 < nTiles && (cur + 2) * THd.Bc <= blk.SeqK)
            pf = LoadMaskQuad<THd>(lm, (cur + 1) * THd.Bc);

        // Q fragments (the Q group is complete once at most the K/V group is pending).
        Ptx.CpAsyncWait(1);
        Group.Barrier();
        uint qLane0 = qS + (uint)((warp * 16 * THd.Mt + (lane & 15)) * rowBytes + (lane >> 4) * 16);
        uint qLane1 = qLane0 + (uint)(16 * rowBytes);
        QFrag qf0 = Frag.LoadQ<THd>(qLane0);
        QFrag qf1 = THd.Mt > 1 ? Frag.LoadQ<THd>(qLane1) : default;

        uint kLaneOff = (uint)((((lane >> 4) << 3) + (lane & 7)) * rowBytes + ((lane >> 3) & 1) * 16);
        uint vLaneOff = (uint)(((((lane >> 3) & 1) << 3) + (lane & 7)) * rowBytes + (lane >> 4) * 16);

        var neg = new MRow { MA = float.NegativeInfinity, MB = float.NegativeInfinity, LA = 0f, LB = 0f };
        MRow st0 = neg, st1 = neg;
        OAcc2 acc = default;
        int buf = 0;
        while (cur < nTiles)
        {
            // With a mask: visibility of the next visible tile (its words prefetched a tile ago when possible).
            // Then its K/V (and bias) loads into the other buffer, and the mask words of the tile after it.
            int nxt = cur + 1;
            U2 nxtBits = default;
            if (hasMask)
            {
                bool prefetched = true;
                while (nxt < nTiles)
                {
                    nxtBits = MaskedBits<THd, TF>(p, blk, mask, lm, nxt * THd.Bc, fullEnd, lane, t, prefetched, pf);
                    prefetched = false;
                    if (Group.BarrierOr((nxtBits.X | nxtBits.Y) != 0)) break;
                    nxt++;
                }
            }
            uint kCur = kv0 + (uint)buf * 2u * tileBytes;
            uint kNxt = kv0 + (uint)(buf ^ 1) * 2u * tileBytes;
            if (nxt < nTiles)
            {
                // Without a mask the next tile is cur + 1, whose keys were loaded a tile ago.
                LoadKv<THd>(p, blk, seqInfo, kG, vG, kNxt, kNxt + tileBytes, nxt * THd.Bc, kEnd, hk, tid, gRow, gatherFast, keysPf);
                if (TF.Bias && biasStage && nxt * THd.Bc + THd.Bc <= blk.SeqK)
                    LoadBiasTile<THd>(p, blk, biasG, biasS + (uint)(buf ^ 1) * stageBytes, b, h, q0, nxt * THd.Bc, tid);
            }
            Ptx.CpAsyncCommit();
            if (gatherFast) keysPf = TileKeys<THd>(p, seqInfo, gRow, (nxt + 1) * THd.Bc, kEnd, lane, warp);
            if (TF.Mask && lm.Quad && nxt + 1 < nTiles && (nxt + 2) * THd.Bc <= blk.SeqK)
                pf = LoadMaskQuad<THd>(lm, (nxt + 1) * THd.Bc);

            // Bias of a tile inside the key range as 32-bit pairs: staged in shared memory (read after the wait), or
            // loaded from global now so that Q·Kᵀ hides their latency (rows past Lq read the last row; invisible
            // elements are read but not used).
            int k0 = cur * THd.Bc;
            bool inRange = k0 + THd.Bc <= blk.SeqK;
            bool staged = TF.Bias && biasStage && inRange;
            bool pre = TF.Bias && biasVec && inRange;
            RowWords bw0 = default, bw1 = default;
            if (TF.Bias && pre && !staged)
            {
                ulong cb = (ulong)(2 * (k0 + 2 * t));
                bw0 = Frag.LoadWords32<THd>(sa0.BiasA + cb, sa0.BiasB + cb);
                if (THd.Mt > 1) bw1 = Frag.LoadWords32<THd>(sa1.BiasA + cb, sa1.BiasB + cb);
            }
            Ptx.CpAsyncWait(1);
            Group.Barrier();

            // S = Q·Kᵀ for the warp's m-tiles.
            uint kA = kCur + kLaneOff;
            SAcc2 s = THd.QInRegs ? Frag.QkRegs2<TE, THd>(qf0, qf1, kA) : Frag.QkSmem2<TE, THd>(qLane0, qLane1, kA);
            uint bs = biasS + (uint)buf * stageBytes + bsLane; // this lane's staged bias pair (row A, m-tile 0)
            uint rowB = (uint)(8 * BiasRowBytes<THd>());

            // Scores (log2 domain): whole tiles skip the per-element visibility.
            sa0.Col0 = k0 + 2 * t;
            sa1.Col0 = k0 + 2 * t;
            bool full = !hasMask && k0 + THd.Bc <= fullEnd;
            if (full)
            {
                s.A = ApplyScores<TE, THd, TF>(s.A, 0xFFFFFFFFu, sa0, true, hasBias, pre, staged, bw0, bs, bs + rowB);
                if (THd.Mt > 1) s.B = ApplyScores<TE, THd, TF>(s.B, 0xFFFFFFFFu, sa1, true, hasBias, pre, staged, bw1, bs + 2u * rowB, bs + 3u * rowB);
            }
            else
            {
                if (!hasMask)
                {
                    curBits.X = TcGeom.FromLimits(THd.Bc, k0 + 2 * t, lm.LimA0, lm.LimB0);
                    curBits.Y = THd.Mt > 1 ? TcGeom.FromLimits(THd.Bc, k0 + 2 * t, lm.LimA1, lm.LimB1) : 0u;
                }
                s.A = ApplyScores<TE, THd, TF>(s.A, curBits.X, sa0, false, hasBias, pre, staged, bw0, bs, bs + rowB);
                if (THd.Mt > 1) s.B = ApplyScores<TE, THd, TF>(s.B, curBits.Y, sa1, false, hasBias, pre, staged, bw1, bs + 2u * rowB, bs + 3u * rowB);
            }

            // Online softmax, then O = O·α + P·V.
            Smx x0 = Softmax<TE, THd, TF>(s.A, st0, sa0.ScaleLog2);
            st0 = x0.R;
            acc.A = Rescale<THd>(acc.A, x0.AlA, x0.AlB);
            PFrag p1 = default;
            if (THd.Mt > 1)
            {
                Smx x1 = Softmax<TE, THd, TF>(s.B, st1, sa1.ScaleLog2);
                st1 = x1.R;
                acc.B = Rescale<THd>(acc.B, x1.AlA, x1.AlB);
                p1 = x1.P;
            }
            acc = Frag.Pv2<TE, THd>(acc, x0.P, p1, kCur + tileBytes + vLaneOff);

            Group.Barrier(); // all warps are done with this buffer before it is refilled
            cur = nxt;
            curBits = nxtBits;
            buf ^= 1;
        }
        Ptx.CpAsyncWait(0);

        // Epilogue: row sums across the quad, normalise, write; empty rows give 0 and LSE −∞.
        ulong oG = Ptx.GlobalAddr(ref o[0]);
        bool oVec = ((p.OStrideB | p.OStrideL | p.OStrideH) & 1) == 0 && (oG & 3ul) == 0;
        Epilogue<TE, THd>(p, blk, acc.A, st0, o, lse, oG, oVec, b, h, rA0, t);
        if (THd.Mt > 1)
            Epilogue<TE, THd>(p, blk, acc.B, st1, o, lse, oG, oVec, b, h, rA1, t);
    }
}
