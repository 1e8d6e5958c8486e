using System.Runtime.CompilerServices;
using ILGPU;
using FlashDmAttn.Kernels.Forward;

namespace FlashDmAttn.Kernels.TensorCore;

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

/// <summary>Raw byte-mask words of this lane's rows for one tile: Bc/4 bytes (16 or 8) of row A and of row B per m-tile.</summary>
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

    /// <summary>Visibility bits of a tile of <typeparamref name="THd"/>.Bc (32 or 64) keys from this lane's mask words.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Bits<THd>(U4 a, U4 b, int lane) where THd : struct, ITcHeadDim
        => THd.Bc == 32 ? Bits32(a, b, lane) : Bits(a, b, lane);

    /// <summary>
    /// Visibility bits of a 32-key tile from this lane's 8 bytes of row A (<paramref name="a"/>.X, .Y) and row B: lane t
    /// of a quad holds tile bytes [8t, 8t + 8), the keys of n-tile t. All lanes of the warp must call it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Bits32(U4 a, U4 b, int lane)
    {
        U4 v = FromQuad(Nz4(a.X) | (Nz4(a.Y) << 4) | (Nz4(b.X) << 8) | (Nz4(b.Y) << 12), lane);
        return Spread32(v.X) | (Spread32(v.Y) << 4) | (Spread32(v.Z) << 8) | (Spread32(v.W) << 12);
    }

    /// <summary>The words of quad lanes 0..3, each shifted right by 2·(this lane's index in the quad).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static U4 FromQuad(uint u, int lane)
    {
        int quad = lane & ~3;
        int sh = 2 * (lane & 3);
        return new U4(Warp.Shuffle(u, quad) >> sh, Warp.Shuffle(u, quad + 1) >> sh,
            Warp.Shuffle(u, quad + 2) >> sh, Warp.Shuffle(u, quad + 3) >> sh);
    }

    /// <summary>Bits 0..3 of one n-tile's fragment visibility from a source lane's 16-bit word, pre-shifted by 2t.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Spread32(uint x) => (x & 3u) | (((x >> 8) & 3u) << 2);

    /// <summary>
    /// Visibility bits (bit 4j+e as in TcScore.Tile) of a 64-key tile from this lane's 16 bytes of row A
    /// (<paramref name="a"/>) and row B (<paramref name="b"/>): lane t of a quad holds tile bytes [16t, 16t + 16).
    /// All lanes of the warp must call it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Bits(U4 a, U4 b, int lane)
    {
        U4 v = FromQuad(Nz16(a) | (Nz16(b) << 16), lane);
        return Spread(v.X) | (Spread(v.Y) << 8) | (Spread(v.Z) << 16) | (Spread(v.W) << 24);
    }
}

/// <summary>
/// Which fragment elements of a tile are visible (FlashAttention's mask.h): the geometry of each lane's rows
/// (<see cref="TcGeom"/>), and byte masks read as 16-byte words a tile ahead (<see cref="TcMask"/>) or element by element.
/// </summary>
internal static class TcVisibility
{
    /// <summary>
    /// Last key (key slot, when keys are gathered) that row <paramref name="r"/> may see, −1 for none: below kEnd and,
    /// with causal, at most r + diag; gathered slots hold ascending keys, so the causal limit is the key's rank.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int RowLimit(in FwdParams p, in BlockInfo blk, ArrayView<int> seqInfo, int gRow, int r, int kEnd, bool causal)
    {
        int diag = blk.SeqK - blk.SeqQ;
        if (p.GatherKeys == 0 || !causal || r >= blk.SeqQ) return TcGeom.Limit(r, blk.SeqQ, kEnd, causal, diag);
        int lim = BlockInfo.SlotsBelow(p, seqInfo, gRow, kEnd, r + diag + 1) - 1;
        return lim < kEnd - 1 ? lim : kEnd - 1;
    }

    /// <summary>This lane's 16 mask bytes of rows A and B of each m-tile for the tile at k0 (see TcMask).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static MaskQuad LoadMaskQuad<THd>(in LaneMask lm, int k0) where THd : struct, ITcHeadDim
    {
        var w = new MaskQuad();
        w.A0 = Word<THd>(lm.QA0 + (ulong)k0);
        w.B0 = Word<THd>(lm.QB0 + (ulong)k0);
        if (THd.Mt > 1)
        {
            w.A1 = Word<THd>(lm.QA1 + (ulong)k0);
            w.B1 = Word<THd>(lm.QB1 + (ulong)k0);
        }
        return w;
    }

    /// <summary>A lane's Bc/4 mask bytes of one row: ld.global.nc.v4 (64-key tiles) or .v2 (32-key tiles).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static U4 Word<THd>(ulong addr) where THd : struct, ITcHeadDim
    {
        if (THd.Bc == 64) return Ptx.LdGlobalNcV4U32(addr);
        U2 x = Ptx.LdGlobalNcV2U32(addr);
        return new U4(x.X, x.Y, 0u, 0u);
    }

    /// <summary>
    /// Visibility bits of both m-tiles (X: m-tile 0, Y: m-tile 1) of the tile at k0 under a mask: from 16-byte mask
    /// words where the tile takes that path (those prefetched a tile ago when <paramref name="usePf"/>, else loaded
    /// now), otherwise by <see cref="TileBits{THd, TF}"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static U2 MaskedBits<THd, TF>(in FwdParams p, in BlockInfo blk, ArrayView<byte> mask, in LaneMask lm, int k0,
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
        r.X = TileBits<THd, TF>(p, blk, mask, k0, lm.RA0, lm.RowA0, lm.RowB0, 2 * t, lm.LimA0, lm.LimB0, lm.G, lm.Vec);
        r.Y = THd.Mt > 1 ? TileBits<THd, TF>(p, blk, mask, k0, lm.RA1, lm.RowA1, lm.RowB1, 2 * t, lm.LimA1, lm.LimB1, lm.G, lm.Vec) : 0u;
        return r;
    }

    /// <summary>Visibility bits of one m-tile from its mask words: the geometry only where the tile is not whole.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint QuadTileBits<THd>(U4 a, U4 b, int lane, int k0, int fullEnd, int col0, int limA, int limB)
        where THd : struct, ITcHeadDim
    {
        uint bits = TcMask.Bits<THd>(a, b, lane);
        if (k0 + THd.Bc <= fullEnd) return bits;
        return bits & TcGeom.FromLimits(THd.Bc, k0 + col0, limA, limB);
    }

    /// <summary>
    /// Visibility bits of this lane's fragment elements of the tile at k0 (bit 4j+e, see TcScore.Tile): the geometry
    /// from the rows' limits (<see cref="TcGeom"/>) and the mask (callers have one; gathered keys have none).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint TileBits<THd, TF>(in FwdParams p, in BlockInfo blk, ArrayView<byte> mask, int k0,
        int rA, long mRowA, long mRowB, int col0, int limA, int limB, ulong maskG, bool maskVec)
        where THd : struct, ITcHeadDim where TF : struct, ITcFlags
    {
        uint geom = TcGeom.FromLimits(THd.Bc, k0 + col0, limA, limB);
        if (!TF.Mask) return geom;
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
}
