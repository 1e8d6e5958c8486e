using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Backward;

/// <summary>Runs backward cases with the tensor-core backward forced onto a backend, asserting that it ran.</summary>
internal static class TensorCoreBackwardRunner
{
    /// <param name="dsTiles">dq from the key blocks' dS tiles (true), from the query-block kernel (false), or as the
    /// planner chooses (null: it must choose the dS tiles for these small shapes).</param>
    /// <param name="dsBytes">The dS tiles' scratch bound (null: the planner's).</param>
    public static void Run(AttentionBackend backend, BackwardCase c, bool? dsTiles = null, long? dsBytes = null)
    {
        var plans = new List<BackwardPlan>();
        var recording = backend.WithLaunch(o => o with
        {
            TensorCoreOnCpu = true, BackwardObserver = plans.Add, BackwardDsTiles = dsTiles, BackwardDsBytes = dsBytes,
        });
        BackwardCaseRunner.Run(recording, c);
        Assert.That(plans, Is.Not.Empty, $"{c}: no backward plan");
        string described = string.Join("; ", plans.Select(p => p.Describe()));
        Assert.That(plans.All(p => p.TensorCore is not null), Is.True, $"{c}: the tensor-core backward did not run ({described})");
        bool expectTiles = dsTiles ?? true;
        Assert.That(plans.All(p => p.DsTiles == expectTiles || p.QueryGrid.X == 0 || p.KeyGrid.X == 0), Is.True,
            $"{c}: expected dq {(expectTiles ? "from dS tiles" : "by the query-block kernel")} ({described})");
    }

    /// <summary>Cases for the query-block kernel (dq recomputing dS), the path for problems whose dS tiles would not fit:
    /// causal Lq ≠ Lk, masks and biases, gathered keys, softcap, varlen.</summary>
    public static IEnumerable<TestCaseData> QueryBlockCases()
    {
        BackwardCase[] cases =
        [
            new(new("bf16", 1, 70, 20, 2, 1, 128, Causal: true)),
            new(new("bf16", 2, 17, 40, 2, 2, 64, MaskShape: [1, 1, 0, 0], MaskKind: MaskKind.Dtype, BiasShape: [0, 1, 1, 0], Softcap: 5f)),
            new(new("bf16", 2, 70, 150, 4, 2, 64, Causal: true, MaskShape: [0, 0, 1, 0], BiasShape: [0, 0, 1, 0]), NaNHiddenKeys: true),
            new(new("bf16", 3, 21, 60, 2, 2, 32, Causal: true, Path: ApiPath.Varlen, MaskShape: [0, 0, 1, 0], BiasShape: [0, 0, 1, 0])),
            // One query head per kv head with gathered keys: dk/dv stored at the listed keys, zeros elsewhere.
            new(new("fp16", 1, 40, 90, 2, 2, 64, Causal: true, MaskShape: [0, 0, 1, 0], BiasShape: [0, 0, 1, 0]), NaNHiddenKeys: true, Deterministic: true),
        ];
        return cases.Select(c => Named("TensorCoreBackwardQueryBlock", c));
    }

    /// <summary>Cases whose (batch, head) pairs run in several launches of the key-block and dq kernels (a scratch bound
    /// of one pair's tiles): GQA with a per-head bias, gathered keys with varlen.</summary>
    public static IEnumerable<TestCaseData> ChunkedCases()
    {
        BackwardCase[] cases =
        [
            new(new("bf16", 2, 70, 90, 4, 2, 64, Causal: true, MaskShape: [0, 0, 0, 0], BiasShape: [0, 0, 0, 0])),
            new(new("fp16", 3, 21, 60, 3, 1, 32, Causal: true, Path: ApiPath.Varlen, MaskShape: [0, 0, 1, 0], BiasShape: [0, 0, 1, 0])),
        ];
        return cases.Select(c => Named("TensorCoreBackwardChunked", c));
    }

    private static TestCaseData Named(string prefix, BackwardCase c) => new TestCaseData(c).SetName($"{prefix} {c}");

    /// <summary>
    /// Small cases over the tensor-core backward's features: every head dim it has (32, 64, 96, 128) × bf16/fp16,
    /// causal with Lq ≠ Lk both ways, GQA, every mask and bias broadcast form (per element, per key with gathered keys,
    /// key dim 1), softcap, a negative scale, every entry point, strided inputs, lengths that are not tile multiples and
    /// more than one tile.
    /// </summary>
    public static IEnumerable<TestCaseData> CpuCases()
    {
        BackwardCase[] cases =
        [
            new(new("bf16", 1, 20, 37, 1, 1, 32)),
            new(new("fp16", 1, 33, 70, 4, 2, 64, Causal: true)),
            new(new("bf16", 1, 70, 20, 2, 1, 128, Causal: true)),
            new(new("fp16", 2, 19, 45, 2, 1, 96, MaskShape: [0, 0, 0, 0], BiasShape: [1, -1, 0, 0])),
            new(new("bf16", 2, 17, 40, 2, 2, 64, MaskShape: [1, 1, 0, 0], MaskKind: MaskKind.Dtype, BiasShape: [0, 1, 1, 0], Softcap: 5f)),
            new(new("fp16", 1, 70, 130, 2, 1, 32, Causal: true, MaskShape: [0, 0, 0, 0], BiasShape: [0, 0, 0, 0]), Deterministic: true),
            new(new("bf16", 1, 20, 70, 1, 1, 64, Scale: -0.2f, Causal: true)),
            new(new("bf16", 1, 12, 12, 2, 2, 32, Strided: true, Causal: true), CallerGrads: true),
            new(new("fp16", 1, 12, 12, 2, 2, 32, Path: ApiPath.QkvPacked, MaskShape: [0, 0, 0, 0])),
            new(new("bf16", 1, 12, 21, 4, 1, 64, Path: ApiPath.KvPacked, BiasShape: [0, 0, 0, 0])),
            new(new("bf16", 3, 21, 40, 2, 1, 64, Causal: true, Path: ApiPath.Varlen, MaskShape: [0, 0, 0, 0]), Deterministic: true),
            new(new("fp16", 3, 15, 45, 2, 2, 32, Path: ApiPath.Paged, PageSize: 16, BiasShape: [0, 0, 0, 0], Softcap: 3f)),
            new(new("bf16", 1, 9, 30, 2, 2, 32, BiasShape: [0, 0, 0, 1], MaskShape: [0, 0, 0, 1])),
            // A byte mask with 16-byte aligned rows (the key blocks read it a query tile ahead), a masked query tile,
            // ragged last query tile.
            new(new("bf16", 1, 150, 128, 2, 1, 64, Causal: true, MaskShape: [0, 0, 0, 0], BiasShape: [0, 0, 0, 0]), MaskedTile: true),
            // Masks broadcast over queries: gathered keys, per-key bias, NaN in the K/V rows no query sees.
            new(new("bf16", 2, 70, 150, 4, 2, 64, Causal: true, MaskShape: [0, 0, 1, 0], BiasShape: [0, 0, 1, 0]), NaNHiddenKeys: true),
            new(new("fp16", 1, 33, 97, 2, 1, 128, MaskShape: [1, -1, 1, 0], BiasShape: [1, 1, 1, 0], Softcap: 4f), NaNHiddenKeys: true, Deterministic: true),
            new(new("bf16", 3, 21, 60, 2, 2, 32, Causal: true, Path: ApiPath.Varlen, MaskShape: [0, 0, 1, 0], BiasShape: [0, 0, 1, 0])),
            // One query head per kv head with gathered keys: dk/dv stored at the listed keys, zeros elsewhere.
            new(new("fp16", 1, 40, 90, 2, 2, 64, Causal: true, MaskShape: [0, 0, 1, 0], BiasShape: [0, 0, 1, 0]), NaNHiddenKeys: true, Deterministic: true),
        ];
        return cases.Select(c => Named("TensorCoreBackward", c));
    }

    /// <summary>Larger shapes for the CUDA device: several query and key tiles, every head dim, all features.</summary>
    public static IEnumerable<TestCaseData> GpuCases()
    {
        foreach (var dt in new[] { "bf16", "fp16" })
        foreach (var d in new[] { 32, 64, 96, 128 })
        {
            yield return Named("TensorCoreBackwardGpu", new(new(dt, 2, 257, 300, 4, 2, d)));
            yield return Named("TensorCoreBackwardGpu", new(new(dt, 2, 200, 333, 4, 1, d, Causal: true, MaskShape: [0, 0, 0, 0], BiasShape: [1, -1, 0, 0])));
            yield return Named("TensorCoreBackwardGpu", new(new(dt, 1, 333, 130, 2, 2, d, Causal: true, MaskShape: [1, 1, 0, 0], MaskKind: MaskKind.Dtype, BiasShape: [0, 1, 1, 0], Softcap: 8f)));
            yield return Named("TensorCoreBackwardGpu", new(new(dt, 2, 200, 256, 4, 2, d, Causal: true, MaskShape: [0, 0, 0, 0], BiasShape: [0, 0, 0, 0]), MaskedTile: true));
        }
        yield return Named("TensorCoreBackwardGpu", new(new("bf16", 4, 190, 260, 4, 2, 128, Causal: true, Path: ApiPath.Varlen, MaskShape: [0, 0, 0, 0])));
        yield return Named("TensorCoreBackwardGpu", new(new("fp16", 3, 150, 300, 4, 4, 64, Path: ApiPath.Paged, PageSize: 64, BiasShape: [0, 0, 0, 0])));
        yield return Named("TensorCoreBackwardGpu", new(new("bf16", 2, 300, 520, 4, 2, 128, Causal: true, MaskShape: [0, 0, 1, 0], BiasShape: [0, 0, 1, 0]), NaNHiddenKeys: true));
        yield return Named("TensorCoreBackwardGpu", new(new("fp16", 1, 260, 400, 4, 4, 64, MaskShape: [0, 0, 1, 0], BiasShape: [0, 0, 1, 0], Softcap: 6f)));
        yield return Named("TensorCoreBackwardGpu", new(new("bf16", 1, 1, 1000, 8, 1, 128), CallerGrads: true));
        yield return Named("TensorCoreBackwardGpu", new(new("bf16", 2, 200, 700, 4, 4, 128, Causal: true, MaskShape: [0, 0, 1, 0], BiasShape: [0, 0, 1, 0]), NaNHiddenKeys: true));
    }
}

/// <summary>The tensor-core backward's logic on ILGPU's CPU accelerator (warp size 32) through the intrinsics' portable
/// twins, against the float64 reference.</summary>
[TestFixture]
public class TensorCoreBackwardCpuTests
{
    [TestCaseSource(typeof(TensorCoreBackwardRunner), nameof(TensorCoreBackwardRunner.CpuCases))]
    public void MatchesFloat64Reference(BackwardCase c) => TensorCoreBackwardRunner.Run(TestBackends.Get("cpu"), c);

    [TestCaseSource(typeof(TensorCoreBackwardRunner), nameof(TensorCoreBackwardRunner.QueryBlockCases))]
    public void QueryBlockKernelMatchesFloat64Reference(BackwardCase c) => TensorCoreBackwardRunner.Run(TestBackends.Get("cpu"), c, false);

    /// <summary>A scratch bound of one byte: one (batch, head) pair per launch.</summary>
    [TestCaseSource(typeof(TensorCoreBackwardRunner), nameof(TensorCoreBackwardRunner.ChunkedCases))]
    public void PairsInSeveralLaunchesMatchFloat64Reference(BackwardCase c)
        => TensorCoreBackwardRunner.Run(TestBackends.Get("cpu"), c, true, 1);
}

/// <summary>The tensor-core backward on the CUDA device, larger shapes.</summary>
[CudaFixture("cuda")]
public class TensorCoreBackwardGpuTests(string backendName)
{
    [TestCaseSource(typeof(TensorCoreBackwardRunner), nameof(TensorCoreBackwardRunner.GpuCases))]
    public void MatchesFloat64Reference(BackwardCase c) => TensorCoreBackwardRunner.Run(TestBackends.Get(backendName), c);

    [TestCaseSource(typeof(TensorCoreBackwardRunner), nameof(TensorCoreBackwardRunner.QueryBlockCases))]
    public void QueryBlockKernelMatchesFloat64Reference(BackwardCase c) => TensorCoreBackwardRunner.Run(TestBackends.Get(backendName), c, false);
}
