using ILGPU.Runtime;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.TensorCore;

namespace FlashDmAttn.Kernels.Planning;

/// <summary>
/// Turns a validated forward problem into a <see cref="ForwardPlan"/> (FlashAttention's run_mha_fwd as a pure
/// function): key gathering first, then the tensor-core kernel where it covers the problem on the device, else the
/// portable one, with the reason. Reads nothing but its arguments; the only call out is the device's occupancy oracle.
/// </summary>
internal static class ForwardPlanner
{
    /// <summary>Shared memory the portable kernel stays within (no opt-in).</summary>
    public const int PortableSharedBudget = 48 * 1024;

    public static ForwardPlan Plan(in FwdParams p, BufferFacts facts, DeviceInfo device, LaunchOptions options)
    {
        var gather = PlanGather(p, facts.SeqInfoLength);
        string? refusal = TensorCoreRefusal(p, facts, device, options);
        return refusal is null
            ? PlanTensorCore(p, facts, device, options, gather)
            : PlanPortable(p, device, gather, refusal);
    }

    /// <summary>A mask broadcast over queries (with a bias that is too, or none) is turned into key lists.</summary>
    public static GatherPlan? PlanGather(in FwdParams p, int seqInfoLength)
    {
        if (p.HasMask == 0 || p.MaskStrideQ != 0 || p.SeqK <= 0 || (p.HasBias != 0 && p.BiasStrideQ != 0))
            return null;
        int heads = p.MaskStrideH == 0 ? 1 : p.Heads / p.MaskHeadDiv;
        int batches = p.MaskStrideB == 0 ? 1 : p.Batch;
        int rows = batches * heads;
        return new GatherPlan(heads, p.MaskStrideB == 0 ? 0 : heads, rows, seqInfoLength,
            seqInfoLength + rows + 2L * rows * p.SeqK, p.HasBias != 0);
    }

    /// <summary>Why the tensor-core kernel cannot take this problem here, or null when it can.</summary>
    public static string? TensorCoreRefusal(in FwdParams p, BufferFacts facts, DeviceInfo device, LaunchOptions options)
    {
        if (options.ForcePortable) return "portable: requested by the options";
        if (facts.Elem == ElemKind.Float32) return "portable: fp32 has no tensor-core kernel (bf16 and fp16 have)";
        if (!TcShapes.Supports(p.HeadDim))
            return $"portable: head dim {p.HeadDim} has no tensor-core policy ({string.Join(", ", TcShapes.HeadDims)})";
        if (device.Type == AcceleratorType.Cuda)
        {
            if (device.ComputeCapability < 80)
                return $"portable: sm_{device.ComputeCapability} has no bf16/fp16 mma.sync (sm_80 or newer)";
            int shared = TcShapes.MaxSharedBytes(p.HeadDim);
            if (shared > device.OptInSharedBytes)
                return $"portable: the D={p.HeadDim} tensor-core kernel needs {shared} B of shared memory, the device allows {device.OptInSharedBytes} B";
        }
        else if (!(options.TensorCoreOnCpu && device.Type == AcceleratorType.CPU && device.WarpSize == 32
                   && device.MaxThreadsPerGroup >= TensorCoreForwardKernel.Threads))
        {
            return $"portable: the tensor-core kernel needs a CUDA accelerator, this is {device.Type}";
        }
        if ((p.SeqQ + 63) / 64 > TcBlockOrder.MaxGridYz)
            return $"portable: {p.SeqQ} query rows exceed the tensor-core grid ({TcBlockOrder.MaxGridYz} blocks of 64 rows)";
        if (!facts.QkvAligned16) return "portable: q, k or v does not start 16-byte aligned (cp.async copies 16-byte chunks)";
        if (((p.QStrideB | p.QStrideL | p.QStrideH | p.KStrideB | p.KStrideL | p.KStrideH
              | p.VStrideB | p.VStrideL | p.VStrideH) & 7) != 0)
            return "portable: a q/k/v stride is not a multiple of 8 elements (rows must be 16-byte aligned for cp.async)";
        return null;
    }

    private static ForwardPlan PlanTensorCore(in FwdParams p, BufferFacts facts, DeviceInfo device, LaunchOptions options, GatherPlan? gather)
    {
        var elem = facts.Elem == ElemKind.BFloat16 ? TcElemKind.Bf16 : TcElemKind.Fp16;
        bool mask = p.HasMask != 0 || gather is not null, bias = p.HasBias != 0;
        // With a mask, bias or gathered keys, D ≤ 128 runs 64 rows per group: the 128-row shapes spill there.
        bool rows64 = mask || bias;
        var shape = TcShapes.For(p.HeadDim, rows64, gather is not null);
        // A negative scale reverses the order of raw scores: the softcap specialization (scores scaled before the row
        // max; no tanh when Softcap is 0) handles it.
        bool cap = p.Softcap > 0f || p.Scale < 0f;
        string why = $"tensor-core: {facts.Elem} D={p.HeadDim}, {TcShapes.Rows(shape)} rows per group"
                     + (rows64 && p.HeadDim <= 128 ? " (mask/bias: the 128-row shape spills)" : "");

        if (StreamKWanted(shape, device, options) && TryStreamK(p, elem, shape, cap, device, gather, why) is { } sk)
            return sk;

        // Packed GQA: one query per sequence, so a kv head's query heads become the rows of one block.
        int pack = PackGqa(p, gather, device, options);
        int rowsK = pack * p.SeqQ, headsK = p.Batch * (pack > 1 ? p.KvHeads : p.Heads);
        bool causal = p.Causal != 0 && pack == 1; // one query sees every key under the bottom-right band
        var spec = new TcKernelSpec(elem, shape, causal, mask, bias, cap, false);
        int rows = TcShapes.Rows(shape);
        int blocks = (rowsK + rows - 1) / rows;
        int perSm = device.ResidentGroups(spec);
        int slots = perSm * device.Multiprocessors;
        int tiles = (p.SeqK + TcShapes.KeysPerTile(shape) - 1) / TcShapes.KeysPerTile(shape);
        int splits = options.KvSplits > 0 ? options.KvSplits
            : device.Type == AcceleratorType.Cuda ? SplitsFor((long)blocks * headsK, tiles, slots) : 1;
        splits = Math.Clamp(splits, 1, Math.Max(1, TcBlockOrder.MaxGridYz / Math.Max(blocks, 1)));
        if ((splits > 1 || pack > 1) && rows > 64 && p.HeadDim <= 128 && (long)blocks * rows > rowsK + 63)
        {
            // A short block: the 64-row shape does half the 128-row shape's work on the rows past the queries.
            shape = TcShapes.For(p.HeadDim, true, gather is not null);
            spec = spec with { Shape = shape };
            rows = TcShapes.Rows(shape);
            blocks = (rowsK + rows - 1) / rows;
            perSm = device.ResidentGroups(spec);
            tiles = (p.SeqK + TcShapes.KeysPerTile(shape) - 1) / TcShapes.KeysPerTile(shape);
            why += $"; {rows} rows per group for a block of {rowsK} rows";
        }
        TcKvSplit? kv = null;
        if ((splits > 1 || pack > 1) && TcSplitKv.WorkFloats(splits, headsK, rowsK, p.HeadDim) > int.MaxValue)
        {
            // The work buffer would pass a scratch buffer's int range: run unsplit and unpacked.
            (splits, pack, rowsK, headsK, causal) = (1, 1, p.SeqQ, p.Batch * p.Heads, p.Causal != 0);
            spec = spec with { Causal = causal };
            blocks = (rowsK + rows - 1) / rows;
        }
        if (splits > 1 || pack > 1)
        {
            kv = new TcKvSplit(splits, pack, TcSplitKv.WorkFloats(splits, headsK, rowsK, p.HeadDim));
            why += (splits > 1 ? $"; split-KV: {(long)blocks * headsK} blocks on {slots} resident groups, each block's {tiles} key tiles in {splits} ranges" : "")
                   + (pack > 1 ? $"; GQA packed: the {pack} query heads of a kv head ({rowsK} rows) in one block" : "");
        }
        // Causal and variable-length problems give their groups unequal work: long blocks of several heads first, in
        // chunks sized by the groups resident at once (TcBlockOrder).
        int chunk = TcBlockOrder.ChunkFor(blocks, headsK, causal || p.Varlen != 0, slots);
        return new ForwardPlan
        {
            Family = KernelFamily.TensorCore,
            TensorCore = spec,
            Gather = gather,
            KvSplit = kv,
            Grid = TcBlockOrder.Grid3(blocks, headsK, chunk, splits),
            GroupSize = TensorCoreForwardKernel.Threads,
            SharedBytes = TcShapes.SharedBytes(shape, bias),
            GroupsPerSm = perSm,
            Reason = why,
        };
    }

    /// <summary>
    /// Query heads per block of packed GQA, or 1: a head group whose queries fill at most one 64-row block (decode,
    /// speculative decode), the same number of queries in every sequence, no causal band unless there is one query
    /// (which sees every key), and neither mask nor bias (their rows are per query head). On CUDA unless the options say.
    /// </summary>
    private static int PackGqa(in FwdParams p, GatherPlan? gather, DeviceInfo device, LaunchOptions options)
    {
        bool fits = p.HeadGroup > 1 && p.SeqQ >= 1 && (long)p.SeqQ * p.HeadGroup <= 64 && (p.Causal == 0 || p.SeqQ == 1)
                    && p.HasMask == 0 && p.HasBias == 0 && gather is null && (p.Varlen == 0 || p.SeqQUniform != 0);
        bool want = options.PackGqa ?? device.Type == AcceleratorType.Cuda;
        return fits && want ? p.HeadGroup : 1;
    }

    /// <summary>
    /// Key ranges per block (FlashAttention-2's num_splits_heuristic): none when the blocks fill at least 80 % of the
    /// resident groups; else the fewest ranges whose waves are at least 85 % as full as the best count's, among counts
    /// up to 128 that change the tiles per range.
    /// </summary>
    public static int SplitsFor(long blocks, int tiles, int slots)
    {
        if (blocks <= 0 || slots <= 0 || blocks >= 0.8 * slots) return 1;
        int max = (int)Math.Min(Math.Min(128, tiles), slots);
        if (max <= 1) return 1;
        var eff = new double[max + 1];
        double best = 0;
        for (int s = 1; s <= max; s++)
        {
            if (s > 1 && (tiles + s - 1) / s == (tiles + s - 2) / (s - 1)) continue;
            double waves = (double)blocks * s / slots;
            eff[s] = waves / Math.Ceiling(waves);
            best = Math.Max(best, eff[s]);
        }
        for (int s = 1; s <= max; s++)
            if (eff[s] >= 0.85 * best) return s;
        return 1;
    }

    private static bool StreamKWanted(TcShape shape, DeviceInfo device, LaunchOptions options) => options.StreamK switch
    {
        StreamKMode.On => true,
        StreamKMode.Off => false,
        _ => device.Type == AcceleratorType.Cuda && (TcShapes.Tune(shape) & TcTune.StreamK) != 0,
    };

    /// <summary>A stream-K plan (<see cref="TcStreamK"/>) for problems whose blocks all have the same work, or null
    /// where it would gain too little. The stream-K kernel's occupancy is asked only for problems it may take.</summary>
    private static ForwardPlan? TryStreamK(in FwdParams p, TcElemKind elem, TcShape shape, bool cap, DeviceInfo device,
        GatherPlan? gather, string why)
    {
        if (p.HasBias != 0 || p.Causal != 0 || p.HasMask != 0 || gather is not null || p.Varlen != 0 || p.Paged != 0)
            return null;
        int rows = TcShapes.Rows(shape);
        long groups = (long)((p.SeqQ + rows - 1) / rows) * p.Batch * p.Heads;
        int tiles = (p.SeqK + TcShapes.KeysPerTile(shape) - 1) / TcShapes.KeysPerTile(shape);
        if (tiles < 2 || groups <= device.Multiprocessors) return null;
        var spec = new TcKernelSpec(elem, shape, false, false, false, cap, true);
        int perSm = device.ResidentGroups(spec);
        int slots = perSm * device.Multiprocessors;
        if (TcStreamK.Plan(groups, tiles, slots) is not { } split) return null;
        return new ForwardPlan
        {
            Family = KernelFamily.TensorCore,
            TensorCore = spec,
            StreamK = split,
            StreamKTiles = tiles,
            Grid = (split.Dp + split.Workers, 1, 1),
            GroupSize = TensorCoreForwardKernel.Threads,
            SharedBytes = TcShapes.SharedBytes(shape, false),
            GroupsPerSm = perSm,
            Reason = $"{why}; stream-K: {groups} blocks of {tiles} key tiles leave the last of {(groups + slots - 1) / slots} waves on {slots} resident groups {groups % slots * 100 / slots} % full",
        };
    }

    private static ForwardPlan PlanPortable(in FwdParams p, DeviceInfo device, GatherPlan? gather, string why)
    {
        var shape = PortableShapeFor(device, p.HeadDim, Math.Max(p.SeqQ, p.SeqK));
        int gridX = (p.SeqQ + shape.TileQ - 1) / shape.TileQ;
        long pairs = (long)p.Batch * p.Heads;
        // (batch, head) pairs along y, and along z past the grid's y limit.
        int gridY = (int)Math.Min(pairs, TcBlockOrder.MaxGridYz), gridZ = gridY == 0 ? 0 : (int)((pairs + gridY - 1) / gridY);
        return new ForwardPlan
        {
            Family = KernelFamily.Portable,
            Portable = shape,
            Gather = gather,
            Grid = gridX == 0 || gridY == 0 ? (0, 0, 0) : (gridX, gridY, gridZ),
            GroupSize = shape.GroupSize,
            SharedBytes = PortableForwardKernel.SharedFloats(shape.TileQ, shape.TileK, p.HeadDim) * sizeof(float),
            Reason = why,
        };
    }

    /// <summary>Square tiles of at most 64 rows that fit the shared-memory budget and are no longer than the sequences;
    /// 128 threads per group on GPUs, at most 16 on the CPU accelerator (one thread per core there).</summary>
    public static PortableShape PortableShapeFor(DeviceInfo device, int headDim, int maxSeq)
    {
        int budget = Math.Min(PortableSharedBudget, device.MaxSharedPerGroup);
        int tile = 64;
        while (tile > 8 && PortableForwardKernel.SharedFloats(tile, tile, headDim) * sizeof(float) > budget)
            tile /= 2;
        while (tile > 8 && tile / 2 >= maxSeq)
            tile /= 2;
        int group = device.Type == AcceleratorType.CPU ? Math.Min(device.MaxThreadsPerGroup, 16) : 128;
        return new PortableShape(tile, tile, group);
    }
}
