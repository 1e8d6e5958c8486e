using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Backward;

/// <summary>No keys or no queries: every gradient is written, as zeros (caller buffers come in poisoned with NaN).</summary>
public class EmptyProblemTests
{
    [TestCase(3, 0)]
    [TestCase(0, 4)]
    public void GradientsAreZero(int lq, int lk)
    {
        var attn = FlashDmAttention.Auto("cpu");
        var acc = attn.Accelerator;
        using var q = DeviceTensor<float>.Random(acc, 2, lq, 4, 16);
        using var k = DeviceTensor<float>.Random(acc, 2, lk, 2, 16);
        using var v = DeviceTensor<float>.Random(acc, 2, lk, 2, 16);
        using var bias = DeviceTensor<float>.Random(acc, 1, 4, 1, lk);
        using var lse = DeviceTensor<float>.Allocate(acc, 2, 4, lq);
        using var o = attn.Forward(q, k, v, attnBias: bias, softmaxLse: lse);
        using var dO = DeviceTensor<float>.Random(acc, 2, lq, 4, 16);
        using var dq = DeviceTensor<float>.FromHost(acc, TestData.Poison<float>(2L * lq * 4 * 16), 2, lq, 4, 16);
        using var dk = DeviceTensor<float>.FromHost(acc, TestData.Poison<float>(2L * lk * 2 * 16), 2, lk, 2, 16);
        using var dv = DeviceTensor<float>.FromHost(acc, TestData.Poison<float>(2L * lk * 2 * 16), 2, lk, 2, 16);
        using var db = DeviceTensor<float>.FromHost(acc, TestData.Poison<float>(4L * lk), 1, 4, 1, lk);
        using var g = attn.Backward(dO, q, k, v, o, lse, attnBias: bias, gradQuery: dq, gradKey: dk, gradValue: dv, gradBias: db);
        foreach (var (name, t) in new[] { ("dq", dq), ("dk", dk), ("dv", dv), ("dbias", db) })
            Assert.That(t.ToHost().All(x => x == 0f), $"{name}: zeros");
    }
}
