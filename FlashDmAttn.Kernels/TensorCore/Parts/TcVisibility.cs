using System.Runtime.CompilerServices;
using ILGPU;
using FlashDmAttn.Kernels.Forward;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>
/// Geometric visibility of a lane's fragment elements in closed form (a few ALU operations instead of a loop over
/// the 4·Bc/8 elements, which ILGPU does not unroll): element (j, e) is row rA + 8·(e ≥ 2), key c0 + 2j + (e &amp; 1)
/// (<see cref="TcKeyOrder"/>: c0 = k0 + (Bc/4)·(lane % 4));
/// it is visible when its key is at most its row's limit, the last key the row may see (−1: none). A row's limit
/// folds in Lq, the key range and the causal band, and is computed once per block (<see cref="Limit"/>, or from the
/// key ranks when keys are gathered), so a tile's bits cost two <see cref="Pairs"/>.
/// </summary>
internal static class TcGeom
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

    /// <summary>
    /// The limit of row r + <paramref name="rows"/> from row r's (<paramref name="lim"/>, from <see cref="Limit"/>):
    /// min(lim + rows, kEnd − 1), exact while row r + rows is inside Lq (min(r + diag, kEnd − 1) shifted). Past Lq it is not −1, but
    /// those rows are never written.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Shifted(int lim, int rows, int kEnd) => lim + rows < kEnd - 1 ? lim + rows : kEnd - 1;

    /// <summary>Bits 4j (offset 2j) and 4j + 1 (offset 2j + 1) of the offsets ≤ <paramref name="lim"/>, j &lt; bc / 8.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Pairs(int bc, int lim)
    {
        if (lim < 0) return 0u;
        int n = bc / 8;
        int n0 = (lim >> 1) + 1, n1 = (lim + 1) >> 1; // j with 2j ≤ lim; j with 2j + 1 ≤ lim
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
internal struct LaneMask
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
internal struct MaskQuad { public U4 A0, B0, A1, B1; }

/// <summary>
/// Byte masks read Bc/4 bytes per lane and row (ld.global.nc.v4 for 64-key tiles, .v2 for 32): with the tile's key
/// order (<see cref="TcKeyOrder"/>) these are exactly the lane's own keys, so a tile costs one load per row and a few
/// ALU operations per word, with no exchange inside the quad. Used for the look-ahead, whose loads are issued a tile
/// early so their latency hides behind the current tile's math.
/// </summary>
internal static class TcMask
{
    /// <summary>
    /// Bits 4j + e of n-tiles 2w and 2w + 1 (bits 0..7) from word w of row A (<paramref name="a"/>) and of row B
    /// (<paramref name="b"/>): byte i of a word is key 4w + i, i.e. element (j = 2w + i / 2, u = i % 2).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Pair(uint a, uint b)
    {
        // Nonzero bytes → their top bit (bits 7, 15, 23, 31), no carries between bytes.
        uint na = (((a & 0x7F7F7F7Fu) + 0x7F7F7F7Fu) | a) & 0x80808080u;
        uint nb = (((b & 0x7F7F7F7Fu) + 0x7F7F7F7Fu) | b) & 0x80808080u;
        // Row A's flags at bits 0, 8, 16, 24 and row B's at 2, 10, 18, 26; one multiply moves them to bits 21..28 in
        // fragment order (A byte 0 → 21, 1 → 22, B 0 → 23, B 1 → 24, A 2 → 25, A 3 → 26, B 2 → 27, B 3 → 28; all
        // partial products land on distinct bits, so nothing carries).
        uint z = (na >> 7) | (nb >> 5);
        return (z * 0x00204204u) >> 21 & 0xFFu;
    }

    /// <summary>Visibility bits (bit 4j + e as in TcScore.Tile) of a tile of <typeparamref name="THd"/>.Bc (32 or 64) keys from this lane's mask words of rows A and B.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Bits<THd>(U4 a, U4 b) where THd : struct, ITcHeadDim
    {
        uint bits = Pair(a.X, b.X) | (Pair(a.Y, b.Y) << 8);
        if (THd.Bc == 64) bits |= (Pair(a.Z, b.Z) << 16) | (Pair(a.W, b.W) << 24);
        return bits;
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
    internal static int RowLimit(in KernelArgs p, in BlockInfo blk, ArrayView<int> seqInfo, int gRow, int r, int kEnd, bool causal, bool gather)
    {
        int diag = blk.SeqK - blk.SeqQ;
        if (!gather || !causal || r >= blk.SeqQ) return TcGeom.Limit(r, blk.SeqQ, kEnd, causal, diag);
        int lim = BlockInfo.SlotsBelow(p, seqInfo, gRow, kEnd, r + diag + 1) - 1;
        return lim < kEnd - 1 ? lim : kEnd - 1;
    }

    /// <summary>
    /// The last key (slot) each of this lane's rows sees: tiles that are not whole get their geometry from these.
    /// Without causal or mask every row gets kEnd − 1, rows past Lq included (their scores are never written; one live
    /// value instead of four: the 128-row D = 128 kernel spilled them). Causal without the mask flag: only row A's limit
    /// is kept and <see cref="OtherLimits{TF}"/> derives the others from it (<see cref="TcGeom.Shifted"/>: exact for rows inside Lq, and rows
    /// past Lq are never written; the causal D = 128 kernel spilled the four). With a mask, rows past Lq keep −1: the
    /// element-wise mask path reads no mask byte where the geometry says invisible.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static LaneMask Limits<THd, TF>(LaneMask lm, in KernelArgs p, in BlockInfo blk, ArrayView<int> seqInfo, int gRow, int kEnd, bool causal, bool hasMask, bool gather)
        where THd : struct, ITcHeadDim where TF : struct, ITcFlags
    {
        if (!causal && !hasMask)
        {
            lm.LimA0 = lm.LimB0 = lm.LimA1 = lm.LimB1 = kEnd - 1;
            return lm;
        }
        lm.LimA0 = TcVisibility.RowLimit(p, blk, seqInfo, gRow, lm.RA0, kEnd, causal, gather);
        if (TF.Causal && !TF.Mask) return lm; // the others: OtherLimits
        lm.LimB0 = TcVisibility.RowLimit(p, blk, seqInfo, gRow, lm.RA0 + 8, kEnd, causal, gather);
        if (THd.Mt > 1)
        {
            lm.LimA1 = TcVisibility.RowLimit(p, blk, seqInfo, gRow, lm.RA1, kEnd, causal, gather);
            lm.LimB1 = TcVisibility.RowLimit(p, blk, seqInfo, gRow, lm.RA1 + 8, kEnd, causal, gather);
        }
        return lm;
    }

    /// <summary>The limits of row B of m-tile 0 and rows A, B of m-tile 1, as <see cref="Limits{THd, TF}"/> left them:
    /// stored, or derived from row A's where it keeps only that one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void OtherLimits<TF>(in LaneMask lm, int kEnd, out int limB0, out int limA1, out int limB1)
        where TF : struct, ITcFlags
    {
        if (TF.Causal && !TF.Mask)
        {
            limB0 = TcGeom.Shifted(lm.LimA0, 8, kEnd);
            limA1 = TcGeom.Shifted(lm.LimA0, 16, kEnd);
            limB1 = TcGeom.Shifted(lm.LimA0, 24, kEnd);
            return;
        }
        limB0 = lm.LimB0;
        limA1 = lm.LimA1;
        limB1 = lm.LimB1;
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
    /// now), otherwise by <see cref="TileBits{THd, TF}"/>. <paramref name="col0"/>: the lane's first key in a tile
    /// (<see cref="TcKeyOrder.LaneKey0"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static U2 MaskedBits<THd, TF>(in KernelArgs p, in BlockInfo blk, ArrayView<byte> mask, in LaneMask lm, int k0,
        int fullEnd, int col0, bool usePf, MaskQuad pf)
        where THd : struct, ITcHeadDim where TF : struct, ITcFlags
    {
        var r = new U2();
        if (TF.Mask && lm.Quad && k0 + THd.Bc <= blk.SeqK)
        {
            MaskQuad w = usePf ? pf : LoadMaskQuad<THd>(lm, k0);
            r.X = QuadTileBits<THd>(w.A0, w.B0, k0, fullEnd, col0, lm.LimA0, lm.LimB0);
            r.Y = THd.Mt > 1 ? QuadTileBits<THd>(w.A1, w.B1, k0, fullEnd, col0, lm.LimA1, lm.LimB1) : 0u;
            return r;
        }
        r.X = TileBits<THd, TF>(p, blk, mask, k0, lm.RA0, lm.RowA0, lm.RowB0, col0, lm.LimA0, lm.LimB0, lm.G, lm.Vec);
        r.Y = THd.Mt > 1 ? TileBits<THd, TF>(p, blk, mask, k0, lm.RA1, lm.RowA1, lm.RowB1, col0, lm.LimA1, lm.LimB1, lm.G, lm.Vec) : 0u;
        return r;
    }

    /// <summary>Whether the tile at k0 has mask words (Quad path) and lies in the part of the key range every row sees
    /// whole (below fullEnd), so that its visibility is its words' bits alone (<see cref="WordBits{THd}"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool WholeWords<THd>(in LaneMask lm, int k0, int fullEnd) where THd : struct, ITcHeadDim
        => lm.Quad && k0 + THd.Bc <= fullEnd;

    /// <summary>Whether any of this lane's mask bytes in <paramref name="w"/> is nonzero (a few ORs, no bit layout).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool AnyWord<THd>(in MaskQuad w) where THd : struct, ITcHeadDim
    {
        uint o = w.A0.X | w.A0.Y | w.A0.Z | w.A0.W | w.B0.X | w.B0.Y | w.B0.Z | w.B0.W;
        if (THd.Mt > 1) o |= w.A1.X | w.A1.Y | w.A1.Z | w.A1.W | w.B1.X | w.B1.Y | w.B1.Z | w.B1.W;
        return o != 0;
    }

    /// <summary>Visibility bits of both m-tiles from their mask words alone (a whole tile, see <see cref="WholeWords{THd}"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static U2 WordBits<THd>(in MaskQuad w) where THd : struct, ITcHeadDim
    {
        var r = new U2();
        r.X = TcMask.Bits<THd>(w.A0, w.B0);
        r.Y = THd.Mt > 1 ? TcMask.Bits<THd>(w.A1, w.B1) : 0u;
        return r;
    }

    /// <summary>Visibility bits of one m-tile from its mask words: the geometry only where the tile is not whole.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint QuadTileBits<THd>(U4 a, U4 b, int k0, int fullEnd, int col0, int limA, int limB)
        where THd : struct, ITcHeadDim
    {
        uint bits = TcMask.Bits<THd>(a, b);
        if (k0 + THd.Bc <= fullEnd) return bits;
        return bits & TcGeom.FromLimits(THd.Bc, k0 + col0, limA, limB);
    }

    /// <summary>
    /// Visibility bits of this lane's fragment elements of the tile at k0 (bit 4j+e, see TcScore.Tile): the geometry
    /// from the rows' limits (<see cref="TcGeom"/>) and the mask (callers have one; gathered keys have none).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint TileBits<THd, TF>(in KernelArgs p, in BlockInfo blk, ArrayView<byte> mask, int k0,
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
                int c = k0 + col0 + 2 * j + (e & 1);
                if ((geom & bit) != 0 && MaskBias.MaskVisible(p, mask, (e & 2) != 0 ? mRowB : mRowA, c)) bits |= bit;
            }
        }
        return bits;
    }
}
