namespace FlashDmAttn.Kernels.Forward;

/// <summary>
/// Everything a forward kernel reads besides its buffers: the problem (<see cref="FwdParams"/>, copied field by field)
/// and the plan's launch decisions (key gathering, portable tile shape, stream-K split). All strides are in elements;
/// broadcast dims have stride 0. Built by the launcher from a plan (<see cref="From"/>); kernels only read it.
/// </summary>
internal struct KernelArgs
{
    // Problem size.
    public int Batch, Heads, KvHeads, HeadGroup, HeadDim;
    public int SeqQ, SeqK;            // dense lengths (for varlen: the maxima)

    // q/k/v/o strides: batch (or page for paged K/V), row, head.
    public long QStrideB, QStrideL, QStrideH;
    public long KStrideB, KStrideL, KStrideH;
    public long VStrideB, VStrideL, VStrideH;
    public long OStrideB, OStrideL, OStrideH;

    // Mask: raw bytes, MaskElemBytes per element (1: byte/bool, 2: fp16/bf16, 4: fp32); nonzero magnitude = visible.
    public int HasMask, MaskElemBytes, MaskHeadDiv;
    public long MaskStrideB, MaskStrideH, MaskStrideQ;

    // Bias in the input dtype.
    public int HasBias, BiasHeadDiv;
    public long BiasStrideB, BiasStrideH, BiasStrideQ;

    // Score transform.
    public float Scale, Softcap;      // Softcap == 0: off
    public int Causal;

    // Log-sum-exp output (fp32), indexed b*LseStrideB + h*LseStrideH + (row offset of the batch + i).
    public int WriteLse;
    public long LseStrideB, LseStrideH;

    // Variable length and paging: seqInfo = [cu_q (B+1) | cu_k (B+1) | block table (B*MaxPages)].
    public int Varlen, Paged, PageSize, MaxPages;

    // Key gathering, for masks broadcast over queries (one visible-key set per (batch, mask head)): seqInfo holds at
    // GatherOffset the count of visible keys of each of the GatherRows mask rows, then each row's SeqK-long slot of
    // ascending key indices, then each row's SeqK key ranks. Kernels then walk only the visible keys (Masking/KeyGatherKernel builds the lists).
    public int GatherKeys, GatherOffset, GatherRows, GatherBatchStride, GatherHeads;

    // Tile shape of the portable kernel.
    public int TileQ, TileK;

    // Stream-K launches of the tensor-core kernel (TensorCore/StreamK/TcStreamK): the whole blocks before the workers, the key
    // tiles of a block, the tiles each worker walks.
    public int SplitDp, SplitTiles, SplitPerWorker;

    // Split-KV launches of the tensor-core kernel (TensorCore/Parts/TcSplitKv): the key tiles of each query block are cut
    // into KvSplits ranges, one group each (grid y = query blocks × KvSplits); with Partial set the kernel writes each
    // range's normalised O and LSE (fp32) into the work buffer passed as its lse view, and TcSplitKv's combine kernel
    // merges them into O and LSE. QPack > 1: packed GQA, each kv head's QPack query heads of QPackRows queries each
    // are the rows of one block (row R: query R % QPackRows of head h·QPack + R / QPackRows; TcLoads.LoadQ), with
    // heads, rows and the causal flag in the kernel's coordinates (ForwardLauncher.SplitArgs).
    public int KvSplits, Partial, QPack, QPackRows;
    /// <summary>The problem's fields; the launch fields start at zero (no gathering, no split).</summary>
    public static KernelArgs From(in FwdParams p) => new()
    {
        Batch = p.Batch,
        Heads = p.Heads,
        KvHeads = p.KvHeads,
        HeadGroup = p.HeadGroup,
        HeadDim = p.HeadDim,
        SeqQ = p.SeqQ,
        SeqK = p.SeqK,
        QStrideB = p.QStrideB,
        QStrideL = p.QStrideL,
        QStrideH = p.QStrideH,
        KStrideB = p.KStrideB,
        KStrideL = p.KStrideL,
        KStrideH = p.KStrideH,
        VStrideB = p.VStrideB,
        VStrideL = p.VStrideL,
        VStrideH = p.VStrideH,
        OStrideB = p.OStrideB,
        OStrideL = p.OStrideL,
        OStrideH = p.OStrideH,
        HasMask = p.HasMask,
        MaskElemBytes = p.MaskElemBytes,
        MaskHeadDiv = p.MaskHeadDiv,
        MaskStrideB = p.MaskStrideB,
        MaskStrideH = p.MaskStrideH,
        MaskStrideQ = p.MaskStrideQ,
        HasBias = p.HasBias,
        BiasHeadDiv = p.BiasHeadDiv,
        BiasStrideB = p.BiasStrideB,
        BiasStrideH = p.BiasStrideH,
        BiasStrideQ = p.BiasStrideQ,
        Scale = p.Scale,
        Softcap = p.Softcap,
        Causal = p.Causal,
        WriteLse = p.WriteLse,
        LseStrideB = p.LseStrideB,
        LseStrideH = p.LseStrideH,
        Varlen = p.Varlen,
        Paged = p.Paged,
        PageSize = p.PageSize,
        MaxPages = p.MaxPages,
    };
}
