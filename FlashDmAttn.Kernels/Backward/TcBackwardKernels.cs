using ILGPU;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.TensorCore;

namespace FlashDmAttn.Kernels.Backward;

/// <summary>
/// The tensor-core backward (mma.sync m16n8k16, bf16/fp16 in, fp32 accumulate), FlashAttention-2's algorithm in the
/// two passes of <see cref="PortableBackwardKernels"/> (no atomics: deterministic), built from the forward's device
/// parts: tile loads (<see cref="TcLoads"/>), visibility and score (<see cref="TcBackwardTile"/>), the fragment
/// products (<see cref="Frag"/>). Tiles are 64 query rows × 64 keys; a group is 4 warps, each owning 16 query rows of
/// the score tile. Products of the form Xᵀ·Y (dV = Pᵀ·dO, dK = dSᵀ·Q) store X as 16-bit in shared memory and read its
/// transpose with ldmatrix.trans, then run the forward's P·V product with Y in the place of V.
/// Grid: (tiles, Batch·Heads along y then z), group <see cref="Threads"/>.
/// </summary>
internal static class TcBackwardKernels
{
    public const int Threads = TensorCoreForwardKernel.Threads;

    private const int Rows = TcBackwardTile.Rows;

    /// <summary>Key-block kernel: K and V of the block, Q and dO of the query tile, P and dS tiles, column sums, the
    /// next query tile's mask bytes.</summary>
    public static int KeySharedBytes<THd>() where THd : struct, ITcHeadDim
        => (2 * THd.Bc + 2 * Rows) * THd.RowBytes + 2 * Rows * TcBackwardTile.ScoreRowBytes + 4 * 4 * THd.Bc
           + Rows * TcBackwardTile.MaskRowBytes;

    /// <summary>Query-block kernel: Q and dO of the block, double-buffered K and V tiles.</summary>
    public static int QuerySharedBytes<THd>() where THd : struct, ITcHeadDim
        => (2 * Rows + 4 * THd.Bc) * THd.RowBytes;

    /// <summary>
    /// dk and dv of 64 key slots for one (batch, query head), fp32, into the (B, SeqK, H, D) scratch (summed over a kv
    /// head's query heads afterwards), or with KvDirect straight into dk and dv, walking the query tiles that can see the block; with a bias that has a key dim,
    /// dS per element into the (B, H, SeqQ, SeqK) scratch (or straight into the bias gradient, DbDirect), or its sums over
    /// the queries (DbRows = 1) into (B, H, 1, SeqK).
    /// </summary>
    public static void KeyBlock<TE, THd, TF>(
        ArrayView<ushort> q, ArrayView<ushort> k, ArrayView<ushort> v, ArrayView<ushort> dO, ArrayView<ushort> bias,
        ArrayView<byte> mask, ArrayView<float> lse, ArrayView<float> dvec, ArrayView<int> seqInfo,
        ArrayView<float> dkh, ArrayView<float> dvh, ArrayView<float> dbias, ArrayView<ushort> dbiasOut,
        ArrayView<ushort> dk, ArrayView<ushort> dv, ArrayView<ushort> dsTiles, ArrayView<int> dsFlags, BwdArgs a)
        where TE : struct, ITcElem
        where THd : struct, ITcHeadDim
        where TF : struct, ITcFlags
    {
        var p = a.F;
        if (!Pair(a, out int b, out int h, out int local)) return;
        int hk = h / p.HeadGroup;
        var blk = BlockInfo.Create(p, seqInfo, b);
        bool causal = TF.Causal && p.Causal != 0;
        bool hasMask = TF.Mask && p.HasMask != 0;
        bool hasBias = TF.Bias && p.HasBias != 0;
        bool gather = TF.Mask && p.GatherKeys != 0;
        int gRow = blk.GatherRow(p, h);
        int kEnd = blk.SeqK; // key slots of this sequence
        if (gather) kEnd = BlockInfo.SlotsBelow(p, seqInfo, gRow, BlockInfo.KeySlots(p, seqInfo, gRow, 0), kEnd);
        int kTile = KeyTile(), k0 = kTile * THd.Bc;
        if (k0 >= kEnd) return; // uniform over the group

        var smem = SharedMemory.GetDynamic<Chunk16>();
        uint sBase = Ptx.SharedAddr(ref smem[0]);
        int tid = Group.IdxX, lane = Warp.LaneIdx, warp = tid >> 5, g = lane >> 2, t = lane & 3;
        int rowBytes = THd.RowBytes;
        uint kS = sBase, vS = kS + (uint)(THd.Bc * rowBytes);
        uint qS = vS + (uint)(THd.Bc * rowBytes), doS = qS + (uint)(Rows * rowBytes);
        uint pS = doS + (uint)(Rows * rowBytes), dsS = pS + (uint)(Rows * TcBackwardTile.ScoreRowBytes);
        uint colS = dsS + (uint)(Rows * TcBackwardTile.ScoreRowBytes); // 4 warps × Bc column sums (fp32)
        uint mS = colS + (uint)(4 * 4 * THd.Bc); // a query tile's mask bytes (maskAhead)

        ulong qG = Ptx.GlobalAddr(ref q[0]), kG = Ptx.GlobalAddr(ref k[0]), vG = Ptx.GlobalAddr(ref v[0]);
        ulong doG = Ptx.GlobalAddr(ref dO[0]);
        ulong biasG = hasBias ? Ptx.GlobalAddr(ref bias[0]) : 0ul;
        ulong maskG = hasMask ? Ptx.GlobalAddrB(ref mask[0]) : 0ul;
        bool maskVec = hasMask && p.MaskElemBytes == 1 && ((p.MaskStrideB | p.MaskStrideH | p.MaskStrideQ) & 1) == 0 && (maskG & 1ul) == 0;
        // Bias pairs as vector loads where rows are 4-byte (16-byte) aligned, as in the forward.
        bool biasVec = hasBias && ((p.BiasStrideB | p.BiasStrideH | p.BiasStrideQ) & 1) == 0 && (biasG & 3ul) == 0;
        bool biasV4 = biasVec && ((p.BiasStrideB | p.BiasStrideH | p.BiasStrideQ) & 7) == 0 && (biasG & 15ul) == 0;

        // The block's K and V (slot order of TcKeyOrder), once.
        TcLoads.LoadKv<THd>(p, blk, seqInfo, kG, vG, kS, vS, k0, kEnd, hk, tid, gRow, false, 0);
        Ptx.CpAsyncCommit();

        bool capOn = TF.Softcap && p.Softcap > 0f;
        bool dbKeys = TF.Bias && a.DBias == (int)DBiasMode.Keys;
        bool dbSums = dbKeys && a.DbRows == 1;
        bool dbDirect = dbKeys && a.DbDirect != 0; // dS straight into the bias gradient, every element of the block's keys
        ulong dbG = dbDirect ? Ptx.GlobalAddr(ref dbiasOut[0]) : 0ul;
        // dS·slope of every tile with a visible element into the dS scratch, for the dq kernel (QueryGrad); the tile's
        // flag says it was written.
        bool dsOut = a.DsKTiles != 0;
        ulong dsG = dsOut ? Ptx.GlobalAddr(ref dsTiles[0]) : 0ul;
        long dsRow = (long)local * a.DsQTiles; // this pair's tiles in the launch's scratch
        int col0 = TcKeyOrder.LaneKey0(THd.Bc, t);
        uint qLane = qS + (uint)((warp * 16 + (lane & 15)) * rowBytes + (lane >> 4) * 16);
        uint doLane = qLane - qS + doS;
        uint kLaneOff = (uint)((((lane >> 4) << 3) + (lane & 7)) * rowBytes + ((lane >> 3) & 1) * 16);
        uint vLaneOff = (uint)(((((lane >> 3) & 1) << 3) + (lane & 7)) * rowBytes + (lane >> 4) * 16);
        // This lane's pairs of rows g and g + 8 in the score tiles, and its row of the transposed loads: matrix
        // i = lane / 8 covers query rows 8·(i / 2) … and key columns 16·warp + 8·(i % 2) ….
        uint sLane = (uint)((warp * 16 + g) * TcBackwardTile.ScoreRowBytes + 4 * t);
        uint tLane = (uint)(((lane & 7) + 8 * ((lane >> 3) >> 1)) * TcBackwardTile.ScoreRowBytes + 2 * (16 * warp + 8 * ((lane >> 3) & 1)));
        uint kStep = (uint)(16 * TcBackwardTile.ScoreRowBytes);
        uint rowB = (uint)(8 * TcBackwardTile.ScoreRowBytes);

        // Causal: the first query row that sees the block's first key (bottom-right aligned band).
        int jFirst = gather ? BlockInfo.KeyAt(p, seqInfo, gRow, k0) : k0;
        int iStart = causal ? jFirst - (blk.SeqK - blk.SeqQ) : 0;
        if (iStart < 0) iStart = 0;
        if (dsOut) iStart -= iStart % Rows; // the dS scratch's query tiles start at multiples of 64

        OAcc2 dK = default, dV = default;
        float colAcc = 0f; // threads tid < Bc: the block's key tid summed over the query tiles (DbRows = 1)
        // A bias gradient written in full gets zeros for the query tiles wholly above the causal band: stores only, no
        // mask words, no barrier (no row of such a tile sees the block's first key, so none sees a later one).
        int i0 = 0;
        if (dbDirect)
        {
            for (; i0 + Rows <= iStart; i0 += Rows)
                StoreBiasGrad<TE, THd>(default, dbiasOut, dbG, a, b, h, i0 + warp * 16 + g, blk.SeqQ, k0 + col0, kEnd);
        }
        else
        {
            i0 = iStart;
        }
        // A byte mask with 16-byte aligned rows over a block inside the key range comes a query tile ahead: each tile's
        // copies also bring the next tile's mask bytes into shared memory, so a tile's visibility is read there
        // instead of waited for from global memory before the tile's own copies can start.
        bool maskAhead = THd.Bc == Rows && hasMask && !gather && maskVec && (maskG & 15ul) == 0
            && ((p.MaskStrideB | p.MaskStrideH | p.MaskStrideQ) & 15) == 0 && k0 + THd.Bc <= blk.SeqK;
        if (maskAhead && i0 < blk.SeqQ)
        {
            TcBackwardTile.LoadMaskTile(p, blk, maskG, mS, b, h, i0, k0, tid);
            Ptx.CpAsyncCommit();
            Ptx.CpAsyncWait(0);
            Group.Barrier();
        }
        for (; i0 < blk.SeqQ; i0 += Rows)
        {
            int rows = blk.SeqQ - i0 < Rows ? blk.SeqQ - i0 : Rows;
            int rA = i0 + warp * 16 + g;
            uint bits = maskAhead
                ? TcBackwardTile.SharedMaskBits<THd>(p, blk, seqInfo, gRow, rA, k0, kEnd, col0, causal, mS, warp * 16 + g)
                : TcBackwardTile.Bits<THd, TF>(p, blk, seqInfo, mask, gRow, b, h, rA, k0, kEnd, col0, causal, hasMask, gather, maskG, maskVec);
            bool maskNext = maskAhead && i0 + Rows < blk.SeqQ;
            // Also the barrier after which every warp is done with the previous tile's shared Q, dO, P and dS, and
            // with this tile's mask bytes.
            if (!Group.BarrierOr(bits != 0u))
            {
                // Nothing visible: Q, dO and the bias of the tile are never read; its bias gradient is 0.
                if (dbDirect) StoreBiasGrad<TE, THd>(default, dbiasOut, dbG, a, b, h, rA, blk.SeqQ, k0 + col0, kEnd);
                if (maskNext)
                {
                    TcBackwardTile.LoadMaskTile(p, blk, maskG, mS, b, h, i0 + Rows, k0, tid);
                    Ptx.CpAsyncCommit();
                    Ptx.CpAsyncWait(0);
                    Group.Barrier();
                }
                continue;
            }

            TcLoads.LoadQ<THd>(p, blk, qG, qS, i0, rows, Rows, h, tid);
            TcLoads.LoadRows<THd>(a.L.DoStrideB, a.L.DoStrideL, a.L.DoStrideH, blk, doG, doS, i0, rows, Rows, h, tid);
            if (maskNext) TcBackwardTile.LoadMaskTile(p, blk, maskG, mS, b, h, i0 + Rows, k0, tid);
            Ptx.CpAsyncCommit();
            TcBackwardTile.RowState<TE>(a, lse, dvec, mask, bias, blk, b, h, rA, out float mA, out float dA);
            TcBackwardTile.RowState<TE>(a, lse, dvec, mask, bias, blk, b, h, rA + 8, out float mB, out float dB);
            var sa = TcScore.Args(p, blk, biasG, b, h, rA, hasBias);
            sa.Col0 = k0 + col0;
            // The tile's bias pairs are loaded with Q and dO in flight: one wait for all three.
            bool pre = TF.Bias && biasVec && k0 + THd.Bc <= blk.SeqK;
            RowWords bw = pre ? TcBackwardTile.BiasWords<THd>(sa, biasV4) : default;
            Ptx.CpAsyncWait(0);
            Group.Barrier();

            // P (fp32, and 16-bit into shared memory), dP = dO·Vᵀ, dS = P∘(dP − D).
            SAcc s = Frag.QkSmem2<TE, THd>(qLane, 0u, kS + kLaneOff).A;
            SAcc slope = capOn ? Frag.CapSlope<THd>(s, p.Scale, p.Softcap) : default;
            SAcc pr = TcBackwardTile.Probabilities<TE, THd, TF>(s, bits, sa, hasBias, pre, bw, mA, mB);
            Frag.StoreShared<TE, THd>(pr, pS + sLane, pS + sLane + rowB, 1f);
            SAcc ds = Frag.ScoreGrad<THd>(pr, Frag.QkSmem2<TE, THd>(doLane, 0u, vS + kLaneOff).A, dA, dB);

            // The bias gradient is dS itself: per element, or summed over this tile's rows.
            if (dbSums)
            {
                Frag.ColumnSums<THd>(ds, colS + (uint)(warp * 4 * THd.Bc + 4 * col0), g == 0);
            }
            else if (dbDirect)
            {
                StoreBiasGrad<TE, THd>(ds, dbiasOut, dbG, a, b, h, rA, blk.SeqQ, k0 + col0, kEnd);
            }
            else if (dbKeys)
            {
                long at = ((long)b * p.Heads + h) * p.SeqQ;
                Frag.StoreScoresF32<THd>(ds, dbias, (at + rA) * p.SeqK + k0 + col0, (at + rA + 8) * p.SeqK + k0 + col0,
                    rA < blk.SeqQ, rA + 8 < blk.SeqQ, kEnd - k0 - col0);
            }
            // dS·slope, the gradient of the dot product, for dK.
            if (capOn) Frag.StoreShared<TE, THd>(Frag.Mul<THd>(ds, slope), dsS + sLane, dsS + sLane + rowB, 1f);
            else Frag.StoreShared<TE, THd>(ds, dsS + sLane, dsS + sLane + rowB, p.Scale);
            Group.Barrier();

            if (dbSums && tid < THd.Bc)
            {
                for (int w = 0; w < Threads / 32; w++)
                    colAcc += Interop.IntAsFloat(Ptx.LdSharedU32(colS + (uint)(w * 4 * THd.Bc + 4 * tid)));
            }
            // dV += Pᵀ·dO and dK += (dS·slope)ᵀ·Q for the warp's 16 keys.
            dV = Frag.Pv2<TE, THd>(dV, Frag.LoadAT<THd>(pS + tLane, kStep), default, doS + vLaneOff);
            dK = Frag.Pv2<TE, THd>(dK, Frag.LoadAT<THd>(dsS + tLane, kStep), default, qS + vLaneOff);
            if (dsOut)
            {
                long tile = (dsRow + i0 / Rows) * a.DsKTiles + kTile;
                TcBackwardTile.StoreTile(dsS, dsG + (ulong)(tile * 2 * TcBackwardTile.TileElems), tid);
                if (tid == 0) dsFlags[tile] = 1;
            }
        }
        // The copies still in flight (K and V of a block no query tile sees) land before the group exits. The barrier
        // after the wait keeps, in the PTX's text order too, every shared read behind a barrier that follows a wait
        // (the loop's first read, the mask bytes, is laid out after this block).
        Ptx.CpAsyncWait(0);
        Group.Barrier();

        // The warp's key columns 16·warp + g and + 8 hold slots k0 + KeyOfColumn(column).
        int sA = k0 + TcKeyOrder.KeyOfColumn(THd.Bc, warp * 16 + g), sB = k0 + TcKeyOrder.KeyOfColumn(THd.Bc, warp * 16 + g + 8);
        bool okA = sA < kEnd, okB = sB < kEnd;
        int jA = okA ? BlockInfo.KeyAt(p, seqInfo, gRow, sA) : 0, jB = okB ? BlockInfo.KeyAt(p, seqInfo, gRow, sB) : 0;
        if (a.KvDirect != 0)
        {
            // One query head per kv head: dk and dv in the input dtype at k's layout, at each slot's key (with gathered
            // keys the rows of keys in no list were zeroed before this launch).
            long kA = blk.KOffset(p, seqInfo, a.L.DkStrideB, a.L.DkStrideL, a.L.DkStrideH, jA, hk) + 2 * t;
            long kB = blk.KOffset(p, seqInfo, a.L.DkStrideB, a.L.DkStrideL, a.L.DkStrideH, jB, hk) + 2 * t;
            long vA = blk.KOffset(p, seqInfo, a.L.DvStrideB, a.L.DvStrideL, a.L.DvStrideH, jA, hk) + 2 * t;
            long vB = blk.KOffset(p, seqInfo, a.L.DvStrideB, a.L.DvStrideL, a.L.DvStrideH, jB, hk) + 2 * t;
            StoreRows<TE, THd>(dK.A, dk, kA, kB, okA, okB, a.L.DkStrideB | a.L.DkStrideL | a.L.DkStrideH);
            StoreRows<TE, THd>(dV.A, dv, vA, vB, okA, okB, a.L.DvStrideB | a.L.DvStrideL | a.L.DvStrideH);
        }
        else
        {
            long offA = (((long)b * p.SeqK + jA) * p.Heads + h) * THd.D + 2 * t;
            long offB = (((long)b * p.SeqK + jB) * p.Heads + h) * THd.D + 2 * t;
            Frag.StoreF32<THd>(dK.A, dkh, offA, offB, okA, okB);
            Frag.StoreF32<THd>(dV.A, dvh, offA, offB, okA, okB);
        }
        if (dbSums && tid < THd.Bc && k0 + tid < kEnd)
            dbias[((long)b * p.Heads + h) * p.SeqK + BlockInfo.KeyAt(p, seqInfo, gRow, k0 + tid)] = colAcc;
    }

    /// <summary>The group's (batch, head): pair <see cref="BwdArgs.DsPair0"/> + <paramref name="local"/>, where the grid
    /// is (pairs of a chunk, tile levels, chunks) (<see cref="TcBlockOrder.Grid3"/>) and local = z·dimX + x; false past
    /// the launch's <see cref="BwdArgs.DsPairs"/> pairs (0: every pair) or past B·H.</summary>
    private static bool Pair(in BwdArgs a, out int b, out int h, out int local)
    {
        local = Grid.IdxZ * Grid.DimX + Grid.IdxX;
        int bh = a.DsPair0 + local, heads = a.F.Heads > 0 ? a.F.Heads : 1;
        b = bh / heads;
        h = bh - b * heads;
        return (a.DsPairs == 0 || local < a.DsPairs) && bh < a.F.Batch * a.F.Heads;
    }

    /// <summary>The key block's tile: level y in order, the first keys (seen by the most rows of a causal band) first.</summary>
    private static int KeyTile() => Grid.IdxY;

    /// <summary>The query block's tile: level y from the last tile (its rows see the most keys of a causal band) down.</summary>
    private static int QueryTile() => Grid.DimY - 1 - Grid.IdxY;

    /// <summary>The key slots (keys, unless gathered) that query rows below <paramref name="qEnd"/> can see: the causal
    /// band's end, then the slots of the gathered list below it.</summary>
    private static int KeySlotEnd(in KernelArgs p, in BlockInfo blk, ArrayView<int> seqInfo, int gRow, int qEnd, bool causal, bool gather)
    {
        int kEnd = causal ? blk.KeyEnd(p, qEnd) : blk.SeqK;
        return gather ? BlockInfo.SlotsBelow(p, seqInfo, gRow, BlockInfo.KeySlots(p, seqInfo, gRow, 0), kEnd) : kEnd;
    }

    /// <summary>This lane's rows rA and rA + 8 of dq (t = lane % 4) in the input dtype at dq's layout.</summary>
    private static void StoreDq<TE, THd>(OAcc acc, ArrayView<ushort> dq, in BwdArgs a, in BlockInfo blk, int h, int rA, int t)
        where TE : struct, ITcElem
        where THd : struct, ITcHeadDim
    {
        long oA = blk.QOffset(a.L.DqStrideB, a.L.DqStrideL, a.L.DqStrideH, rA, h) + 2 * t;
        long oB = blk.QOffset(a.L.DqStrideB, a.L.DqStrideL, a.L.DqStrideH, rA + 8, h) + 2 * t;
        StoreRows<TE, THd>(acc, dq, oA, oB, rA < blk.SeqQ, rA + 8 < blk.SeqQ, a.L.DqStrideB | a.L.DqStrideL | a.L.DqStrideH);
    }

    /// <summary>This lane's two rows of an fp32 tile in the element type at element offsets offA/offB (column 2·(lane % 4)
    /// included): packed 32-bit stores where the rows are 4-byte aligned (<paramref name="strides"/>: the OR of the
    /// destination's strides).</summary>
    private static void StoreRows<TE, THd>(OAcc o, ArrayView<ushort> dst, long offA, long offB, bool okA, bool okB, long strides)
        where TE : struct, ITcElem
        where THd : struct, ITcHeadDim
    {
        ulong g = Ptx.GlobalAddr(ref dst[0]);
        if ((strides & 1) == 0 && (g & 3ul) == 0)
            Frag.Store32<TE, THd>(o, g + (ulong)(2 * offA), g + (ulong)(2 * offB), okA, okB, 1f, 1f);
        else
            Frag.Store<TE, THd>(o, dst, offA, offB, okA, okB, 1f, 1f);
    }

    /// <summary>
    /// This lane's elements of a dS tile into the bias gradient (the bias's own layout and element type, no dim
    /// broadcast): rows rA and rA + 8, keys j0 … j0 + Bc/4 − 1 below kEnd; packed pairs where they are contiguous and
    /// aligned.
    /// </summary>
    private static void StoreBiasGrad<TE, THd>(SAcc ds, ArrayView<ushort> dst, ulong dstG, in BwdArgs a, int b, int h, int rA, int seqQ,
        int j0, int kEnd)
        where TE : struct, ITcElem
        where THd : struct, ITcHeadDim
    {
        long offA = b * a.L.DbStrideB + h * a.L.DbStrideH + (long)rA * a.L.DbStrideQ + (long)j0 * a.L.DbStrideK;
        long offB = offA + 8 * a.L.DbStrideQ;
        bool okA = rA < seqQ, okB = rA + 8 < seqQ;
        int nKeys = kEnd - j0;
        if (a.L.DbStrideK == 1 && nKeys >= THd.Bc / 4 && (offA & 1) == 0 && (dstG & 3ul) == 0)
            Frag.StoreScoresPacked<TE, THd>(ds, dstG + (ulong)(2 * offA), dstG + (ulong)(2 * offB), okA, okB);
        else
            Frag.StoreScores16<TE, THd>(ds, dst, offA, offB, okA, okB, nKeys, a.L.DbStrideK);
    }

    /// <summary>The dq kernel's shared memory: two K tiles and two dS tiles.</summary>
    public static int GradSharedBytes<THd>() where THd : struct, ITcHeadDim
        => 2 * THd.Bc * THd.RowBytes + 2 * Rows * TcBackwardTile.ScoreRowBytes;

    /// <summary>
    /// dq of 64 query rows of one (batch, head) from the dS scratch that <see cref="KeyBlock{TE, THd, TF}"/> wrote:
    /// dq = Σ (dS·slope)·K over the key tiles the rows can see whose flag is set, in the order of
    /// <see cref="QueryBlock{TE, THd, TF}"/> (the same A fragments, so the same sums), one product per tile instead of
    /// three. K and dS tiles double-buffered by cp.async.
    /// </summary>
    public static void QueryGrad<TE, THd, TF>(ArrayView<ushort> k, ArrayView<int> seqInfo, ArrayView<ushort> dsTiles,
        ArrayView<int> dsFlags, ArrayView<ushort> dq, BwdArgs a)
        where TE : struct, ITcElem
        where THd : struct, ITcHeadDim
        where TF : struct, ITcFlags
    {
        var p = a.F;
        if (!Pair(a, out int b, out int h, out int local)) return;
        int hk = h / p.HeadGroup;
        var blk = BlockInfo.Create(p, seqInfo, b);
        int qTile = QueryTile(), i0 = qTile * Rows;
        if (i0 >= blk.SeqQ) return; // uniform over the group
        int rows = blk.SeqQ - i0 < Rows ? blk.SeqQ - i0 : Rows;
        bool causal = TF.Causal && p.Causal != 0;
        bool gather = TF.Mask && p.GatherKeys != 0;
        int gRow = blk.GatherRow(p, h);

        var smem = SharedMemory.GetDynamic<Chunk16>();
        uint sBase = Ptx.SharedAddr(ref smem[0]);
        int tid = Group.IdxX, lane = Warp.LaneIdx, warp = tid >> 5, t = lane & 3;
        uint tileBytes = (uint)(THd.Bc * THd.RowBytes), dsBytes = (uint)(Rows * TcBackwardTile.ScoreRowBytes);
        uint kv0 = sBase, ds0 = kv0 + 2u * tileBytes;
        ulong kG = Ptx.GlobalAddr(ref k[0]), dsG = Ptx.GlobalAddr(ref dsTiles[0]);
        long flags = ((long)local * a.DsQTiles + qTile) * a.DsKTiles;

        int kEnd = KeySlotEnd(p, blk, seqInfo, gRow, i0 + rows, causal, gather);
        int nTiles = (kEnd + THd.Bc - 1) / THd.Bc;

        int cur = 0;
        while (cur < nTiles && dsFlags[flags + cur] == 0) cur++;
        if (cur < nTiles)
        {
            TcLoads.LoadKv<THd>(p, blk, seqInfo, kG, kG, kv0, kv0, cur * THd.Bc, kEnd, hk, tid, gRow, false, 0, 1);
            TcBackwardTile.LoadTile(dsG + (ulong)((flags + cur) * 2 * TcBackwardTile.TileElems), ds0, tid);
        }
        Ptx.CpAsyncCommit();

        uint aLane = (uint)((warp * 16 + (lane & 15)) * TcBackwardTile.ScoreRowBytes + (lane >> 4) * 16);
        uint vLaneOff = (uint)(((((lane >> 3) & 1) << 3) + (lane & 7)) * THd.RowBytes + (lane >> 4) * 16);
        OAcc2 acc = default;
        int buf = 0;
        while (cur < nTiles)
        {
            // After the barrier tile cur is visible to every warp and every warp is done with the other buffers.
            Ptx.CpAsyncWait(0);
            Group.Barrier();
            int nxt = cur + 1;
            while (nxt < nTiles && dsFlags[flags + nxt] == 0) nxt++;
            uint kNxt = kv0 + (uint)(buf ^ 1) * tileBytes, dsNxt = ds0 + (uint)(buf ^ 1) * dsBytes;
            if (nxt < nTiles)
            {
                TcLoads.LoadKv<THd>(p, blk, seqInfo, kG, kG, kNxt, kNxt, nxt * THd.Bc, kEnd, hk, tid, gRow, false, 0, 1);
                TcBackwardTile.LoadTile(dsG + (ulong)((flags + nxt) * 2 * TcBackwardTile.TileElems), dsNxt, tid);
            }
            Ptx.CpAsyncCommit();

            // dQ += (dS·slope)·K: K's rows are the keys in the dS columns' order, as V's are in the forward's P·V.
            uint dsCur = ds0 + (uint)buf * dsBytes;
            acc = Frag.Pv2<TE, THd>(acc, Frag.LoadA<THd>(dsCur + aLane), default, kv0 + (uint)buf * tileBytes + vLaneOff);
            cur = nxt;
            buf ^= 1;
        }
        Ptx.CpAsyncWait(0);

        int rA = i0 + warp * 16 + (lane >> 2);
        StoreDq<TE, THd>(acc.A, dq, a, blk, h, rA, t);
    }

    /// <summary>dq of 64 query rows of one (batch, head), walking the key tiles they can see: the forward's loop with
    /// dS·K in the place of P·V.</summary>
    public static void QueryBlock<TE, THd, TF>(
        ArrayView<ushort> q, ArrayView<ushort> k, ArrayView<ushort> v, ArrayView<ushort> dO, ArrayView<ushort> bias,
        ArrayView<byte> mask, ArrayView<float> lse, ArrayView<float> dvec, ArrayView<int> seqInfo,
        ArrayView<ushort> dq, BwdArgs a)
        where TE : struct, ITcElem
        where THd : struct, ITcHeadDim
        where TF : struct, ITcFlags
    {
        var p = a.F;
        if (!Pair(a, out int b, out int h, out _)) return;
        int hk = h / p.HeadGroup;
        var blk = BlockInfo.Create(p, seqInfo, b);
        int i0 = QueryTile() * Rows;
        if (i0 >= blk.SeqQ) return; // uniform over the group
        int rows = blk.SeqQ - i0 < Rows ? blk.SeqQ - i0 : Rows;
        bool causal = TF.Causal && p.Causal != 0;
        bool hasMask = TF.Mask && p.HasMask != 0;
        bool hasBias = TF.Bias && p.HasBias != 0;
        bool gather = TF.Mask && p.GatherKeys != 0;
        int gRow = blk.GatherRow(p, h);

        var smem = SharedMemory.GetDynamic<Chunk16>();
        uint sBase = Ptx.SharedAddr(ref smem[0]);
        int tid = Group.IdxX, lane = Warp.LaneIdx, warp = tid >> 5, g = lane >> 2, t = lane & 3;
        int rowBytes = THd.RowBytes;
        uint qS = sBase, doS = qS + (uint)(Rows * rowBytes), kv0 = doS + (uint)(Rows * rowBytes);
        uint tileBytes = (uint)(THd.Bc * rowBytes);

        ulong qG = Ptx.GlobalAddr(ref q[0]), kG = Ptx.GlobalAddr(ref k[0]), vG = Ptx.GlobalAddr(ref v[0]);
        ulong doG = Ptx.GlobalAddr(ref dO[0]);
        ulong biasG = hasBias ? Ptx.GlobalAddr(ref bias[0]) : 0ul;
        ulong maskG = hasMask ? Ptx.GlobalAddrB(ref mask[0]) : 0ul;
        bool maskVec = hasMask && p.MaskElemBytes == 1 && ((p.MaskStrideB | p.MaskStrideH | p.MaskStrideQ) & 1) == 0 && (maskG & 1ul) == 0;
        // Bias pairs as vector loads where rows are 4-byte (16-byte) aligned, as in the forward.
        bool biasVec = hasBias && ((p.BiasStrideB | p.BiasStrideH | p.BiasStrideQ) & 1) == 0 && (biasG & 3ul) == 0;
        bool biasV4 = biasVec && ((p.BiasStrideB | p.BiasStrideH | p.BiasStrideQ) & 7) == 0 && (biasG & 15ul) == 0;

        TcLoads.LoadQ<THd>(p, blk, qG, qS, i0, rows, Rows, h, tid);
        TcLoads.LoadRows<THd>(a.L.DoStrideB, a.L.DoStrideL, a.L.DoStrideH, blk, doG, doS, i0, rows, Rows, h, tid);
        Ptx.CpAsyncCommit();

        int kEnd = KeySlotEnd(p, blk, seqInfo, gRow, i0 + rows, causal, gather);
        int nTiles = (kEnd + THd.Bc - 1) / THd.Bc;
        int rA = i0 + warp * 16 + g;
        int col0 = TcKeyOrder.LaneKey0(THd.Bc, t);
        TcBackwardTile.RowState<TE>(a, lse, dvec, mask, bias, blk, b, h, rA, out float mA, out float dA);
        TcBackwardTile.RowState<TE>(a, lse, dvec, mask, bias, blk, b, h, rA + 8, out float mB, out float dB);
        var sa = TcScore.Args(p, blk, biasG, b, h, rA, hasBias);
        bool capOn = TF.Softcap && p.Softcap > 0f;

        // First tile with a visible element (without a mask every tile below nTiles has one).
        int cur = 0;
        uint curBits = 0u;
        while (cur < nTiles)
        {
            curBits = TcBackwardTile.Bits<THd, TF>(p, blk, seqInfo, mask, gRow, b, h, rA, cur * THd.Bc, kEnd, col0, causal, hasMask, gather, maskG, maskVec);
            if (!hasMask || Group.BarrierOr(curBits != 0u)) break;
            cur++;
        }
        if (cur < nTiles)
            TcLoads.LoadKv<THd>(p, blk, seqInfo, kG, vG, kv0, kv0 + tileBytes, cur * THd.Bc, kEnd, hk, tid, gRow, false, 0);
        Ptx.CpAsyncCommit();

        uint qLane = qS + (uint)((warp * 16 + (lane & 15)) * rowBytes + (lane >> 4) * 16);
        uint doLane = qLane - qS + doS;
        uint kLaneOff = (uint)((((lane >> 4) << 3) + (lane & 7)) * rowBytes + ((lane >> 3) & 1) * 16);
        uint vLaneOff = (uint)(((((lane >> 3) & 1) << 3) + (lane & 7)) * rowBytes + (lane >> 4) * 16);
        OAcc2 acc = default;
        int buf = 0;
        while (cur < nTiles)
        {
            // After the barrier tile cur is visible to every warp and every warp is done with the other buffer.
            Ptx.CpAsyncWait(0);
            Group.Barrier();
            int nxt = cur + 1;
            uint nxtBits = 0u;
            while (nxt < nTiles)
            {
                nxtBits = TcBackwardTile.Bits<THd, TF>(p, blk, seqInfo, mask, gRow, b, h, rA, nxt * THd.Bc, kEnd, col0, causal, hasMask, gather, maskG, maskVec);
                if (!hasMask || Group.BarrierOr(nxtBits != 0u)) break;
                nxt++;
            }
            uint kCur = kv0 + (uint)buf * 2u * tileBytes;
            uint kNxt = kv0 + (uint)(buf ^ 1) * 2u * tileBytes;
            if (nxt < nTiles)
                TcLoads.LoadKv<THd>(p, blk, seqInfo, kG, vG, kNxt, kNxt + tileBytes, nxt * THd.Bc, kEnd, hk, tid, gRow, false, 0);
            Ptx.CpAsyncCommit();

            sa.Col0 = cur * THd.Bc + col0;
            SAcc s = Frag.QkSmem2<TE, THd>(qLane, 0u, kCur + kLaneOff).A;
            SAcc slope = capOn ? Frag.CapSlope<THd>(s, p.Scale, p.Softcap) : default;
            bool pre = TF.Bias && biasVec && cur * THd.Bc + THd.Bc <= blk.SeqK;
            RowWords bw = pre ? TcBackwardTile.BiasWords<THd>(sa, biasV4) : default;
            SAcc pr = TcBackwardTile.Probabilities<TE, THd, TF>(s, curBits, sa, hasBias, pre, bw, mA, mB);
            SAcc ds = Frag.ScoreGrad<THd>(pr, Frag.QkSmem2<TE, THd>(doLane, 0u, kCur + tileBytes + kLaneOff).A, dA, dB);
            // dQ += (dS·slope)·K: K's rows are the keys, as V's are in the forward's P·V.
            PFrag dsA = capOn ? Frag.PackA<TE, THd>(Frag.Mul<THd>(ds, slope), 1f) : Frag.PackA<TE, THd>(ds, p.Scale);
            acc = Frag.Pv2<TE, THd>(acc, dsA, default, kCur + vLaneOff);

            cur = nxt;
            curBits = nxtBits;
            buf ^= 1;
        }
        Ptx.CpAsyncWait(0);

        StoreDq<TE, THd>(acc.A, dq, a, blk, h, rA, t);
    }
}
