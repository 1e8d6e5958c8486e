using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.TensorCore;

/// <summary>The tensor-core kernel on the CUDA device (sm_80+), larger shapes; skipped without CUDA.</summary>
[CudaFixture]
public class TensorCoreGpuTests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var dt in new[] { "bf16", "fp16" })
        foreach (var d in new[] { 32, 64, 96, 128, 192, 256 })
        {
            yield return Named(new AttentionCase(dt, 2, 257, 300, 4, 2, d));
            yield return Named(new AttentionCase(dt, 2, 200, 333, 4, 1, d, Causal: true, MaskShape: [0, 0, 0, 0], BiasShape: [1, -1, 0, 0]));
            yield return Named(new AttentionCase(dt, 1, 333, 130, 2, 2, d, Causal: true, MaskShape: [1, 1, 0, 0], MaskKind: MaskKind.Dtype, BiasShape: [0, 1, 1, 0], Softcap: 8f));
            // Lk a multiple of 64: 16-byte mask words a tile ahead and bias tiles staged in shared memory.
            yield return Named(new AttentionCase(dt, 2, 200, 256, 4, 2, d, Causal: true, MaskShape: [0, 0, 0, 0], BiasShape: [0, 0, 0, 0]));
        }
        yield return Named(new AttentionCase("bf16", 1, 130, 320, 2, 1, 128, MaskShape: [0, 1, 0, 0], BiasShape: [1, 0, 0, 0], Softcap: 5f));
        yield return Named(new AttentionCase("bf16", 4, 190, 260, 4, 2, 128, Causal: true, Path: ApiPath.Varlen, MaskShape: [0, 0, 0, 0]));
        yield return Named(new AttentionCase("fp16", 3, 150, 300, 4, 4, 64, Path: ApiPath.Paged, PageSize: 64, BiasShape: [0, 0, 0, 0]));
        yield return Named(new AttentionCase("bf16", 2, 129, 129, 2, 2, 64, Strided: true, Causal: true));
        yield return Named(new AttentionCase("fp16", 1, 1, 1000, 8, 1, 128));
        // Masks and biases broadcast over queries (perkey): gathered keys, K/V rows found through the key lists.
        yield return Named(new AttentionCase("bf16", 2, 300, 520, 4, 2, 128, Causal: true, MaskShape: [0, 0, 1, 0], BiasShape: [0, 0, 1, 0]));
        yield return Named(new AttentionCase("fp16", 1, 260, 400, 4, 4, 64, MaskShape: [0, 0, 1, 0], BiasShape: [0, 0, 1, 0], Softcap: 6f));
        yield return Named(new AttentionCase("bf16", 1, 100, 333, 2, 1, 256, Causal: true, MaskShape: [1, -1, 1, 0], BiasShape: [0, 0, 1, 0]));
    }

    private static TestCaseData Named(AttentionCase c) => new TestCaseData(c).SetName($"TensorCoreGpu {c}");

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(AttentionCase c) => TensorCoreRunner.Run(FlashDmAttention.Auto("cuda"), c);
}
