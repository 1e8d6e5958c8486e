using ILGPU.Runtime;
using FlashDmAttn.Kernels.Backward;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Kernels.TensorCore;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Planning;

/// <summary>The backward planner on made-up devices: tile shapes within the shared-memory budget, grids (incl. the z
/// split of many heads), where the bias gradient is formed for each broadcast form, and key gathering.</summary>
[TestFixture]
public class BackwardPlannerTests
{
    private static readonly DeviceInfo H200 = new(AcceleratorType.Cuda, 90, 132, 227 * 1024, 48 * 1024, 32, 1024);
    private static readonly DeviceInfo Cpu = new(AcceleratorType.CPU, 0, 1, 64 * 1024, 64 * 1024, 32, 128);

    private static BwdParams Problem(int b = 2, int lq = 1000, int lk = 1000, int h = 8, int d = 128, bool causal = false)
    {
        long row = (long)h * d;
        var f = new FwdParams
        {
            Batch = b, Heads = h, KvHeads = h, HeadGroup = 1, HeadDim = d, SeqQ = lq, SeqK = lk,
            QStrideB = lq * row, QStrideL = row, QStrideH = d,
            KStrideB = lk * row, KStrideL = row, KStrideH = d,
            VStrideB = lk * row, VStrideL = row, VStrideH = d,
            OStrideB = lq * row, OStrideL = row, OStrideH = d,
            MaskHeadDiv = 1, BiasHeadDiv = 1, Scale = 1f / MathF.Sqrt(d), Causal = causal ? 1 : 0,
        };
        return new BwdParams { Forward = f };
    }

    /// <summary>A bias of shape (bb, bh, bq, bk) (1 = broadcast); key dim 1 goes to the row fields as the API puts it.</summary>
    private static BwdParams WithBias(BwdParams p, int bb, int bh, int bq, int bk)
    {
        var f = p.Forward;
        (p.L.DbB, p.L.DbH, p.L.DbQ, p.L.DbK) = (bb, bh, bq, bk);
        if (bk == 1 && f.SeqK != 1)
            p.L.HasRowBias = 1;
        else
        {
            f.HasBias = 1;
            f.BiasStrideQ = bq == 1 ? 0 : bk;
            f.BiasStrideH = bh == 1 ? 0 : (long)bq * bk;
            f.BiasStrideB = bb == 1 ? 0 : (long)bh * bq * bk;
        }
        p.Forward = f;
        return p;
    }

    /// <summary>The portable backward's plan (fp32 has no tensor-core backward).</summary>
    private static BackwardPlan Plan(BwdParams p, DeviceInfo? device = null) => BackwardPlanner.Plan(p, new BufferFacts(ElemKind.Float32, true, 0), device ?? H200);

    private static BackwardPlan PlanBf16(BwdParams p, DeviceInfo? device = null, LaunchOptions? options = null, bool aligned = true)
        => BackwardPlanner.Plan(p, new BufferFacts(ElemKind.BFloat16, aligned, 0), device ?? H200, options);

    [Test]
    public void DqFromDsTilesInLaunchesOfAsManyHeadsAsTheScratchBoundHolds()
    {
        // B2 H8 L1000: 16 heads of 16 × 16 tiles of 8 KiB = 2 MiB each.
        var p = Problem(b: 2, lq: 1000, lk: 1000, h: 8, d: 128, causal: true);
        const long pair = 16L * 16 * 8192;
        var all = PlanBf16(p, H200 with { MemoryBytes = 8 * 16 * pair });
        Assert.That(all.DsTiles, Is.True, all.Describe());
        Assert.That((all.DsQTiles, all.DsKTiles, all.DsPairs, all.DsBytes), Is.EqualTo((16, 16, 16, 16 * pair)));
        Assert.That(all.QuerySharedBytes, Is.EqualTo(BackwardPlanner.TcGradShared(TcShape.D128Bwd)));
        Assert.That(all.Describe(), Does.Contain("dq from 16x16 dS tiles per head, 16 heads a launch (32 MiB)"));

        // An eighth of the device's memory holds 5 heads' tiles: launches of 5.
        var five = PlanBf16(p, H200 with { MemoryBytes = 8 * 5 * pair + 7 });
        Assert.That((five.DsTiles, five.DsPairs, five.DsBytes), Is.EqualTo((true, 5, 5 * pair)));
        // The default bound (2 GiB) where the device is larger; the options' bound before either.
        Assert.That(PlanBf16(Problem(b: 4, lq: 8192, lk: 8192, h: 16, causal: true), H200 with { MemoryBytes = 1L << 40 }).DsPairs,
            Is.EqualTo(16), "2 GiB of 128 MiB heads");
        Assert.That(PlanBf16(p, H200 with { MemoryBytes = 1L << 40 }, LaunchOptions.Default with { BackwardDsBytes = 3 * pair }).DsPairs,
            Is.EqualTo(3));

        var over = PlanBf16(p, H200 with { MemoryBytes = 8 * pair - 1 });
        Assert.That((over.DsTiles, over.DsQTiles, over.DsKTiles, over.DsPairs, over.DsBytes), Is.EqualTo((false, 0, 0, 0, 0L)));
        Assert.That(over.QuerySharedBytes, Is.EqualTo(BackwardPlanner.TcBackwardShared(TcShape.D128Bwd).Query));
        Assert.That(over.Describe(), Does.Contain("dq recomputes dS: one (batch, head)'s tiles take 2097152 B, more than the scratch bound"));

        var forcedOn = PlanBf16(p, H200, LaunchOptions.Default with { BackwardDsTiles = true });
        var forcedOff = PlanBf16(p, H200 with { MemoryBytes = long.MaxValue }, LaunchOptions.Default with { BackwardDsTiles = false });
        Assert.That((forcedOn.DsTiles, forcedOn.DsPairs, forcedOff.DsTiles), Is.EqualTo((true, 1, false)));
        // Not even forced past what one scratch buffer (int.MaxValue words) holds: 32 GiB of tiles for one L = 128K head.
        var huge = PlanBf16(Problem(b: 1, lq: 131072, lk: 131072, h: 1), H200, LaunchOptions.Default with { BackwardDsTiles = true });
        Assert.That(huge.DsTiles, Is.False, huge.Describe());
        // The portable backward never takes them.
        Assert.That(Plan(p, H200 with { MemoryBytes = long.MaxValue }).DsTiles, Is.False);
    }

    [Test]
    public void Bf16OnCudaTakesTheTensorCoreBackward()
    {
        var plan = PlanBf16(Problem(b: 3, lq: 100, lk: 70, h: 5, d: 128, causal: true));
        Assert.That(plan.TensorCore, Is.Not.Null, plan.Describe());
        Assert.That(plan.TensorCore!.Value.Shape, Is.EqualTo(TcShape.D128Bwd));
        Assert.That(plan.TensorCore!.Value.Causal, Is.True);
        // (pairs of a chunk, tile levels, chunks): a causal band's 15 pairs in one chunk, each 2 levels of 64-row query
        // tiles and of 64-key blocks.
        Assert.That(plan.QueryGrid, Is.EqualTo((15, 2, 1)), "64-row query tiles");
        Assert.That(plan.KeyGrid, Is.EqualTo((15, 2, 1)), "64-key blocks");
        Assert.That((plan.QueryChunk, plan.KeyChunk), Is.EqualTo((15, 15)));
        Assert.That(plan.GroupSize, Is.EqualTo(128));
        Assert.That(plan.KeySharedBytes, Is.GreaterThan(48 * 1024).And.LessThanOrEqualTo(H200.OptInSharedBytes));
        Assert.That(plan.KvDirect, Is.True, "one query head per kv head: dk/dv stored by the key blocks");
        Assert.That(plan.Describe(), Does.Contain("tensor-core backward bf16 d128-bwd causal").And.Contain("dk/dv stored by the key blocks"));
    }

    [Test]
    public void GroupedHeadsSumDkDvThroughScratch()
    {
        var p = Problem(d: 64);
        var f = p.Forward;
        (f.KvHeads, f.HeadGroup) = (2, 4);
        p.Forward = f;
        var plan = PlanBf16(p);
        Assert.That(plan.TensorCore, Is.Not.Null);
        Assert.That(plan.KvDirect, Is.False);
        Assert.That(plan.KeyScratch, Is.EqualTo(2L * 1000 * 8 * 64));
    }

    [TestCase(256, "head dim 256 has no tensor-core backward")]
    [TestCase(40, "head dim 40 has no tensor-core backward")]
    public void OtherHeadDimsTakeThePortableBackward(int d, string why)
    {
        var plan = PlanBf16(Problem(d: d));
        Assert.That(plan.TensorCore, Is.Null);
        Assert.That(plan.Reason, Does.Contain(why));
    }

    [Test]
    public void UnalignedOrPortableRequestsTakeThePortableBackward()
    {
        Assert.That(PlanBf16(Problem(), aligned: false).Reason, Does.Contain("16-byte aligned"));
        Assert.That(PlanBf16(Problem(), options: new LaunchOptions { ForcePortable = true }).Reason, Does.Contain("requested by the options"));
        Assert.That(PlanBf16(Problem(), device: Cpu).Reason, Does.Contain("needs a CUDA accelerator"));
        var p = Problem();
        p.L.DoStrideL = 1028;
        Assert.That(PlanBf16(p).Reason, Does.Contain("dO stride"));
        Assert.That(Plan(Problem()).Reason, Does.Contain("fp32 has no tensor-core kernel"));
    }

    [TestCase(2, 8, 1000, 1000, true)]
    [TestCase(1, 8, 1000, 1000, false)]
    [TestCase(2, 1, 1000, 1000, false)]
    [TestCase(2, 8, 1, 1000, false)]
    public void TensorCoreWritesAnUnbroadcastBiasGradientDirectly(int bb, int bh, int bq, int bk, bool direct)
    {
        var plan = PlanBf16(WithBias(Problem(), bb, bh, bq, bk));
        Assert.That(plan.DbDirect, Is.EqualTo(direct));
        Assert.That(plan.Describe(), Does.Contain(direct ? "dbias written by the key blocks" : "dbias from key blocks"));
    }

    [TestCase(32, 32)]
    [TestCase(64, 16)]
    [TestCase(128, 8)]
    [TestCase(256, 4)]
    public void TilesFitTheSharedBudget(int d, int tile)
    {
        var plan = Plan(Problem(d: d));
        Assert.That(plan.Shape.TileQ, Is.EqualTo(tile));
        Assert.That(Math.Max(plan.QuerySharedBytes, plan.KeySharedBytes), Is.LessThanOrEqualTo(ForwardPlanner.PortableSharedBudget));
        Assert.That(plan.Shape.GroupSize, Is.EqualTo(128));
    }

    [Test]
    public void TensorCoreGridsWalkTheLongestTilesFirstInChunks()
    {
        // Dense causal B4 H16 L4096: 64 levels; chunks of ≥ 4·264/64 pairs (17), 64 pairs as 4 chunks of 16.
        var causal = PlanBf16(Problem(b: 4, lq: 4096, lk: 4096, h: 16, d: 128, causal: true));
        Assert.That((causal.QueryGrid, causal.KeyGrid), Is.EqualTo(((16, 64, 4), (16, 64, 4))), causal.Describe());
        // Equal work without a band: one pair a chunk, levels of one pair after another.
        var dense = PlanBf16(Problem(b: 4, lq: 4096, lk: 4096, h: 16, d: 128));
        Assert.That((dense.QueryGrid, dense.KeyGrid, dense.QueryChunk), Is.EqualTo(((1, 64, 64), (1, 64, 64), 1)), dense.Describe());
        // The tile levels run along y (at most 65 535): more key blocks than that take the portable backward.
        var longKeys = PlanBf16(Problem(b: 1, lq: 1, lk: 65535 * 64 + 1, h: 1, d: 128));
        Assert.That(longKeys.TensorCore, Is.Null, longKeys.Describe());
        Assert.That(longKeys.Reason, Does.Contain("exceed the tensor-core backward's grid"));
        Assert.That(PlanBf16(Problem(b: 1, lq: 1, lk: 65535 * 64, h: 1, d: 128)).TensorCore, Is.Not.Null);
    }

    [Test]
    public void ShortSequencesShrinkTheTile()
    {
        var plan = Plan(Problem(lq: 3, lk: 3, d: 32), Cpu);
        Assert.That(plan.Shape.TileQ, Is.EqualTo(4));
        Assert.That(plan.Shape.GroupSize, Is.EqualTo(16), "the CPU accelerator: one thread per core, at most 16");
    }

    [Test]
    public void GridsCoverQueriesAndKeysOfEveryHead()
    {
        var plan = Plan(Problem(b: 3, lq: 100, lk: 70, h: 5, d: 64));
        Assert.That(plan.QueryGrid, Is.EqualTo((7, 15, 1)));
        Assert.That(plan.KeyGrid, Is.EqualTo((5, 15, 1)));
        Assert.That(plan.KeyScratch, Is.EqualTo(3L * 70 * 5 * 64));
        Assert.That(plan.DBias, Is.EqualTo(DBiasMode.None));
    }

    [Test]
    public void ManyHeadsContinueAlongZ()
    {
        var plan = Plan(Problem(b: 3, lq: 16, lk: 16, h: 30000, d: 32));
        Assert.That(plan.QueryGrid.Y, Is.EqualTo(65535));
        Assert.That(plan.QueryGrid.Z, Is.EqualTo(2));
    }

    [Test]
    public void EmptyProblemHasNoGrid()
    {
        Assert.That(Plan(Problem(lq: 0)).QueryGrid, Is.EqualTo((0, 0, 0)));
        Assert.That(Plan(Problem(lq: 0)).KeyGrid, Is.EqualTo((0, 0, 0)));
        Assert.That(Plan(Problem(lk: 0)).KeyGrid, Is.EqualTo((0, 0, 0)));
        Assert.That(Plan(Problem(lk: 0)).QueryGrid.X, Is.GreaterThan(0), "no keys: dq is still written (zeros)");
    }

    // mode: 1 key blocks, 2 query blocks (DBiasMode, internal)
    [TestCase(2, 8, 1000, 1000, 1, 1000, 1000)]
    [TestCase(1, 1, 1000, 1000, 1, 1000, 1000)]
    [TestCase(2, 8, 1, 1000, 1, 1, 1000)]
    [TestCase(1, 1, 1, 1000, 1, 1, 1000)]
    [TestCase(2, 8, 1000, 1, 2, 1000, 1)]
    [TestCase(1, 8, 1, 1, 2, 1000, 1)]
    public void BiasGradientIsFormedWhereItsKeysAre(int bb, int bh, int bq, int bk, int modeValue, int rows, int cols)
    {
        var mode = (DBiasMode)modeValue;
        var plan = Plan(WithBias(Problem(), bb, bh, bq, bk));
        Assert.That(plan.DBias, Is.EqualTo(mode));
        Assert.That((plan.DbRows, plan.DbCols), Is.EqualTo((rows, cols)));
        Assert.That(plan.Describe(), Does.Contain(mode == DBiasMode.Rows ? "dbias 0" : "dbias from key blocks"));
    }

    [Test]
    public void OneKeyMakesAKeyDimOneBiasAFullOne()
    {
        var plan = Plan(WithBias(Problem(lk: 1), 2, 8, 1000, 1));
        Assert.That(plan.DBias, Is.EqualTo(DBiasMode.Keys));
        Assert.That(plan.DbCols, Is.EqualTo(1));
    }

    [Test]
    public void QueryBroadcastMaskIsGathered()
    {
        var p = Problem(causal: true);
        var f = p.Forward;
        (f.HasMask, f.MaskElemBytes, f.MaskStrideQ, f.MaskStrideH, f.MaskStrideB) = (1, 1, 0, 1000, 8000);
        p.Forward = f;
        var plan = Plan(p);
        Assert.That(plan.Gather, Is.Not.Null);
        Assert.That(plan.Gather!.Rows, Is.EqualTo(16));
        Assert.That(plan.Describe(), Does.Contain("gathered keys (16 lists)"));
    }

    [Test]
    public void GatheredKeysOfOneHeadAGroupAreStoredDirectlyAfterZeros()
    {
        var p = Problem(b: 2, lq: 300, lk: 500, h: 4, d: 128, causal: true);
        var f = p.Forward;
        (f.HasMask, f.MaskElemBytes, f.MaskStrideQ, f.MaskStrideH, f.MaskStrideB) = (1, 1, 0, 500, 2000);
        p.Forward = f;
        var plan = PlanBf16(p);
        Assert.That(plan.Gather, Is.Not.Null, plan.Describe());
        Assert.That((plan.KvDirect, plan.KvZero), Is.EqualTo((true, true)), plan.Describe());
        Assert.That(plan.Describe(), Does.Contain("dk/dv stored by the key blocks (unlisted keys zeroed first)"));

        (f.KvHeads, f.HeadGroup) = (2, 2); // grouped heads still sum their fp32 scratch
        p.Forward = f;
        plan = PlanBf16(p);
        Assert.That(plan.Gather, Is.Not.Null, plan.Describe());
        Assert.That((plan.KvDirect, plan.KvZero), Is.EqualTo((false, false)), plan.Describe());
    }

    [Test]
    public void GatheredKeysSizeTheDsTilesByTheLongestList()
    {
        var p = Problem(b: 2, lq: 1000, lk: 1000, h: 8, causal: true);
        var f = p.Forward;
        (f.HasMask, f.MaskElemBytes, f.MaskStrideQ, f.MaskStrideH, f.MaskStrideB) = (1, 1, 0, 1000, 8000);
        p.Forward = f;
        var device = H200 with { MemoryBytes = 1L << 40 };
        Assert.That(PlanBf16(p, device).DsKTiles, Is.EqualTo(16), "lists not known yet: Lk");
        var plan = BackwardPlanner.Plan(p, new BufferFacts(ElemKind.BFloat16, true, 0), device, null, keySlots: 130);
        Assert.That((plan.DsTiles, plan.DsQTiles, plan.DsKTiles, plan.DsPairs, plan.DsBytes), Is.EqualTo((true, 16, 3, 16, 16L * 16 * 3 * 8192)));
        Assert.That(plan.KeyGrid, Is.EqualTo((16, 3, 1)), "key levels up to the longest list, 16 pairs in one chunk");
        // Without gathered keys the lists do not matter.
        Assert.That(BackwardPlanner.Plan(Problem(), new BufferFacts(ElemKind.BFloat16, true, 0), device, null, keySlots: 130).DsKTiles,
            Is.EqualTo(16));
    }
}
