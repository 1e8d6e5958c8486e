using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.TensorCore;

/// <summary>Runs cases through the public API with the tensor-core kernel forced onto a backend.</summary>
internal static class TensorCoreRunner
{
    /// <summary>Runs the case and returns the plans the launcher executed (at least one tensor-core plan).</summary>
    public static IReadOnlyList<ForwardPlan> Run(AttentionBackend backend, AttentionCase c, StreamKMode streamK = StreamKMode.Auto)
    {
        var plans = new List<ForwardPlan>();
        var recording = backend.WithLaunch(o => o with { TensorCoreOnCpu = true, StreamK = streamK, Observer = plans.Add });
        CaseRunner.Run(recording, c);
        Assert.That(plans.Any(p => p.Family == KernelFamily.TensorCore), Is.True,
            $"{c}: the tensor-core kernel did not run ({string.Join("; ", plans.Select(p => p.Describe()))})");
        return plans;
    }
}

/// <summary>
/// The tensor-core kernel logic on ILGPU's CPU accelerator (warp size 32) through the intrinsics' portable twins
/// (warp-shuffle mma/ldmatrix, synchronous cp.async), against the float64 reference. Small shapes: the CPU
/// accelerator runs 128 OS threads per group.
/// </summary>
[TestFixture]
public class TensorCoreCpuTests
{
    private static AttentionBackend Cpu => FlashDmAttention.Auto("cpu");

    public static IEnumerable<TestCaseData> Cases()
    {
        AttentionCase[] cases =
        [
            new("bf16", 1, 20, 37, 1, 1, 32),
            new("fp16", 1, 20, 37, 1, 1, 32),
            // Causal, bottom-right aligned, Lq < Lk, GQA.
            new("fp16", 1, 33, 70, 4, 2, 64, Causal: true),
            new("bf16", 1, 33, 70, 4, 2, 64, Causal: true),
            // Lq > Lk causal: the top rows see no key (output 0, LSE −∞); two query blocks.
            new("bf16", 1, 70, 20, 1, 1, 192, Causal: true),
            // Full mask (with one all-masked row) and broadcast bias per kv head.
            new("bf16", 2, 19, 45, 2, 1, 96, MaskShape: [0, 0, 0, 0], BiasShape: [1, -1, 0, 0]),
            // Broadcast dtype mask, bias broadcast over batch and rows, softcap.
            new("fp16", 2, 17, 40, 2, 2, 128, MaskShape: [1, 1, 0, 0], MaskKind: MaskKind.Dtype, BiasShape: [0, 1, 1, 0], Softcap: 5f),
            // D = 256 (Bc = 32: two key tiles), bool mask broadcast over heads, causal.
            new("fp16", 1, 9, 41, 2, 1, 256, Causal: true, MaskShape: [0, 1, 0, 0], MaskKind: MaskKind.Bool),
            new("bf16", 1, 1, 1, 1, 1, 64),
            // Non-causal: query blocks first (TcBlockOrder), two blocks of 128 rows in each of three heads.
            new("bf16", 1, 140, 30, 3, 1, 32),
            // Causal, 5 heads × 4 blocks of 64 rows: on the CPU accelerator (2 slots) chunks of 2, 2 and 1 heads, so the
            // last chunk's second group of each block has no head and returns.
            new("fp16", 1, 200, 210, 5, 1, 32, Causal: true, MaskShape: [0, 0, 0, 0]),
            new("fp16", 1, 5, 131, 1, 1, 32, Scale: 0.3f, BiasShape: [0, 0, 1, 0]),
            // A negative scale reverses the order of raw scores (sent to the scaled-scores specialisation).
            new("bf16", 1, 20, 70, 1, 1, 64, Scale: -0.2f, Causal: true),
            new("bf16", 1, 12, 12, 2, 2, 32, Strided: true, Causal: true),
            new("fp16", 1, 12, 12, 2, 2, 32, Path: ApiPath.QkvPacked, MaskShape: [0, 0, 0, 0]),
            new("bf16", 1, 12, 21, 4, 1, 64, Path: ApiPath.KvPacked, BiasShape: [0, 0, 0, 0]),
            new("bf16", 3, 21, 40, 2, 1, 64, Causal: true, Path: ApiPath.Varlen, MaskShape: [0, 0, 0, 0]),
            new("fp16", 3, 15, 45, 2, 2, 32, Path: ApiPath.Paged, PageSize: 16, BiasShape: [0, 0, 0, 0], Softcap: 3f),
            // Masks broadcast over queries: gathered keys (perkey), with a per-key bias, causal, GQA, ragged.
            new("bf16", 2, 70, 150, 4, 2, 64, Causal: true, MaskShape: [0, 0, 1, 0], BiasShape: [0, 0, 1, 0]),
            new("fp16", 1, 33, 97, 2, 1, 128, MaskShape: [1, -1, 1, 0], BiasShape: [1, 1, 1, 0], Softcap: 4f),
            new("bf16", 3, 21, 60, 2, 2, 32, Causal: true, Path: ApiPath.Varlen, MaskShape: [0, 0, 1, 0]),
            new("fp16", 2, 15, 45, 2, 1, 64, Path: ApiPath.Paged, PageSize: 16, MaskShape: [1, 1, 1, 0], BiasShape: [0, -1, 1, 0]),
            // 16-byte aligned mask rows and 64-key tiles (mask words a tile ahead, bias tiles staged in shared memory):
            // 64-row groups (Mt = 1: every D ≤ 128 with a mask or bias), rows past Lq, broadcast strides, a ragged last
            // tile (Lk 136: bias staged, mask by bytes).
            new("bf16", 1, 70, 192, 2, 1, 128, Causal: true, MaskShape: [0, 0, 0, 0], BiasShape: [0, 0, 0, 0]),
            new("fp16", 2, 40, 128, 2, 2, 64, MaskShape: [0, 1, 0, 0], BiasShape: [1, 0, 0, 0], Softcap: 2f),
            new("bf16", 1, 130, 136, 1, 1, 32, Causal: true, MaskShape: [0, 0, 0, 0], BiasShape: [0, 0, 0, 0]),
            // 32-key tiles (D = 256) with 8-byte aligned mask rows: mask words of 8 bytes per lane, a tile ahead.
            new("fp16", 1, 20, 72, 1, 1, 256, Causal: true, MaskShape: [0, 0, 0, 0], BiasShape: [0, 0, 0, 0]),
        ];
        foreach (var c in cases)
            yield return new TestCaseData(c).SetName($"TensorCore {c}");
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(AttentionCase c) => TensorCoreRunner.Run(Cpu, c);
}
