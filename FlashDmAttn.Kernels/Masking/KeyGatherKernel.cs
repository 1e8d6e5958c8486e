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
/// key indices per row, then per row the rank of every key (visible keys below it), so bounds map to slots in one load.
/// Two launches over chunks of <see cref="Chunk"/> keys, (row, chunk) per group, so a long row spreads over many SMs:
/// <see cref="Count"/> counts each chunk's visible keys; <see cref="List"/> starts each chunk at the count of the
/// chunks before it and walks it in coalesced passes, each placed by a group exclusive scan (ILGPU.Algorithms), which
/// keeps the order.
/// </summary>
internal static class KeyGatherKernel
{
    /// <summary>Keys per group: a thread's loads of a chunk wait out the memory latency one after another (a few per
    /// thread), and a 128K-key row still spreads over 128 groups.</summary>
    public const int Chunk = 1024;

    /// <summary>Visible keys of chunk Grid.IdxY of mask row Grid.IdxX into counts[row·chunks + chunk].</summary>
    public static void Count(ArrayView<byte> mask, ArrayView<int> counts, KernelArgs p)
    {
        int row = Grid.IdxX, c = Grid.IdxY, tid = Group.IdxX, nt = Group.DimX;
        int gb = row / p.GatherHeads, gh = row - gb * p.GatherHeads;
        long maskRow = gb * p.MaskStrideB + gh * p.MaskStrideH;
        int start = c * Chunk, end = start + Chunk < p.SeqK ? start + Chunk : p.SeqK;
        int visible = 0;
        for (int j = start + tid; j < end; j += nt)
            if (MaskBias.MaskVisible(p, mask, maskRow, j)) visible++;
        int before = GroupExtensions.ExclusiveScan<int, AddInt32>(visible);
        if (tid == nt - 1) counts[row * Grid.DimY + c] = before + visible;
    }

    /// <summary>Slots and ranks of chunk Grid.IdxY of mask row Grid.IdxX; the row's last chunk also writes its count.</summary>
    public static void List(ArrayView<byte> mask, ArrayView<int> info, ArrayView<int> counts, KernelArgs p)
    {
        int row = Grid.IdxX, c = Grid.IdxY, chunks = Grid.DimY, tid = Group.IdxX, nt = Group.DimX;
        int gb = row / p.GatherHeads, gh = row - gb * p.GatherHeads;
        long maskRow = gb * p.MaskStrideB + gh * p.MaskStrideH;
        int n = p.SeqK;
        // The visible keys of the chunks before this one: each thread sums some of their counts, one group scan adds up.
        int mine = 0;
        for (int u = tid; u < c; u += nt) mine += counts[row * chunks + u];
        int before = Group.Broadcast(GroupExtensions.ExclusiveScan<int, AddInt32>(mine) + mine, nt - 1);
        long slot = p.GatherOffset + p.GatherRows + (long)row * n;
        long rank = p.GatherOffset + p.GatherRows + (long)(p.GatherRows + row) * n;
        // The chunk in passes of nt keys (a warp reads consecutive mask bytes and writes consecutive ranks): a key's rank
        // is the visible keys before the pass plus its group exclusive scan (ILGPU.Algorithms), which keeps the order;
        // the pass's last thread carries the count on.
        int end = c * Chunk + Chunk < n ? c * Chunk + Chunk : n;
        for (int j0 = c * Chunk; j0 < end; j0 += nt)
        {
            int j = j0 + tid;
            int visible = j < end && MaskBias.MaskVisible(p, mask, maskRow, j) ? 1 : 0;
            int at = before + GroupExtensions.ExclusiveScan<int, AddInt32>(visible);
            if (j < end)
            {
                info[rank + j] = at; // visible keys below j
                if (visible != 0) info[slot + at] = j;
            }
            before = Group.Broadcast(at + visible, nt - 1);
        }
        if (c == chunks - 1 && tid == 0) info[p.GatherOffset + row] = before;
    }

    /// <summary>
    /// Builds the key table of a <see cref="GatherPlan"/> and sets <paramref name="p"/>'s gather fields from the plan: the
    /// call's <paramref name="seqInfo"/> (cu_seqlens, block table) copied into a scratch buffer of the accelerator,
    /// followed by the lists (and, past the table, the chunk counts). From then on the lists are the mask:
    /// <paramref name="p"/> has no mask bytes to read.
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
        int chunks = Math.Max(1, (p.SeqK + Chunk - 1) / Chunk);
        var cache = KernelCache.For(accelerator);
        var scratch = cache.Scratch(checked((int)(total + (long)g.Rows * chunks)));
        var table = scratch.SubView(0, total);
        var counts = scratch.SubView(total, (long)g.Rows * chunks);
        if (prefixLength > 0) seqInfo.CopyTo(table.SubView(0, prefixLength));
        var count = cache.GetOrAdd("key-gather-count",
            acc => Caching.CachedKernels.Launcher<Action<AcceleratorStream, KernelConfig, ArrayView<byte>, ArrayView<int>, KernelArgs>>(acc, disk, Count));
        var list = cache.GetOrAdd("key-gather-list",
            acc => Caching.CachedKernels.Launcher<Action<AcceleratorStream, KernelConfig, ArrayView<byte>, ArrayView<int>, ArrayView<int>, KernelArgs>>(acc, disk, List));
        int group = GroupSize(accelerator);
        var config = new KernelConfig(new Index3D(p.GatherRows, chunks, 1), new Index3D(group, 1, 1));
        if (chunks > 1) count(accelerator.DefaultStream, config, mask, counts, p); // one chunk starts at 0
        list(accelerator.DefaultStream, config, mask, table, counts, p);
        // From here on the lists are the mask: kernels read no mask bytes.
        p.GatherKeys = 1;
        p.HasMask = 0;
        return table;
    }

    /// <summary>Threads per group of the list and bias-gather kernels: 256 on a GPU; 16 on the CPU accelerator, where every
    /// group thread is an OS thread and group barriers cost the most.</summary>
    private static int GroupSize(Accelerator accelerator)
        => accelerator.AcceleratorType == AcceleratorType.CPU ? Math.Min(accelerator.MaxNumThreadsPerGroup, 16) : 256;

    /// <summary>
    /// The bias of (b, h) = Grid.IdxX at its key list's slots, one thread per slot from Grid.IdxY·(group size) on (grid y
    /// steps beyond): a (B, H, 1, SeqK) table in key-slot order. Only the visible keys' slots are written (a group past the
    /// row's count returns at once), so a top-w mask costs B·H·w copies, not B·H·SeqK, each a single latency chain.
    /// </summary>
    public static void GatherBiasKernel<TElem>(ArrayView<TElem> bias, ArrayView<int> info, ArrayView<TElem> gathered, KernelArgs p)
        where TElem : unmanaged
    {
        int bh = Grid.IdxX, b = bh / p.Heads, h = bh - b * p.Heads;
        var blk = BlockInfo.Create(p, info, b);
        int row = blk.GatherRow(p, h);
        int count = BlockInfo.KeySlots(p, info, row, 0);
        long src = MaskBias.BiasIndex(p, b, h, 0), dst = (long)bh * p.SeqK;
        for (int n = Grid.IdxY * Group.DimX + Group.IdxX; n < count; n += Grid.DimY * Group.DimX)
            gathered[dst + n] = bias[src + BlockInfo.KeyAt(p, info, row, n)];
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
        // Groups along y per (batch, head) row: enough for every key slot, but no more than about 8 groups an SM in
        // all. A row keeps its slots' count, not Lk: with a top-w mask over a long cache most groups of a grid sized
        // by Lk found nothing to copy and exited, and launching them was the kernel's time. Past the bound the
        // threads stride over the slots.
        int group = GroupSize(accelerator);
        long rowsBh = Math.Max(1L, (long)p.Batch * p.Heads);
        long perRow = Math.Max(1L, 8L * accelerator.NumMultiprocessors / rowsBh + 1);
        int ys = (int)Math.Clamp((p.SeqK + group - 1L) / group, 1, Math.Min(65535L, perRow));
        kernel(accelerator.DefaultStream, new KernelConfig(new Index3D(p.Batch * p.Heads, ys, 1), new Index3D(group, 1, 1)),
            bias, info, gathered, p);
        p.BiasStrideB = (long)p.Heads * p.SeqK;
        p.BiasStrideH = p.SeqK;
        p.BiasStrideQ = 0;
        p.BiasHeadDiv = 1;
        return gathered;
    }
}
