using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Backward;

/// <summary>
/// The backward pass over its parameter space: dtypes × head dims {32, 40, 64, 128, 256} × lengths {1, 17, 64, 70}
/// (q and k independently) × causal × GQA {1, 2, 4} × mask broadcast shapes × mask storage × bias broadcast shapes
/// (key dim 1 included) × softcap × entry point (dense, qkv-packed, kv-packed, varlen, paged) × strided inputs ×
/// batch × caller or library gradient buffers × deterministic × page size, as a pairwise covering design on shapes
/// the CPU accelerator runs in under a second. Each case draws fresh random inputs, runs the library's forward for
/// output and LSE, then the backward, and compares dq, dk, dv and dbias with float64.
/// </summary>
[TestFixture("cpu")]
[CudaFixture("cuda")]
public class BackwardCoverage(string backendName)
{
    private static readonly string[] DTypes = ["fp32", "fp16", "bf16"];
    private static readonly int[] HeadDims = [32, 40, 64, 128, 256];
    private static readonly int[] Lengths = [1, 17, 64, 70];
    private static readonly int[] Groups = [1, 2, 4];
    // Broadcast specs (batch, heads, queries, keys): null none; 0 full; 1 broadcast; -1 kv heads (head entry only).
    // [0, 0, 1, 0] is the per-key form (B, H, 1, Lk): as a mask it makes the kernels gather the visible keys.
    private static readonly int[]?[] Masks =
        [null, [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, -1, 0, 0], [0, 0, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]];
    private static readonly int[]?[] Biases =
        [null, [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, -1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 0]];
    private static readonly MaskKind[] MaskKinds = [MaskKind.Byte, MaskKind.Bool, MaskKind.Dtype];
    private static readonly float?[] Softcaps = [null, 30f, 2f];
    private static readonly ApiPath[] Paths = [ApiPath.Dense, ApiPath.QkvPacked, ApiPath.KvPacked, ApiPath.Varlen, ApiPath.Paged];
    private static readonly int[] Batches = [1, 2, 3];
    private static readonly int[] PageSizes = [16, 5];

    /// <summary>Multiply-adds of one attention product (B·H·Lq·Lk·D); bounds the CPU accelerator's time per case.</summary>
    private const long CostBudget = 8_000_000;

    public static IEnumerable<TestCaseData> Cases()
    {
        int[] levels = [DTypes.Length, HeadDims.Length, Lengths.Length, Lengths.Length, 2, Groups.Length, Masks.Length,
            MaskKinds.Length, Biases.Length, Softcaps.Length, Paths.Length, 2, Batches.Length, 2, 2, PageSizes.Length];
        var rows = CoveringDesign.Generate(levels, r => Valid(Make(r)));
        foreach (var c in rows.Select(Make).Concat(GatheredKeys))
            yield return new TestCaseData(c).SetName(c.ToString());
    }

    /// <summary>
    /// Beside the design, the gathered-key backward on longer rows: masks broadcast over queries, per-key biases, with
    /// the K/V rows hidden from a whole kv-head group NaN (the kernels walk only the visible keys).
    /// </summary>
    private static readonly BackwardCase[] GatheredKeys =
    [
        new(new AttentionCase("bf16", 2, 64, 70, 4, 2, 64, Causal: true, MaskShape: [0, 0, 1, 0], MaskKind: MaskKind.Bool,
            BiasShape: [0, 0, 1, 0]), NaNHiddenKeys: true),
        new(new AttentionCase("fp16", 3, 17, 70, 8, 2, 40, MaskShape: [1, -1, 1, 0], BiasShape: [0, 0, 1, 0], Softcap: 30f,
            Path: ApiPath.Varlen), CallerGrads: true, NaNHiddenKeys: true),
        new(new AttentionCase("fp32", 2, 70, 64, 2, 2, 32, Causal: true, MaskShape: [0, 0, 1, 0], BiasShape: [1, 1, 1, 0],
            Path: ApiPath.Paged, PageSize: 5), Deterministic: true, NaNHiddenKeys: true),
        new(new AttentionCase("fp32", 2, 17, 64, 4, 2, 64, MaskShape: [0, 0, 1, 0], MaskKind: MaskKind.Dtype,
            BiasShape: [0, 0, 0, 1], Path: ApiPath.KvPacked), NaNHiddenKeys: true),
    ];

    private static BackwardCase Make(int[] r)
    {
        int group = Groups[r[5]], kvHeads = 2;
        var a = new AttentionCase(DTypes[r[0]], Batches[r[12]], Lengths[r[2]], Lengths[r[3]], group * kvHeads, kvHeads,
            HeadDims[r[1]], Causal: r[4] == 1, MaskShape: Masks[r[6]], MaskKind: MaskKinds[r[7]], BiasShape: Biases[r[8]],
            Softcap: Softcaps[r[9]], Path: Paths[r[10]], Strided: r[11] == 1, PageSize: PageSizes[r[15]]);
        return new BackwardCase(a, CallerGrads: r[13] == 1, Deterministic: r[14] == 1);
    }

    private static bool Valid(BackwardCase bc)
    {
        var c = bc.Attention;
        if (c.Path == ApiPath.QkvPacked && (c.Lq != c.Lk || c.Heads != c.KvHeads)) return false;
        if (c.Strided && c.Path is not (ApiPath.Dense or ApiPath.KvPacked)) return false;
        if (c.HeadDim >= 128 && Math.Max(c.Lq, c.Lk) > 20) return false;   // the wide heads on short sequences only
        long cost = (long)c.Batch * c.Heads * c.Lq * c.Lk * c.HeadDim;
        return cost <= CostBudget;
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesFloat64Reference(BackwardCase c) => BackwardCaseRunner.Run(TestBackends.Get(backendName), c);

    /// <summary>The design holds the gathered-key backward: a per-key mask (B, H, 1, Lk) with a per-key bias.</summary>
    [Test]
    public void DesignHasPerKeyMaskWithPerKeyBias()
    {
        var cases = Cases().Select(t => (BackwardCase)t.Arguments[0]!).ToList();
        Assert.That(cases.Any(c => c.Attention.MaskShape is [0, 0, 1, 0] && c.Attention.BiasShape is [0, 0, 1, 0]), Is.True);
        Assert.That(cases.Any(c => c.Attention.BiasShape is [_, _, _, 1] && c.Attention.Lk > 1), Is.True, "key dim 1 bias");
    }
}
