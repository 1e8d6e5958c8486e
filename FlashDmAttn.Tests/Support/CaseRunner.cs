using NUnit.Framework;

namespace FlashDmAttn.Tests.Support;

/// <summary>
/// Runs one <see cref="AttentionCase"/> through the public API on a backend, with fresh random inputs and a
/// NaN-poisoned output, and compares output and LSE with the float64 reference.
/// </summary>
public static class CaseRunner
{
    public static void Run(AttentionBackend backend, AttentionCase c)
    {
        switch (c.DType)
        {
            case "fp32": Run<float>(backend, c); break;
            case "fp16": Run<Half>(backend, c); break;
            case "bf16": Run<BFloat16>(backend, c); break;
            default: throw new ArgumentException(c.DType);
        }
    }

    private static int[] ResolveShape(int[] spec, int b, int h, int hkv, int lq, int lk)
        => [spec[0] == 1 ? 1 : b, spec[1] == 1 ? 1 : spec[1] == -1 ? hkv : h, spec[2] == 1 ? 1 : lq, lk];

    public static void Run<T>(AttentionBackend backend, AttentionCase c) where T : unmanaged
    {
        var acc = backend.Accelerator;
        var rng = TestData.NewRandom(out int seed);
        string what = $"{c} seed={seed}";
        int B = c.Batch, H = c.Heads, Hkv = c.KvHeads, D = c.HeadDim;
        bool varlen = c.Path is ApiPath.Varlen or ApiPath.Paged;

        // Per-sequence lengths: dense uses Lq/Lk everywhere; varlen draws lengths with the maximum present.
        int[] seqQ = Enumerable.Repeat(c.Lq, B).ToArray(), seqK = Enumerable.Repeat(c.Lk, B).ToArray();
        if (varlen)
            for (int b = 1; b < B; b++)
            {
                if (!c.UniformQ) seqQ[b] = rng.Next(0, c.Lq + 1);
                seqK[b] = rng.Next(0, c.Lk + 1);
            }
        int Lq = c.Lq, Lk = c.Lk;

        // Padded inputs for the reference (B, L, H, D); rows past a sequence's length are never read.
        var (qv, qd) = TestData.Normal<T>(rng, (long)B * Lq * H * D);
        var (kv, kd) = TestData.Normal<T>(rng, (long)B * Lk * Hkv * D);
        var (vv, vd) = TestData.Normal<T>(rng, (long)B * Lk * Hkv * D);

        HostOperand? maskRef = null, biasRef = null;
        DeviceMask? mask = null;
        var owned = new List<IDisposable>();
        try
        {
            if (c.MaskShape is not null)
            {
                var ms = ResolveShape(c.MaskShape, B, H, Hkv, Lq, Lk);
                long n = (long)ms[0] * ms[1] * ms[2] * ms[3];
                var md = new double[n];
                for (long i = 0; i < n; i++) md[i] = rng.NextDouble() < 0.6 ? 1 : 0;
                // One fully masked row (when the mask has rows): its output must be 0, its LSE −∞.
                if (ms[2] > 1) for (int j = 0; j < Lk; j++) md[j] = 0;
                maskRef = new HostOperand(md, ms);
                long[] shape = ms.Select(x => (long)x).ToArray();
                mask = c.MaskKind switch
                {
                    MaskKind.Byte => Own(owned, DeviceTensor<byte>.FromHost(acc, md.Select(x => (byte)x).ToArray(), shape)),
                    MaskKind.Bool => Own(owned, DeviceMask.FromBools(acc, md.Select(x => x != 0).ToArray(), shape)),
                    _ => Own(owned, DeviceTensor<T>.FromHost(acc, md.Select(TestData.FromDouble<T>).ToArray(), shape)),
                };
            }
            DeviceTensor<T>? bias = null;
            if (c.BiasShape is not null)
            {
                var bs = ResolveShape(c.BiasShape, B, H, Hkv, Lq, Lk);
                var (bv, bd) = TestData.Normal<T>(rng, (long)bs[0] * bs[1] * bs[2] * bs[3], 2.0);
                biasRef = new HostOperand(bd, bs);
                bias = Own(owned, DeviceTensor<T>.FromHost(acc, bv, bs.Select(x => (long)x).ToArray()));
            }

            double scale = c.Scale ?? 1.0 / Math.Sqrt(D);
            var (oRef, lseRef) = Reference.Attention(qd, kd, vd, B, Lq, Lk, H, Hkv, D, maskRef, biasRef, scale, c.Causal,
                c.Softcap ?? 0, varlen ? seqQ : null, varlen ? seqK : null);

            double[] oOut, lseOut;
            if (!varlen)
                (oOut, lseOut) = RunDense(backend, c, qv, kv, vv, mask, bias, owned);
            else
                (oOut, lseOut, oRef, lseRef) = RunVarlen(backend, c, rng, seqQ, seqK, qv, kv, vv, mask, bias, oRef, lseRef, owned);

            TestData.AssertClose(oOut, oRef, TestData.Tolerance<T>(), what + " output");
            if (c.Lse) AssertLse(lseOut, lseRef, what);
        }
        finally
        {
            foreach (var d in owned) d.Dispose();
        }
    }

    private static TT Own<TT>(List<IDisposable> owned, TT t) where TT : IDisposable { owned.Add(t); return t; }

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

    /// <summary>Uploads (B, L, H, D) data, optionally into a padded layout (strides not contiguous).</summary>
    public static DeviceTensor<T> Upload<T>(ILGPU.Runtime.Accelerator acc, T[] data, long[] shape, bool strided, List<IDisposable> owned)
        where T : unmanaged
    {
        if (!strided) return Own(owned, DeviceTensor<T>.FromHost(acc, data, shape));
        // Pad the head and row dims: row stride = (H+1)·(D+8), head stride = D+8.
        long b = shape[0], l = shape[1], h = shape[2], d = shape[3];
        long hs = d + 8, ls = (h + 1) * hs, bs = (l + 1) * ls;
        var padded = TestData.Poison<T>(b * bs);
        for (long i0 = 0; i0 < b; i0++)
        for (long i1 = 0; i1 < l; i1++)
        for (long i2 = 0; i2 < h; i2++)
            Array.Copy(data, ((i0 * l + i1) * h + i2) * d, padded, i0 * bs + i1 * ls + i2 * hs, d);
        var raw = Own(owned, DeviceTensor<T>.FromHost(acc, padded, b * bs));
        return raw.View(0, shape, [bs, ls, hs, 1]);
    }

    private static (double[], double[]) RunDense<T>(AttentionBackend backend, AttentionCase c, T[] q, T[] k, T[] v,
        DeviceMask? mask, DeviceTensor<T>? bias, List<IDisposable> owned) where T : unmanaged
    {
        var acc = backend.Accelerator;
        int B = c.Batch, H = c.Heads, Hkv = c.KvHeads, D = c.HeadDim, Lq = c.Lq, Lk = c.Lk;
        var output = Own(owned, DeviceTensor<T>.FromHost(acc, TestData.Poison<T>((long)B * Lq * H * D), B, Lq, H, D));
        var lse = Own(owned, DeviceTensor<float>.FromHost(acc, TestData.Poison<float>((long)B * H * Lq), B, H, Lq));
        var lseArg = c.Lse ? lse : null;
        switch (c.Path)
        {
            case ApiPath.Dense:
            {
                var qt = Upload(acc, q, [B, Lq, H, D], c.Strided, owned);
                var kt = Upload(acc, k, [B, Lk, Hkv, D], c.Strided, owned);
                var vt = Upload(acc, v, [B, Lk, Hkv, D], c.Strided, owned);
                backend.Forward(qt, kt, vt, mask, bias, c.Scale, c.Causal, c.Softcap, output: output, softmaxLse: lseArg);
                break;
            }
            case ApiPath.QkvPacked:
            {
                Assert.That(Lq == Lk && H == Hkv, "qkv-packed cases need Lq == Lk and H == Hkv");
                var packed = new T[(long)B * Lq * 3 * H * D];
                for (long r = 0; r < (long)B * Lq; r++)
                {
                    Array.Copy(q, r * H * D, packed, (r * 3 + 0) * H * D, H * D);
                    Array.Copy(k, r * H * D, packed, (r * 3 + 1) * H * D, H * D);
                    Array.Copy(v, r * H * D, packed, (r * 3 + 2) * H * D, H * D);
                }
                var t = Own(owned, DeviceTensor<T>.FromHost(acc, packed, B, Lq, 3, H, D));
                backend.ForwardQkvPacked(t, mask, bias, c.Scale, c.Causal, c.Softcap, output: output, softmaxLse: lseArg);
                break;
            }
            case ApiPath.KvPacked:
            {
                var packed = new T[(long)B * Lk * 2 * Hkv * D];
                for (long r = 0; r < (long)B * Lk; r++)
                {
                    Array.Copy(k, r * Hkv * D, packed, (r * 2 + 0) * Hkv * D, Hkv * D);
                    Array.Copy(v, r * Hkv * D, packed, (r * 2 + 1) * Hkv * D, Hkv * D);
                }
                var t = Own(owned, DeviceTensor<T>.FromHost(acc, packed, B, Lk, 2, Hkv, D));
                var qt = Upload(acc, q, [B, Lq, H, D], c.Strided, owned);
                backend.ForwardKvPacked(qt, t, mask, bias, c.Scale, c.Causal, c.Softcap, output: output, softmaxLse: lseArg);
                break;
            }
        }
        return (output.ToHost().Select(TestData.ToDouble).ToArray(), lse.ToHost().Select(x => (double)x).ToArray());
    }

    private static (double[], double[], double[], double[]) RunVarlen<T>(AttentionBackend backend, AttentionCase c, Random rng,
        int[] seqQ, int[] seqK, T[] q, T[] k, T[] v, DeviceMask? mask, DeviceTensor<T>? bias,
        double[] oRef, double[] lseRef, List<IDisposable> owned) where T : unmanaged
    {
        var acc = backend.Accelerator;
        int B = c.Batch, H = c.Heads, Hkv = c.KvHeads, D = c.HeadDim, Lq = c.Lq, Lk = c.Lk;
        var cuQ = new int[B + 1];
        var cuK = new int[B + 1];
        for (int b = 0; b < B; b++) { cuQ[b + 1] = cuQ[b] + seqQ[b]; cuK[b + 1] = cuK[b] + seqK[b]; }
        int totalQ = cuQ[B], totalK = cuK[B];

        // Pack q (and k/v) rows of each sequence back to back.
        var qp = new T[(long)totalQ * H * D];
        for (int b = 0; b < B; b++)
            Array.Copy(q, (long)b * Lq * H * D, qp, (long)cuQ[b] * H * D, (long)seqQ[b] * H * D);
        var qt = Own(owned, DeviceTensor<T>.FromHost(acc, qp, totalQ, H, D));
        DeviceTensor<T> kt, vt;
        int[,]? table = null;
        if (c.Path == ApiPath.Varlen)
        {
            var kp = new T[(long)totalK * Hkv * D];
            var vp = new T[(long)totalK * Hkv * D];
            for (int b = 0; b < B; b++)
            {
                Array.Copy(k, (long)b * Lk * Hkv * D, kp, (long)cuK[b] * Hkv * D, (long)seqK[b] * Hkv * D);
                Array.Copy(v, (long)b * Lk * Hkv * D, vp, (long)cuK[b] * Hkv * D, (long)seqK[b] * Hkv * D);
            }
            kt = Own(owned, DeviceTensor<T>.FromHost(acc, kp, totalK, Hkv, D));
            vt = Own(owned, DeviceTensor<T>.FromHost(acc, vp, totalK, Hkv, D));
        }
        else
        {
            // Paged: each sequence's pages at shuffled block indices, plus a spare block nobody uses.
            int ps = c.PageSize, pages = (Lk + ps - 1) / ps, blocks = B * pages + 1;
            var order = Enumerable.Range(0, blocks).OrderBy(_ => rng.Next()).ToArray();
            table = new int[B, pages];
            var kc = TestData.Poison<T>((long)blocks * ps * Hkv * D);
            var vc = TestData.Poison<T>((long)blocks * ps * Hkv * D);
            for (int b = 0; b < B; b++)
            for (int pg = 0; pg < pages; pg++)
            {
                int blk = order[b * pages + pg];
                table[b, pg] = blk;
                for (int r = 0; r < ps && pg * ps + r < seqK[b]; r++)
                {
                    long src = ((long)b * Lk + pg * ps + r) * Hkv * D, dst = ((long)blk * ps + r) * Hkv * D;
                    Array.Copy(k, src, kc, dst, Hkv * D);
                    Array.Copy(v, src, vc, dst, Hkv * D);
                }
            }
            kt = Own(owned, DeviceTensor<T>.FromHost(acc, kc, blocks, ps, Hkv, D));
            vt = Own(owned, DeviceTensor<T>.FromHost(acc, vc, blocks, ps, Hkv, D));
        }
        var output = Own(owned, DeviceTensor<T>.FromHost(acc, TestData.Poison<T>((long)totalQ * H * D), totalQ, H, D));
        var lse = Own(owned, DeviceTensor<float>.FromHost(acc, TestData.Poison<float>((long)H * totalQ), H, totalQ));
        backend.ForwardVarlen(qt, kt, vt, cuQ, cuK, Lq, Lk, mask, bias, c.Scale, c.Causal, c.Softcap,
            blockTable: table, output: output, softmaxLse: c.Lse ? lse : null);

        // Pack the reference the same way.
        var oPacked = new double[(long)totalQ * H * D];
        var lsePacked = new double[(long)H * totalQ];
        for (int b = 0; b < B; b++)
        {
            Array.Copy(oRef, (long)b * Lq * H * D, oPacked, (long)cuQ[b] * H * D, (long)seqQ[b] * H * D);
            for (int h = 0; h < H; h++)
                for (int i = 0; i < seqQ[b]; i++)
                    lsePacked[(long)h * totalQ + cuQ[b] + i] = lseRef[((long)b * H + h) * Lq + i];
        }
        return (output.ToHost().Select(TestData.ToDouble).ToArray(), lse.ToHost().Select(x => (double)x).ToArray(), oPacked, lsePacked);
    }
}
