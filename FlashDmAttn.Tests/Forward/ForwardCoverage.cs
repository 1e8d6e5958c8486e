using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Forward;

/// <summary>
/// The forward pass over its parameter space: dtypes × head dims {32, 40, 64, 96, 128, 256} × lengths
/// {1, 17, 128, 257, 1000} (q and k independently) × causal × GQA {1, 4, 8} × mask/bias broadcast shapes ×
/// mask storage × softcap × batch × strided inputs × entry point (dense, qkv-packed, kv-packed, varlen, paged),
/// as a pairwise covering design on shapes the CPU accelerator runs in seconds.
/// Each case draws fresh random inputs, poisons its outputs, and compares output and LSE with float64.
/// </summary>
[TestFixture("cpu")]
[CudaFixture("cuda")]
public class ForwardCoverage(string backendName)
{
    private static readonly string[] DTypes = ["fp32", "fp16", "bf16"];
    private static readonly int[] HeadDims = [32, 40, 64, 96, 128, 256];
    private static readonly int[] Lengths = [1, 17, 128, 257, 1000];
    private static readonly int[] Groups = [1, 4, 8];
    // Broadcast specs: null none; 0 full; 1 broadcast; -1 kv heads (head dim only).
    private static readonly int[]?[] Operands =
        [null, [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, -1, 0, 0], [0, 0, 1, 0], [1, 1, 1, 0]];
    private static readonly MaskKind[] MaskKinds = [MaskKind.Byte, MaskKind.Bool, MaskKind.Dtype];
    private static readonly float?[] Softcaps = [null, 30f, 2f];
    private static readonly ApiPath[] Paths = [ApiPath.Dense, ApiPath.QkvPacked, ApiPath.KvPacked, ApiPath.Varlen, ApiPath.Paged];
    private static readonly int[] Batches = [1, 2, 3];

    /// <summary>Multiply-adds a case costs; bounds the CPU accelerator's time per case.</summary>
    private const long CostBudget = 24_000_000;

    public static IEnumerable<TestCaseData> Cases()
    {
        int[] levels = [DTypes.Length, HeadDims.Length, Lengths.Length, Lengths.Length, 2, Groups.Length,
            Operands.Length, MaskKinds.Length, Operands.Length, Softcaps.Length, Paths.Length, 2, Batches.Length];
        var rows = CoveringDesign.Generate(levels, r => Valid(Make(r)));
        foreach (var r in rows)
        {
            var c = Make(r);
            yield return new TestCaseData(c).SetName(c.ToString());
        }
    }

    private static AttentionCase Make(int[] r)
    {
        int group = Groups[r[5]];
        int kvHeads = group == 8 ? 1 : 2;
        return new AttentionCase(DTypes[r[0]], Batches[r[12]], Lengths[r[2]], Lengths[r[3]], group * kvHeads, kvHeads,
            HeadDims[r[1]], Causal: r[4] == 1, MaskShape: Operands[r[6]], MaskKind: MaskKinds[r[7]],
            BiasShape: Operands[r[8]], Softcap: Softcaps[r[9]], Path: Paths[r[10]], Strided: r[11] == 1);
    }

    private static bool Valid(AttentionCase c)
    {
        if (c.Path == ApiPath.QkvPacked && (c.Lq != c.Lk || c.Heads != c.KvHeads)) return false;
        if (c.Strided && c.Path is not (ApiPath.Dense or ApiPath.KvPacked)) return false;
        long cost = (long)c.Batch * c.Heads * c.Lq * c.Lk * c.HeadDim;
        return cost <= CostBudget;
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesFloat64Reference(AttentionCase c) => CaseRunner.Run(TestBackends.Get(backendName), c);
}
