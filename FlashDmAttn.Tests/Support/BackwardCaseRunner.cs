using NUnit.Framework;

namespace FlashDmAttn.Tests.Support;

/// <summary>
/// One backward case: the forward problem (mask/bias specs as in <see cref="AttentionCase"/>, with a fourth, key entry:
/// 1 = key dim 1), whether the caller passes its own NaN-poisoned gradient buffers, and the deterministic flag.
/// <see cref="NaNHiddenKeys"/> (masks broadcast over queries only): the K and V rows no query head of their kv head may
/// see are NaN on the device, which any read would spread into the gradients (0·NaN = NaN); their own dk and dv are 0.
/// </summary>
public sealed record BackwardCase(AttentionCase Attention, bool CallerGrads = false, bool Deterministic = false,
    bool NaNHiddenKeys = false, bool MaskedTile = false)
{
    public override string ToString()
        => $"{Attention}{(Attention.Path == ApiPath.Paged ? $" page{Attention.PageSize}" : "")}" +
           $"{(CallerGrads ? " caller-grads" : "")}{(Deterministic ? " deterministic" : "")}{(NaNHiddenKeys ? " NaN-hidden-keys" : "")}" +
           $"{(MaskedTile ? " masked-tile" : "")}";
}

/// <summary>
/// Runs one <see cref="BackwardCase"/> through the public API on a backend: fresh random q, k, v, dO (and mask, bias),
/// the library's forward for output and LSE, then the backward through the case's entry point; compares dq, dk, dv and
/// dbias with the float64 reference and asserts that no gradient element is NaN (poisoned caller buffers are written
/// in full, padding of strided ones not at all).
/// </summary>
public static class BackwardCaseRunner
{
    /// <summary>
    /// Relative L2 tolerance of a gradient, before the output term of <see cref="Run{T}"/>: twice the forward's. A
    /// gradient is, like the forward's output, fp32 sums rounded once to T, but it comes through two products where the
    /// output has one (dP = dO·Vᵀ and dS = P∘(dP − D), then dS·K, dSᵀ·Q, Pᵀ·dO), each of which a kernel may feed operands
    /// rounded to T as the forward feeds P to P·V; P itself is recomputed from the fp32 LSE (~1e-7 relative).
    /// </summary>
    public static double GradTolerance<T>() => 2 * TestData.Tolerance<T>();

    public static void Run(AttentionBackend backend, BackwardCase c)
    {
        switch (c.Attention.DType)
        {
            case "fp32": Run<float>(backend, c); break;
            case "fp16": Run<Half>(backend, c); break;
            case "bf16": Run<BFloat16>(backend, c); break;
            default: throw new ArgumentException(c.Attention.DType);
        }
    }

    /// <summary>(B|1, H|Hkv|1, Lq|1, Lk|1) from a spec: 0 full, 1 broadcast, -1 kv heads (head entry); a missing key entry is full.</summary>
    public static int[] ResolveShape(int[] spec, int b, int h, int hkv, int lq, int lk)
        => [spec[0] == 1 ? 1 : b, spec[1] == 1 ? 1 : spec[1] == -1 ? hkv : h, spec[2] == 1 ? 1 : lq, spec.Length > 3 && spec[3] == 1 ? 1 : lk];

    /// <summary>A gradient as returned (read when compared), the float64 one in the same layout, and how to compare them.</summary>
    private sealed record Result(string Name, Func<double[]> Read, double[] Expected, double? AbsoluteBound = null);

    public static void Run<T>(AttentionBackend backend, BackwardCase bc) where T : unmanaged
    {
        var c = bc.Attention;
        var acc = backend.Accelerator;
        var rng = TestData.NewRandom(out int seed);
        string what = $"{bc} seed={seed}";
        int B = c.Batch, H = c.Heads, Hkv = c.KvHeads, D = c.HeadDim, Lq = c.Lq, Lk = c.Lk;
        bool varlen = c.Path is ApiPath.Varlen or ApiPath.Paged;

        int[] seqQ = Enumerable.Repeat(Lq, B).ToArray(), seqK = Enumerable.Repeat(Lk, B).ToArray();
        if (varlen)
            for (int b = 1; b < B; b++)
            {
                seqQ[b] = rng.Next(0, Lq + 1);
                seqK[b] = rng.Next(0, Lk + 1);
            }

        // Padded (B, L, H, D) inputs for the reference; rows past a sequence's length are never read.
        var (qv, qd) = TestData.Normal<T>(rng, (long)B * Lq * H * D);
        var (kv, kd) = TestData.Normal<T>(rng, (long)B * Lk * Hkv * D);
        var (vv, vd) = TestData.Normal<T>(rng, (long)B * Lk * Hkv * D);
        var (dov, dod) = TestData.Normal<T>(rng, (long)B * Lq * H * D);

        var owned = new List<IDisposable>();
        AttentionGradients<T>? grads = null;
        try
        {
            HostOperand? maskRef = null, biasRef = null;
            DeviceMask? mask = null;
            DeviceTensor<T>? bias = null;
            if (c.MaskShape is not null)
            {
                var ms = ResolveShape(c.MaskShape, B, H, Hkv, Lq, Lk);
                var md = new double[(long)ms[0] * ms[1] * ms[2] * ms[3]];
                for (long i = 0; i < md.Length; i++) md[i] = rng.NextDouble() < 0.6 ? 1 : 0;
                // One fully masked row (when the mask has rows): its gradients must be exact zeros.
                if (ms[2] > 1) for (int j = 0; j < ms[3]; j++) md[j] = 0;
                // MaskedTile: query rows 64 … 127 of every mask row block see nothing, a whole query tile of the
                // tensor-core kernels that the key blocks skip.
                if (bc.MaskedTile)
                    for (long r = 0; r < md.Length / ms[3]; r++)
                        if (r % ms[2] is >= 64 and < 128) Array.Clear(md, (int)(r * ms[3]), ms[3]);
                maskRef = new HostOperand(md, ms);
                if (bc.NaNHiddenKeys) PoisonHiddenKeys(maskRef, kv, vv, B, H, Hkv, D, Lk);
                long[] shape = ms.Select(x => (long)x).ToArray();
                mask = c.MaskKind switch
                {
                    MaskKind.Byte => Own(owned, DeviceTensor<byte>.FromHost(acc, md.Select(x => (byte)x).ToArray(), shape)),
                    MaskKind.Bool => Own(owned, DeviceMask.FromBools(acc, md.Select(x => x != 0).ToArray(), shape)),
                    _ => Own(owned, DeviceTensor<T>.FromHost(acc, md.Select(TestData.FromDouble<T>).ToArray(), shape)),
                };
            }
            if (c.BiasShape is not null)
            {
                var bs = ResolveShape(c.BiasShape, B, H, Hkv, Lq, Lk);
                var (bv, bd) = TestData.Normal<T>(rng, (long)bs[0] * bs[1] * bs[2] * bs[3], 2.0);
                biasRef = new HostOperand(bd, bs);
                bias = Own(owned, DeviceTensor<T>.FromHost(acc, bv, bs.Select(x => (long)x).ToArray()));
            }

            double scale = c.Scale ?? 1.0 / Math.Sqrt(D);
            var g = BackwardReference.Gradients(qd, kd, vd, dod, B, Lq, Lk, H, Hkv, D, maskRef, biasRef, scale, c.Causal,
                c.Softcap ?? 0, varlen ? seqQ : null, varlen ? seqK : null);

            var problem = new Problem<T>(backend, bc, rng, qv, kv, vv, dov, mask, bias, seqQ, seqK, owned);
            List<Result> results;
            List<(string Name, DeviceTensor<T> Raw, bool[] InView)> padded;
            (grads, results, padded) = c.Path switch
            {
                ApiPath.Dense => problem.Dense(g),
                ApiPath.QkvPacked => problem.QkvPacked(g),
                ApiPath.KvPacked => problem.KvPacked(g),
                _ => problem.Varlen(g),
            };

            // The output term of the tolerance. Every FlashAttention-style backward forms D = rowsum(dO∘O) from the
            // output it is given, rounded to T; where one key dominates a row, dP − D cancels and that rounding is
            // amplified in dS (dv, which has no D, is unaffected). Its size is measured, not guessed: the float64
            // gradient with D from the library's own output, against the exact one. Twice that joins the tolerance.
            // The output itself must be the forward's to its tolerance, else the term would hide any error.
            var oLib = problem.OutputPadded();
            TestData.AssertClose(oLib, g.O, TestData.Tolerance<T>(), what + " forward output");
            var gD = BackwardReference.Gradients(qd, kd, vd, dod, B, Lq, Lk, H, Hkv, D, maskRef, biasRef, scale, c.Causal,
                c.Softcap ?? 0, varlen ? seqQ : null, varlen ? seqK : null, oLib);
            var outputTerm = new Dictionary<string, double>
            {
                ["dq"] = TestData.RelativeError(gD.DQ, g.DQ),
                ["dk"] = TestData.RelativeError(gD.DK, g.DK),
                ["dv"] = TestData.RelativeError(gD.DV, g.DV),
                ["dbias"] = gD.DBias is null ? 0 : TestData.RelativeError(gD.DBias, g.DBias!),
            };
            double OutputTerm(string name) => name.StartsWith("dqkv") ? Math.Max(outputTerm["dq"], Math.Max(outputTerm["dk"], outputTerm["dv"]))
                : name.StartsWith("dkv") ? Math.Max(outputTerm["dk"], outputTerm["dv"]) : outputTerm[name];

            // dbias, in the bias's own shape.
            if (bias is not null)
            {
                if (!bc.CallerGrads) Assert.That(grads.DBias, Is.Not.Null, $"{what}: dbias of a call with a bias");
                var db = bc.CallerGrads ? problem.GradBias! : grads.DBias!;
                double[] Db() => db.ToHost().Select(TestData.ToDouble).ToArray();
                // Key dim 1: a per-row constant the output does not depend on; its gradient is exactly 0, and what a
                // kernel gets is dO_i·(o_i − round(o_i)) summed over the reduced rows: bounded by tol·√Σ(‖dO_i‖‖o_i‖)².
                results.Add(biasRef!.Shape[3] == 1
                    ? new Result("dbias", Db, g.DBias!, GradTolerance<T>() * RowScale(g, dod, B, Lq, H, D, varlen ? seqQ : null))
                    : new Result("dbias", Db, g.DBias!));
            }
            else
            {
                Assert.That(grads.DBias, Is.Null, $"{what}: dbias without a bias");
            }

            // With caller buffers the values are read after disposing the gradients: the buffers must stay usable.
            if (bc.CallerGrads)
            {
                grads.Dispose();
                grads = null;
                foreach (var t in problem.CallerBuffers)
                    Assert.That(t.IsDisposed, Is.False, $"{what}: disposing the gradients disposed a caller buffer");
            }

            Assert.Multiple(() =>
            {
                foreach (var r in results)
                {
                    var actual = r.Read();
                    int nan = actual.Count(double.IsNaN);
                    Assert.That(nan, Is.Zero, $"{what} {r.Name}: {nan} of {actual.Length} elements NaN (unwritten or 0·∞)");
                    if (r.AbsoluteBound is { } bound)
                    {
                        double norm = Math.Sqrt(actual.Sum(x => x * x));
                        Assert.That(norm <= bound, Is.True, $"{what} {r.Name}: ‖{r.Name}‖ = {norm:E3} > {bound:E3} (its exact value is 0)");
                    }
                    else
                    {
                        double term = 2 * OutputTerm(r.Name);
                        AssertGradient(actual, r.Expected, GradTolerance<T>() + term,
                            $"{what} {r.Name} (tolerance {GradTolerance<T>():E1} + output term {term:E1})");
                    }
                }
                foreach (var (name, raw, inView) in padded)
                {
                    var host = raw.ToHost();
                    int written = 0;
                    for (int i = 0; i < host.Length; i++)
                        if (!inView[i] && !double.IsNaN(TestData.ToDouble(host[i]))) written++;
                    Assert.That(written, Is.Zero, $"{what} {name}: {written} padding elements between strided rows written");
                }
            });
        }
        finally
        {
            grads?.Dispose();
            foreach (var d in owned) d.Dispose();
        }
    }

    /// <summary>
    /// Relative L2 error like <see cref="TestData.AssertClose"/>; where the exact gradient is all zero (e.g. every row
    /// sees a single key, so P = 1 and dS = 0) the RMS of the result is held to the same tolerance.
    /// </summary>
    public static void AssertGradient(double[] actual, double[] expected, double tol, string what)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length), what + " elements");
        double err = expected.All(x => x == 0)
            ? Math.Sqrt(actual.Sum(x => x * x) / Math.Max(1, actual.Length))
            : TestData.RelativeError(actual, expected);
        Assert.That(err <= tol, Is.True, $"{what}: relative error {err:E3} (NaN: an output was NaN/unwritten) > {tol:E1}");
    }

    /// <summary>√Σ over rows with a visible key of (‖dO_i‖·‖o_i‖)²: the scale of rowsum(dO∘O).</summary>
    private static double RowScale(HostGradients g, double[] dO, int B, int lq, int H, int D, int[]? seqQ)
    {
        double sum = 0;
        for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
        for (int i = 0; i < (seqQ?[b] ?? lq); i++)
        {
            if (double.IsNegativeInfinity(g.Lse[((long)b * H + h) * lq + i])) continue;
            long off = (((long)b * lq + i) * H + h) * D;
            double a = 0, o = 0;
            for (int x = 0; x < D; x++) { a += dO[off + x] * dO[off + x]; o += g.O[off + x] * g.O[off + x]; }
            sum += a * o;
        }
        return Math.Sqrt(sum);
    }

    private static TT Own<TT>(List<IDisposable> owned, TT t) where TT : IDisposable { owned.Add(t); return t; }

    /// <summary>NaN into the device copies of the K/V rows that a query-broadcast mask hides from every head of their group.</summary>
    private static void PoisonHiddenKeys<T>(HostOperand mask, T[] k, T[] v, int B, int H, int Hkv, int D, int lk)
    {
        Assert.That(mask.Shape[2] == 1 && mask.Shape[3] == lk, "NaN-hidden-keys needs a mask broadcast over queries only");
        var nan = TestData.FromDouble<T>(double.NaN);
        int group = H / Hkv;
        for (int b = 0; b < B; b++)
        for (int j = 0; j < lk; j++)
        for (int hk = 0; hk < Hkv; hk++)
        {
            bool seen = false;
            for (int h = hk * group; h < (hk + 1) * group; h++) seen |= mask.At(b, h, H, 0, j) != 0;
            if (seen) continue;
            long off = (((long)b * lk + j) * Hkv + hk) * D;
            Array.Fill(k, nan, (int)off, D);
            Array.Fill(v, nan, (int)off, D);
        }
    }

    /// <summary>The device side of one case: uploads in the path's layouts, forward, backward, results read back.</summary>
    private sealed class Problem<T>(AttentionBackend backend, BackwardCase bc, Random rng, T[] q, T[] k, T[] v, T[] dO,
        DeviceMask? mask, DeviceTensor<T>? bias, int[] seqQ, int[] seqK, List<IDisposable> owned) where T : unmanaged
    {
        private readonly AttentionCase _c = bc.Attention;
        private ILGPU.Runtime.Accelerator Acc => backend.Accelerator;
        private int B => _c.Batch;
        private int H => _c.Heads;
        private int Hkv => _c.KvHeads;
        private int D => _c.HeadDim;
        private int Lq => _c.Lq;
        private int Lk => _c.Lk;

        /// <summary>The caller's bias gradient buffer (when the case passes buffers and has a bias).</summary>
        public DeviceTensor<T>? GradBias { get; private set; }

        /// <summary>Every caller-provided gradient buffer.</summary>
        public List<DeviceTensor<T>> CallerBuffers { get; } = [];

        private readonly List<(string, DeviceTensor<T>, bool[])> _padded = [];

        /// <summary>The forward's output the backward was given, and the query offsets of a varlen one.</summary>
        private DeviceTensor<T>? _output;
        private int[]? _cuQ;

        /// <summary>The library's forward output as float64, in the padded (B, Lq, H, D) layout of the reference.</summary>
        public double[] OutputPadded()
        {
            var o = Host(_output!);
            if (_cuQ is null) return o;
            var padded = new double[(long)B * Lq * H * D];
            for (int b = 0; b < B; b++)
                Array.Copy(o, (long)_cuQ[b] * H * D, padded, (long)b * Lq * H * D, (long)seqQ[b] * H * D);
            return padded;
        }

        private DeviceTensor<T> Up(T[] data, params long[] shape) => Own(owned, DeviceTensor<T>.FromHost(Acc, data, shape));

        /// <summary>A NaN-filled caller gradient buffer of <paramref name="shape"/>; padded (strided) on request.</summary>
        private DeviceTensor<T>? Caller(string name, bool strided, params long[] shape)
        {
            if (!bc.CallerGrads) return null;
            DeviceTensor<T> t;
            if (!strided || shape.Length != 4)
            {
                t = Up(TestData.Poison<T>(shape.Aggregate(1L, (a, x) => a * x)), shape);
            }
            else
            {
                // Same padding as CaseRunner.Upload: the elements between rows must stay NaN.
                long b = shape[0], l = shape[1], h = shape[2], d = shape[3];
                long hs = d + 8, ls = (h + 1) * hs, bs = (l + 1) * ls;
                var raw = Up(TestData.Poison<T>(b * bs), b * bs);
                var inView = new bool[b * bs];
                for (long i0 = 0; i0 < b; i0++)
                for (long i1 = 0; i1 < l; i1++)
                for (long i2 = 0; i2 < h; i2++)
                for (long x = 0; x < d; x++)
                    inView[i0 * bs + i1 * ls + i2 * hs + x] = true;
                _padded.Add((name, raw, inView));
                t = raw.View(0, shape, [bs, ls, hs, 1]);
            }
            CallerBuffers.Add(t);
            return t;
        }

        private DeviceTensor<T>? CallerBias()
        {
            if (bias is null) return null;
            GradBias = Caller("gradBias", false, bias.Shape.ToArray());
            return GradBias;
        }

        private static double[] Host(DeviceTensor<T> t) => t.ToHost().Select(TestData.ToDouble).ToArray();

        private (DeviceTensor<T> O, DeviceTensor<float> Lse) Outputs(long rows, long[] oShape, long[] lseShape)
        {
            _output = Up(TestData.Poison<T>(rows * H * D), oShape);
            return (_output, Own(owned, DeviceTensor<float>.FromHost(Acc, TestData.Poison<float>(rows * H), lseShape)));
        }

        public (AttentionGradients<T>, List<Result>, List<(string, DeviceTensor<T>, bool[])>) Dense(HostGradients g)
        {
            bool s = _c.Strided;
            var qt = CaseRunner.Upload(Acc, q, [B, Lq, H, D], s, owned);
            var kt = CaseRunner.Upload(Acc, k, [B, Lk, Hkv, D], s, owned);
            var vt = CaseRunner.Upload(Acc, v, [B, Lk, Hkv, D], s, owned);
            var dOt = CaseRunner.Upload(Acc, dO, [B, Lq, H, D], s, owned);
            var (o, lse) = Outputs((long)B * Lq, [B, Lq, H, D], [B, H, Lq]);
            backend.Forward(qt, kt, vt, mask, bias, _c.Scale, _c.Causal, _c.Softcap, output: o, softmaxLse: lse);
            var gq = Caller("gradQuery", s, B, Lq, H, D);
            var gk = Caller("gradKey", s, B, Lk, Hkv, D);
            var gv = Caller("gradValue", s, B, Lk, Hkv, D);
            var grads = backend.Backward(dOt, qt, kt, vt, o, lse, mask, bias, _c.Scale, _c.Causal, _c.Softcap, bc.Deterministic,
                gq, gk, gv, CallerBias());
            Assert.That(grads.Packed, Is.Null, "Packed of a dense call");
            return (grads, [
                new Result("dq", () => Host(gq ?? grads.DQuery), g.DQ),
                new Result("dk", () => Host(gk ?? grads.DKey), g.DK),
                new Result("dv", () => Host(gv ?? grads.DValue), g.DV)], _padded);
        }

        public (AttentionGradients<T>, List<Result>, List<(string, DeviceTensor<T>, bool[])>) QkvPacked(HostGradients g)
        {
            Assert.That(Lq == Lk && H == Hkv, "qkv-packed cases need Lq == Lk and H == Hkv");
            var qkv = Up(Interleave([q, k, v], (long)B * Lq, H * D), B, Lq, 3, H, D);
            var dOt = Up(dO, B, Lq, H, D);
            var (o, lse) = Outputs((long)B * Lq, [B, Lq, H, D], [B, H, Lq]);
            backend.ForwardQkvPacked(qkv, mask, bias, _c.Scale, _c.Causal, _c.Softcap, output: o, softmaxLse: lse);
            var gqkv = Caller("gradQkv", false, B, Lq, 3, H, D);
            var grads = backend.BackwardQkvPacked(dOt, qkv, o, lse, mask, bias, _c.Scale, _c.Causal, _c.Softcap, bc.Deterministic,
                gqkv, CallerBias());
            var expected = Interleave([g.DQ, g.DK, g.DV], (long)B * Lq, H * D);
            var results = new List<Result>();
            if (gqkv is not null)
            {
                results.Add(new Result("dqkv (caller's)", () => Host(gqkv), expected));
            }
            else
            {
                Assert.That(grads.Packed, Is.Not.Null, "Packed of a qkv-packed call");
                results.Add(new Result("dqkv (Packed)", () => Host(grads.Packed!), expected));
                results.Add(new Result("dq", () => Host(grads.DQuery), g.DQ));
                results.Add(new Result("dk", () => Host(grads.DKey), g.DK));
                results.Add(new Result("dv", () => Host(grads.DValue), g.DV));
            }
            return (grads, results, _padded);
        }

        public (AttentionGradients<T>, List<Result>, List<(string, DeviceTensor<T>, bool[])>) KvPacked(HostGradients g)
        {
            bool s = _c.Strided;
            var qt = CaseRunner.Upload(Acc, q, [B, Lq, H, D], s, owned);
            var kvt = Up(Interleave([k, v], (long)B * Lk, Hkv * D), B, Lk, 2, Hkv, D);
            var dOt = CaseRunner.Upload(Acc, dO, [B, Lq, H, D], s, owned);
            var (o, lse) = Outputs((long)B * Lq, [B, Lq, H, D], [B, H, Lq]);
            backend.ForwardKvPacked(qt, kvt, mask, bias, _c.Scale, _c.Causal, _c.Softcap, output: o, softmaxLse: lse);
            var gq = Caller("gradQuery", s, B, Lq, H, D);
            var gkv = Caller("gradKv", false, B, Lk, 2, Hkv, D);
            var grads = backend.BackwardKvPacked(dOt, qt, kvt, o, lse, mask, bias, _c.Scale, _c.Causal, _c.Softcap, bc.Deterministic,
                gq, gkv, CallerBias());
            var expected = Interleave([g.DK, g.DV], (long)B * Lk, Hkv * D);
            var results = new List<Result> { new("dq", () => Host(gq ?? grads.DQuery), g.DQ) };
            if (gkv is not null)
            {
                results.Add(new Result("dkv (caller's)", () => Host(gkv), expected));
            }
            else
            {
                Assert.That(grads.Packed, Is.Not.Null, "Packed of a kv-packed call");
                results.Add(new Result("dkv (Packed)", () => Host(grads.Packed!), expected));
                results.Add(new Result("dk", () => Host(grads.DKey), g.DK));
                results.Add(new Result("dv", () => Host(grads.DValue), g.DV));
            }
            return (grads, results, _padded);
        }

        public (AttentionGradients<T>, List<Result>, List<(string, DeviceTensor<T>, bool[])>) Varlen(HostGradients g)
        {
            var cuQ = new int[B + 1];
            var cuK = new int[B + 1];
            for (int b = 0; b < B; b++) { cuQ[b + 1] = cuQ[b] + seqQ[b]; cuK[b + 1] = cuK[b] + seqK[b]; }
            int totalQ = cuQ[B], totalK = cuK[B];
            _cuQ = cuQ;
            var qt = Up(Pack(q, Lq, H * D, cuQ, seqQ), totalQ, H, D);
            var dOt = Up(Pack(dO, Lq, H * D, cuQ, seqQ), totalQ, H, D);
            DeviceTensor<T> kt, vt;
            DeviceTensor<T>? gk, gv;
            double[] dkExpected, dvExpected;
            int[,]? table = null;
            if (_c.Path == ApiPath.Varlen)
            {
                kt = Up(Pack(k, Lk, Hkv * D, cuK, seqK), totalK, Hkv, D);
                vt = Up(Pack(v, Lk, Hkv * D, cuK, seqK), totalK, Hkv, D);
                gk = Caller("gradKey", false, totalK, Hkv, D);
                gv = Caller("gradValue", false, totalK, Hkv, D);
                dkExpected = Pack(g.DK, Lk, Hkv * D, cuK, seqK);
                dvExpected = Pack(g.DV, Lk, Hkv * D, cuK, seqK);
            }
            else
            {
                // Paged: each sequence's pages at shuffled, distinct block indices, plus a spare block nobody uses;
                // K/V rows where no key lives are NaN (never read), their gradients 0 (written in full).
                int ps = _c.PageSize, pages = Math.Max(1, (Lk + ps - 1) / ps), blocks = B * pages + 1;
                var order = Enumerable.Range(0, blocks).OrderBy(_ => rng.Next()).ToArray();
                table = new int[B, pages];
                for (int b = 0; b < B; b++)
                for (int pg = 0; pg < pages; pg++)
                    table[b, pg] = order[b * pages + pg];
                kt = Up(Page(k, TestData.Poison<T>((long)blocks * ps * Hkv * D), table), blocks, ps, Hkv, D);
                vt = Up(Page(v, TestData.Poison<T>((long)blocks * ps * Hkv * D), table), blocks, ps, Hkv, D);
                gk = Caller("gradKey", false, blocks, ps, Hkv, D);
                gv = Caller("gradValue", false, blocks, ps, Hkv, D);
                dkExpected = Page(g.DK, new double[(long)blocks * ps * Hkv * D], table);
                dvExpected = Page(g.DV, new double[(long)blocks * ps * Hkv * D], table);
            }
            var (o, lse) = Outputs(totalQ, [totalQ, H, D], [H, totalQ]);
            backend.ForwardVarlen(qt, kt, vt, cuQ, cuK, Lq, Lk, mask, bias, _c.Scale, _c.Causal, _c.Softcap,
                blockTable: table, output: o, softmaxLse: lse);
            var gq = Caller("gradQuery", false, totalQ, H, D);
            var grads = backend.BackwardVarlen(dOt, qt, kt, vt, o, lse, cuQ, cuK, Lq, Lk, mask, bias, _c.Scale, _c.Causal,
                _c.Softcap, bc.Deterministic, table, gq, gk, gv, CallerBias());
            Assert.That(grads.Packed, Is.Null, "Packed of a varlen call");
            return (grads, [
                new Result("dq", () => Host(gq ?? grads.DQuery), Pack(g.DQ, Lq, H * D, cuQ, seqQ)),
                new Result("dk", () => Host(gk ?? grads.DKey), dkExpected),
                new Result("dv", () => Host(gv ?? grads.DValue), dvExpected)], _padded);
        }

        /// <summary>Key rows (B, Lk, Hkv·D) of each sequence into their pages; other rows of <paramref name="cache"/> keep their value.</summary>
        private TE[] Page<TE>(TE[] padded, TE[] cache, int[,] table)
        {
            int ps = _c.PageSize, row = Hkv * D;
            for (int b = 0; b < B; b++)
                for (int j = 0; j < seqK[b]; j++)
                    Array.Copy(padded, ((long)b * Lk + j) * row, cache, ((long)table[b, j / ps] * ps + j % ps) * row, row);
            return cache;
        }
    }

    /// <summary>Rows of each sequence (of <paramref name="rowSize"/> elements, padded to <paramref name="l"/> rows) back to back.</summary>
    public static TE[] Pack<TE>(TE[] padded, int l, int rowSize, int[] cu, int[] lengths)
    {
        var packed = new TE[(long)cu[^1] * rowSize];
        for (int b = 0; b < lengths.Length; b++)
            Array.Copy(padded, (long)b * l * rowSize, packed, (long)cu[b] * rowSize, (long)lengths[b] * rowSize);
        return packed;
    }

    /// <summary>Row r of each part, one after another: (rows, parts, rowSize) from parts of (rows, rowSize).</summary>
    public static TE[] Interleave<TE>(TE[][] parts, long rows, int rowSize)
    {
        var packed = new TE[rows * parts.Length * rowSize];
        for (long r = 0; r < rows; r++)
            for (int p = 0; p < parts.Length; p++)
                Array.Copy(parts[p], r * rowSize, packed, (r * parts.Length + p) * rowSize, rowSize);
        return packed;
    }
}
