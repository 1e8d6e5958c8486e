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
    /// <summary>The portable kernels' tiles and group (used when <see cref="TensorCore"/> is null).</summary>
    public required PortableShape Shape { get; init; }

    /// <summary>The tensor-core backward's specialization (<see cref="TcBackwardKernels"/>), or null for the portable kernels.</summary>
    public TcKernelSpec? TensorCore { get; init; }

    /// <summary>Threads per group of the kernels the plan launches.</summary>
    public int GroupSize => TensorCore is null ? Shape.GroupSize : TcBackwardKernels.Threads;
    public GatherPlan? Gather { get; init; }

    /// <summary>Grids in groups; zero when there is nothing to do. The portable kernels': (query tiles | key tiles,
    /// batch·heads along y then z). The tensor-core kernels': (pairs of a chunk, tile levels, chunks) of
    /// <see cref="TcBlockOrder.Grid3"/>, the levels walked longest first (the last query tiles, the first key tiles: with
    /// a causal band they see the most keys or queries), over chunks of <see cref="QueryChunk"/> or
    /// <see cref="KeyChunk"/> (batch, head) pairs.</summary>
    public required (int X, int Y, int Z) QueryGrid { get; init; }
    public required (int X, int Y, int Z) KeyGrid { get; init; }

    /// <summary>Tensor-core kernels: (batch, head) pairs per chunk of the grids (<see cref="TcBlockOrder.ChunkFor"/>);
    /// the launcher lays out each launch of <see cref="DsPairs"/> pairs with them.</summary>
    public int QueryChunk { get; init; }
    public int KeyChunk { get; init; }
    public required int QuerySharedBytes { get; init; }
    public required int KeySharedBytes { get; init; }

    public required DBiasMode DBias { get; init; }

    /// <summary>The tensor-core key-block kernel writes dS straight into the bias gradient: a bias with a key dim and no
    /// broadcast dim, fixed lengths. Then there is no scratch and no broadcast sum.</summary>
    public bool DbDirect { get; init; }

    /// <summary>The tensor-core key-block kernel stores dk and dv in the input dtype (one query head per kv head): no
    /// fp32 scratch, no head sums. With gathered keys it stores the listed keys' rows (<see cref="KvZero"/>).</summary>
    public bool KvDirect { get; init; }

    /// <summary>dk and dv are stored directly for gathered keys: the rows of keys in no list are zeroed before the key
    /// blocks run (<see cref="BackwardReduce.ZeroKeys{TElem, TCodec}"/>).</summary>
    public bool KvZero { get; init; }

    /// <summary>The tensor-core key-block kernel stores dS·slope per visible 64 × 64 tile into a 16-bit scratch of
    /// <see cref="DsQTiles"/> × <see cref="DsKTiles"/> tiles per (batch, head), and the dq kernel
    /// (<see cref="TcBackwardKernels.QueryGrad{TE, THd, TF}"/>) runs after it with one product per tile, in place of the
    /// query-block kernel's three (S and dP recomputed).</summary>
    public bool DsTiles { get; init; }
    public int DsQTiles { get; init; }
    public int DsKTiles { get; init; }

    /// <summary>(Batch, head) pairs per launch of the two kernels: the dS scratch holds this many pairs' tiles, and the
    /// launcher runs key blocks then dq for each group of pairs in turn.</summary>
    public int DsPairs { get; init; }

    /// <summary>Bytes of the dS scratch (0 without it).</summary>
    public long DsBytes { get; init; }

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
            DBiasMode.Keys when DbDirect => ", dbias written by the key blocks",
            DBiasMode.Keys => $", dbias from key blocks ({DbRows} x {DbCols} per head)",
            DBiasMode.Rows => ", dbias 0 (a bias broadcast over keys shifts a row's scores alike: softmax ignores it)",
            _ => "",
        };
        string kernels = TensorCore is { } tc
            ? $"tensor-core backward {tc} 64x64{(KvDirect ? ", dk/dv stored by the key blocks" : "")}{(KvZero ? " (unlisted keys zeroed first)" : "")}" +
              (DsTiles ? $", dq from {DsQTiles}x{DsKTiles} dS tiles per head, {DsPairs} heads a launch ({DsBytes >> 20} MiB)" : ", dq recomputing dS")
            : $"portable backward {Shape.TileQ}x{Shape.TileK}";
        return $"{kernels}; dq grid {QueryGrid.X}x{QueryGrid.Y}x{QueryGrid.Z}, " +
               $"dk/dv grid {KeyGrid.X}x{KeyGrid.Y}x{KeyGrid.Z} of {GroupSize}, {QuerySharedBytes}/{KeySharedBytes} B shared{gather}{db}; {Reason}";
    }
}

/// <summary>
/// Turns a validated backward problem into a <see cref="BackwardPlan"/>, a pure function of its arguments: the
/// tensor-core backward where it covers the problem on the device (bf16/fp16, D ≤ 128, 16-byte aligned rows), else
/// the portable one, with the reason. Both are deterministic by construction (no atomics).
/// </summary>
internal static class BackwardPlanner
{
    /// <param name="keySlots">With gathered keys, the most keys any list holds (known once the lists are built; the
    /// dS tiles' key dim is sized by it); −1: not known, Lk.</param>
    public static BackwardPlan Plan(in BwdParams p, BufferFacts facts, DeviceInfo device, LaunchOptions? options = null, int keySlots = -1)
    {
        var f = p.Forward;
        var gather = ForwardPlanner.PlanGather(f, facts.SeqInfoLength);
        var shape = ShapeFor(device, f.HeadDim, Math.Max(f.SeqQ, f.SeqK));
        string? refusal = TensorCoreRefusal(p, facts, device, options ?? LaunchOptions.Default);
        TcKernelSpec? spec = null;
        int tileQ = shape.TileQ, tileK = shape.TileK;
        int qBytes = PortableBackwardKernels.QueryBlockFloats(shape.TileQ, shape.TileK, f.HeadDim) * sizeof(float);
        int kBytes = PortableBackwardKernels.KeyBlockFloats(shape.TileQ, shape.TileK, f.HeadDim) * sizeof(float);
        string why = refusal ?? "";
        if (refusal is null)
        {
            var tcShape = TcShapes.Backward(f.HeadDim);
            // A scale ≤ 0 goes to the softcap specialization, as in the forward (scores scaled before use).
            spec = new TcKernelSpec(facts.Elem == ElemKind.BFloat16 ? TcElemKind.Bf16 : TcElemKind.Fp16, tcShape,
                f.Causal != 0, f.HasMask != 0 || gather is not null, f.HasBias != 0, f.Softcap > 0f || f.Scale <= 0f, false);
            tileQ = tileK = TcBackwardTile.Rows;
            (qBytes, kBytes) = TcBackwardShared(tcShape);
            why = $"tensor-core: {facts.Elem} D={f.HeadDim}";
        }
        long pairs = (long)f.Batch * f.Heads;
        int gridY = (int)Math.Min(pairs, TcBlockOrder.MaxGridYz), gridZ = gridY == 0 ? 0 : (int)((pairs + gridY - 1) / gridY);
        int qx = (f.SeqQ + tileQ - 1) / tileQ, kx = (f.SeqK + tileK - 1) / tileK;
        // dq from the key blocks' dS tiles (one product per tile), in launches of as many (batch, head) pairs as the
        // scratch bound holds; where not even one pair's tiles fit, the query-block kernel recomputes S and dP (three
        // products per tile) without any scratch.
        bool dsTiles = false;
        int dsKx = gather is not null && keySlots >= 0 ? Math.Min(kx, (keySlots + tileK - 1) / tileK) : kx;
        long pairBytes = (long)qx * dsKx * TcBackwardTile.TileElems * sizeof(ushort);
        long dsPairs = 0;
        var opts = options ?? LaunchOptions.Default;
        if (spec is { } s && qx > 0 && dsKx > 0 && pairs > 0)
        {
            // The scratch is one buffer of 32-bit words (the accelerator cache's): at most int.MaxValue of them.
            long cap = Math.Min(opts.BackwardDsBytes ?? Math.Min(device.MemoryBytes / 8, DefaultDsBytes), 4L * int.MaxValue);
            dsPairs = Math.Min(pairs, cap / pairBytes);
            if (opts.BackwardDsTiles is { } forced && (dsPairs > 0 || pairBytes <= 4L * int.MaxValue))
            {
                dsTiles = forced;
                dsPairs = Math.Max(1, dsPairs);
                why += forced ? "; dS tiles requested by the options" : "; dq recomputing dS requested by the options";
            }
            else if (dsPairs > 0)
                dsTiles = true;
            else
                why += $"; dq recomputes dS: one (batch, head)'s tiles take {pairBytes} B, more than the scratch bound of {cap} B";
            if (dsTiles) qBytes = TcGradShared(s.Shape);
        }
        var mode = ModeOf(p);
        // The tensor-core grids: a causal band or variable lengths give the tiles unequal work, so every chunk's
        // longest tiles go first (TcBlockOrder): the key blocks of the first keys, the query blocks of the last rows.
        // Gathered keys: the key levels stop at the longest list (known once the lists are built).
        (int X, int Y, int Z) qGrid = gridY == 0 || qx == 0 ? (0, 0, 0) : (qx, gridY, gridZ);
        (int X, int Y, int Z) kGrid = gridY == 0 || qx == 0 || kx == 0 ? (0, 0, 0) : (kx, gridY, gridZ);
        int qChunk = 0, kChunk = 0;
        if (spec is not null && qGrid.X > 0)
        {
            bool unequal = f.Causal != 0 || f.Varlen != 0;
            int slots = device.Multiprocessors * DeviceInfo.DefaultGroupsPerSm;
            int heads = (int)Math.Min(pairs, int.MaxValue);
            qChunk = TcBlockOrder.ChunkFor(qx, heads, unequal, slots);
            qGrid = TcBlockOrder.Grid3(qx, heads, qChunk);
            if (kGrid.X > 0)
            {
                kChunk = TcBlockOrder.ChunkFor(dsKx, heads, unequal, slots);
                kGrid = TcBlockOrder.Grid3(dsKx, heads, kChunk);
            }
        }
        // Without keys the query-block kernel still writes dq = 0; without queries the key blocks' zeros come from the
        // cleared scratch.
        return new BackwardPlan
        {
            Shape = shape,
            TensorCore = spec,
            Gather = gather,
            QueryGrid = qGrid,
            KeyGrid = kGrid,
            QueryChunk = qChunk,
            KeyChunk = kChunk,
            QuerySharedBytes = qBytes,
            KeySharedBytes = kBytes,
            DBias = mode,
            DbRows = DbRows(p, mode),
            KvDirect = spec is not null && f.HeadGroup == 1,
            KvZero = spec is not null && f.HeadGroup == 1 && gather is not null,
            DbDirect = spec is not null && mode == DBiasMode.Keys && p.L.DbB == f.Batch && p.L.DbH == f.Heads
                       && p.L.DbQ == f.SeqQ && p.L.DbK == f.SeqK && f.Varlen == 0,
            DbCols = mode switch { DBiasMode.Keys => f.SeqK, DBiasMode.Rows => 1, _ => 0 },
            KeyScratch = KeyScratchOf(f),
            DsTiles = dsTiles,
            DsQTiles = dsTiles ? qx : 0,
            DsKTiles = dsTiles ? dsKx : 0,
            DsPairs = dsTiles ? (int)dsPairs : 0,
            DsBytes = dsTiles ? dsPairs * pairBytes : 0,
            Reason = why,
        };
    }

    /// <summary>Shared bytes of the tensor-core backward's query-block and key-block kernels of a shape.</summary>
    public static (int Query, int Key) TcBackwardShared(TcShape shape) => shape switch
    {
        TcShape.D32Bwd => (TcBackwardKernels.QuerySharedBytes<Hd32Bwd>(), TcBackwardKernels.KeySharedBytes<Hd32Bwd>()),
        TcShape.D64Bwd => (TcBackwardKernels.QuerySharedBytes<Hd64Bwd>(), TcBackwardKernels.KeySharedBytes<Hd64Bwd>()),
        TcShape.D96Bwd => (TcBackwardKernels.QuerySharedBytes<Hd96Bwd>(), TcBackwardKernels.KeySharedBytes<Hd96Bwd>()),
        TcShape.D128Bwd => (TcBackwardKernels.QuerySharedBytes<Hd128Bwd>(), TcBackwardKernels.KeySharedBytes<Hd128Bwd>()),
        _ => throw new ArgumentOutOfRangeException(nameof(shape), shape, "not a backward shape"),
    };

    /// <summary>The dS tiles' scratch bound unless the options set one: 2 GiB, or an eighth of the device's memory where
    /// that is less.</summary>
    public const long DefaultDsBytes = 2L << 30;

    /// <summary>Shared bytes of the dq kernel that reads the dS tiles.</summary>
    public static int TcGradShared(TcShape shape) => shape switch
    {
        TcShape.D32Bwd => TcBackwardKernels.GradSharedBytes<Hd32Bwd>(),
        TcShape.D64Bwd => TcBackwardKernels.GradSharedBytes<Hd64Bwd>(),
        TcShape.D96Bwd => TcBackwardKernels.GradSharedBytes<Hd96Bwd>(),
        TcShape.D128Bwd => TcBackwardKernels.GradSharedBytes<Hd128Bwd>(),
        _ => throw new ArgumentOutOfRangeException(nameof(shape), shape, "not a backward shape"),
    };

    /// <summary>Why the tensor-core backward cannot take this problem here, or null when it can: the forward's reasons
    /// (dtype, device, alignment of q, k, v and dO, which <paramref name="facts"/> covers), its head dims, its shared
    /// memory, and dO's strides.</summary>
    public static string? TensorCoreRefusal(in BwdParams p, BufferFacts facts, DeviceInfo device, LaunchOptions options)
    {
        var f = p.Forward;
        if (options.ForcePortable) return "portable: requested by the options";
        if (facts.Elem == ElemKind.Float32) return "portable: fp32 has no tensor-core kernel (bf16 and fp16 have)";
        if (Array.IndexOf(TcShapes.BackwardHeadDims, f.HeadDim) < 0)
            return $"portable: head dim {f.HeadDim} has no tensor-core backward ({string.Join(", ", TcShapes.BackwardHeadDims)})";
        var (qb, kb) = TcBackwardShared(TcShapes.Backward(f.HeadDim));
        if (device.Type == AcceleratorType.Cuda && Math.Max(qb, kb) > device.OptInSharedBytes)
            return $"portable: the D={f.HeadDim} tensor-core backward needs {Math.Max(qb, kb)} B of shared memory, the device allows {device.OptInSharedBytes} B";
        if (((p.L.DoStrideB | p.L.DoStrideL | p.L.DoStrideH) & 7) != 0)
            return "portable: a dO stride is not a multiple of 8 elements (rows must be 16-byte aligned for cp.async)";
        if ((f.SeqK + 63L) / 64 > TcBlockOrder.MaxGridYz)
            return $"portable: {f.SeqK} keys exceed the tensor-core backward's grid ({TcBlockOrder.MaxGridYz} key blocks of 64)";
        string? forward = ForwardPlanner.TensorCoreRefusal(f, facts, device, options);
        return forward?.Replace("tensor-core kernel", "tensor-core backward");
    }

    private static DBiasMode ModeOf(in BwdParams p)
        => p.L.DbB == 0 ? DBiasMode.None : p.L.DbK == 1 && p.Forward.SeqK != 1 ? DBiasMode.Rows : DBiasMode.Keys;

    private static int DbRows(in BwdParams p, DBiasMode mode)
        => mode switch { DBiasMode.Keys => p.L.DbQ == 1 ? 1 : p.Forward.SeqQ, DBiasMode.Rows => p.Forward.SeqQ, _ => 0 };

    private static long KeyScratchOf(in FwdParams f) => (long)f.Batch * f.SeqK * f.Heads * f.HeadDim;

    /// <summary>Floats of fp32 scratch a plan of this problem may allocate (dk and dv per query head, the bias gradient
    /// before its broadcast sums, D in the LSE's layout of <paramref name="lseLength"/> floats); needs only the shapes, so it
    /// bounds what any plan of them takes.</summary>
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
