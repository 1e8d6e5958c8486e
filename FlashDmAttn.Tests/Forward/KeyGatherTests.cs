using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Forward;

/// <summary>
/// Masks broadcast over queries make the kernels walk only the visible keys. Proof: the K and V rows of masked keys
/// are NaN, which any read would spread into the output (0·NaN = NaN in P·V); the result must still match float64.
/// Runs on the CPU accelerator with the portable kernel and with the tensor-core kernel's logic (its PTX twins), and on
/// CUDA (the tensor-core kernel for its head dims, the portable one for the others).
/// </summary>
[TestFixture("cpu", false)]
[TestFixture("cpu", true)]
[CudaFixture("cuda", false)]
public class KeyGatherTests(string backendName, bool tensorCore)
{
    [TestCase("bf16", 2, 3, 1, 70, 150, 32, true, 1, 0)]    // mask (B, H, 1, Lk): per head
    [TestCase("fp16", 1, 4, 2, 33, 97, 64, false, 1, 1)]   // mask (1, Hkv, 1, Lk): shared by a query-head group
    [TestCase("fp16", 2, 2, 2, 129, 129, 40, true, 0, 0)]  // mask (1, 1, 1, Lk)
    // Tensor-core K/V copies: keys by shuffles (D 128: 16 chunks a row; D 256: 32-key tiles), by rows (D 96).
    [TestCase("bf16", 1, 2, 1, 150, 260, 128, true, 1, 0)]
    [TestCase("fp16", 1, 2, 2, 40, 90, 256, true, 1, 1)]
    [TestCase("bf16", 1, 2, 1, 30, 75, 96, true, 1, 0)]
    public void MaskedKeysAreNeverRead(string dtype, int b, int h, int hkv, int lq, int lk, int d, bool causal, int perHead, int kvHeadMask)
    {
        switch (dtype)
        {
            case "fp32": Run<float>(b, h, hkv, lq, lk, d, causal, perHead, kvHeadMask); break;
            case "fp16": Run<Half>(b, h, hkv, lq, lk, d, causal, perHead, kvHeadMask); break;
            default: Run<BFloat16>(b, h, hkv, lq, lk, d, causal, perHead, kvHeadMask); break;
        }
    }

    private void Run<T>(int B, int H, int Hkv, int Lq, int Lk, int D, bool causal, int perHead, int kvHeadMask) where T : unmanaged
    {
        var backend = TestBackends.Get(backendName);
        var acc = backend.Accelerator;
        var rng = TestData.NewRandom(out int seed);
        int mb = perHead == 1 ? B : 1, mh = perHead == 1 ? (kvHeadMask == 1 ? Hkv : H) : (kvHeadMask == 1 ? Hkv : 1);
        var md = new double[mb * mh * Lk];
        for (int i = 0; i < md.Length; i++) md[i] = rng.NextDouble() < 0.3 ? 1 : 0;
        var (q, qd) = TestData.Normal<T>(rng, (long)B * Lq * H * D);
        var (k, kd) = TestData.Normal<T>(rng, (long)B * Lk * Hkv * D);
        var (v, vd) = TestData.Normal<T>(rng, (long)B * Lk * Hkv * D);
        // Poison K/V rows that no query head of their KV head may see.
        var nan = TestData.FromDouble<T>(double.NaN);
        int group = H / Hkv;
        for (int bb = 0; bb < B; bb++)
        for (int j = 0; j < Lk; j++)
        for (int hk = 0; hk < Hkv; hk++)
        {
            bool seen = false;
            for (int hq = hk * group; hq < (hk + 1) * group; hq++)
            {
                int mhIdx = mh == 1 ? 0 : mh == H ? hq : hk;
                seen |= md[((mb == 1 ? 0 : bb) * mh + mhIdx) * Lk + j] != 0;
            }
            if (seen) continue;
            long off = (((long)bb * Lk + j) * Hkv + hk) * D;
            for (int x = 0; x < D; x++) { k[off + x] = nan; v[off + x] = nan; }
        }
        var (oRef, lseRef) = Reference.Attention(qd, kd, vd, B, Lq, Lk, H, Hkv, D, new HostOperand(md, [mb, mh, 1, Lk]), null,
            1 / Math.Sqrt(D), causal, 0);
        using var qt = DeviceTensor<T>.FromHost(acc, q, B, Lq, H, D);
        using var kt = DeviceTensor<T>.FromHost(acc, k, B, Lk, Hkv, D);
        using var vt = DeviceTensor<T>.FromHost(acc, v, B, Lk, Hkv, D);
        using var mask = DeviceTensor<byte>.FromHost(acc, md.Select(x => (byte)x).ToArray(), mb, mh, 1, Lk);
        using var o = DeviceTensor<T>.FromHost(acc, TestData.Poison<T>((long)B * Lq * H * D), B, Lq, H, D);
        using var lse = DeviceTensor<float>.FromHost(acc, TestData.Poison<float>((long)B * H * Lq), B, H, Lq);
        var plans = new List<FlashDmAttn.Kernels.Planning.ForwardPlan>();
        backend.WithLaunch(x => x with { TensorCoreOnCpu = tensorCore, Observer = plans.Add })
            .Forward(qt, kt, vt, mask, isCausal: causal, output: o, softmaxLse: lse);
        Assert.That(plans.Single().Gather, Is.Not.Null, "keys gathered");
        TestData.AssertClose(o.ToHost().Select(TestData.ToDouble).ToArray(), oRef, TestData.Tolerance<T>(), $"gathered keys seed={seed}");
        var lseOut = lse.ToHost();
        for (int i = 0; i < lseRef.Length; i++)
            if (double.IsNegativeInfinity(lseRef[i])) Assert.That(lseOut[i], Is.EqualTo(float.NegativeInfinity));
            else Assert.That(lseOut[i], Is.EqualTo(lseRef[i]).Within(1e-4 * Math.Max(1, Math.Abs(lseRef[i]))), $"lse[{i}] seed={seed}");
        // CUDA runs the tensor-core kernel wherever it covers the problem; elsewhere only when the test asks for it.
        bool tcCovers = (tensorCore || backend.Name == "cuda") && typeof(T) != typeof(float)
                        && FlashDmAttn.Kernels.Planning.TcShapes.Supports(D);
        Assert.That(plans.Single().Family, Is.EqualTo(tcCovers ? FlashDmAttn.Kernels.Planning.KernelFamily.TensorCore
            : FlashDmAttn.Kernels.Planning.KernelFamily.Portable), plans.Single().Describe());
    }
}
