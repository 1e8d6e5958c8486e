using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Kernels.TensorCore;
using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.TensorCore;

/// <summary>
/// Key tiles that the mask hides from every query row must be skipped: their K and V rows are poisoned with NaN, so
/// reading them into the P·V product (0 · NaN) would show up as NaN in the output.
/// </summary>
[TestFixture]
public class TensorCoreSkipTests
{
    // Lk = 300: byte-pair mask reads; Lk = 320 / 256: 16-byte mask words loaded a tile ahead.
    [TestCase("bf16", 32, 300)]
    [TestCase("fp16", 256, 300)]
    [TestCase("bf16", 64, 320)]
    [TestCase("fp16", 128, 256)]
    public void MaskedTilesAreNeverRead(string dtype, int d, int lk)
    {
        if (dtype == "bf16") Run<BFloat16>(d, lk);
        else Run<Half>(d, lk);
    }

    private static void Run<T>(int d, int lk) where T : unmanaged
    {
        var backend = FlashDmAttention.Auto("cpu");
        var acc = backend.Accelerator;
        var rng = TestData.NewRandom(out int seed);
        int lq = 5, bc = d == 256 ? 32 : 64;
        var (qv, qd) = TestData.Normal<T>(rng, (long)lq * d);
        var (kv, kd) = TestData.Normal<T>(rng, (long)lk * d);
        var (vv, vd) = TestData.Normal<T>(rng, (long)lk * d);
        // Hidden tiles: 1 and 3 (every row), plus row 0 fully hidden.
        var md = new double[lq * lk];
        for (int i = 0; i < lq; i++)
        for (int j = 0; j < lk; j++)
        {
            int tile = j / bc;
            md[i * lk + j] = i == 0 || tile == 1 || tile == 3 ? 0 : rng.NextDouble() < 0.7 ? 1 : 0;
        }
        var (oRef, lseRef) = Reference.Attention(qd, kd, vd, 1, lq, lk, 1, 1, d, new HostOperand(md, [1, 1, lq, lk]), null,
            1.0 / Math.Sqrt(d), false, 0);
        var nan = TestData.FromDouble<T>(double.NaN);
        for (int j = 0; j < lk; j++)
            if (j / bc is 1 or 3)
                for (int x = 0; x < d; x++) { kv[j * d + x] = nan; vv[j * d + x] = nan; }

        using var q = DeviceTensor<T>.FromHost(acc, qv, 1, lq, 1, d);
        using var k = DeviceTensor<T>.FromHost(acc, kv, 1, lk, 1, d);
        using var v = DeviceTensor<T>.FromHost(acc, vv, 1, lk, 1, d);
        using var mask = DeviceTensor<byte>.FromHost(acc, md.Select(x => (byte)x).ToArray(), 1, 1, lq, lk);
        using var o = DeviceTensor<T>.FromHost(acc, TestData.Poison<T>((long)lq * d), 1, lq, 1, d);
        using var lse = DeviceTensor<float>.FromHost(acc, TestData.Poison<float>(lq), 1, 1, lq);
        var plans = new List<ForwardPlan>();
        backend.WithLaunch(x => x with { TensorCoreOnCpu = true, Observer = plans.Add }).Forward(q, k, v, mask, output: o, softmaxLse: lse);
        Assert.That(plans.Single().Family, Is.EqualTo(KernelFamily.TensorCore), "the tensor-core kernel did not run");
        var oOut = o.ToHost().Select(TestData.ToDouble).ToArray();
        var lseOut = lse.ToHost().Select(x => (double)x).ToArray();
        TestData.AssertClose(oOut, oRef, TestData.Tolerance<T>(), $"D{d} seed={seed} output");
        Assert.That(lseOut[0], Is.EqualTo(double.NegativeInfinity), "LSE of the hidden row");
        TestData.AssertClose(lseOut[1..], lseRef[1..], 1e-5, $"D{d} seed={seed} lse");
    }
}
