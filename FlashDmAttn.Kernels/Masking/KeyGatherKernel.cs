using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Launch;

namespace FlashDmAttn.Kernels.Masking;

/// <summary>
/// Lists, once per mask row, the visible keys of a mask that is broadcast over queries (shape (B|1, H|Hkv|1, 1, Lk)),
/// so the forward kernels walk only those keys instead of all Lk: with keep_window_size w of L keys visible the
/// work drops by L/w. Output in seqInfo at p.GatherOffset: GatherRows counts, then one SeqK-long slot of ascending
/// key indices per row. One group per row; contiguous chunks per thread and a group exclusive scan
/// (ILGPU.Algorithms) keep the order.
/// </summary>
public static class KeyGatherKernel
{
    public static void Run(ArrayView<byte> mask, ArrayView<int> info, FwdParams p)
    {
        int tid = Group.IdxX, nt = Group.DimX;
        int row = Grid.IdxX;
        int gb = row / p.GatherHeads, gh = row - gb * p.GatherHeads;
        long maskRow = gb * p.MaskStrideB + gh * p.MaskStrideH;
        int n = p.SeqK;
        int chunk = (n + nt - 1) / nt, start = tid * chunk, end = start + chunk < n ? start + chunk : n;
        int visible = 0;
        for (int j = start; j < end; j++)
            if (MaskBias.MaskVisible(p, mask, maskRow, j)) visible++;
        int before = GroupExtensions.ExclusiveScan<int, AddInt32>(visible);
        if (tid == nt - 1) info[p.GatherOffset + row] = before + visible;
        long slot = p.GatherOffset + p.GatherRows + (long)row * n + before;
        for (int j = start; j < end; j++)
            if (MaskBias.MaskVisible(p, mask, maskRow, j)) info[slot++] = j;
    }

    /// <summary>
    /// Fills in p's gather fields and returns the key table: <paramref name="seqInfo"/> (cu_seqlens, block table) copied
    /// into a scratch buffer of the accelerator, followed by the lists. The mask must be broadcast over queries.
    /// </summary>
    public static ArrayView<int> Prepare(Accelerator accelerator, ref FwdParams p, ArrayView<byte> mask, ArrayView<int> seqInfo)
    {
        p.GatherHeads = p.MaskStrideH == 0 ? 1 : p.Heads / p.MaskHeadDiv;
        int maskBatch = p.MaskStrideB == 0 ? 1 : p.Batch;
        p.GatherBatchStride = p.MaskStrideB == 0 ? 0 : p.GatherHeads;
        p.GatherRows = maskBatch * p.GatherHeads;
        long prefixLength = seqInfo.IsValid ? seqInfo.Length : 0;
        p.GatherOffset = checked((int)prefixLength);
        long total = prefixLength + p.GatherRows + (long)p.GatherRows * p.SeqK;
        var cache = KernelCache.For(accelerator);
        var table = cache.Scratch(checked((int)total));
        if (prefixLength > 0) seqInfo.CopyTo(table.SubView(0, prefixLength));
        p.GatherKeys = 1;
        var kernel = cache.GetOrAdd("key-gather",
            acc => acc.LoadStreamKernel<ArrayView<byte>, ArrayView<int>, FwdParams>(Run));
        int group = accelerator.AcceleratorType == AcceleratorType.CPU ? Math.Min(accelerator.MaxNumThreadsPerGroup, 16) : 256;
        kernel(new KernelConfig(p.GatherRows, group), mask, table, p);
        return table;
    }
}
