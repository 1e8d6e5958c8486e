using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Kernels.TensorCore;
using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.TensorCore;

/// <summary>
/// Stream-K launches of the tensor-core kernel: the plan and the walk every group of the launch takes (the kernel's own
/// <see cref="TcStreamK.Range"/> and <see cref="TcStreamK.Piece"/>), and on the CPU accelerator (2 resident groups) cases
/// whose blocks leave the last wave partly empty, against the float64 reference.
/// </summary>
[TestFixture]
public class TcStreamKTests
{
    [Test]
    public void EveryStepOnceEverySplitBlockInTwoPiecesThatMeetInOneSlot()
    {
        int planned = 0;
        foreach (int slots in new[] { 2, 3, 8, 264 })
        foreach (int tiles in new[] { 2, 3, 5, 16, 64 })
        foreach (long groups in new long[] { 3, 5, 9, 17, 100, 527, 2048, 4096 })
        {
            var plan = TcStreamK.Plan(groups, tiles, slots);
            if (plan is not { } pl) continue;
            planned++;
            int G = (int)groups, total = G * tiles;
            Assert.That(pl.Workers, Is.EqualTo(slots));
            Assert.That(pl.Dp % slots, Is.Zero, "whole waves before the workers");
            Assert.That(G - pl.Dp, Is.InRange(slots + 1, 2 * slots - 1), "the workers take the last two waves' blocks");
            Assert.That(pl.PerWorker, Is.GreaterThanOrEqualTo(tiles), "a block meets at most two workers");
            var seen = new int[total];
            var pieces = new Dictionary<int, List<(int Block, int T0, int T1, int Half)>>();
            int most = 0, least = int.MaxValue;
            for (int g = 0; g < pl.Dp + pl.Workers; g++)
            {
                TcStreamK.Range(g, pl.Dp, tiles, pl.PerWorker, total, out int pos, out int end);
                if (g >= pl.Dp) { most = Math.Max(most, end - pos); least = Math.Min(least, Math.Max(end - pos, 0)); }
                while (pos < end)
                {
                    int slot = TcStreamK.Piece(pos, end, tiles, g - pl.Dp, out int block, out int t0, out int t1);
                    Assert.That(t1, Is.GreaterThan(t0));
                    for (int t = t0; t < t1; t++) seen[block * tiles + t]++;
                    if (g < pl.Dp) Assert.That(slot, Is.EqualTo(-1), "whole blocks before the workers");
                    if (slot >= 0)
                    {
                        Assert.That(slot, Is.InRange(1, slots - 1));
                        Assert.That(t0 == 0 || t1 == tiles, Is.True, "a piece is a head or a tail");
                        if (!pieces.TryGetValue(slot, out var list)) pieces[slot] = list = [];
                        list.Add((block, t0, t1, t0 == 0 ? 0 : 1));
                    }
                    else Assert.That((t0, t1), Is.EqualTo((0, tiles)));
                    pos += t1 - t0;
                }
            }
            Assert.That(seen, Is.All.EqualTo(1), $"G {G} T {tiles} S {slots}: every (block, tile) step once");
            foreach (var (slot, list) in pieces)
            {
                Assert.That(list, Has.Count.EqualTo(2), $"slot {slot}: two pieces");
                Assert.That(list[0].Block, Is.EqualTo(list[1].Block), $"slot {slot}: one block");
                Assert.That(list.Select(x => x.Half).Order(), Is.EqualTo(new[] { 0, 1 }));
                var head = list.Single(x => x.Half == 0);
                var tail = list.Single(x => x.Half == 1);
                Assert.That((head.T0, head.T1, tail.T1), Is.EqualTo((0, tail.T0, tiles)), $"slot {slot}: head then tail");
            }
            Assert.That(most - least, Is.LessThanOrEqualTo(pl.PerWorker), "workers' runs are even (the last may be short)");
            Assert.That(most, Is.EqualTo(pl.PerWorker));
        }
        Assert.That(planned, Is.GreaterThan(20), "the grid above plans stream-K often enough to mean something");
    }

    [TestCase(264, 64, 2048L, true)] // D = 128, B4 H16 L4096: 7.76 waves
    [TestCase(264, 64, 4096L, true)] // D = 64, B4 H32 L4096: 15.5 waves
    [TestCase(264, 64, 2112L, false)] // exactly 8 waves
    [TestCase(264, 64, 2111L, false)] // a last wave 263/264 full gains 0.05 %
    [TestCase(264, 64, 200L, false)] // under one wave
    [TestCase(264, 1, 2048L, false)] // one tile per block
    [TestCase(1, 64, 2048L, false)] // one slot
    public void PlansWhenTheLastWaveIsPartlyEmpty(int slots, int tiles, long groups, bool plans)
        => Assert.That(TcStreamK.Plan(groups, tiles, slots).HasValue, Is.EqualTo(plans));

    [Test]
    public void PlanOfTheD128L4096Shape()
    {
        // 2048 blocks of 64 tiles on 264 groups: 6 whole waves (1584 blocks), then 464 blocks' 29 696 steps in 264 runs of 113.
        var plan = TcStreamK.Plan(2048, 64, 264)!.Value;
        Assert.That(plan, Is.EqualTo(new TcSplitPlan(1584, 264, 113)));
    }

    private static AttentionBackend Cpu => FlashDmAttention.Auto("cpu");

    /// <summary>
    /// Cases with a partly empty last wave on the CPU accelerator's 2 slots (dtype, B, Lq, Lk, H, Hk, D), a covering set
    /// kept to three (each compiles its own stream-K kernel: ~6 min apiece in CI's Debug build): two m-tiles per warp with
    /// Q in registers, one m-tile with Q re-read, 64- and 32-key tiles, ragged rows and last tiles, GQA, softcap, a
    /// negative scale (the scaled-scores specialisation), strided tensors; blocks split into a head and a tail piece, with
    /// and without whole waves before the workers. D = 64 and 128 ran too (PERF-NOTES v11) and run on the GPU.
    /// </summary>
    public static IEnumerable<TestCaseData> Cases()
    {
        AttentionCase[] cases =
        [
            // 5 blocks (128 rows) of 3 tiles: 2 whole, then runs of 5 steps: block 3 split 2 + 1.
            new("bf16", 1, 100, 150, 5, 1, 32),
            // 9 blocks (64 rows, the last ragged) of 4 tiles, softcap, GQA: 6 whole, then runs of 6: block 7 split 2 + 2.
            new("fp16", 1, 130, 200, 3, 1, 192, Softcap: 3f),
            // D = 256 (32-key tiles): 3 blocks of 4 tiles, no whole waves, negative scale, strided q/k/v/o.
            new("bf16", 1, 50, 100, 3, 3, 256, Scale: -0.15f, Strided: true),
        ];
        foreach (var c in cases)
            yield return new TestCaseData(c).SetName($"TensorCore stream-K {c}");
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(AttentionCase c) => RunStreamK(Cpu, c);

    /// <summary>Without the test hook the CPU accelerator never launches stream-K, even for D = 64 (whose policy has
    /// <see cref="TcTune.StreamK"/>) on a shape it would plan (3 blocks of 4 tiles on 2 slots).</summary>
    [Test]
    public void OffByDefaultOnTheCpu()
    {
        var c = new AttentionCase("bf16", 1, 300, 200, 1, 1, 64);
        Assert.That(TcStreamK.Plan(3, 4, 2), Is.Not.Null, "the shape is one stream-K would split");
        RunStreamK(Cpu, c, forced: false, expected: false);
    }

    /// <summary>
    /// Runs a case with stream-K forced on (the test hook, as FLASHDMATTN_TC_STREAMK=1) or as the launcher decides, and
    /// checks whether it launched stream-K.
    /// </summary>
    internal static void RunStreamK(AttentionBackend backend, AttentionCase c, bool forced = true, bool expected = true)
    {
        var plans = TensorCoreRunner.Run(backend, c, forced ? StreamKMode.On : StreamKMode.Auto);
        Assert.That(plans.Any(p => p.StreamK is not null), Is.EqualTo(expected), $"{c}: stream-K launched");
    }
}

/// <summary>Stream-K on the GPU: every head dim with more blocks than the resident groups (264 or 132 on an H100) and a
/// partly empty last wave, ragged lengths, GQA, softcap.</summary>
[CudaFixture]
public class TcStreamKGpuTests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        // About 300 blocks (many heads, short sequences: the float64 reference stays fast) on 264 or 132 groups.
        AttentionCase[] cases =
        [
            new("bf16", 4, 128, 150, 75, 25, 32),
            // D = 64, 600 blocks: two whole waves before the workers on 264 groups.
            new("bf16", 2, 128, 300, 300, 100, 64),
            new("fp16", 3, 100, 200, 100, 25, 64),
            new("bf16", 2, 128, 100, 150, 150, 96),
            new("fp16", 4, 128, 130, 75, 15, 128),
            new("bf16", 3, 120, 190, 100, 100, 128, Softcap: 20f),
            new("bf16", 2, 128, 100, 75, 25, 192),
            new("fp16", 2, 64, 70, 150, 150, 256, Softcap: 10f),
        ];
        foreach (var c in cases)
            yield return new TestCaseData(c).SetName($"TensorCoreGpu stream-K {c}");
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(AttentionCase c) => TcStreamKTests.RunStreamK(FlashDmAttention.Auto("cuda"), c);

    /// <summary>Stream-K stays off, even forced on, where blocks have unequal work or the kernel needs seqInfo (whose
    /// place the work buffer takes): a causal band, a mask, a bias, variable lengths. ~300 D = 64 blocks, as above.</summary>
    public static IEnumerable<TestCaseData> UnequalWork()
    {
        AttentionCase[] cases =
        [
            new("bf16", 3, 100, 200, 100, 100, 64, Causal: true),
            new("fp16", 3, 100, 200, 100, 100, 64, MaskShape: [0, 0, 0, 0]),
            new("bf16", 3, 100, 200, 100, 100, 64, BiasShape: [1, 0, 1, 0]),
            new("bf16", 300, 100, 200, 1, 1, 64, Path: ApiPath.Varlen),
        ];
        foreach (var c in cases)
            yield return new TestCaseData(c).SetName($"TensorCoreGpu stream-K off: {c}");
    }

    [TestCaseSource(nameof(UnequalWork))]
    public void OffForUnequalWork(AttentionCase c)
        => TcStreamKTests.RunStreamK(FlashDmAttention.Auto("cuda"), c, forced: true, expected: false);

    /// <summary>The merge order is fixed (head piece, then tail), whichever piece arrives second: repeated runs give the
    /// same bits. 960 D = 64 blocks of 16 tiles (2 whole waves, then 264 workers); outputs poisoned before each run.</summary>
    [Test]
    public void RepeatedRunsGiveTheSameBits()
    {
        var plans = new List<ForwardPlan>();
        var backend = FlashDmAttention.Auto("cuda").WithLaunch(o => o with { StreamK = StreamKMode.On, Observer = plans.Add });
        var acc = backend.Accelerator;
        const int B = 1, L = 1024, H = 120, D = 64;
        var rng = TestData.NewRandom(out int seed);
        var owned = new List<IDisposable>();
        try
        {
            DeviceTensor<BFloat16> Input()
            {
                var t = DeviceTensor<BFloat16>.FromHost(acc, TestData.Normal<BFloat16>(rng, (long)B * L * H * D).Values, B, L, H, D);
                owned.Add(t);
                return t;
            }
            var (q, k, v) = (Input(), Input(), Input());
            var o = DeviceTensor<BFloat16>.Allocate(acc, B, L, H, D);
            owned.Add(o);
            BFloat16[]? first = null;
            for (int run = 0; run < 8; run++)
            {
                o.CopyFromHost(TestData.Poison<BFloat16>((long)B * L * H * D));
                backend.Forward(q, k, v, output: o);
                var now = o.ToHost();
                if (first is null)
                {
                    Assert.That(now.All(x => !float.IsNaN((float)x)), Is.True, $"seed={seed}: output written");
                    first = now;
                }
                else
                    Assert.That(now.AsSpan().SequenceEqual(first), Is.True, $"seed={seed}: run {run} differs from run 0");
            }
            Assert.That(plans.Count(p => p.StreamK is not null), Is.EqualTo(8), "every run launched stream-K");
        }
        finally
        {
            foreach (var d in owned) d.Dispose();
        }
    }

    /// <summary>By default (no hook, FLASHDMATTN_TC_STREAMK unset) the policies decide: D = 64 on 128 rows launches
    /// stream-K on 300 blocks (won on the H100, PERF-NOTES v12), D = 128 does not (lost there).</summary>
    [TestCase(64, true)]
    [TestCase(128, false)]
    public void PolicyDecides(int headDim, bool streamK)
        => TcStreamKTests.RunStreamK(FlashDmAttention.Auto("cuda"), new AttentionCase("bf16", 3, 100, 200, 100, 100, headDim),
            forced: false, expected: streamK);
}
