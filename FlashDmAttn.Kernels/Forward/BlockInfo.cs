using ILGPU;

namespace FlashDmAttn.Kernels.Forward;

/// <summary>
/// Where one batch entry's rows live (the counterpart of FlashAttention's block_info.h):
/// its lengths, the row offsets of varlen packing and the page lookup of a paged K/V cache.
/// </summary>
internal readonly struct BlockInfo
{
    public readonly int Batch, SeqQ, SeqK, RowQ0, RowK0;

    private BlockInfo(int batch, int seqQ, int seqK, int rowQ0, int rowK0)
    {
        Batch = batch; SeqQ = seqQ; SeqK = seqK; RowQ0 = rowQ0; RowK0 = rowK0;
    }

    public static BlockInfo Create(in KernelArgs p, ArrayView<int> seqInfo, int b)
    {
        if (p.Varlen == 0)
            return new BlockInfo(b, p.SeqQ, p.SeqK, 0, 0);
        int cuK = p.Batch + 1;
        int q0 = seqInfo[b], q1 = seqInfo[b + 1];
        // Packed GQA (KernelArgs.QPack): every sequence's queries become QPack times as many rows (its group's heads).
        if (p.QPack > 1) { q0 *= p.QPack; q1 *= p.QPack; }
        int k0 = seqInfo[cuK + b], k1 = seqInfo[cuK + b + 1];
        // Paged K/V rows are found through the block table, not through cu_k.
        return new BlockInfo(b, q1 - q0, k1 - k0, q0, p.Paged != 0 ? 0 : k0);
    }

    /// <summary>Element offset of query row i (head h) in q; the same layout rule serves the output.</summary>
    public long QOffset(long strideB, long strideL, long strideH, int i, int h)
        => Batch * strideB + (long)(RowQ0 + i) * strideL + h * strideH;

    /// <summary>Element offset of key row j (kv head hk) in k or v, through the block table when paged.</summary>
    public long KOffset(in KernelArgs p, ArrayView<int> seqInfo, long strideB, long strideL, long strideH, int j, int hk)
    {
        if (p.Paged != 0)
        {
            int page = seqInfo[2 * (p.Batch + 1) + Batch * p.MaxPages + j / p.PageSize];
            return page * strideB + (long)(j % p.PageSize) * strideL + hk * strideH;
        }
        return Batch * strideB + (long)(RowK0 + j) * strideL + hk * strideH;
    }

    /// <summary>The gathered-key list of (this batch, head h): its mask row (0 when keys are not gathered).</summary>
    public int GatherRow(in KernelArgs p, int h)
        => p.GatherKeys == 0 ? 0 : Batch * p.GatherBatchStride + (p.GatherHeads == 1 ? 0 : h / p.MaskHeadDiv);

    /// <summary>How many key slots to walk: the gathered count, or <paramref name="keyEnd"/> when keys are not gathered.</summary>
    public static int KeySlots(in KernelArgs p, ArrayView<int> seqInfo, int gatherRow, int keyEnd)
        => p.GatherKeys == 0 ? keyEnd : seqInfo[p.GatherOffset + gatherRow];

    /// <summary>The key index of slot n (n itself when keys are not gathered; ascending in n either way).</summary>
    public static int KeyAt(in KernelArgs p, ArrayView<int> seqInfo, int gatherRow, int n)
        => p.GatherKeys == 0 ? n : seqInfo[p.GatherOffset + p.GatherRows + (long)gatherRow * p.SeqK + n];

    /// <summary>How many of the first <paramref name="slots"/> key slots hold a key below <paramref name="bound"/>.</summary>
    public static int SlotsBelow(in KernelArgs p, ArrayView<int> seqInfo, int gatherRow, int slots, int bound)
    {
        int below = bound;
        if (p.GatherKeys != 0)
            below = bound >= p.SeqK ? seqInfo[p.GatherOffset + gatherRow]
                : seqInfo[p.GatherOffset + p.GatherRows + (long)(p.GatherRows + gatherRow) * p.SeqK + (bound < 0 ? 0 : bound)];
        return below < slots ? below : slots;
    }

    /// <summary>Last key (exclusive) that query rows below <paramref name="qEnd"/> can see under the causal band.</summary>
    public int KeyEnd(in KernelArgs p, int qEnd)
    {
        if (p.Causal == 0) return SeqK;
        int end = qEnd + SeqK - SeqQ; // bottom-right aligned
        return end < 0 ? 0 : (end > SeqK ? SeqK : end);
    }
}
