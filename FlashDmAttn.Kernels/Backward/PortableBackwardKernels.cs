using ILGPU;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Numerics;

namespace FlashDmAttn.Kernels.Backward;

/// <summary>
/// The portable backward (every accelerator, dtype and head dim), FlashAttention-2's algorithm in two passes that
/// need no atomics: a query-block kernel forms dq, a key-block kernel
/// forms dk and dv per query head (and the gradient of a bias with a key dim). Each recomputes P from the forward's
/// LSE. Every output element is written by one thread of one group, in a fixed order: the result is deterministic.
/// Grid: (tiles, Batch·Heads along y then z); one group per tile of one (batch, head).
/// </summary>
internal static class PortableBackwardKernels
{
    /// <summary>Shared floats of the query-block kernel: Q, dO, dQ rows; K, V slots; P, dS, slope tiles; row state.</summary>
    public static int QueryBlockFloats(int br, int bc, int d) => 3 * br * d + 2 * bc * d + 3 * br * bc + 2 * br;

    /// <summary>Shared floats of the key-block kernel: K, V, dK, dV slots; Q, dO rows; P, dS, slope tiles; row state; dbias columns.</summary>
    public static int KeyBlockFloats(int br, int bc, int d) => 4 * bc * d + 2 * br * d + 3 * br * bc + 2 * br + bc;

    /// <summary>(batch, head) of this group, or false for the empty part of the last z slice (the tensor-core backward's
    /// grids are laid out alike).</summary>
    internal static bool Pair(in KernelArgs p, out int b, out int h)
    {
        int bh = Grid.IdxZ * Grid.DimY + Grid.IdxY;
        b = bh / (p.Heads > 0 ? p.Heads : 1);
        h = bh - b * p.Heads;
        return bh < p.Batch * p.Heads;
    }

    /// <summary>dq of TileQ query rows of one (batch, head).</summary>
    public static void QueryBlock<TElem, TCodec>(
        ArrayView<TElem> q, ArrayView<TElem> k, ArrayView<TElem> v, ArrayView<TElem> dO, ArrayView<TElem> bias,
        ArrayView<byte> mask, ArrayView<float> lse, ArrayView<float> dvec, ArrayView<int> seqInfo,
        ArrayView<TElem> dq, BwdArgs a)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        var smem = SharedMemory.GetDynamic<float>();
        var p = a.F;
        int tid = Group.IdxX, nt = Group.DimX;
        int d = p.HeadDim, br = p.TileQ, bc = p.TileK;
        int qs = 0, dos = qs + br * d, dqs = dos + br * d, ks = dqs + br * d, vs = ks + bc * d;
        int pt = vs + bc * d, dst = pt + br * bc, gt = dst + br * bc, lseS = gt + br * bc, dS = lseS + br;

        if (!Pair(p, out int b, out int h)) return;
        int hk = h / p.HeadGroup;
        var blk = BlockInfo.Create(p, seqInfo, b);
        int i0 = Grid.IdxX * br;
        if (i0 >= blk.SeqQ) return; // uniform over the group
        int rows = blk.SeqQ - i0 < br ? blk.SeqQ - i0 : br;

        BackwardTile.LoadRows<TElem, TCodec>(smem, qs, q, p.QStrideB, p.QStrideL, p.QStrideH, blk, i0, rows, h, d, br);
        BackwardTile.LoadRows<TElem, TCodec>(smem, dos, dO, a.L.DoStrideB, a.L.DoStrideL, a.L.DoStrideH, blk, i0, rows, h, d, br);
        BackwardTile.LoadRowState<TElem, TCodec>(smem, lseS, dS, a, lse, dvec, mask, bias, blk, b, h, i0, rows, br);
        for (int e = tid; e < br * d; e += nt) smem[dqs + e] = 0f;
        Group.Barrier();

        int kEnd = blk.KeyEnd(p, i0 + rows);
        int gRow = blk.GatherRow(p, h);
        int slots = BlockInfo.KeySlots(p, seqInfo, gRow, kEnd);
        for (int k0 = 0; k0 < slots; k0 += bc)
        {
            if (BlockInfo.KeyAt(p, seqInfo, gRow, k0) >= kEnd)
                break; // gathered keys ascend: the rest lie past the causal band / sequence
            int cols = slots - k0 < bc ? slots - k0 : bc;
            bool any = BackwardTile.MarkVisible(smem, pt, p, mask, seqInfo, blk, b, h, i0, rows, gRow, k0, cols, br, bc);
            if (!Group.BarrierOr(any))
                continue; // nothing visible: K, V and bias of the tile are never read

            BackwardTile.LoadKeys<TElem, TCodec>(smem, ks, k, p.KStrideB, p.KStrideL, p.KStrideH, p, seqInfo, blk, gRow, k0, cols, hk, d, bc);
            BackwardTile.LoadKeys<TElem, TCodec>(smem, vs, v, p.VStrideB, p.VStrideL, p.VStrideH, p, seqInfo, blk, gRow, k0, cols, hk, d, bc);
            Group.Barrier();
            BackwardTile.Gradients<TElem, TCodec>(smem, pt, gt, dst, qs, ks, dos, vs, lseS, dS, p, bias, seqInfo, b, h, i0, gRow, k0, d, br, bc);
            Group.Barrier();

            // dQ += (dS∘slope)·K over the visible keys (an invisible key's K is never multiplied, even by 0).
            for (int e = tid; e < br * d; e += nt)
            {
                int r = e / d, x = e - r * d;
                float acc = smem[dqs + e];
                for (int c = 0; c < cols; c++)
                {
                    float g = smem[gt + r * bc + c];
                    if (g != 0f) acc += g * smem[ks + c * d + x];
                }
                smem[dqs + e] = acc;
            }
            Group.Barrier();
        }

        for (int e = tid; e < rows * d; e += nt)
        {
            int r = e / d, x = e - r * d;
            dq[blk.QOffset(a.L.DqStrideB, a.L.DqStrideL, a.L.DqStrideH, i0 + r, h) + x] = TCodec.FromFloat(smem[dqs + e]);
        }
    }

    /// <summary>
    /// dk and dv of TileK key slots for one (batch, query head), fp32, into (B, SeqK, H, D) scratch (summed over a
    /// kv head's query heads afterwards); with a bias that has a key dim, its gradient into (B, H, DbRows, SeqK).
    /// </summary>
    public static void KeyBlock<TElem, TCodec>(
        ArrayView<TElem> q, ArrayView<TElem> k, ArrayView<TElem> v, ArrayView<TElem> dO, ArrayView<TElem> bias,
        ArrayView<byte> mask, ArrayView<float> lse, ArrayView<float> dvec, ArrayView<int> seqInfo,
        ArrayView<float> dkh, ArrayView<float> dvh, ArrayView<float> dbias, BwdArgs a)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        var smem = SharedMemory.GetDynamic<float>();
        var p = a.F;
        int tid = Group.IdxX, nt = Group.DimX;
        int d = p.HeadDim, br = p.TileQ, bc = p.TileK;
        int ks = 0, vs = ks + bc * d, dks = vs + bc * d, dvs = dks + bc * d, qs = dvs + bc * d, dos = qs + br * d;
        int pt = dos + br * d, dst = pt + br * bc, gt = dst + br * bc, lseS = gt + br * bc, dS = lseS + br, dbC = dS + br;

        if (!Pair(p, out int b, out int h)) return;
        int hk = h / p.HeadGroup;
        var blk = BlockInfo.Create(p, seqInfo, b);
        int gRow = blk.GatherRow(p, h);
        int slots = BlockInfo.KeySlots(p, seqInfo, gRow, blk.SeqK);
        int k0 = Grid.IdxX * bc;
        if (k0 >= slots) return; // uniform over the group
        int cols = slots - k0 < bc ? slots - k0 : bc;
        int jFirst = BlockInfo.KeyAt(p, seqInfo, gRow, k0);
        if (jFirst >= blk.SeqK) return; // a key list of a longer sequence (varlen): nothing of this one

        BackwardTile.LoadKeys<TElem, TCodec>(smem, ks, k, p.KStrideB, p.KStrideL, p.KStrideH, p, seqInfo, blk, gRow, k0, cols, hk, d, bc);
        BackwardTile.LoadKeys<TElem, TCodec>(smem, vs, v, p.VStrideB, p.VStrideL, p.VStrideH, p, seqInfo, blk, gRow, k0, cols, hk, d, bc);
        for (int e = tid; e < bc * d; e += nt)
        {
            smem[dks + e] = 0f;
            smem[dvs + e] = 0f;
        }
        for (int c = tid; c < bc; c += nt) smem[dbC + c] = 0f;
        Group.Barrier();

        // Causal: the first query row that sees this tile's first key (bottom-right aligned band).
        int iStart = p.Causal != 0 ? jFirst - (blk.SeqK - blk.SeqQ) : 0;
        if (iStart < 0) iStart = 0;
        for (int i0 = iStart; i0 < blk.SeqQ; i0 += br)
        {
            int rows = blk.SeqQ - i0 < br ? blk.SeqQ - i0 : br;
            bool any = BackwardTile.MarkVisible(smem, pt, p, mask, seqInfo, blk, b, h, i0, rows, gRow, k0, cols, br, bc);
            if (!Group.BarrierOr(any))
                continue;

            BackwardTile.LoadRows<TElem, TCodec>(smem, qs, q, p.QStrideB, p.QStrideL, p.QStrideH, blk, i0, rows, h, d, br);
            BackwardTile.LoadRows<TElem, TCodec>(smem, dos, dO, a.L.DoStrideB, a.L.DoStrideL, a.L.DoStrideH, blk, i0, rows, h, d, br);
            BackwardTile.LoadRowState<TElem, TCodec>(smem, lseS, dS, a, lse, dvec, mask, bias, blk, b, h, i0, rows, br);
            Group.Barrier();
            BackwardTile.Gradients<TElem, TCodec>(smem, pt, gt, dst, qs, ks, dos, vs, lseS, dS, p, bias, seqInfo, b, h, i0, gRow, k0, d, br, bc);
            Group.Barrier();

            // dV += Pᵀ·dO, dK += (dS∘slope)ᵀ·Q over the visible entries (an invisible row's q and dO are never
            // multiplied, even by 0).
            for (int e = tid; e < bc * d; e += nt)
            {
                int c = e / d, x = e - c * d;
                float accV = smem[dvs + e], accK = smem[dks + e];
                for (int r = 0; r < rows; r++)
                {
                    float pr = smem[pt + r * bc + c], g = smem[gt + r * bc + c];
                    if (pr != 0f) accV += pr * smem[dos + r * d + x];
                    if (g != 0f) accK += g * smem[qs + r * d + x];
                }
                smem[dvs + e] = accV;
                smem[dks + e] = accK;
            }
            if (a.DBias == (int)DBiasMode.Keys)
            {
                if (a.DbRows == 1)
                {
                    for (int c = tid; c < cols; c += nt)
                    {
                        float acc = smem[dbC + c];
                        for (int r = 0; r < rows; r++) acc += smem[dst + r * bc + c];
                        smem[dbC + c] = acc;
                    }
                }
                else
                {
                    for (int e = tid; e < rows * bc; e += nt)
                    {
                        int r = e / bc, c = e - r * bc;
                        if (c >= cols) continue;
                        int j = BlockInfo.KeyAt(p, seqInfo, gRow, k0 + c);
                        if (j < blk.SeqK)
                            dbias[(((long)b * p.Heads + h) * p.SeqQ + i0 + r) * p.SeqK + j] = smem[dst + r * bc + c];
                    }
                }
            }
            Group.Barrier();
        }

        for (int e = tid; e < cols * d; e += nt)
        {
            int c = e / d, x = e - c * d;
            int j = BlockInfo.KeyAt(p, seqInfo, gRow, k0 + c);
            if (j >= blk.SeqK) continue;
            long at = (((long)b * p.SeqK + j) * p.Heads + h) * d + x;
            dkh[at] = smem[dks + e];
            dvh[at] = smem[dvs + e];
        }
        if (a.DBias == (int)DBiasMode.Keys && a.DbRows == 1)
        {
            for (int c = tid; c < cols; c += nt)
            {
                int j = BlockInfo.KeyAt(p, seqInfo, gRow, k0 + c);
                if (j < blk.SeqK)
                    dbias[((long)b * p.Heads + h) * p.SeqK + j] = smem[dbC + c];
            }
        }
    }
}
