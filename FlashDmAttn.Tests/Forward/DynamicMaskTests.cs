using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Forward;

/// <summary>The device top-k mask against a host selection, then attention with it against float64.</summary>
[TestFixture("cpu")]
[CudaFixture("cuda")]
public class DynamicMaskTests(string backendName)
{
    [TestCase("bf16", 2, 3, 33, 70, 16, true)]
    [TestCase("fp16", 1, 2, 1, 200, 64, false)]
    [TestCase("fp32", 1, 1, 5, 12, 20, false)]   // Lk < keep: all ones
    [TestCase("bf16", 1, 1, 4, 100, 7, true)]    // coarse values: many ties
    public void TopKKeepsTheLargestKeysPerRow(string dtype, int b, int h, int lq, int lk, int keep, bool ties)
    {
        var backend = TestBackends.Get(backendName);
        switch (dtype)
        {
            case "fp32": Check<float>(backend, b, h, lq, lk, keep, ties); break;
            case "fp16": Check<Half>(backend, b, h, lq, lk, keep, ties); break;
            default: Check<BFloat16>(backend, b, h, lq, lk, keep, ties); break;
        }
    }

    private static void Check<T>(AttentionBackend backend, int b, int h, int lq, int lk, int keep, bool ties) where T : unmanaged
    {
        var rng = TestData.NewRandom(out int seed);
        var (vals, exact) = TestData.Normal<T>(rng, (long)b * h * lq * lk);
        if (ties)
            for (int i = 0; i < vals.Length; i++) { exact[i] = Math.Round(exact[i] * 2) / 2; vals[i] = TestData.FromDouble<T>(exact[i]); }
        using var bias = DeviceTensor<T>.FromHost(backend.Accelerator, vals, b, h, lq, lk);
        using var poisoned = DeviceTensor<byte>.FromHost(backend.Accelerator, Enumerable.Repeat((byte)0xCD, vals.Length).ToArray(), b, h, lq, lk);
        backend.TopK(bias, keep, poisoned);
        var mask = poisoned.ToHost();
        for (int r = 0; r < b * h * lq; r++)
        {
            var row = exact.AsSpan(r * lk, lk).ToArray();
            var m = mask.AsSpan(r * lk, lk).ToArray();
            Assert.That(m.All(x => x is 0 or 1), $"row {r}: mask values must be 0/1 (seed {seed})");
            int expectKept = Math.Min(keep, lk);
            Assert.That(m.Count(x => x == 1), Is.EqualTo(expectKept), $"row {r}: kept count (seed {seed})");
            double minKept = row.Where((_, j) => m[j] == 1).DefaultIfEmpty(double.PositiveInfinity).Min();
            double maxDropped = row.Where((_, j) => m[j] == 0).DefaultIfEmpty(double.NegativeInfinity).Max();
            Assert.That(minKept, Is.GreaterThanOrEqualTo(maxDropped), $"row {r}: a dropped key outranks a kept one (seed {seed})");
        }
    }

    [Test]
    public void AttentionWithTopKMaskOfBias()
    {
        var backend = TestBackends.Get(backendName);
        var acc = backend.Accelerator;
        var rng = TestData.NewRandom(out int seed);
        int B = 1, L = 96, H = 2, D = 32, keep = 24;
        var (q, qd) = TestData.Normal<BFloat16>(rng, B * L * H * D);
        var (k, kd) = TestData.Normal<BFloat16>(rng, B * L * H * D);
        var (v, vd) = TestData.Normal<BFloat16>(rng, B * L * H * D);
        var (bias, bd) = TestData.Normal<BFloat16>(rng, B * H * L * L);
        using var qt = DeviceTensor<BFloat16>.FromHost(acc, q, B, L, H, D);
        using var kt = DeviceTensor<BFloat16>.FromHost(acc, k, B, L, H, D);
        using var vt = DeviceTensor<BFloat16>.FromHost(acc, v, B, L, H, D);
        using var bt = DeviceTensor<BFloat16>.FromHost(acc, bias, B, H, L, L);
        using var mask = backend.TopK(bt, keep);
        using var o = backend.Forward(qt, kt, vt, mask, bt, isCausal: true);
        var md = mask.ToHost().Select(x => (double)x).ToArray();
        var (oRef, _) = Reference.Attention(qd, kd, vd, B, L, L, H, H, D, new HostOperand(md, [B, H, L, L]),
            new HostOperand(bd, [B, H, L, L]), 1 / Math.Sqrt(D), true, 0);
        TestData.AssertClose(o.ToHost().Select(x => (double)x).ToArray(), oRef, 1e-2, $"topk attention seed={seed}");
    }
}
