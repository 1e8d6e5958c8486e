using System.Runtime.CompilerServices;
using ILGPU;
using FlashDmAttn.Kernels.Forward;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>
/// Tile loads into shared memory by cp.async (16-byte chunks, a tile ahead): K/V rows (contiguous, paged or through
/// gathered key lists) and staged bias tiles; all <see cref="TensorCoreForwardKernel.Threads"/> threads copy together.
/// Shared row c of a K/V tile holds key (slot) k0 + <see cref="TcKeyOrder.KeyOfColumn"/>(Bc, c); bias tiles keep the
/// keys in order.
/// </summary>
internal static class TcLoads
{
    private const int Threads = TensorCoreForwardKernel.Threads;

    /// <summary>K/V row strides (elements) below this keep the contiguous copies' address steps in 32 bits.</summary>
    private const long MaxRowStride = 1L << 26;

    /// <summary>
    /// Gathered keys of one tile for <see cref="LoadKv{THd}"/>: lane l holds the key of tile row
    /// warp·nr + l % nr + step·(l / nr) (nr = 32 / cpr rows per copy pass of a warp), the rows its warp copies, so one
    /// load per lane (issued a tile ahead) replaces a dependent load per copied row; −1 past the walked slots. Row r
    /// holds slot k0 + KeyOfColumn(Bc, r).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int TileKeys<THd>(in KernelArgs p, ArrayView<int> seqInfo, int gRow, int k0, int kEnd, int lane, int warp)
        where THd : struct, ITcHeadDim
    {
        int cpr = THd.D / 8, step = Threads / cpr, nr = 32 / cpr;
        int r = warp * nr + lane % nr + step * (lane / nr);
        int slot = k0 + TcKeyOrder.KeyOfColumn(THd.Bc, r);
        return r < THd.Bc && slot < kEnd ? BlockInfo.KeyAt(p, seqInfo, gRow, slot) : -1;
    }

    /// <summary>
    /// cp.async of the query rows [q0, q0 + <paramref name="tileRows"/>) of head <paramref name="h"/> into shared memory
    /// (row stride RowBytes); rows from <paramref name="rows"/> on (past the sequence) are zero-filled. Where the threads
    /// divide a row's chunks, each thread copies one chunk column of rows r0, r0 + step, … from one base address with a
    /// constant step, as <see cref="RowRun{THd}"/> does for K/V, instead of working out every chunk's offset (dozens of
    /// instructions a chunk).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void LoadQ<THd>(in KernelArgs p, in BlockInfo blk, ulong qG, uint qS, int q0, int rows, int tileRows, int h, int tid)
        where THd : struct, ITcHeadDim
    {
        if (p.QPack > 1)
            LoadPackedQ<THd>(p, blk, qG, qS, q0, rows, tileRows, h, tid);
        else
            LoadRows<THd>(p.QStrideB, p.QStrideL, p.QStrideH, blk, qG, qS, q0, rows, tileRows, h, tid);
    }

    /// <summary>
    /// Packed GQA (KernelArgs.QPack): row R of kv head h's block is query R % QPackRows of query head
    /// h·QPack + R / QPackRows (the sequence's own rows start at RowQ0 / QPack); rows past <paramref name="rows"/> zero-filled.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LoadPackedQ<THd>(in KernelArgs p, in BlockInfo blk, ulong qG, uint qS, int q0, int rows, int tileRows, int h, int tid)
        where THd : struct, ITcHeadDim
    {
        int cpr = THd.D / 8;
        for (int e = tid; e < tileRows * cpr; e += Threads)
        {
            int r = e / cpr, c = e - r * cpr;
            uint dst = qS + (uint)(r * THd.RowBytes + c * 16);
            int row = q0 + r, j = row / p.QPackRows, i = row - j * p.QPackRows;
            long off = blk.Batch * p.QStrideB + (long)(blk.RowQ0 / p.QPack + i) * p.QStrideL + (long)(h * p.QPack + j) * p.QStrideH;
            if (r < rows)
                Ptx.CpAsync16(dst, qG + (ulong)(off * 2 + c * 16), 16u);
            else
                Ptx.CpAsync16(dst, qG, 0u);
        }
    }

    /// <summary>
    /// <see cref="LoadQ{THd}"/> for any tensor in q's layout (the backward's dO) with its own strides (elements).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void LoadRows<THd>(long strideB, long strideL, long strideH, in BlockInfo blk, ulong qG, uint qS, int q0, int rows,
        int tileRows, int h, int tid)
        where THd : struct, ITcHeadDim
    {
        int cpr = THd.D / 8;
        if (Threads % cpr == 0)
        {
            int step = Threads / cpr;
            int r = tid / cpr, c = tid - r * cpr;
            ulong src = qG + (ulong)(blk.QOffset(strideB, strideL, strideH, q0 + r, h) * 2 + c * 16);
            ulong srcStep = (ulong)(step * strideL * 2);
            uint dst = qS + (uint)(r * THd.RowBytes + c * 16);
            for (int i = 0; i < tileRows / step; i++)
            {
                bool ok = r < rows;
                Ptx.CpAsync16(dst, ok ? src : qG, ok ? 16u : 0u);
                src += srcStep;
                dst += (uint)(step * THd.RowBytes);
                r += step;
            }
            return;
        }
        for (int e = tid; e < tileRows * cpr; e += Threads)
        {
            int r = e / cpr, c = e - r * cpr;
            uint dst = qS + (uint)(r * THd.RowBytes + c * 16);
            if (r < rows)
                Ptx.CpAsync16(dst, qG + (ulong)(blk.QOffset(strideB, strideL, strideH, q0 + r, h) * 2 + c * 16), 16u);
            else
                Ptx.CpAsync16(dst, qG, 0u);
        }
    }

    /// <summary>
    /// cp.async of the K and V rows [k0, k0 + Bc) into shared memory; rows at or past kEnd are zero-filled. With
    /// <paramref name="gatherFast"/> (gathered keys, not paged, cpr dividing 32) the rows' keys come from
    /// <paramref name="keys"/> (<see cref="TileKeys{THd}"/>) by warp shuffles.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void LoadKv<THd>(in KernelArgs p, in BlockInfo blk, ArrayView<int> seqInfo, ulong kG, ulong vG,
        uint kS, uint vS, int k0, int kEnd, int hk, int tid, int gRow, bool gatherFast, int keys, int which = 3) where THd : struct, ITcHeadDim
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
                if ((which & 1) != 0) Ptx.CpAsync16(kS + dst, ok ? kB + (ulong)(key * p.KStrideL * 2) : kG, ok ? 16u : 0u);
                if ((which & 2) != 0) Ptx.CpAsync16(vS + dst, ok ? vB + (ulong)(key * p.VStrideL * 2) : vG, ok ? 16u : 0u);
                dst += (uint)(step * THd.RowBytes);
            }
            return;
        }
        if (Threads % cpr == 0 && p.Paged == 0 && p.GatherKeys == 0 && p.KStrideL < MaxRowStride && p.VStrideL < MaxRowStride)
        {
            // Each thread copies chunk column c of rows r0 + i·rs (rs = max(step, 8)), and with step 4 (D = 256) also
            // rows r0 + 4 + i·rs: 8 rows further on hold keys 2 further on (TcKeyOrder), so each sequence of rows has
            // one base address per tile and constant steps.
            int step = Threads / cpr;
            int r0 = tid / cpr, c = tid - r0 * cpr;
            RowRun<THd>(p, blk, kG, vG, kS, vS, k0, kEnd, hk, r0, c, step > 8 ? step : 8, which);
            if (step < 8) RowRun<THd>(p, blk, kG, vG, kS, vS, k0, kEnd, hk, r0 + step, c, 8, which);
            return;
        }
        for (int e = tid; e < THd.Bc * cpr; e += Threads)
        {
            int r = e / cpr, c = e - r * cpr;
            int j = k0 + TcKeyOrder.KeyOfColumn(THd.Bc, r);
            uint dst = (uint)(r * THd.RowBytes + c * 16);
            if (j < kEnd)
            {
                int key = BlockInfo.KeyAt(p, seqInfo, gRow, j); // j itself unless keys are gathered
                long ko = blk.KOffset(p, seqInfo, p.KStrideB, p.KStrideL, p.KStrideH, key, hk);
                long vo = blk.KOffset(p, seqInfo, p.VStrideB, p.VStrideL, p.VStrideH, key, hk);
                if ((which & 1) != 0) Ptx.CpAsync16(kS + dst, kG + (ulong)(ko * 2 + c * 16), 16u);
                if ((which & 2) != 0) Ptx.CpAsync16(vS + dst, vG + (ulong)(vo * 2 + c * 16), 16u);
            }
            else
            {
                if ((which & 1) != 0) Ptx.CpAsync16(kS + dst, kG, 0u);
                if ((which & 2) != 0) Ptx.CpAsync16(vS + dst, vG, 0u);
            }
        }
    }

    /// <summary>
    /// One sequence of <see cref="LoadKv{THd}"/>'s contiguous copies: chunk <paramref name="c"/> of tile rows r, r + rs,
    /// … (rs a multiple of 8, so the keys step by rs / 4); rows whose key is at or past kEnd are zero-filled.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RowRun<THd>(in KernelArgs p, in BlockInfo blk, ulong kG, ulong vG, uint kS, uint vS, int k0, int kEnd,
        int hk, int r, int c, int rs, int which) where THd : struct, ITcHeadDim
    {
        int j = k0 + TcKeyOrder.KeyOfColumn(THd.Bc, r);
        long row = blk.RowK0 + j;
        ulong kA = kG + (ulong)((blk.Batch * p.KStrideB + row * p.KStrideL + hk * p.KStrideH) * 2 + c * 16);
        ulong vA = vG + (ulong)((blk.Batch * p.VStrideB + row * p.VStrideL + hk * p.VStrideH) * 2 + c * 16);
        // 32-bit steps (the caller checked the row strides): two registers fewer than 64-bit ones, which the 128-row
        // D = 128 kernel spilled and reloaded every tile.
        uint kStep = (uint)(rs / 4 * p.KStrideL * 2), vStep = (uint)(rs / 4 * p.VStrideL * 2);
        uint dst = (uint)(r * THd.RowBytes + c * 16);
        if (k0 + THd.Bc <= kEnd)
        {
            // Whole tile: no per-row bounds.
            for (int i = 0; i < THd.Bc / rs; i++)
            {
                if ((which & 1) != 0) Ptx.CpAsync16(kS + dst, kA, 16u);
                if ((which & 2) != 0) Ptx.CpAsync16(vS + dst, vA, 16u);
                kA += kStep;
                vA += vStep;
                dst += (uint)(rs * THd.RowBytes);
            }
            return;
        }
        for (int i = 0; i < THd.Bc / rs; i++)
        {
            bool ok = j < kEnd;
            if ((which & 1) != 0) Ptx.CpAsync16(kS + dst, ok ? kA : kG, ok ? 16u : 0u);
            if ((which & 2) != 0) Ptx.CpAsync16(vS + dst, ok ? vA : vG, ok ? 16u : 0u);
            kA += kStep;
            vA += vStep;
            dst += (uint)(rs * THd.RowBytes);
            j += rs / 4;
        }
    }

    /// <summary>
    /// cp.async of the bias rows [q0, q0 + Rows) × keys [k0, k0 + Bc) into shared memory (the caller checks that the
    /// tile lies inside the key range and that rows are 16-byte aligned); rows past the sequence copy its last row.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void LoadBiasTile<THd>(in KernelArgs p, in BlockInfo blk, ulong biasG, uint dst, int b, int h, int q0, int k0, int tid)
        where THd : struct, ITcHeadDim
    {
        int cpr = THd.Bc / 8, step = Threads / cpr, rows = 64 * THd.Mt, rb = TensorCoreForwardKernel.BiasRowBytes<THd>();
        int r0 = tid / cpr, c = tid - r0 * cpr;
        int last = blk.SeqQ - 1;
        long rowBase = MaskBias.BiasIndex(p, b, h, 0) + k0;
        if (q0 + rows <= blk.SeqQ)
        {
            // Every row inside the sequence: one base address, then constant steps (no clamping and no per-row address
            // arithmetic each tile).
            ulong a = biasG + (ulong)((rowBase + (long)(q0 + r0) * p.BiasStrideQ) * 2 + c * 16);
            ulong aStep = (ulong)((long)step * p.BiasStrideQ * 2);
            uint d = dst + (uint)(r0 * rb + c * 16);
            for (int i = 0; i < rows / step; i++)
            {
                Ptx.CpAsync16(d, a, 16u);
                a += aStep;
                d += (uint)(step * rb);
            }
            return;
        }
        for (int r = r0; r < rows; r += step)
        {
            int row = q0 + r < last ? q0 + r : last;
            Ptx.CpAsync16(dst + (uint)(r * rb + c * 16), biasG + (ulong)((rowBase + row * p.BiasStrideQ) * 2 + c * 16), 16u);
        }
    }
}
