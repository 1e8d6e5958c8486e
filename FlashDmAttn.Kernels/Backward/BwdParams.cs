using FlashDmAttn.Kernels.Forward;

namespace FlashDmAttn.Kernels.Backward;

/// <summary>How the bias gradient is formed (see <see cref="BwdParams"/>).</summary>
internal enum DBiasMode
{
    /// <summary>No bias: nothing to form.</summary>
    None = 0,
    /// <summary>A bias with a key dim: the key-block kernel writes dS per (b, h, row, key) into the fp32 scratch
    /// (B, H, DbRows, SeqK), summing over queries in the block when the bias is broadcast over them (DbRows = 1).</summary>
    Keys = 1,
    /// <summary>A bias broadcast over keys: it shifts every score of a row alike, which the softmax ignores (the forward
    /// adds it to the LSE only, and the LSE has no gradient input), so its gradient is exactly 0: the zeroed scratch
    /// (B, H, SeqQ) summed into the bias's shape.</summary>
    Rows = 2,
}

/// <summary>
/// What a backward call adds to its forward problem: the strides of dO and of the gradients, the operands the forward
/// applied by its row epilogue (mask or bias broadcast over keys), and the bias gradient's shape. Broadcast dims have
/// stride 0; strides are in elements.
/// </summary>
internal struct BwdLayout
{
    // dO (like o) and the gradients: dq like q, dk/dv like k/v (page strides when paged).
    public long DoStrideB, DoStrideL, DoStrideH;
    public long DqStrideB, DqStrideL, DqStrideH;
    public long DkStrideB, DkStrideL, DkStrideH;
    public long DvStrideB, DvStrideL, DvStrideH;

    // Operands broadcast over keys (one value per row), read at the row's key 0.
    public int HasRowMask, RowMaskElemBytes, RowMaskHeadDiv;
    public long RowMaskStrideB, RowMaskStrideH, RowMaskStrideQ;
    public int HasRowBias, RowBiasHeadDiv;
    public long RowBiasStrideB, RowBiasStrideH, RowBiasStrideQ;

    // The bias gradient: its shape (the bias's: DbB ∈ {1, B} (0: no bias), DbH ∈ {1, Hkv, H}, DbQ ∈ {1, SeqQ},
    // DbK ∈ {1, SeqK}) and strides.
    public int DbB, DbH, DbQ, DbK;
    public long DbStrideB, DbStrideH, DbStrideQ, DbStrideK;
}

/// <summary>A validated backward problem: the forward problem it differentiates and what the backward adds.</summary>
internal struct BwdParams
{
    public FwdParams Forward;
    public BwdLayout L;
}

/// <summary>
/// Everything a backward kernel reads besides its buffers: the forward's <see cref="KernelArgs"/> (with the plan's key
/// gathering and tile shape), the backward's <see cref="BwdLayout"/>, and the plan's bias-gradient mode.
/// </summary>
internal struct BwdArgs
{
    public KernelArgs F;
    public BwdLayout L;

    /// <summary><see cref="DBiasMode"/>, and the scratch rows of mode Keys (1 or SeqQ).</summary>
    public int DBias, DbRows;

    /// <summary>1: the tensor-core key-block kernel writes dS straight into the bias gradient (mode Keys, a bias with no
    /// broadcast dim, fixed lengths); no scratch, no broadcast sums.</summary>
    public int DbDirect;

    /// <summary>1: the tensor-core key-block kernel stores dk and dv itself (no GQA, no gathered keys): no scratch.</summary>
    public int KvDirect;

    /// <summary>
    /// Tiles of the dS scratch per (batch, head): query tiles × key tiles, both &gt; 0 when the tensor-core key-block
    /// kernel stores each tile's dS·slope (16-bit, 64 × 64) and the dq kernel reads it back (one product instead of the
    /// query-block kernel's three); 0 × 0 when the query-block kernel recomputes dS.
    /// </summary>
    public int DsQTiles, DsKTiles;

    /// <summary>With dS tiles: the first (batch, head) pair of this launch and how many it covers (the scratch holds
    /// their tiles); 0, 0 otherwise (every pair).</summary>
    public int DsPair0, DsPairs;

    public static BwdArgs From(in BwdParams p) => new() { F = KernelArgs.From(p.Forward), L = p.L };
}
