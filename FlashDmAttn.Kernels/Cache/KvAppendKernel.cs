using ILGPU;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Launch;

namespace FlashDmAttn.Kernels.Cache;

/// <summary>
/// One append of new key/value rows to a paged K/V cache: the geometry and element strides the kernel walks.
/// Row i of sequence b's new keys lands at cache position len_b − NewRows + i, where len_b (the sequence's length
/// after the append) is read from the varlen sequence table's cu_k, so the appended rows are exactly the last NewRows
/// keys that the attention of the same call sees.
/// </summary>
internal struct KvAppendArgs
{
    public int Batch, NewRows, KvHeads, HeadDim;
    public int PageSize, MaxPages;
    // Where cu_k (Batch + 1 ints) and the block table (Batch × MaxPages ints) start in the sequence table.
    public int CuKOffset, TableOffset;
    // Caches (num_blocks, page_size, kv_heads, head_dim): strides of block, row in block, head.
    public long KCacheStrideP, KCacheStrideL, KCacheStrideH;
    public long VCacheStrideP, VCacheStrideL, VCacheStrideH;
    // New rows (batch, new_rows, kv_heads, head_dim): strides of batch, row, head.
    public long KNewStrideB, KNewStrideL, KNewStrideH;
    public long VNewStrideB, VNewStrideL, VNewStrideH;
}

/// <summary>
/// Copies new key and value rows into a paged cache before attention reads it (the cache update of
/// flash_attn_with_kvcache). One thread per element of (batch, new row, kv head, head dim), striding by the grid's
/// size; it writes exactly the appended rows and reads nothing else of the cache. A pure copy: the element type only
/// gives the width (fp32 as float, fp16 and bf16 as ushort).
/// </summary>
internal static class KvAppendKernel
{
    public static void Run<TElem>(ArrayView<TElem> keyCache, ArrayView<TElem> valueCache, ArrayView<TElem> keyNew,
        ArrayView<TElem> valueNew, ArrayView<int> seqInfo, KvAppendArgs a)
        where TElem : unmanaged
    {
        long total = (long)a.Batch * a.NewRows * a.KvHeads * a.HeadDim;
        for (long e = Grid.GlobalIndex.X; e < total; e += (long)Grid.DimX * Group.DimX)
        {
            int x = (int)(e % a.HeadDim);
            long row = e / a.HeadDim;
            int hk = (int)(row % a.KvHeads);
            long bi = row / a.KvHeads;
            int i = (int)(bi % a.NewRows), b = (int)(bi / a.NewRows);
            // The new rows are the last NewRows of the sequence's length after the append.
            int len = seqInfo[a.CuKOffset + b + 1] - seqInfo[a.CuKOffset + b];
            int pos = len - a.NewRows + i;
            int page = seqInfo[a.TableOffset + b * a.MaxPages + pos / a.PageSize];
            long r = pos % a.PageSize;
            keyCache[page * a.KCacheStrideP + r * a.KCacheStrideL + hk * a.KCacheStrideH + x] =
                keyNew[b * a.KNewStrideB + (long)i * a.KNewStrideL + hk * a.KNewStrideH + x];
            valueCache[page * a.VCacheStrideP + r * a.VCacheStrideL + hk * a.VCacheStrideH + x] =
                valueNew[b * a.VNewStrideB + (long)i * a.VNewStrideL + hk * a.VNewStrideH + x];
        }
    }

    /// <summary>
    /// Enqueues the append on the default stream, ahead of the attention launches of the same call. The arguments must
    /// be validated: every written position inside its sequence's pages, every page inside the caches.
    /// </summary>
    public static void Launch<TElem>(Accelerator accelerator, in KvAppendArgs a, ArrayView<TElem> keyCache, ArrayView<TElem> valueCache,
        ArrayView<TElem> keyNew, ArrayView<TElem> valueNew, ArrayView<int> seqInfo, Caching.KernelDiskCache? disk)
        where TElem : unmanaged
    {
        long total = (long)a.Batch * a.NewRows * a.KvHeads * a.HeadDim;
        if (total == 0) return;
        var kernel = KernelCache.For(accelerator).GetOrAdd(("kv-append", typeof(TElem)),
            acc => Caching.CachedKernels.Launcher<Action<AcceleratorStream, KernelConfig, ArrayView<TElem>, ArrayView<TElem>,
                ArrayView<TElem>, ArrayView<TElem>, ArrayView<int>, KvAppendArgs>>(acc, disk, Run<TElem>));
        kernel(accelerator.DefaultStream, KernelCache.Linear(accelerator, total), keyCache, valueCache, keyNew, valueNew, seqInfo, a);
    }
}
