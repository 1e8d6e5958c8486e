namespace FlashDmAttn.Kernels.Forward;

/// <summary>
/// A validated forward problem as the public API describes it (the counterpart of FlashAttention's flash.h, without
/// launch decisions): sizes, element strides of q/k/v/o, mask and bias broadcast strides, score transform, LSE output,
/// variable lengths and paging. Broadcast dims have stride 0. The planner reads it; the launcher copies it into the
/// kernels' <see cref="KernelArgs"/> with the plan's decisions, and never changes it.
/// </summary>
internal struct FwdParams
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

    // Varlen: every sequence has exactly SeqQ query rows (the caller checked cu_q); dense problems ignore it.
    public int SeqQUniform;
}
