using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Decode;

/// <summary>Runs a case with the tensor-core kernel and a forced split-KV / GQA-packing choice; returns the plans.</summary>
internal static class SplitKvRunner
{
    public static IReadOnlyList<ForwardPlan> Run(AttentionBackend backend, AttentionCase c, int splits, bool? pack, bool onCpu)
    {
        var plans = new List<ForwardPlan>();
        var recording = backend.WithLaunch(o => o with { TensorCoreOnCpu = onCpu, KvSplits = splits, PackGqa = pack, Observer = plans.Add });
        CaseRunner.Run(recording, c);
        return plans;
    }
}

/// <summary>
/// Split-KV and packed GQA (TcSplitKv) on ILGPU's CPU accelerator through the tensor-core kernel's portable twins:
/// forced split counts (uneven ranges, a range past the last tile), every feature the forward has (causal, mask and
/// bias broadcasts, gathered keys, softcap, varlen, paged, GQA), against the float64 reference with NaN-poisoned
/// outputs, and the plan the launcher ran.
/// </summary>
[TestFixture]
public class SplitKvCpuTests
{
    private static AttentionBackend Cpu => FlashDmAttention.Auto("cpu");

    public static IEnumerable<TestCaseData> Cases() => Forced().Select(x => Named(x.Case, x.Splits, x.Pack, x.ExpectPack, ""));

    /// <summary>(case, forced splits, forced packing, expected pack); the GPU fixture runs them too.</summary>
    internal static IEnumerable<(AttentionCase Case, int Splits, bool? Pack, int ExpectPack)> Forced()
    {
        // One query per sequence, GQA: kv head's 2 query heads in one block; 300 keys = 5 tiles in 3 ranges (2, 2, 1).
        yield return (new AttentionCase("bf16", 2, 1, 300, 4, 2, 64), 3, true, 2);
        // Packing alone (one range); one query under a causal band sees every key.
        yield return (new AttentionCase("bf16", 2, 1, 70, 4, 2, 64, Causal: true), 1, true, 2);
        // Several queries per head (speculative decode): 4 heads × 5 queries in one block, ragged rows.
        yield return (new AttentionCase("bf16", 2, 5, 200, 8, 2, 64), 2, true, 4);
        // The same with variable key lengths, 3 queries in every sequence.
        yield return (new AttentionCase("bf16", 3, 3, 130, 4, 2, 64, Path: ApiPath.Paged, PageSize: 16, UniformQ: true), 1, true, 2);
        // Variable key lengths (some 0: rows see no key), one query each: packed through cu_q, split.
        yield return (new AttentionCase("bf16", 3, 1, 130, 4, 2, 64, Path: ApiPath.Paged, PageSize: 16, UniformQ: true), 2, true, 2);
        // A mask over heads and a bias over the batch with softcap; 250 keys = 4 tiles in 5 ranges: the last is empty.
        yield return (new AttentionCase("fp16", 2, 3, 250, 2, 2, 64, MaskShape: [0, 1, 0, 0], BiasShape: [1, 0, 0, 0], Softcap: 2f), 5, null, 1);
        // Gathered keys (per-key mask and bias), causal, GQA not packable (mask): the key lists split.
        yield return (new AttentionCase("bf16", 2, 2, 300, 4, 2, 64, Causal: true, MaskShape: [0, 0, 1, 0], BiasShape: [0, 0, 1, 0]), 3, null, 1);
        // Longer ranges: 6 and 5 tiles at D = 128 under a causal band; 9 tiles in 2 ranges at D = 64 with 2 queries a
        // head, unpacked.
        yield return (new AttentionCase("fp16", 1, 1, 700, 4, 2, 128, Causal: true), 2, true, 2);
        yield return (new AttentionCase("bf16", 2, 2, 520, 4, 4, 64), 2, null, 1);
        // Paged, ragged lengths, full bias, softcap.
        yield return (new AttentionCase("fp16", 3, 4, 150, 2, 2, 32, Path: ApiPath.Paged, PageSize: 16, BiasShape: [0, 0, 0, 0], Softcap: 3f), 2, null, 1);
    }

    internal static TestCaseData Named(AttentionCase c, int splits, bool? pack, int expectPack, string prefix)
        => new TestCaseData(c, splits, pack, expectPack).SetName($"{prefix}SplitKv x{splits}{(pack == true ? " packed" : "")} {c}");

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(AttentionCase c, int splits, bool? pack, int expectPack)
        => Check(Cpu, c, splits, pack, expectPack, onCpu: true);

    internal static void Check(AttentionBackend backend, AttentionCase c, int splits, bool? pack, int expectPack, bool onCpu)
    {
        var plans = SplitKvRunner.Run(backend, c, splits, pack, onCpu);
        var tc = plans.Where(p => p.Family == KernelFamily.TensorCore).ToList();
        Assert.That(tc, Is.Not.Empty, $"{c}: the tensor-core kernel did not run");
        foreach (var p in tc)
        {
            Assert.That(p.KvSplit, Is.Not.Null, p.Describe());
            Assert.That(p.KvSplit!.Value.Splits, Is.EqualTo(splits), p.Describe());
            Assert.That(p.KvSplit.Value.Pack, Is.EqualTo(expectPack), p.Describe());
        }
    }
}

/// <summary>Split-KV on the CUDA device as the planner chooses it: decode shapes with long caches.</summary>
[CudaFixture]
public class SplitKvGpuTests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        yield return Named(new AttentionCase("bf16", 2, 1, 8191, 8, 2, 128));
        yield return Named(new AttentionCase("fp16", 1, 1, 5000, 4, 4, 64, Causal: true));
        yield return Named(new AttentionCase("bf16", 2, 16, 4000, 8, 2, 128, Causal: true));
        yield return Named(new AttentionCase("bf16", 3, 1, 3000, 8, 2, 128, Path: ApiPath.Paged, PageSize: 64, UniformQ: true));
        yield return Named(new AttentionCase("bf16", 1, 1, 6000, 4, 4, 128, MaskShape: [0, 0, 1, 0], BiasShape: [0, 0, 1, 0]));
        yield return Named(new AttentionCase("fp16", 2, 4, 3000, 4, 2, 96, MaskShape: [0, 0, 0, 0], BiasShape: [0, -1, 0, 0], Softcap: 5f));
    }

    private static TestCaseData Named(AttentionCase c) => new TestCaseData(c).SetName($"SplitKvGpu {c}");

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(AttentionCase c)
    {
        var plans = SplitKvRunner.Run(FlashDmAttention.Auto("cuda"), c, 0, null, onCpu: false);
        Assert.That(plans.Any(p => p.KvSplit is { Splits: > 1 }), Is.True,
            $"{c}: no split ({string.Join("; ", plans.Select(p => p.Describe()))})");
    }
}

/// <summary>The CPU fixture's forced split counts and packing on the CUDA device, with packed split decodes of fp16 and
/// bf16 at D = 64 and 128 (no planner choice in between: the same kernels as the CPU twins run).</summary>
[CudaFixture]
public class SplitKvForcedGpuTests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var x in SplitKvCpuTests.Forced())
            yield return SplitKvCpuTests.Named(x.Case, x.Splits, x.Pack, x.ExpectPack, "Gpu");
        foreach (var dtype in new[] { "fp16", "bf16" })
        foreach (int d in new[] { 64, 128 })
            yield return SplitKvCpuTests.Named(new AttentionCase(dtype, 2, 1, 150, 8, 2, d, Causal: true), 2, true, 4, "Gpu");
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(AttentionCase c, int splits, bool? pack, int expectPack)
        => SplitKvCpuTests.Check(FlashDmAttention.Auto("cuda"), c, splits, pack, expectPack, onCpu: false);
}
