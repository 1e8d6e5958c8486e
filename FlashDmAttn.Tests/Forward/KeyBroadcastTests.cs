using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Forward;

/// <summary>
/// Masks and biases broadcast over keys, (B|1, H|Hkv|1, Lq|1, 1): a row sees all of its keys or none, and a bias adds
/// one constant per row (LSE shift, output unchanged). Compared with the float64 reference on the operand expanded to
/// (.., Lk) on the host, on fresh random inputs with NaN-filled output and LSE, through every entry point.
/// </summary>
public class KeyBroadcastTests
{
    public enum Path { Dense, QkvPacked, KvPacked, Varlen }

    // mask / bias shape: null = absent; entries as AttentionCase (0 full, 1 broadcast, -1 kv heads); "K1" = key dim 1.
    private static readonly int[] RowMask = [0, 0, 0];      // (B, H, Lq, 1)
    private static readonly int[] HeadMask = [1, -1, 1];    // (1, Hkv, 1, 1)
    private static readonly int[] RowBias = [0, 1, 0];      // (B, 1, Lq, 1)

    private static IEnumerable<TestCaseData> Cases()
    {
        // dtype, path, mask shape, mask key-broadcast, mask in dtype, bias shape, bias key-broadcast, causal, softcap
        yield return new TestCaseData("fp32", Path.Dense, RowMask, true, false, null, false, false, null).SetName("Dense fp32 mask(B,H,Lq,1)");
        yield return new TestCaseData("fp32", Path.Dense, null, false, false, RowBias, true, true, 5f).SetName("Dense fp32 bias(B,1,Lq,1) causal softcap");
        yield return new TestCaseData("bf16", Path.Dense, RowMask, true, true, RowBias, true, false, null).SetName("Dense bf16 both key-broadcast, dtype mask");
        yield return new TestCaseData("fp16", Path.Dense, HeadMask, true, false, new[] { 0, 0, 0 }, false, true, null).SetName("Dense fp16 mask(1,Hkv,1,1) + full bias");
        yield return new TestCaseData("fp32", Path.Dense, new[] { 0, 0, 0 }, false, false, RowBias, true, true, null).SetName("Dense fp32 full mask + bias(B,1,Lq,1)");
        yield return new TestCaseData("fp32", Path.Dense, new[] { 1, 0, 1 }, false, true, new[] { 0, -1, 1 }, true, false, null).SetName("Dense fp32 per-key mask + bias(B,Hkv,1,1)");
        yield return new TestCaseData("fp16", Path.QkvPacked, RowMask, true, false, RowBias, true, true, null).SetName("QkvPacked fp16 both key-broadcast");
        yield return new TestCaseData("bf16", Path.KvPacked, RowMask, true, true, new[] { 1, 0, 0 }, false, false, 8f).SetName("KvPacked bf16 key mask + full bias");
        yield return new TestCaseData("fp32", Path.Varlen, RowMask, true, false, RowBias, true, true, null).SetName("Varlen fp32 both key-broadcast");
        yield return new TestCaseData("bf16", Path.Varlen, new[] { 0, 0, 0 }, false, false, RowBias, true, false, null).SetName("Varlen bf16 full mask + key bias");
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(string dtype, Path path, int[]? maskSpec, bool maskKey, bool maskInDtype,
        int[]? biasSpec, bool biasKey, bool causal, float? softcap)
    {
        switch (dtype)
        {
            case "fp32": Run<float>(path, maskSpec, maskKey, maskInDtype, biasSpec, biasKey, causal, softcap); break;
            case "fp16": Run<Half>(path, maskSpec, maskKey, maskInDtype, biasSpec, biasKey, causal, softcap); break;
            default: Run<BFloat16>(path, maskSpec, maskKey, maskInDtype, biasSpec, biasKey, causal, softcap); break;
        }
    }

    [Test]
    public void KeyBroadcastBiasWithoutLseLeavesOutputOfNoBias()
        => Run<float>(Path.Dense, null, false, false, RowBias, true, false, null, withLse: false);

    private static int[] Resolve(int[] spec, bool keyBroadcast, int b, int h, int hkv, int lq, int lk)
        => [spec[0] == 1 ? 1 : b, spec[1] == 1 ? 1 : spec[1] == -1 ? hkv : h, spec[2] == 1 ? 1 : lq, keyBroadcast ? 1 : lk];

    /// <summary>The operand with its key dim expanded to <paramref name="lk"/>, for the reference only.</summary>
    private static HostOperand Expand(double[] data, int[] shape, int lk)
    {
        if (shape[3] == lk) return new HostOperand(data, shape);
        var full = new double[data.Length * lk];
        for (int r = 0; r < data.Length; r++)
            for (int j = 0; j < lk; j++) full[(long)r * lk + j] = data[r];
        return new HostOperand(full, [shape[0], shape[1], shape[2], lk]);
    }

    private static void Run<T>(Path path, int[]? maskSpec, bool maskKey, bool maskInDtype, int[]? biasSpec, bool biasKey,
        bool causal, float? softcap, bool withLse = true) where T : unmanaged
    {
        var backend = FlashDmAttention.Auto("cpu");
        var acc = backend.Accelerator;
        var rng = TestData.NewRandom(out int seed);
        bool self = path == Path.QkvPacked;
        int B = 2, H = 4, Hkv = self ? 4 : 2, D = 16;
        int Lq = rng.Next(3, 12), Lk = self ? Lq : rng.Next(2, 12);
        if (causal && !self && rng.Next(2) == 0) Lk = Math.Max(1, Lq - 2);   // rows with no key under the causal band
        int[] seqQ = [Lq, Lq], seqK = [Lk, Lk];
        if (path == Path.Varlen) { seqQ[1] = rng.Next(0, Lq + 1); seqK[1] = rng.Next(0, Lk + 1); }
        string what = $"{path} {typeof(T).Name} B{B} Lq{Lq} Lk{Lk} H{H}/{Hkv} seed={seed}";

        var (qv, qd) = TestData.Normal<T>(rng, (long)B * Lq * H * D);
        var (kv, kd) = TestData.Normal<T>(rng, (long)B * Lk * Hkv * D);
        var (vv, vd) = TestData.Normal<T>(rng, (long)B * Lk * Hkv * D);
        var owned = new List<IDisposable>();
        TT Own<TT>(TT t) where TT : IDisposable { owned.Add(t); return t; }
        try
        {
            HostOperand? maskRef = null, biasRef = null;
            DeviceMask? mask = null;
            DeviceTensor<T>? bias = null;
            if (maskSpec is not null)
            {
                var ms = Resolve(maskSpec, maskKey, B, H, Hkv, Lq, Lk);
                var md = new double[ms[0] * ms[1] * ms[2] * ms[3]];
                for (int i = 0; i < md.Length; i++) md[i] = rng.NextDouble() < 0.6 ? 1 : 0;
                md[0] = 0;                                          // at least one hidden row (or key)
                if (md.Length > 1) md[^1] = 1;
                maskRef = Expand(md, ms, Lk);
                long[] shape = ms.Select(x => (long)x).ToArray();
                mask = maskInDtype
                    ? Own(DeviceTensor<T>.FromHost(acc, md.Select(TestData.FromDouble<T>).ToArray(), shape))
                    : Own(DeviceTensor<byte>.FromHost(acc, md.Select(x => (byte)x).ToArray(), shape));
            }
            if (biasSpec is not null)
            {
                var bs = Resolve(biasSpec, biasKey, B, H, Hkv, Lq, Lk);
                var (bv, bd) = TestData.Normal<T>(rng, (long)bs[0] * bs[1] * bs[2] * bs[3], 2.0);
                biasRef = Expand(bd, bs, Lk);
                bias = Own(DeviceTensor<T>.FromHost(acc, bv, bs.Select(x => (long)x).ToArray()));
            }
            double scale = 1.0 / Math.Sqrt(D);
            var (oRef, lseRef) = Reference.Attention(qd, kd, vd, B, Lq, Lk, H, Hkv, D, maskRef, biasRef, scale, causal,
                softcap ?? 0, path == Path.Varlen ? seqQ : null, path == Path.Varlen ? seqK : null);

            double[] oOut, lseOut;
            if (path == Path.Varlen)
            {
                int[] cuQ = [0, seqQ[0], seqQ[0] + seqQ[1]], cuK = [0, seqK[0], seqK[0] + seqK[1]];
                var qp = Pack(qv, Lq, H * D, cuQ, seqQ);
                var kp = Pack(kv, Lk, Hkv * D, cuK, seqK);
                var vp = Pack(vv, Lk, Hkv * D, cuK, seqK);
                var q = Own(DeviceTensor<T>.FromHost(acc, qp, cuQ[2], H, D));
                var k = Own(DeviceTensor<T>.FromHost(acc, kp, cuK[2], Hkv, D));
                var v = Own(DeviceTensor<T>.FromHost(acc, vp, cuK[2], Hkv, D));
                var o = Own(DeviceTensor<T>.Allocate(acc, cuQ[2], H, D));
                var lse = Own(DeviceTensor<float>.Allocate(acc, H, cuQ[2]));
                o.Fill(TestData.FromDouble<T>(double.NaN));
                lse.Fill(float.NaN);
                backend.ForwardVarlen(q, k, v, cuQ, cuK, Lq, Lk, mask, bias, isCausal: causal, softcap: softcap,
                    output: o, softmaxLse: withLse ? lse : null);
                oOut = o.ToHost().Select(TestData.ToDouble).ToArray();
                lseOut = lse.ToHost().Select(x => (double)x).ToArray();
                // The reference packed the same way.
                oRef = Pack(oRef, Lq, H * D, cuQ, seqQ);
                var lp = new double[H * cuQ[2]];
                for (int b = 0; b < B; b++)
                for (int h = 0; h < H; h++)
                for (int i = 0; i < seqQ[b]; i++)
                    lp[h * cuQ[2] + cuQ[b] + i] = lseRef[(b * H + h) * Lq + i];
                lseRef = lp;
            }
            else
            {
                var o = Own(DeviceTensor<T>.Allocate(acc, B, Lq, H, D));
                var lse = Own(DeviceTensor<float>.Allocate(acc, B, H, Lq));
                o.Fill(TestData.FromDouble<T>(double.NaN));
                lse.Fill(float.NaN);
                var lseArg = withLse ? lse : null;
                if (path == Path.QkvPacked)
                {
                    var packed = new T[(long)B * Lq * 3 * H * D];
                    for (long r = 0; r < (long)B * Lq; r++)
                    {
                        Array.Copy(qv, r * H * D, packed, (r * 3 + 0) * H * D, H * D);
                        Array.Copy(kv, r * H * D, packed, (r * 3 + 1) * H * D, H * D);
                        Array.Copy(vv, r * H * D, packed, (r * 3 + 2) * H * D, H * D);
                    }
                    var qkv = Own(DeviceTensor<T>.FromHost(acc, packed, B, Lq, 3, H, D));
                    backend.ForwardQkvPacked(qkv, mask, bias, isCausal: causal, softcap: softcap, output: o, softmaxLse: lseArg);
                }
                else if (path == Path.KvPacked)
                {
                    var packed = new T[(long)B * Lk * 2 * Hkv * D];
                    for (long r = 0; r < (long)B * Lk; r++)
                    {
                        Array.Copy(kv, r * Hkv * D, packed, (r * 2 + 0) * Hkv * D, Hkv * D);
                        Array.Copy(vv, r * Hkv * D, packed, (r * 2 + 1) * Hkv * D, Hkv * D);
                    }
                    var kvt = Own(DeviceTensor<T>.FromHost(acc, packed, B, Lk, 2, Hkv, D));
                    var q = Own(DeviceTensor<T>.FromHost(acc, qv, B, Lq, H, D));
                    backend.ForwardKvPacked(q, kvt, mask, bias, isCausal: causal, softcap: softcap, output: o, softmaxLse: lseArg);
                }
                else
                {
                    var q = Own(DeviceTensor<T>.FromHost(acc, qv, B, Lq, H, D));
                    var k = Own(DeviceTensor<T>.FromHost(acc, kv, B, Lk, Hkv, D));
                    var v = Own(DeviceTensor<T>.FromHost(acc, vv, B, Lk, Hkv, D));
                    backend.Forward(q, k, v, mask, bias, isCausal: causal, softcap: softcap, output: o, softmaxLse: lseArg);
                }
                oOut = o.ToHost().Select(TestData.ToDouble).ToArray();
                lseOut = lse.ToHost().Select(x => (double)x).ToArray();
            }

            TestData.AssertClose(oOut, oRef, TestData.Tolerance<T>(), what + " output");
            if (withLse) AssertLse(lseOut, lseRef, what);
            else Assert.That(lseOut, Has.All.NaN, what + ": LSE written though not requested");
        }
        finally
        {
            foreach (var d in owned) d.Dispose();
        }
    }

    /// <summary>Rows of each sequence (of <paramref name="rowSize"/> elements, padded to <paramref name="l"/> rows) back to back.</summary>
    private static TE[] Pack<TE>(TE[] padded, int l, int rowSize, int[] cu, int[] lengths)
    {
        var packed = new TE[(long)cu[^1] * rowSize];
        for (int b = 0; b < lengths.Length; b++)
            Array.Copy(padded, (long)b * l * rowSize, packed, (long)cu[b] * rowSize, (long)lengths[b] * rowSize);
        return packed;
    }

    private static void AssertLse(double[] actual, double[] expected, string what)
    {
        var a = new List<double>();
        var e = new List<double>();
        for (int i = 0; i < expected.Length; i++)
        {
            if (double.IsNegativeInfinity(expected[i]))
            {
                Assert.That(actual[i], Is.EqualTo(double.NegativeInfinity), $"{what} lse[{i}] of an empty row");
                continue;
            }
            a.Add(actual[i]);
            e.Add(expected[i]);
        }
        TestData.AssertClose(a.ToArray(), e.ToArray(), 1e-5, what + " lse");
    }
}
