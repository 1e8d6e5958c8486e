using ILGPU.Runtime;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Kernels.TensorCore;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Planning;

/// <summary>The planner on made-up devices: every fallback reason, every tensor-core shape choice, stream-K, key
/// gathering and the portable tile shape. No accelerator is touched.</summary>
[TestFixture]
public class ForwardPlannerTests
{
    private static readonly DeviceInfo H200 = new(AcceleratorType.Cuda, 90, 132, 227 * 1024, 48 * 1024, 32, 1024)
    {
        GroupsPerSm = _ => 2,
    };

    private static readonly DeviceInfo Cpu = new(AcceleratorType.CPU, 0, 1, 64 * 1024, 64 * 1024, 32, 128);

    private static FwdParams Dense(int b = 4, int l = 4096, int h = 16, int d = 128, bool causal = false)
    {
        long row = (long)h * d;
        return new FwdParams
        {
            Batch = b, Heads = h, KvHeads = h, HeadGroup = 1, HeadDim = d, SeqQ = l, SeqK = l,
            QStrideB = l * row, QStrideL = row, QStrideH = d,
            KStrideB = l * row, KStrideL = row, KStrideH = d,
            VStrideB = l * row, VStrideL = row, VStrideH = d,
            OStrideB = l * row, OStrideL = row, OStrideH = d,
            MaskHeadDiv = 1, BiasHeadDiv = 1, Scale = 1f / MathF.Sqrt(d), Causal = causal ? 1 : 0,
        };
    }

    private static FwdParams WithMask(FwdParams p, bool perKey, bool headShared = false, bool batchShared = false)
    {
        p.HasMask = 1;
        p.MaskElemBytes = 1;
        p.MaskStrideQ = perKey ? 0 : p.SeqK;
        p.MaskStrideH = headShared ? 0 : (perKey ? 1 : p.SeqQ) * (long)p.SeqK;
        p.MaskStrideB = batchShared ? 0 : p.Heads * (perKey ? 1 : p.SeqQ) * (long)p.SeqK;
        return p;
    }

    private static FwdParams WithBias(FwdParams p, bool perKey)
    {
        p.HasBias = 1;
        p.BiasStrideQ = perKey ? 0 : p.SeqK;
        p.BiasStrideH = (perKey ? 1 : p.SeqQ) * (long)p.SeqK;
        p.BiasStrideB = p.Heads * p.BiasStrideH;
        return p;
    }

    private static readonly BufferFacts Bf16 = new(ElemKind.BFloat16, true, 0);

    private static ForwardPlan Plan(FwdParams p, DeviceInfo? device = null, LaunchOptions? options = null, BufferFacts? facts = null)
        => ForwardPlanner.Plan(p, facts ?? Bf16, device ?? H200, options ?? LaunchOptions.Default);

    private static void AssertPortable(ForwardPlan plan, string because)
    {
        Assert.That(plan.Family, Is.EqualTo(KernelFamily.Portable), plan.Describe());
        Assert.That(plan.Reason, Does.StartWith("portable: ").And.Contain(because), plan.Describe());
        Assert.That(plan.Describe(), Does.Contain(plan.Reason));
    }

    [Test]
    public void EveryFallbackReason()
    {
        AssertPortable(Plan(Dense(), options: new LaunchOptions { ForcePortable = true }), "requested by the options");
        AssertPortable(Plan(Dense(), facts: Bf16 with { Elem = ElemKind.Float32 }), "fp32");
        AssertPortable(Plan(Dense(d: 40)), "head dim 40 has no tensor-core policy");
        AssertPortable(Plan(Dense(), device: H200 with { ComputeCapability = 75 }), "sm_75");
        AssertPortable(Plan(Dense(d: 256), device: H200 with { OptInSharedBytes = 100 * 1024 }), "needs 111616 B of shared memory");
        AssertPortable(Plan(Dense(), device: Cpu), "needs a CUDA accelerator, this is CPU");
        AssertPortable(Plan(Dense(), device: Cpu with { WarpSize = 16 }, options: new LaunchOptions { TensorCoreOnCpu = true }), "needs a CUDA accelerator");
        AssertPortable(Plan(Dense(), device: Cpu with { Type = AcceleratorType.OpenCL }, options: new LaunchOptions { TensorCoreOnCpu = true }), "this is OpenCL");
        AssertPortable(Plan(Dense(b: 1, l: 65536 * 64 + 1, h: 1)), "query rows exceed the tensor-core grid");
        AssertPortable(Plan(Dense(), facts: Bf16 with { QkvAligned16 = false }), "16-byte aligned");
        var odd = Dense();
        odd.KStrideL = 130;
        AssertPortable(Plan(odd), "not a multiple of 8 elements");
    }

    [Test]
    public void TensorCoreOnCpuOnlyWhenAsked()
    {
        var plan = Plan(Dense(), device: Cpu, options: new LaunchOptions { TensorCoreOnCpu = true });
        Assert.That(plan.Family, Is.EqualTo(KernelFamily.TensorCore), plan.Describe());
        Assert.That(plan.GroupsPerSm, Is.EqualTo(DeviceInfo.DefaultGroupsPerSm), "no occupancy oracle off CUDA");
    }

    [TestCase(128, false, false, false, "D128")]
    [TestCase(128, true, false, false, "D128R64")]
    [TestCase(128, false, true, false, "D128R64")]
    [TestCase(128, true, false, true, "D128R64Gather")]
    [TestCase(64, false, false, false, "D64")]
    [TestCase(64, false, true, false, "D64R64")]
    [TestCase(32, true, false, true, "D32R64")]
    [TestCase(96, true, true, false, "D96R64")]
    [TestCase(192, true, true, false, "D192")]
    [TestCase(256, false, false, false, "D256")]
    public void TensorCoreShape(int d, bool mask, bool bias, bool perKeyMask, string shape)
    {
        var expected = Enum.Parse<TcShape>(shape);
        var p = Dense(b: 4, l: 1024, h: 16, d: d, causal: true); // enough blocks to fill the GPU: no split-KV
        if (mask) p = WithMask(p, perKeyMask);
        if (bias) p = WithBias(p, perKey: false);
        var plan = Plan(p);
        Assert.That(plan.Family, Is.EqualTo(KernelFamily.TensorCore), plan.Describe());
        var spec = plan.TensorCore!.Value;
        Assert.That(spec.Shape, Is.EqualTo(expected));
        Assert.That(spec.Mask, Is.EqualTo(mask), "mask specialization (gathered keys included)");
        Assert.That(spec.Bias, Is.EqualTo(bias));
        Assert.That(spec.Causal, Is.True);
        Assert.That(plan.Gather is not null, Is.EqualTo(perKeyMask));
        Assert.That(plan.SharedBytes, Is.EqualTo(TcShapes.SharedBytes(expected, bias)));
        Assert.That(plan.GroupSize, Is.EqualTo(TensorCoreForwardKernel.Threads));
        int rows = TcShapes.Rows(expected);
        var grid = plan.Grid;
        Assert.That(grid.Y, Is.EqualTo((1024 + rows - 1) / rows), "query blocks");
        Assert.That((long)grid.X * grid.Z, Is.GreaterThanOrEqualTo(4 * 16), "every head has a group");
        Assert.That(plan.KvSplit, Is.Null);
    }

    [Test]
    public void SoftcapAndNegativeScaleTakeTheScaledScoresSpecialization()
    {
        var p = Dense();
        Assert.That(Plan(p).TensorCore!.Value.Softcap, Is.False);
        p.Softcap = 30f;
        Assert.That(Plan(p).TensorCore!.Value.Softcap, Is.True);
        p.Softcap = 0f;
        p.Scale = -0.1f;
        Assert.That(Plan(p).TensorCore!.Value.Softcap, Is.True);
    }

    [Test]
    public void LaunchOrderChunksHeadsOnlyForUnequalWork()
    {
        var dense = Plan(Dense(b: 1, l: 4096, h: 32, d: 128));
        Assert.That(dense.Grid, Is.EqualTo((1, 32, 32)), "one head per chunk without a causal band");
        var causal = Plan(Dense(b: 1, l: 4096, h: 32, d: 128, causal: true));
        int chunk = TcBlockOrder.ChunkFor(32, 32, true, 2 * 132);
        Assert.That(causal.Grid, Is.EqualTo(TcBlockOrder.Grid3(32, 32, chunk)));
        Assert.That(causal.Grid.X, Is.GreaterThan(1), "several heads per chunk with a causal band");
    }

    [Test]
    public void StreamKWhereThePolicySaysAndOnlyForEqualWork()
    {
        // D = 64 on 128 rows carries the stream-K bit: B4 H32 L4096 = 1024 blocks on 264 resident groups.
        var plan = Plan(Dense(b: 4, l: 4096, h: 32, d: 64));
        Assert.That(plan.StreamK, Is.Not.Null, plan.Describe());
        var split = plan.StreamK!.Value;
        Assert.That(plan.TensorCore!.Value.StreamK, Is.True);
        Assert.That(plan.Grid, Is.EqualTo((split.Dp + split.Workers, 1, 1)));
        Assert.That(plan.StreamKTiles, Is.EqualTo(4096 / 64));
        Assert.That(plan.Reason, Does.Contain("stream-K"));

        Assert.That(Plan(Dense(b: 4, l: 4096, h: 32, d: 128)).StreamK, Is.Null, "D = 128: off by default");
        Assert.That(Plan(Dense(b: 4, l: 4096, h: 32, d: 128), options: new LaunchOptions { StreamK = StreamKMode.On }).StreamK, Is.Not.Null, "forced on");
        Assert.That(Plan(Dense(b: 4, l: 4096, h: 32, d: 64), options: new LaunchOptions { StreamK = StreamKMode.Off }).StreamK, Is.Null, "forced off");
        Assert.That(Plan(Dense(b: 4, l: 4096, h: 32, d: 64), device: Cpu, options: new LaunchOptions { TensorCoreOnCpu = true }).StreamK,
            Is.Null, "auto: CUDA only");

        var on = new LaunchOptions { StreamK = StreamKMode.On };
        Assert.That(Plan(Dense(b: 4, l: 4096, h: 32, d: 64, causal: true), options: on).StreamK, Is.Null, "causal");
        Assert.That(Plan(WithBias(Dense(b: 4, l: 4096, h: 32, d: 64), false), options: on).StreamK, Is.Null, "bias");
        Assert.That(Plan(WithMask(Dense(b: 4, l: 4096, h: 32, d: 64), true), options: on).StreamK, Is.Null, "gathered keys");
        var varlen = Dense(b: 4, l: 4096, h: 32, d: 64);
        varlen.Varlen = 1;
        Assert.That(Plan(varlen, options: on).StreamK, Is.Null, "variable lengths");
        Assert.That(Plan(Dense(b: 4, l: 64, h: 32, d: 64), options: on).StreamK, Is.Null, "one key tile per block");
        Assert.That(Plan(Dense(b: 1, l: 4096, h: 4, d: 64), options: on).StreamK, Is.Null, "fewer blocks than SMs");
        // 1056 blocks = exactly 4 waves of 264: nothing to even out.
        Assert.That(Plan(Dense(b: 33, l: 4096, h: 1, d: 64), options: on).StreamK, Is.Null, "whole waves");
    }

    [Test]
    public void StreamKOccupancyIsAskedOnlyForProblemsItMayTake()
    {
        var asked = new List<TcKernelSpec>();
        var device = H200 with { GroupsPerSm = s => { asked.Add(s); return 2; } };
        Plan(Dense(b: 4, l: 4096, h: 32, d: 64, causal: true), device: device);
        Assert.That(asked.Any(s => s.StreamK), Is.False, "causal: no stream-K kernel compiled");
        Plan(Dense(b: 4, l: 4096, h: 32, d: 64), device: device);
        Assert.That(asked.Any(s => s.StreamK), Is.True);
    }

    [Test]
    public void KeyGatheringForMasksBroadcastOverQueries()
    {
        var p = WithMask(Dense(b: 2, l: 1000, h: 6, d: 128, causal: true), perKey: true);
        var g = Plan(p, facts: Bf16 with { SeqInfoLength = 7 }).Gather!;
        Assert.That((g.Heads, g.BatchStride, g.Rows, g.Offset, g.GatherBias), Is.EqualTo((6, 6, 12, 7, false)));
        Assert.That(g.TableLength, Is.EqualTo(7 + 12 + 2L * 12 * 1000));

        var shared = WithMask(Dense(b: 2, l: 1000, h: 6, d: 128), perKey: true, headShared: true, batchShared: true);
        Assert.That(Plan(shared).Gather, Is.EqualTo(new GatherPlan(1, 0, 1, 0, 1 + 2000, false)));

        var grouped = WithMask(Dense(b: 1, l: 100, h: 8, d: 64), perKey: true);
        grouped.MaskHeadDiv = 4; // one mask head per kv head of a 4-head group
        Assert.That(Plan(grouped).Gather!.Heads, Is.EqualTo(2));

        Assert.That(Plan(WithBias(p, perKey: true)).Gather!.GatherBias, Is.True, "per-key bias follows the lists");
        Assert.That(Plan(WithBias(p, perKey: false)).Gather, Is.Null, "a bias per query keeps the dense mask path");
        Assert.That(Plan(WithMask(Dense(), perKey: false)).Gather, Is.Null, "a mask per query");
        var empty = WithMask(Dense(), perKey: true);
        empty.SeqK = 0;
        Assert.That(ForwardPlanner.PlanGather(empty, 0), Is.Null, "no keys");
        // The portable kernel walks the lists too.
        Assert.That(Plan(p, facts: Bf16 with { Elem = ElemKind.Float32 }).Gather, Is.Not.Null);
    }

    [Test]
    public void PortableShape()
    {
        var cpu = Plan(Dense(b: 1, l: 20, h: 2, d: 64), device: Cpu);
        Assert.That(cpu.Portable, Is.EqualTo(new PortableShape(32, 32, 16)), "tiles no longer than needed, 16 threads on the CPU");
        Assert.That(cpu.Grid, Is.EqualTo((1, 2, 1)));
        Assert.That(cpu.SharedBytes, Is.EqualTo(PortableForwardKernel.SharedFloats(32, 32, 64) * sizeof(float)));

        var gpu = Plan(Dense(b: 2, l: 4096, h: 3, d: 256), facts: Bf16 with { Elem = ElemKind.Float32 });
        Assert.That(gpu.Portable!.Value.GroupSize, Is.EqualTo(128));
        Assert.That(gpu.SharedBytes, Is.LessThanOrEqualTo(ForwardPlanner.PortableSharedBudget));
        Assert.That(gpu.Grid, Is.EqualTo(((4096 + gpu.Portable.Value.TileQ - 1) / gpu.Portable.Value.TileQ, 6, 1)));

        // Past the grid's y size (65535) the (batch, head) pairs continue along z.
        var many = Plan(Dense(b: 2, l: 8, h: 40000, d: 64), device: Cpu);
        Assert.That(many.Grid, Is.EqualTo((1, 65535, 2)));
        Assert.That((long)many.Grid.Y * many.Grid.Z, Is.GreaterThanOrEqualTo(80000L));

        var none = Dense(b: 2, l: 0, h: 3, d: 64);
        Assert.That(Plan(none, device: Cpu).Grid, Is.EqualTo((0, 0, 0)), "nothing to launch");
    }

    private static FwdParams Decode(int b, int h, int hkv, int lq, int lk, int d = 128)
    {
        var p = Dense(b: b, l: lk, h: h, d: d);
        p.KvHeads = hkv;
        p.HeadGroup = h / hkv;
        p.SeqQ = lq;
        (p.KStrideB, p.KStrideL, p.KStrideH) = ((long)lk * hkv * d, (long)hkv * d, d);
        (p.VStrideB, p.VStrideL, p.VStrideH) = (p.KStrideB, p.KStrideL, p.KStrideH);
        (p.QStrideB, p.OStrideB) = ((long)lq * h * d, (long)lq * h * d);
        return p;
    }

    [Test]
    public void DecodeSplitsTheKeysAndPacksGqa()
    {
        // B4 H32 Hkv8, one query over 32K keys: 32 blocks of 4 packed heads on 264 resident groups.
        var plan = Plan(Decode(4, 32, 8, 1, 32768));
        Assert.That(plan.KvSplit, Is.Not.Null, plan.Describe());
        var kv = plan.KvSplit!.Value;
        Assert.That(kv.Pack, Is.EqualTo(4));
        Assert.That(kv.Splits, Is.EqualTo(ForwardPlanner.SplitsFor(32, 512, 264)));
        Assert.That(kv.Splits, Is.GreaterThan(4));
        Assert.That(TcShapes.Rows(plan.TensorCore!.Value.Shape), Is.EqualTo(64), "a short block takes the 64-row shape");
        Assert.That(plan.Grid.Y, Is.EqualTo(kv.Splits), "one query block, its splits along y");
        Assert.That((long)plan.Grid.X * plan.Grid.Z, Is.GreaterThanOrEqualTo(32));
        Assert.That(kv.WorkFloats, Is.EqualTo((long)kv.Splits * 32 * 4 * 129));
        Assert.That(plan.Reason, Does.Contain("split-KV").And.Contain("GQA packed"));

        // One query with a mask: rows are per query head, so no packing; still split.
        var masked = Plan(WithMask(Decode(1, 16, 16, 1, 131072), perKey: true));
        Assert.That(masked.KvSplit!.Value.Pack, Is.EqualTo(1));
        Assert.That(masked.KvSplit.Value.Splits, Is.GreaterThan(1));

        // A full GPU: no split (prefill).
        Assert.That(Plan(Dense(b: 4, l: 4096, h: 16, d: 128)).KvSplit, Is.Null);
        // Speculative decode: 16 queries of 4 heads fill one 64-row block per kv head; 128 blocks, split in 2.
        int spec = ForwardPlanner.SplitsFor(128, 256, 264);
        Assert.That(Plan(Decode(16, 32, 8, 16, 16384)).KvSplit, Is.EqualTo(new TcKvSplit(spec, 4, spec * 128L * 64 * 129)));
        // More queries than one block holds, or a causal band over several queries: not packed.
        Assert.That(Plan(Decode(16, 32, 8, 17, 16384)).KvSplit, Is.Null, "17 queries of 4 heads (68 rows): 512 blocks fill 264 groups");
        var causal = Decode(4, 32, 8, 16, 16384);
        causal.Causal = 1;
        Assert.That(Plan(causal).KvSplit!.Value.Pack, Is.EqualTo(1));
        // Elsewhere than CUDA only when asked.
        Assert.That(Plan(Decode(4, 32, 8, 1, 32768), device: Cpu, options: new LaunchOptions { TensorCoreOnCpu = true }).KvSplit, Is.Null);
        var forced = Plan(Decode(4, 32, 8, 1, 32768), device: Cpu, options: new LaunchOptions { TensorCoreOnCpu = true, KvSplits = 3, PackGqa = true });
        Assert.That(forced.KvSplit, Is.EqualTo(new TcKvSplit(3, 4, 3L * 32 * 4 * 129)));
        // A work buffer past a scratch buffer's range: neither packed nor split.
        var huge = Plan(Decode(60000, 320, 80, 1, 64));
        Assert.That(huge.KvSplit, Is.Null, huge.Describe());
        Assert.That(huge.TensorCore, Is.Not.Null);
        // Variable lengths pack only when every sequence has exactly one query.
        var varlen = Decode(4, 32, 8, 1, 32768);
        varlen.Varlen = 1;
        Assert.That(Plan(varlen).KvSplit!.Value.Pack, Is.EqualTo(1));
        varlen.SeqQUniform = 1;
        Assert.That(Plan(varlen).KvSplit!.Value.Pack, Is.EqualTo(4));
    }

    [TestCase(16, 2048, 264, 15)]  // B1 H16 over 128K keys: 16·15 = 240 groups, 91 % of 264 (14: 84.8 %)
    [TestCase(32, 512, 264, 7)]    // 224 groups
    [TestCase(256, 256, 264, 1)]   // nearly full: none
    [TestCase(16, 3, 264, 3)]      // no more ranges than tiles
    [TestCase(1, 1, 264, 1)]
    public void SplitCountFollowsWaveEfficiency(int blocks, int tiles, int slots, int splits)
        => Assert.That(ForwardPlanner.SplitsFor(blocks, tiles, slots), Is.EqualTo(splits));
}
