using System.Runtime.InteropServices;
using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Backward;

/// <summary>
/// What the backward promises beyond matching float64: deterministic=true gives bit-identical gradients call after
/// call; rows without a visible key get exact zeros (never NaN), also in caller buffers poisoned with NaN; disposing
/// the gradients releases what the call allocated and leaves the caller's buffers usable.
/// </summary>
[TestFixture("cpu")]
[CudaFixture("cuda")]
public class BackwardBehaviourTests(string backendName)
{
    private AttentionBackend _backend = null!;
    private readonly List<IDisposable> _owned = [];

    [SetUp]
    public void SetUp() => _backend = TestBackends.Get(backendName);

    [TearDown]
    public void TearDown()
    {
        foreach (var d in _owned) d.Dispose();
        _owned.Clear();
    }

    private TT Own<TT>(TT t) where TT : IDisposable { _owned.Add(t); return t; }

    private DeviceTensor<T> Up<T>(T[] data, params long[] shape) where T : unmanaged
        => Own(DeviceTensor<T>.FromHost(_backend.Accelerator, data, shape));

    private DeviceTensor<T> Poisoned<T>(params long[] shape) where T : unmanaged
        => Up(TestData.Poison<T>(shape.Aggregate(1L, (a, x) => a * x)), shape);

    [Test]
    public void DeterministicGradientsAreBitIdentical()
    {
        // CPU: a small GQA problem with a full bias. CUDA: a long causal one through the gathered-key path (per-key
        // mask and bias), where a scheduling-dependent reduction order would show.
        if (_backend.Name == "cuda")
            Deterministic<BFloat16>(2, 8, 2, 300, 300, 128, causal: true, mask: [0, 0, 1, 0], bias: [0, 0, 1, 0]);
        else
            Deterministic<float>(2, 4, 2, 33, 45, 32, causal: true, mask: null, bias: [0, 0, 0, 0]);
    }

    private void Deterministic<T>(int B, int H, int Hkv, int Lq, int Lk, int D, bool causal, int[]? mask, int[] bias)
        where T : unmanaged
    {
        var rng = TestData.NewRandom(out int seed);
        var acc = _backend.Accelerator;
        var (q, qd) = TestData.Normal<T>(rng, (long)B * Lq * H * D);
        var (k, kd) = TestData.Normal<T>(rng, (long)B * Lk * Hkv * D);
        var (v, vd) = TestData.Normal<T>(rng, (long)B * Lk * Hkv * D);
        var (dO, dOd) = TestData.Normal<T>(rng, (long)B * Lq * H * D);
        var qt = Up(q, B, Lq, H, D);
        var kt = Up(k, B, Lk, Hkv, D);
        var vt = Up(v, B, Lk, Hkv, D);
        var dOt = Up(dO, B, Lq, H, D);
        HostOperand? maskRef = null;
        DeviceMask? maskT = null;
        if (mask is not null)
        {
            var ms = BackwardCaseRunner.ResolveShape(mask, B, H, Hkv, Lq, Lk);
            var md = new double[ms[0] * ms[1] * ms[2] * ms[3]];
            for (int i = 0; i < md.Length; i++) md[i] = rng.NextDouble() < 0.5 ? 1 : 0;
            maskRef = new HostOperand(md, ms);
            maskT = Up(md.Select(x => (byte)x).ToArray(), ms.Select(x => (long)x).ToArray());
        }
        var bs = BackwardCaseRunner.ResolveShape(bias, B, H, Hkv, Lq, Lk);
        var (bv, bd) = TestData.Normal<T>(rng, bs[0] * bs[1] * bs[2] * bs[3], 2.0);
        var biasT = Up(bv, bs.Select(x => (long)x).ToArray());
        var o = Own(DeviceTensor<T>.Allocate(acc, B, Lq, H, D));
        var lse = Own(DeviceTensor<float>.Allocate(acc, B, H, Lq));
        _backend.Forward(qt, kt, vt, maskT, biasT, isCausal: causal, output: o, softmaxLse: lse);

        byte[][]? first = null;
        for (int run = 0; run < 5; run++)
        {
            using var g = _backend.Backward(dOt, qt, kt, vt, o, lse, maskT, biasT, isCausal: causal, deterministic: true);
            var host = new[] { g.DQuery.ToHost(), g.DKey.ToHost(), g.DValue.ToHost(), g.DBias!.ToHost() };
            var bits = host.Select(a => MemoryMarshal.AsBytes(a.AsSpan()).ToArray()).ToArray();
            if (first is null)
            {
                // The first run must be right, else identical runs prove little.
                var r = BackwardReference.Gradients(qd, kd, vd, dOd, B, Lq, Lk, H, Hkv, D, maskRef, new HostOperand(bd, bs),
                    1 / Math.Sqrt(D), causal, 0);
                double tol = BackwardCaseRunner.GradTolerance<T>();
                string[] names = ["dq", "dk", "dv", "dbias"];
                double[][] expected = [r.DQ, r.DK, r.DV, r.DBias!];
                Assert.Multiple(() =>
                {
                    for (int i = 0; i < 4; i++)
                        BackwardCaseRunner.AssertGradient(host[i].Select(TestData.ToDouble).ToArray(), expected[i], tol, $"{names[i]} seed={seed}");
                });
                first = bits;
                continue;
            }
            Assert.Multiple(() =>
            {
                string[] names = ["dq", "dk", "dv", "dbias"];
                for (int i = 0; i < 4; i++)
                {
                    int size = Marshal.SizeOf<T>(), differ = 0;
                    for (int e = 0; e < bits[i].Length / size; e++)
                        if (!bits[i].AsSpan(e * size, size).SequenceEqual(first[i].AsSpan(e * size, size))) differ++;
                    Assert.That(differ, Is.Zero, $"run {run}: {differ} elements of {names[i]} differ from run 0 (seed={seed})");
                }
            });
        }
    }

    [Test]
    public void ReleasingTheCachedScratchFreesItAndLaterCallsAllocateAgain()
    {
        // A per-key mask: forward and backward build key lists in the scratch the accelerator keeps between calls.
        const int B = 1, H = 2, Lq = 20, Lk = 70, D = 32;
        var rng = TestData.NewRandom(out int seed);
        var qt = Up(TestData.Normal<float>(rng, B * Lq * H * D).Values, B, Lq, H, D);
        var kt = Up(TestData.Normal<float>(rng, B * Lk * H * D).Values, B, Lk, H, D);
        var vt = Up(TestData.Normal<float>(rng, B * Lk * H * D).Values, B, Lk, H, D);
        var dOt = Up(TestData.Normal<float>(rng, B * Lq * H * D).Values, B, Lq, H, D);
        var md = new byte[B * H * Lk];
        for (int i = 0; i < md.Length; i++) md[i] = (byte)(rng.NextDouble() < 0.5 ? 1 : 0);
        DeviceMask mask = Up(md, B, H, 1, Lk);
        float[] Run()
        {
            var o = Own(DeviceTensor<float>.Allocate(_backend.Accelerator, B, Lq, H, D));
            var lse = Own(DeviceTensor<float>.Allocate(_backend.Accelerator, B, H, Lq));
            _backend.Forward(qt, kt, vt, mask, output: o, softmaxLse: lse);
            using var g = _backend.Backward(dOt, qt, kt, vt, o, lse, mask);
            return [.. o.ToHost(), .. g.DQuery.ToHost(), .. g.DKey.ToHost(), .. g.DValue.ToHost()];
        }

        var first = Run();
        Assert.That(_backend.CachedScratchBytes, Is.GreaterThan(0), "the key lists' scratch is kept after the call");
        _backend.ReleaseCachedScratch();
        Assert.That(_backend.CachedScratchBytes, Is.Zero, "released");
        var again = Run();
        Assert.That(again, Is.EqualTo(first), $"output and gradients after the release (seed={seed})");
        Assert.That(_backend.CachedScratchBytes, Is.GreaterThan(0), "allocated again by the next call");
    }

    [Test]
    public void GradientsOnReusedScratchMatchThoseOnFreshScratch()
    {
        // GQA with a per-key mask and a per-key bias: dk and dv go through the kept fp32 scratch (one row per query
        // head) and only listed keys are written there, so a row left from an earlier call would show in the keys of
        // no list; dbias goes through the kept bias scratch. The earlier call is a dense one that fills both.
        const int B = 2, H = 4, Hkv = 2, Lq = 24, Lk = 50, D = 32;
        var rng = TestData.NewRandom(out int seed);
        DeviceTensor<float> Normal(params long[] shape)
            => Up(TestData.Normal<float>(rng, shape.Aggregate(1L, (a, x) => a * x)).Values, shape);
        var qt = Normal(B, Lq, H, D);
        var kt = Normal(B, Lk, Hkv, D);
        var vt = Normal(B, Lk, Hkv, D);
        var dOt = Normal(B, Lq, H, D);
        var biasFull = Normal(B, H, Lq, Lk);
        var biasKeys = Normal(B, H, 1, Lk);
        var md = new byte[B * H * Lk];
        for (int i = 0; i < md.Length; i++) md[i] = (byte)(i % 5 == 1 || rng.NextDouble() < 0.4 ? 1 : 0);
        DeviceMask mask = Up(md, B, H, 1, Lk);

        float[] Run(DeviceMask? m, DeviceTensor<float> bias)
        {
            var o = Own(DeviceTensor<float>.Allocate(_backend.Accelerator, B, Lq, H, D));
            var lse = Own(DeviceTensor<float>.Allocate(_backend.Accelerator, B, H, Lq));
            _backend.Forward(qt, kt, vt, m, bias, output: o, softmaxLse: lse);
            using var g = _backend.Backward(dOt, qt, kt, vt, o, lse, m, bias);
            return [.. g.DQuery.ToHost(), .. g.DKey.ToHost(), .. g.DValue.ToHost(), .. g.DBias!.ToHost()];
        }

        _backend.ReleaseCachedScratch();
        var fresh = Run(mask, biasKeys);
        var dense = Run(null, biasFull);
        Assert.That(dense.Any(x => x != 0f), Is.True, "the dense call wrote nonzero gradients");
        var reused = Run(mask, biasKeys);
        Assert.That(reused, Is.EqualTo(fresh), $"gradients after a dense call on the kept scratch (seed={seed})");
    }

    [TestCase(false, false)]
    [TestCase(true, false)]
    [TestCase(false, true)]
    [TestCase(true, true)]
    public void AllMaskedGivesExactZeros(bool varlen, bool callerBuffers)
    {
        // Every key masked: output 0, LSE −∞, and every gradient exactly 0 — written in full into NaN buffers.
        const int B = 2, H = 4, Hkv = 2, Lq = 9, Lk = 13, D = 32;
        var rng = TestData.NewRandom(out int seed);
        long rowsQ = (long)B * Lq, rowsK = (long)B * Lk;
        long[] qShape = varlen ? [rowsQ, H, D] : [B, Lq, H, D], kShape = varlen ? [rowsK, Hkv, D] : [B, Lk, Hkv, D];
        var qt = Up(TestData.Normal<float>(rng, rowsQ * H * D).Values, qShape);
        var kt = Up(TestData.Normal<float>(rng, rowsK * Hkv * D).Values, kShape);
        var vt = Up(TestData.Normal<float>(rng, rowsK * Hkv * D).Values, kShape);
        var dOt = Up(TestData.Normal<float>(rng, rowsQ * H * D).Values, qShape);
        var mask = Up(new byte[B * H * Lq * Lk], B, H, Lq, Lk);
        var bias = Up(TestData.Normal<float>(rng, H * Lq * Lk, 2).Values, 1, H, Lq, Lk);
        var o = Poisoned<float>(qShape);
        var lse = varlen ? Poisoned<float>(H, rowsQ) : Poisoned<float>(B, H, Lq);
        int[] cuQ = [0, Lq, 2 * Lq], cuK = [0, Lk, 2 * Lk];
        if (varlen)
            _backend.ForwardVarlen(qt, kt, vt, cuQ, cuK, Lq, Lk, mask, bias, isCausal: true, softcap: 5f, output: o, softmaxLse: lse);
        else
            _backend.Forward(qt, kt, vt, mask, bias, isCausal: true, softcap: 5f, output: o, softmaxLse: lse);
        Assert.That(o.ToHost(), Has.All.EqualTo(0f), $"forward output of all-masked rows seed={seed}");
        Assert.That(lse.ToHost(), Has.All.EqualTo(float.NegativeInfinity), $"forward LSE of all-masked rows seed={seed}");

        var gq = callerBuffers ? Poisoned<float>(qShape) : null;
        var gk = callerBuffers ? Poisoned<float>(kShape) : null;
        var gv = callerBuffers ? Poisoned<float>(kShape) : null;
        var gb = callerBuffers ? Poisoned<float>(1, H, Lq, Lk) : null;
        using var g = varlen
            ? _backend.BackwardVarlen(dOt, qt, kt, vt, o, lse, cuQ, cuK, Lq, Lk, mask, bias, isCausal: true, softcap: 5f,
                gradQuery: gq, gradKey: gk, gradValue: gv, gradBias: gb)
            : _backend.Backward(dOt, qt, kt, vt, o, lse, mask, bias, isCausal: true, softcap: 5f,
                gradQuery: gq, gradKey: gk, gradValue: gv, gradBias: gb);
        Assert.Multiple(() =>
        {
            Assert.That((gq ?? g.DQuery).ToHost(), Has.All.EqualTo(0f), $"dq seed={seed}");
            Assert.That((gk ?? g.DKey).ToHost(), Has.All.EqualTo(0f), $"dk seed={seed}");
            Assert.That((gv ?? g.DValue).ToHost(), Has.All.EqualTo(0f), $"dv seed={seed}");
            Assert.That((gb ?? g.DBias!).ToHost(), Has.All.EqualTo(0f), $"dbias seed={seed}");
        });
    }

    [Test]
    public void DisposeReleasesOnlyWhatTheCallAllocated()
    {
        const int B = 1, H = 2, Hkv = 1, Lq = 5, Lk = 7, D = 32;
        var rng = TestData.NewRandom(out _);
        var acc = _backend.Accelerator;
        var qt = Up(TestData.Normal<Half>(rng, B * Lq * H * D).Values, B, Lq, H, D);
        var kt = Up(TestData.Normal<Half>(rng, B * Lk * Hkv * D).Values, B, Lk, Hkv, D);
        var vt = Up(TestData.Normal<Half>(rng, B * Lk * Hkv * D).Values, B, Lk, Hkv, D);
        var dOt = Up(TestData.Normal<Half>(rng, B * Lq * H * D).Values, B, Lq, H, D);
        var bias = Up(TestData.Normal<Half>(rng, Lk).Values, 1, 1, 1, Lk);
        var o = Own(DeviceTensor<Half>.Allocate(acc, B, Lq, H, D));
        var lse = Own(DeviceTensor<float>.Allocate(acc, B, H, Lq));
        _backend.Forward(qt, kt, vt, attnBias: bias, output: o, softmaxLse: lse);
        var gq = Poisoned<Half>(B, Lq, H, D);
        var gb = Poisoned<Half>(1, 1, 1, Lk);
        var g = _backend.Backward(dOt, qt, kt, vt, o, lse, attnBias: bias, gradQuery: gq, gradBias: gb);
        var dk = g.DKey;
        g.Dispose();
        Assert.Multiple(() =>
        {
            Assert.That(gq.IsDisposed || gb.IsDisposed, Is.False, "caller buffers disposed with the gradients");
            Assert.That(gq.ToHost().Select(x => (double)x), Has.None.NaN, "dq written into the caller's buffer");
            Assert.That(gb.ToHost().Select(x => (double)x), Has.None.NaN, "dbias written into the caller's buffer");
            Assert.That(dk.IsDisposed, Is.True, "the dk the call allocated is released by Dispose");
        });
    }
}
