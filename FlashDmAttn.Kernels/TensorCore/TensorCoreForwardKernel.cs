using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;
using FlashDmAttn.Kernels.Forward;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>
/// FlashAttention-2-style forward kernel on mma.sync m16n8k16 (bf16/fp16 in, fp32 accumulate), same semantics as
/// <see cref="PortableForwardKernel"/>. One group = 4 warps = 64·Mt query rows of one (batch, head); each warp owns
/// Mt m-tiles of 16 rows (every K/V ldmatrix fragment feeds Mt mma) and keeps S, P and O as register fragments.
/// K/V tiles of Bc keys (and bias tiles, when 16-byte aligned) are double-buffered in dynamic shared memory and loaded
/// with cp.async a tile ahead (ragged rows zero-filled), in the key order of <see cref="TcKeyOrder"/> (each lane's
/// keys of a row contiguous, so its mask bytes and bias values are vector loads). Specialised on <typeparamref name="TF"/> (static switch): a
/// feature that is off costs nothing. Tiles that every row sees whole (no mask, inside the causal band and the
/// lengths) skip the per-element visibility; the others compute it, one bit per fragment element (TcGeom, TcMask).
/// One barrier per tile: after it, the tile is visible and the other buffer free for the next tile's cp.async. With a
/// mask, the visibility of the next tile is computed first (from mask words loaded a tile earlier) and a tile
/// invisible to every row (Group.BarrierOr) is skipped before its K, V or bias is read.
/// Grid: ceil(max Lq / Br) query blocks of Batch·Heads heads in the order of <see cref="TcBlockOrder"/> (last block first);
/// group 128 threads, shared bytes
/// <see cref="SharedBytes{THd}"/>.
/// </summary>
internal static class TensorCoreForwardKernel
{
    public const int Threads = 128;

    /// <summary>Query rows per group.</summary>
    public static int RowsOf<THd>() where THd : struct, ITcHeadDim => 64 * THd.Mt;

    /// <summary>Q tile + double-buffered K and V tiles, + double-buffered bias tiles when the bias is staged.</summary>
    public static int SharedBytes<THd>(bool bias) where THd : struct, ITcHeadDim
        => (64 * THd.Mt + 4 * THd.Bc) * THd.RowBytes + (bias ? 2 * 64 * THd.Mt * BiasRowBytes<THd>() : 0);

    /// <summary>Row stride of a staged bias tile: Bc 16-bit values + 16 bytes (conflict-free ld.shared.v4 rows per quad).</summary>
    public static int BiasRowBytes<THd>() where THd : struct, ITcHeadDim => 2 * THd.Bc + 16;

    /// <summary>
    /// The kernel: one (batch·head, query block) per group from the grid (<see cref="TcBlockOrder"/>), or in a stream-K
    /// launch (<see cref="TcStreamK"/>) a run of (block, key tile) steps: pieces of blocks, each merged with its other piece
    /// before the output is written. The block body sits in one loop inside this method (a plain kernel makes one trip):
    /// as a separate method ILGPU compiled every kernel about 2× slower.
    /// </summary>
    public static void Run<TE, THd, TF>(
        ArrayView<ushort> q, ArrayView<ushort> k, ArrayView<ushort> v, ArrayView<ushort> o,
        ArrayView<ushort> bias, ArrayView<byte> mask, ArrayView<float> lse, ArrayView<int> seqInfo,
        KernelArgs p)
        where TE : struct, ITcElem
        where THd : struct, ITcHeadDim
        where TF : struct, ITcFlags
    {
        int Rows = RowsOf<THd>();
        int pos = 0, end = 1, tiles = 1, nbk = 1, wk = 0;
        if (TF.StreamK)
        {
            nbk = (p.SeqQ + Rows - 1) / Rows;
            tiles = p.SplitTiles;
            TcStreamK.Range(Grid.IdxX, p.SplitDp, tiles, p.SplitPerWorker, nbk * p.Batch * p.Heads * tiles, out pos, out end);
            wk = Grid.IdxX - p.SplitDp;
        }
        while (pos < end)
        {
            int bh, q0, t0 = 0, t1 = 0, slot = -1, half = 0;
            if (TF.StreamK)
            {
                slot = TcStreamK.Piece(pos, end, tiles, wk, out int blockIdx, out t0, out t1);
                bh = blockIdx / nbk;
                q0 = (nbk - 1 - (blockIdx - bh * nbk)) * Rows;
                half = t0 == 0 ? 0 : 1;
                pos += t1 - t0;
                Group.Barrier(); // every warp is done with the previous piece's shared memory
            }
            else
            {
                bh = TcBlockOrder.BatchHead(Rows, p.KvSplits, out q0);
                if (bh >= p.Batch * p.Heads) return; // a short last chunk (uniform over the group)
                pos = end;
            }

            var smem = SharedMemory.GetDynamic<Chunk16>();
            uint sBase = Ptx.SharedAddr(ref smem[0]);
            int tid = Group.IdxX;
            int lane = Warp.LaneIdx, warp = tid >> 5;
            int g = lane >> 2, t = lane & 3;

            // Runtime features inside the static ones ("may have"): both fold to false when the flag is off.
            bool causal = TF.Causal && p.Causal != 0;
            bool hasMask = TF.Mask && p.HasMask != 0;
            bool hasBias = TF.Bias && p.HasBias != 0;

            int b = bh / p.Heads, h = bh - b * p.Heads, hk = h / p.HeadGroup;
            var blk = BlockInfo.Create(p, seqInfo, b);
            if (q0 >= blk.SeqQ) return; // past this batch entry's rows (variable lengths); uniform over the group
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
            TcLoads.LoadQ<THd>(p, blk, qG, qS, q0, rows, Rows, h, tid);
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
            bool biasV4 = biasVec && ((p.BiasStrideB | p.BiasStrideH | p.BiasStrideQ) & 7) == 0 && (biasG & 15ul) == 0;
            bool biasStage = TF.Bias && biasV4 && p.BiasStrideQ != 0;
            int col0 = TcKeyOrder.LaneKey0(THd.Bc, t); // this lane's first key in a tile
            uint bsLane = (uint)((warp * 16 * THd.Mt + g) * BiasRowBytes<THd>() + 2 * col0);
            var sa0 = TcScore.Args(p, blk, biasG, b, h, rA0, hasBias);
            var sa1 = THd.Mt > 1 ? TcScore.Args(p, blk, biasG, b, h, rA1, hasBias) : sa0;

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
            // Gathered keys (a mask broadcast over queries; the launcher sends them to the mask specialisation): walk key
            // slots; the bounds become slot counts. Without the mask flag this folds away, and with it fullEnd = kEnd in
            // dense non-causal kernels (one live value: the 128-row D = 128 kernel spilled the other).
            bool gather = TF.Mask && p.GatherKeys != 0;
            int gRow = blk.GatherRow(p, h);
            if (gather)
            {
                int slots = BlockInfo.KeySlots(p, seqInfo, gRow, 0);
                kEnd = BlockInfo.SlotsBelow(p, seqInfo, gRow, slots, kEnd);
                fullEnd = BlockInfo.SlotsBelow(p, seqInfo, gRow, kEnd, fullEnd);
            }
            int nTiles = (kEnd + THd.Bc - 1) / THd.Bc;
            if (TF.StreamK && t1 < nTiles) nTiles = t1;
            // Split-KV: this group's share of the block's key tiles (TcSplitKv); a share past the last tile is empty.
            int cur = TF.StreamK ? t0 : 0;
            if (!TF.StreamK && p.KvSplits > 1)
                nTiles = TcSplitKv.Range(nTiles, p.KvSplits, TcBlockOrder.Split(p.KvSplits), out cur);
            lm = TcVisibility.Limits<THd, TF>(lm, p, blk, seqInfo, gRow, kEnd, causal, hasMask, gather);

            // Mask look-ahead by 16- or 8-byte words (64- or 32-key tiles, aligned rows, no gathered keys): the words of the
            // tile after next are loaded while this tile computes. Rows past the sequence read its last row.
            int wordBytes = THd.Bc / 4; // a lane's share of a tile row: 16 bytes (64 keys) or 8 (32 keys)
            lm.Quad = TF.Mask && hasMask && (THd.Bc == 64 || THd.Bc == 32) && p.GatherKeys == 0 && p.MaskElemBytes == 1
                      && ((p.MaskStrideB | p.MaskStrideH | p.MaskStrideQ) & (wordBytes - 1)) == 0 && (lm.G & (ulong)(wordBytes - 1)) == 0;
            if (lm.Quad)
            {
                int last = blk.SeqQ - 1;
                ulong lane16 = lm.G + (ulong)col0; // the lane's own Bc/4 keys (TcKeyOrder)
                lm.QA0 = lane16 + (ulong)MaskBias.MaskIndex(p, b, h, rA0 < last ? rA0 : last);
                lm.QB0 = lane16 + (ulong)MaskBias.MaskIndex(p, b, h, rA0 + 8 < last ? rA0 + 8 : last);
                lm.QA1 = lane16 + (ulong)MaskBias.MaskIndex(p, b, h, rA1 < last ? rA1 : last);
                lm.QB1 = lane16 + (ulong)MaskBias.MaskIndex(p, b, h, rA1 + 8 < last ? rA1 + 8 : last);
            }

            // Gathered keys: K/V rows are found through the tile's key list, loaded a tile ahead (see TileKeys).
            bool gatherFast = TF.Mask && p.GatherKeys != 0 && p.Paged == 0 && 32 % (THd.D / 8) == 0;

            // First visible tile (without a mask every tile below nTiles has a visible element).
            U2 curBits = default;
            if (hasMask)
            {
                while (cur < nTiles)
                {
                    curBits = TcVisibility.MaskedBits<THd, TF>(p, blk, mask, lm, cur * THd.Bc, fullEnd, col0, false, default);
                    if (Group.BarrierOr((curBits.X | curBits.Y) != 0)) break;
                    cur++;
                }
            }
            int keysPf = 0; // gathered keys of tile cur + 1
            if (cur < nTiles)
            {
                int keys = gatherFast ? TcLoads.TileKeys<THd>(p, seqInfo, gRow, cur * THd.Bc, kEnd, lane, warp) : 0;
                TcLoads.LoadKv<THd>(p, blk, seqInfo, kG, vG, kv0, kv0 + tileBytes, cur * THd.Bc, kEnd, hk, tid, gRow, gatherFast, keys);
                if (TF.Bias && biasStage && cur * THd.Bc + THd.Bc <= blk.SeqK)
                    TcLoads.LoadBiasTile<THd>(p, blk, biasG, biasS, b, h, q0, cur * THd.Bc, tid);
                if (gatherFast) keysPf = TcLoads.TileKeys<THd>(p, seqInfo, gRow, (cur + 1) * THd.Bc, kEnd, lane, warp);
            }
            Ptx.CpAsyncCommit();
            MaskQuad pf = default; // mask words of tile cur + 1
            if (TF.Mask && lm.Quad && cur + 1 < nTiles && (cur + 2) * THd.Bc <= blk.SeqK)
                pf = TcVisibility.LoadMaskQuad<THd>(lm, (cur + 1) * THd.Bc);

            // Q fragments (the Q group is complete once at most the K/V group is pending).
            Ptx.CpAsyncWait(1);
            Group.Barrier();
            uint qLane0 = qS + (uint)((warp * 16 * THd.Mt + (lane & 15)) * rowBytes + (lane >> 4) * 16);
            uint qLane1 = qLane0 + (uint)(16 * rowBytes);
            QFrag qf0 = Frag.LoadQ<THd>(qLane0);
            QFrag qf1 = THd.Mt > 1 ? Frag.LoadQ<THd>(qLane1) : default;

            uint kLaneOff = (uint)((((lane >> 4) << 3) + (lane & 7)) * rowBytes + ((lane >> 3) & 1) * 16);
            uint vLaneOff = (uint)(((((lane >> 3) & 1) << 3) + (lane & 7)) * rowBytes + (lane >> 4) * 16);

            // Short blocks of the unmasked 64-row kernels (decode): a warp whose rows all lie past the block's skips
            // the tile math (a compile-time choice: the other kernels keep their code and registers as they are).
            bool live = !(THd.Mt == 1 && !TF.Mask && !TF.Bias) || warp * 16 < rows;
            var neg = new MRow { MA = float.NegativeInfinity, MB = float.NegativeInfinity, LA = 0f, LB = 0f };
            MRow st0 = neg, st1 = neg;
            OAcc2 acc = default;
            int buf = 0;
            while (cur < nTiles)
            {
                // With a mask: visibility of the next tile from its words (prefetched a tile ago when possible).
                int nxt = cur + 1;
                U2 nxtBits = default;
                // A next tile inside the causal band's whole part with prefetched words needs only "any word nonzero"
                // before the barrier; its bits are made after it, beside the copies (LateBits: off the barrier's path).
                bool late = (THd.Tune & TcTune.LateBits) != 0 && hasMask && nxt < nTiles
                            && TcVisibility.WholeWords<THd>(lm, nxt * THd.Bc, fullEnd);
                bool anyNxt = late && TcVisibility.AnyWord<THd>(pf);
                if (hasMask && nxt < nTiles && !late)
                {
                    nxtBits = TcVisibility.MaskedBits<THd, TF>(p, blk, mask, lm, nxt * THd.Bc, fullEnd, col0, true, pf);
                    anyNxt = (nxtBits.X | nxtBits.Y) != 0;
                }

                // One barrier per tile (CUTLASS's multistage loop): after it, tile cur's K/V (and bias) are visible to
                // every warp, every warp is done with tile cur − 1 and so with the other buffer, and (with a mask) the
                // group knows whether tile nxt has a visible element; if not, the tiles after it are tried one by one.
                Ptx.CpAsyncWait(0);
                if (hasMask)
                {
                    if (!Group.BarrierOr(anyNxt) && nxt < nTiles)
                    {
                        late = false;
                        nxt++;
                        while (nxt < nTiles)
                        {
                            nxtBits = TcVisibility.MaskedBits<THd, TF>(p, blk, mask, lm, nxt * THd.Bc, fullEnd, col0, false, pf);
                            if (Group.BarrierOr((nxtBits.X | nxtBits.Y) != 0)) break;
                            nxt++;
                        }
                    }
                }
                else
                {
                    Group.Barrier();
                }

                // Tile nxt's K/V (and bias) into the other buffer while this tile computes, then the mask words of the
                // tile after it.
                uint kCur = kv0 + (uint)buf * 2u * tileBytes;
                uint kNxt = kv0 + (uint)(buf ^ 1) * 2u * tileBytes;
                bool splitKv = (THd.Tune & TcTune.SplitKv) != 0;
                if (nxt < nTiles)
                {
                    // Without a mask the next tile is cur + 1, whose keys were loaded a tile ago.
                    TcLoads.LoadKv<THd>(p, blk, seqInfo, kG, vG, kNxt, kNxt + tileBytes, nxt * THd.Bc, kEnd, hk, tid, gRow, gatherFast, keysPf, splitKv ? 1 : 3);
                    if (TF.Bias && biasStage && nxt * THd.Bc + THd.Bc <= blk.SeqK)
                        TcLoads.LoadBiasTile<THd>(p, blk, biasG, biasS + (uint)(buf ^ 1) * stageBytes, b, h, q0, nxt * THd.Bc, tid);
                }
                if (!splitKv)
                {
                    Ptx.CpAsyncCommit();
                    if (gatherFast) keysPf = TcLoads.TileKeys<THd>(p, seqInfo, gRow, (nxt + 1) * THd.Bc, kEnd, lane, warp);
                }
                if (TF.Mask && (THd.Tune & TcTune.LateBits) != 0 && lm.Quad)
                {
                    U2 wb = TcVisibility.WordBits<THd>(pf); // straight-line ALU, before pf is reloaded
                    nxtBits.X = late ? wb.X : nxtBits.X;
                    nxtBits.Y = late ? wb.Y : nxtBits.Y;
                }
                if (TF.Mask && lm.Quad && nxt + 1 < nTiles && (nxt + 2) * THd.Bc <= blk.SeqK)
                    pf = TcVisibility.LoadMaskQuad<THd>(lm, (nxt + 1) * THd.Bc);

                // Bias of a tile inside the key range as 32-bit pairs: staged in shared memory, or loaded from global now
                // so that Q·Kᵀ hides their latency (rows past Lq read the last row; invisible elements are read but not
                // used). Loaded after the copies are issued: live across them, these 16·Mt registers made ptxas spill.
                int k0 = cur * THd.Bc;
                bool inRange = k0 + THd.Bc <= blk.SeqK;
                bool staged = TF.Bias && biasStage && inRange;
                bool pre = TF.Bias && biasVec && inRange;
                RowWords bw0 = default, bw1 = default;
                if (TF.Bias && pre && !staged)
                {
                    ulong cb = (ulong)(2 * (k0 + col0));
                    if (biasV4)
                    {
                        bw0 = Frag.LoadWords32V4<THd>(sa0.BiasA + cb, sa0.BiasB + cb);
                        if (THd.Mt > 1) bw1 = Frag.LoadWords32V4<THd>(sa1.BiasA + cb, sa1.BiasB + cb);
                    }
                    else
                    {
                        bw0 = Frag.LoadWords32<THd>(sa0.BiasA + cb, sa0.BiasB + cb);
                        if (THd.Mt > 1) bw1 = Frag.LoadWords32<THd>(sa1.BiasA + cb, sa1.BiasB + cb);
                    }
                }

                // S = Q·Kᵀ for the warp's m-tiles (skipped by a warp with no live rows, whose rows are never stored).
                uint kA = kCur + kLaneOff;
                SAcc2 s = default;
                if (!live) { }
                else if (THd.QInRegs) s = Frag.QkRegs2<TE, THd>(qf0, qf1, kA);
                else if (TF.Causal) s = Frag.QkSmem2<TE, THd>(qLane0, qLane1, kA);
                else
                {
                    // The lane's Q rows again from the thread index (tid is live for the copies), in another form than
                    // qLane0: kept live across the loop, ptxas spilled it in the dense D = 128 kernel (with a causal
                    // band this form spilled more, so those kernels keep qLane0).
                    uint qA = qS + (uint)((((tid >> 5) * 16 * THd.Mt) + (tid & 15)) * rowBytes + ((tid >> 4) & 1) * 16);
                    s = Frag.QkSmem2<TE, THd>(qA, qA + (uint)(16 * rowBytes), kA);
                }
                if (splitKv)
                {
                    if (nxt < nTiles)
                        TcLoads.LoadKv<THd>(p, blk, seqInfo, kG, vG, kNxt, kNxt + tileBytes, nxt * THd.Bc, kEnd, hk, tid, gRow, gatherFast, keysPf, 2);
                    Ptx.CpAsyncCommit();
                    if (gatherFast) keysPf = TcLoads.TileKeys<THd>(p, seqInfo, gRow, (nxt + 1) * THd.Bc, kEnd, lane, warp);
                }
                uint bs = biasS + (uint)buf * stageBytes + bsLane; // this lane's staged bias pair (row A, m-tile 0)
                uint rowB = (uint)(8 * BiasRowBytes<THd>());

                if (live)
                {
                    // Scores (log2 domain): whole tiles skip the per-element visibility.
                    sa0.Col0 = k0 + col0;
                    sa1.Col0 = k0 + col0;
                    bool full = !hasMask && k0 + THd.Bc <= fullEnd;
                    if (full)
                    {
                        s.A = TcScore.Apply<TE, THd, TF>(s.A, 0xFFFFFFFFu, sa0, true, hasBias, pre, staged, bw0, bs, bs + rowB);
                        if (THd.Mt > 1) s.B = TcScore.Apply<TE, THd, TF>(s.B, 0xFFFFFFFFu, sa1, true, hasBias, pre, staged, bw1, bs + 2u * rowB, bs + 3u * rowB);
                    }
                    else
                    {
                        if (!hasMask)
                        {
                            TcVisibility.OtherLimits<TF>(lm, kEnd, out int limB0, out int limA1, out int limB1);
                            curBits.X = TcGeom.FromLimits(THd.Bc, k0 + col0, lm.LimA0, limB0);
                            curBits.Y = THd.Mt > 1 ? TcGeom.FromLimits(THd.Bc, k0 + col0, limA1, limB1) : 0u;
                        }
                        s.A = TcScore.Apply<TE, THd, TF>(s.A, curBits.X, sa0, false, hasBias, pre, staged, bw0, bs, bs + rowB);
                        if (THd.Mt > 1) s.B = TcScore.Apply<TE, THd, TF>(s.B, curBits.Y, sa1, false, hasBias, pre, staged, bw1, bs + 2u * rowB, bs + 3u * rowB);
                    }

                    // Online softmax, then O = O·α + P·V.
                    Smx x0 = TcSoftmax.Step<TE, THd, TF>(s.A, st0, sa0.ScaleLog2);
                    st0 = x0.R;
                    // Both m-tiles' steps in one straight block, then one rescale branch: their latency chains (row max,
                    // shuffles, ex2) interleave.
                    Smx x1 = default;
                    if (THd.Mt > 1)
                    {
                        x1 = TcSoftmax.Step<TE, THd, TF>(s.B, st1, sa1.ScaleLog2);
                        st1 = x1.R;
                    }
                    acc = TcSoftmax.Rescale<THd>(acc, x0.AlA, x0.AlB, x1.AlA, x1.AlB);
                    acc = Frag.Pv2<TE, THd>(acc, x0.P, x1.P, kCur + tileBytes + vLaneOff);
                }

                cur = nxt;
                curBits = nxtBits;
                buf ^= 1;
            }
            Ptx.CpAsyncWait(0);
            // A piece of a block: the group that finishes second merges both pieces and writes the block.
            if (TF.StreamK && slot >= 0 && !TcStreamK.Fixup<THd>(seqInfo, p, slot, half, tid, ref acc, ref st0, ref st1))
                continue;

            // Epilogue: row sums across the quad, normalise, write; empty rows give 0 and LSE −∞.
            // The rows again from the grid and thread index, in another form than rA0 (kept live across the loop, ptxas spilled it).
            int qE;
            if (TF.StreamK) qE = q0;
            else TcBlockOrder.BatchHead(Rows, p.KvSplits, out qE);
            int rE = qE + ((tid >> 5) << 4) * THd.Mt + ((tid & 31) >> 2);
            // The sequence bounds again too (seqInfo loads or parameters): kept live across the loop, ptxas spilled them.
            var blkE = BlockInfo.Create(p, seqInfo, b);
            if (!TF.StreamK && p.Partial != 0)
            {
                // Split-KV or packed GQA: this key range's O and LSE go to the work buffer (the lse view) for the combine.
                int part = TcBlockOrder.Split(p.KvSplits) * p.Batch * p.Heads + bh;
                TcSplitKv.StorePartial<THd>(p, blkE, acc.A, st0, lse, part, rE, t);
                if (THd.Mt > 1) TcSplitKv.StorePartial<THd>(p, blkE, acc.B, st1, lse, part, rE + 16, t);
                continue;
            }
            ulong oG = Ptx.GlobalAddr(ref o[0]);
            bool oVec = ((p.OStrideB | p.OStrideL | p.OStrideH) & 1) == 0 && (oG & 3ul) == 0;
            TcSoftmax.Epilogue<TE, THd>(p, blkE, acc.A, st0, o, lse, oG, oVec, b, h, rE, t);
            if (THd.Mt > 1)
                TcSoftmax.Epilogue<TE, THd>(p, blkE, acc.B, st1, o, lse, oG, oVec, b, h, rE + 16, t);
        }
    }
}
