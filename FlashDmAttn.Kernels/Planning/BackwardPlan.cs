using ILGPU.Runtime;
using FlashDmAttn.Kernels.Backward;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.TensorCore;

namespace FlashDmAttn.Kernels.Planning;

/// <summary>
/// A backward launch, decided by <see cref="BackwardPlanner"/>: the portable kernels' tiles and group, the grids of the
/// query-block (dq) and key-block (dk, dv) kernels, key gathering, where the bias gradient is formed, the fp32 scratch
/// it needs, and why.
/// </summary>
internal sealed record BackwardPlan
{
    public required PortableShape Shape { get; init; }
    public GatherPlan? Gather { get; init; }

    /// <summary>Grids in groups of (query tiles | key tiles, batch·heads along y then z); zero when there is nothing to do.</summary>
    public required (int X, int Y, int Z) QueryGrid { get; init; }
    public required (int X, int Y, int Z) KeyGrid { get; init; }
    public required int QuerySharedBytes { get; init; }
    public required int KeySharedBytes { get; init; }

    public required DBiasMode DBias { get; init; }

    /// <summary>The bias-gradient scratch (B, H, rows, cols) in fp32 (0 × 0 without a bias).</summary>
    public int DbRows { get; init; }
    public int DbCols { get; init; }

    /// <summary>Elements of the per-query-head dk and dv scratch, (B, SeqK, H, D) each.</summary>
    public required long KeyScratch { get; init; }

    public required string Reason { get; init; }

    public string Describe()
    {
        string gather = Gather is null ? "" : $", gathered keys ({Gather.Rows} lists)";
        string db = DBias switch
        {
            DBiasMode.Keys => $", dbias from key blocks ({DbRows} x {DbCols} per head)",
            DBiasMode.Rows => ", dbias 0 (a bias broadcast over keys shifts a row's scores alike: softmax ignores it)",
            _ => "",
        };
        return $"portable backward {Shape.TileQ}x{Shape.TileK}; dq grid {QueryGrid.X}x{QueryGrid.Y}x{QueryGrid.Z}, " +
               $"dk/dv grid {KeyGrid.X}x{KeyGrid.Y}x{KeyGrid.Z} of {Shape.GroupSize}, {QuerySharedBytes}/{KeySharedBytes} B shared{gather}{db}; {Reason}";
    }
}

/// <summary>
/// Turns a validated backward problem into a <see cref="BackwardPlan"/>, a pure function of its arguments. Every
/// problem takes the portable backward today (deterministic by construction: no atomics).
/// </summary>
internal static class BackwardPlanner
{
    public static BackwardPlan Plan(in BwdParams p, BufferFacts facts, DeviceInfo device)
    {
        var f = p.Forward;
        var gather = ForwardPlanner.PlanGather(f, facts.SeqInfoLength);
        var shape = ShapeFor(device, f.HeadDim, Math.Max(f.SeqQ, f.SeqK));
        long pairs = (long)f.Batch * f.Heads;
        int gridY = (int)Math.Min(pairs, TcBlockOrder.MaxGridYz), gridZ = gridY == 0 ? 0 : (int)((pairs + gridY - 1) / gridY);
        int qx = (f.SeqQ + shape.TileQ - 1) / shape.TileQ, kx = (f.SeqK + shape.TileK - 1) / shape.TileK;
        var mode = ModeOf(p);
        // Without keys the query-block kernel still writes dq = 0; without queries the key blocks' zeros come from the
        // cleared scratch.
        return new BackwardPlan
        {
            Shape = shape,
            Gather = gather,
            QueryGrid = gridY == 0 || qx == 0 ? (0, 0, 0) : (qx, gridY, gridZ),
            KeyGrid = gridY == 0 || qx == 0 || kx == 0 ? (0, 0, 0) : (kx, gridY, gridZ),
            QuerySharedBytes = PortableBackwardKernels.QueryBlockFloats(shape.TileQ, shape.TileK, f.HeadDim) * sizeof(float),
            KeySharedBytes = PortableBackwardKernels.KeyBlockFloats(shape.TileQ, shape.TileK, f.HeadDim) * sizeof(float),
            DBias = mode,
            DbRows = DbRows(p, mode),
            DbCols = mode switch { DBiasMode.Keys => f.SeqK, DBiasMode.Rows => 1, _ => 0 },
            KeyScratch = KeyScratchOf(f),
            Reason = "the backward has a portable kernel only (every accelerator, dtype and head dim)",
        };
    }

    private static DBiasMode ModeOf(in BwdParams p)
        => p.L.DbB == 0 ? DBiasMode.None : p.L.DbK == 1 && p.Forward.SeqK != 1 ? DBiasMode.Rows : DBiasMode.Keys;

    private static int DbRows(in BwdParams p, DBiasMode mode)
        => mode switch { DBiasMode.Keys => p.L.DbQ == 1 ? 1 : p.Forward.SeqQ, DBiasMode.Rows => p.Forward.SeqQ, _ => 0 };

    private static long KeyScratchOf(in FwdParams f) => (long)f.Batch * f.SeqK * f.Heads * f.HeadDim;

    /// <summary>Floats of fp32 scratch a plan of this problem allocates (dk and dv per query head, the bias gradient
    /// before its broadcast sums, D in the LSE's layout of <paramref name="lseLength"/> floats); needs only the shapes.</summary>
    public static long ScratchFloats(in BwdParams p, long lseLength)
    {
        var f = p.Forward;
        var mode = ModeOf(p);
        long db = mode == DBiasMode.None ? 0 : (long)f.Batch * f.Heads * DbRows(p, mode) * (mode == DBiasMode.Keys ? f.SeqK : 1);
        return 2 * KeyScratchOf(f) + db + lseLength;
    }

    /// <summary>Square tiles of at most 32 rows whose larger kernel fits the shared-memory budget, no longer than the
    /// sequences; the forward's group sizes.</summary>
    public static PortableShape ShapeFor(DeviceInfo device, int headDim, int maxSeq)
    {
        int budget = Math.Min(ForwardPlanner.PortableSharedBudget, device.MaxSharedPerGroup);
        int tile = 32;
        while (tile > 4 && Math.Max(PortableBackwardKernels.QueryBlockFloats(tile, tile, headDim),
                   PortableBackwardKernels.KeyBlockFloats(tile, tile, headDim)) * sizeof(float) > budget)
            tile /= 2;
        while (tile > 4 && tile / 2 >= maxSeq)
            tile /= 2;
        int group = device.Type == AcceleratorType.CPU ? Math.Min(device.MaxThreadsPerGroup, 16) : 128;
        return new PortableShape(tile, tile, group);
    }
}
