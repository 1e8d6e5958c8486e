using ILGPU.Runtime;
using FlashDmAttn.Kernels.Backward;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Planning;
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

    private static BackwardPlan Plan(BwdParams p, DeviceInfo? device = null) => BackwardPlanner.Plan(p, new BufferFacts(ElemKind.BFloat16, true, 0), device ?? H200);

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
}
