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
    /// <summary>A bias broadcast over keys: the query-block kernel sums dS over each row's keys into (B, H, SeqQ).</summary>
    Rows = 2,
}

/// <summary>
/// A validated backward problem: the forward problem it differentiates (<see cref="Forward"/>: sizes, q/k/v/o strides,
/// mask, bias, score transform, LSE layout, varlen and paging) plus the strides of dO and of the gradients, the
/// operands the forward applied by its row epilogue (mask or bias broadcast over keys), and the bias gradient's shape.
/// </summary>
internal struct BwdParams
{
    public FwdParams Forward;

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

    // The bias gradient: its shape (the bias's: DbB ∈ {1, B}, DbH ∈ {1, Hkv, H}, DbQ ∈ {1, SeqQ}, DbK ∈ {1, SeqK}) and strides.
    public int DbB, DbH, DbQ, DbK;
    public long DbStrideB, DbStrideH, DbStrideQ, DbStrideK;
}

/// <summary>
/// Everything a backward kernel reads besides its buffers: the forward's <see cref="KernelArgs"/> (with the plan's key
/// gathering and tile shape), the backward problem's strides and row operands, and the plan's bias-gradient mode.
/// </summary>
internal struct BwdArgs
{
    public KernelArgs F;
    public long DoStrideB, DoStrideL, DoStrideH;
    public long DqStrideB, DqStrideL, DqStrideH;
    public long DkStrideB, DkStrideL, DkStrideH;
    public long DvStrideB, DvStrideL, DvStrideH;
    public int HasRowMask, RowMaskElemBytes, RowMaskHeadDiv;
    public long RowMaskStrideB, RowMaskStrideH, RowMaskStrideQ;
    public int HasRowBias, RowBiasHeadDiv;
    public long RowBiasStrideB, RowBiasStrideH, RowBiasStrideQ;
    public int DbB, DbH, DbQ, DbK;
    public long DbStrideB, DbStrideH, DbStrideQ, DbStrideK;

    /// <summary><see cref="DBiasMode"/>, and the scratch rows of mode Keys (1 or SeqQ).</summary>
    public int DBias, DbRows;

    public static BwdArgs From(in BwdParams p) => new()
    {
        F = KernelArgs.From(p.Forward),
        DoStrideB = p.DoStrideB, DoStrideL = p.DoStrideL, DoStrideH = p.DoStrideH,
        DqStrideB = p.DqStrideB, DqStrideL = p.DqStrideL, DqStrideH = p.DqStrideH,
        DkStrideB = p.DkStrideB, DkStrideL = p.DkStrideL, DkStrideH = p.DkStrideH,
        DvStrideB = p.DvStrideB, DvStrideL = p.DvStrideL, DvStrideH = p.DvStrideH,
        HasRowMask = p.HasRowMask, RowMaskElemBytes = p.RowMaskElemBytes, RowMaskHeadDiv = p.RowMaskHeadDiv,
        RowMaskStrideB = p.RowMaskStrideB, RowMaskStrideH = p.RowMaskStrideH, RowMaskStrideQ = p.RowMaskStrideQ,
        HasRowBias = p.HasRowBias, RowBiasHeadDiv = p.RowBiasHeadDiv,
        RowBiasStrideB = p.RowBiasStrideB, RowBiasStrideH = p.RowBiasStrideH, RowBiasStrideQ = p.RowBiasStrideQ,
        DbB = p.DbB, DbH = p.DbH, DbQ = p.DbQ, DbK = p.DbK,
        DbStrideB = p.DbStrideB, DbStrideH = p.DbStrideH, DbStrideQ = p.DbStrideQ, DbStrideK = p.DbStrideK,
    };
}
