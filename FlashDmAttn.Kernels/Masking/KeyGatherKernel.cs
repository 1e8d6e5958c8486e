using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Launch;
using FlashDmAttn.Kernels.Planning;

namespace FlashDmAttn.Kernels.Masking;

/// <summary>
/// Lists, once per mask row, the visible keys of a mask that is broadcast over queries (shape (B|1, H|Hkv|1, 1, Lk)),
/// so the forward kernels walk only those keys instead of all Lk: with keep_window_size w of L keys visible the
/// work drops by L/w. Output in seqInfo at p.GatherOffset: GatherRows counts, then one SeqK-long slot of ascending
/// key indices per row, then per row the rank of every key (visible keys below it), so bounds map to slots in one load. One group per row; contiguous chunks per thread and a group exclusive scan
/// (ILGPU.Algorithms) keep the order.
/// </summary>
internal static class KeyGatherKernel
{
    public static void Run(ArrayView<byte> mask, ArrayView<int> info, KernelArgs p)
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
        long rank = p.GatherOffset + p.GatherRows + (long)(p.GatherRows + row) * n;
        int seen = before;
        for (int j = start; j < end; j++)
        {
            info[rank + j] = seen; // visible keys below j
            if (MaskBias.MaskVisible(p, mask, maskRow, j))
            {
                info[slot++] = j;
                seen++;
            }
        }
    }

    /// <summary>
    /// Builds the key table of a <see cref="GatherPlan"/> and sets <paramref name="p"/>'s gather fields from the plan: the
    /// call's <paramref name="seqInfo"/> (cu_seqlens, block table) copied into a scratch buffer of the accelerator,
    /// followed by the lists. From then on the lists are the mask: <paramref name="p"/> has no mask bytes to read.
    /// </summary>
    public static ArrayView<int> BuildTable(Accelerator accelerator, GatherPlan g, ref KernelArgs p, ArrayView<byte> mask, ArrayView<int> seqInfo,
        Caching.KernelDiskCache? disk)
    {
        p.GatherHeads = g.Heads;
        p.GatherBatchStride = g.BatchStride;
        p.GatherRows = g.Rows;
        p.GatherOffset = g.Offset;
        long prefixLength = g.Offset;
        long total = g.TableLength;
        var cache = KernelCache.For(accelerator);
        var table = cache.Scratch(checked((int)total));
        if (prefixLength > 0) seqInfo.CopyTo(table.SubView(0, prefixLength));
        var kernel = cache.GetOrAdd("key-gather",
            acc => Caching.CachedKernels.Launcher<Action<AcceleratorStream, KernelConfig, ArrayView<byte>, ArrayView<int>, KernelArgs>>(acc, disk, Run));
        int group = accelerator.AcceleratorType == AcceleratorType.CPU ? Math.Min(accelerator.MaxNumThreadsPerGroup, 16) : 256;
        kernel(accelerator.DefaultStream, new KernelConfig(p.GatherRows, group), mask, table, p);
        // From here on the lists are the mask: kernels read no mask bytes.
        p.GatherKeys = 1;
        p.HasMask = 0;
        return table;
    }

    /// <summary>The bias of (b, h) at slot n of its key list: a (B, H, 1, SeqK) table in key-slot order.</summary>
    public static void GatherBiasKernel<TElem>(ArrayView<TElem> bias, ArrayView<int> info, ArrayView<TElem> gathered, KernelArgs p)
        where TElem : unmanaged
    {
        long total = (long)p.Batch * p.Heads * p.SeqK;
        for (long e = Grid.GlobalIndex.X; e < total; e += (long)Grid.DimX * Group.DimX)
        {
            int n = (int)(e % p.SeqK);
            int bh = (int)(e / p.SeqK);
            int b = bh / p.Heads, h = bh - b * p.Heads;
            var blk = BlockInfo.Create(p, info, b);
            int row = blk.GatherRow(p, h);
            if (n < BlockInfo.KeySlots(p, info, row, 0))
                gathered[e] = bias[MaskBias.BiasIndex(p, b, h, 0) + BlockInfo.KeyAt(p, info, row, n)];
        }
    }

    /// <summary>
    /// For a bias broadcast over queries: copies it into key-slot order, (B, H, 1, SeqK), and points p at the copy,
    /// so kernels read the bias of consecutive slots from consecutive addresses.
    /// </summary>
    public static ArrayView<TElem> GatherBias<TElem>(Accelerator accelerator, ref KernelArgs p, ArrayView<TElem> bias, ArrayView<int> info,
        Caching.KernelDiskCache? disk)
        where TElem : unmanaged
    {
        long total = (long)p.Batch * p.Heads * p.SeqK;
        int elem = Interop.SizeOf<TElem>();
        var cache = KernelCache.For(accelerator);
        var gathered = cache.Scratch(checked((int)((total * elem + 3) / 4)), slot: 1).Cast<TElem>().SubView(0, total);
        var kernel = cache.GetOrAdd(("bias-gather", typeof(TElem)),
            acc => Caching.CachedKernels.Launcher<Action<AcceleratorStream, KernelConfig, ArrayView<TElem>, ArrayView<int>,
                ArrayView<TElem>, KernelArgs>>(acc, disk, GatherBiasKernel<TElem>));
        kernel(accelerator.DefaultStream, KernelCache.Linear(accelerator, total), bias, info, gathered, p);
        p.BiasStrideB = (long)p.Heads * p.SeqK;
        p.BiasStrideH = p.SeqK;
        p.BiasStrideQ = 0;
        p.BiasHeadDiv = 1;
        return gathered;
    }
}
