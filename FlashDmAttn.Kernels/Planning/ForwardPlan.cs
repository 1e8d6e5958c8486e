using FlashDmAttn.Kernels.TensorCore;

namespace FlashDmAttn.Kernels.Planning;

/// <summary>Which kernel family runs a forward problem.</summary>
internal enum KernelFamily { TensorCore, Portable }

/// <summary>Element type of a problem's q/k/v/o and bias.</summary>
internal enum ElemKind { Float32, Float16, BFloat16 }

/// <summary>What the planner needs to know about a call's buffers besides the problem.</summary>
/// <param name="Elem">Element type.</param>
/// <param name="QkvAligned16">q, k and v start 16-byte aligned (cp.async moves 16-byte chunks).</param>
/// <param name="SeqInfoLength">Length of the call's seqInfo (cu_seqlens and block table; 0 for dense problems).</param>
internal readonly record struct BufferFacts(ElemKind Elem, bool QkvAligned16, int SeqInfoLength);

/// <summary>
/// Key gathering: a mask broadcast over queries becomes one ascending list of visible keys per (batch, mask head), so
/// the attention kernel walks w keys instead of Lk (Masking/KeyGatherKernel builds the lists). Table layout in the
/// key table: the call's seqInfo, then at <see cref="Offset"/> the <see cref="Rows"/> counts, then each row's SeqK-long
/// list of key indices, then each row's SeqK key ranks.
/// </summary>
/// <param name="Heads">Mask heads with a list of their own (1 when the mask is shared by all heads).</param>
/// <param name="BatchStride">Rows between batch entries (0 when the mask is shared by the batch).</param>
/// <param name="Rows">Lists in the table.</param>
/// <param name="Offset">Where the lists start in the key table.</param>
/// <param name="TableLength">Ints of the key table.</param>
/// <param name="GatherBias">The bias (broadcast over queries too) is copied into key-list order, (B, H, 1, SeqK).</param>
internal sealed record GatherPlan(int Heads, int BatchStride, int Rows, int Offset, long TableLength, bool GatherBias);

/// <summary>
/// A split-KV launch of the tensor-core kernel (<see cref="TcSplitKv"/>): each query block's key tiles in
/// <paramref name="Splits"/> ranges, every range's O and LSE into a work buffer of <paramref name="WorkFloats"/> floats,
/// then the combine kernel. <paramref name="Pack"/> &gt; 1: packed GQA, the kv head's <paramref name="Pack"/> query heads
/// (one query each) are the rows of one block, so each K/V byte is read once per block.
/// </summary>
internal readonly record struct TcKvSplit(int Splits, int Pack, long WorkFloats);

/// <summary>Tile shape and group size of the portable kernel.</summary>
internal readonly record struct PortableShape(int TileQ, int TileK, int GroupSize);

/// <summary>
/// A forward launch, decided once from the problem, the device and the options by <see cref="ForwardPlanner"/>: the
/// kernel, its specialization, grid, group, shared memory, the key-gather and stream-K decisions, and why. The launcher
/// executes it as it is.
/// </summary>
internal sealed record ForwardPlan
{
    public required KernelFamily Family { get; init; }

    /// <summary>The tensor-core kernel to run (family <see cref="KernelFamily.TensorCore"/>).</summary>
    public TcKernelSpec? TensorCore { get; init; }

    /// <summary>The portable kernel's tiles (family <see cref="KernelFamily.Portable"/>).</summary>
    public PortableShape? Portable { get; init; }

    public GatherPlan? Gather { get; init; }

    /// <summary>A stream-K launch's split, with the key tiles of one block.</summary>
    public TcSplitPlan? StreamK { get; init; }
    public int StreamKTiles { get; init; }

    /// <summary>Split-KV and/or packed GQA (tensor-core), with the combine kernel after the attention kernel.</summary>
    public TcKvSplit? KvSplit { get; init; }

    /// <summary>Grid in groups; zero when there is nothing to compute.</summary>
    public required (int X, int Y, int Z) Grid { get; init; }
    public required int GroupSize { get; init; }
    public required int SharedBytes { get; init; }

    /// <summary>Resident groups per SM the launch order was sized for (tensor-core).</summary>
    public int GroupsPerSm { get; init; }

    /// <summary>Why this kernel and shape, in words.</summary>
    public required string Reason { get; init; }

    /// <summary>One line for logs and the bench: kernel, specialization, launch shape, decisions, reason.</summary>
    public string Describe()
    {
        string kernel = Family == KernelFamily.TensorCore
            ? $"tensor-core {TensorCore}"
            : $"portable {Portable!.Value.TileQ}x{Portable.Value.TileK}";
        string gather = Gather is null ? "" : $", gathered keys ({Gather.Rows} lists{(Gather.GatherBias ? ", bias gathered" : "")})";
        string split = StreamK is { } s ? $", stream-K {s.Dp}+{s.Workers} groups x {s.PerWorker} tiles" : "";
        if (KvSplit is { } kv)
            split += $", split-KV {kv.Splits}{(kv.Pack > 1 ? $", GQA packed {kv.Pack} heads per block" : "")}";
        string occ = Family == KernelFamily.TensorCore ? $", {GroupsPerSm}/SM" : "";
        return $"{kernel}; grid {Grid.X}x{Grid.Y}x{Grid.Z} of {GroupSize}, {SharedBytes} B shared{occ}{gather}{split}; {Reason}";
    }
}
