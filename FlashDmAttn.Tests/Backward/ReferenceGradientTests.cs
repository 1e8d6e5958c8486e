using FlashDmAttn.Tests.Support;
using NUnit.Framework;

namespace FlashDmAttn.Tests.Backward;

/// <summary>
/// The float64 backward reference checked against central finite differences of the float64 forward reference, so
/// that the truth the backward kernels are compared with is itself proven: loss = Σ o∘dO, every element of q, k, v and
/// the bias stepped by ±1e-6. Rounding in float64 puts the difference quotient ~1e-9 off; a wrong term of the chain
/// rule is off by O(1), hence the relative tolerance 1e-6. Tiny shapes, no accelerator.
/// </summary>
public class ReferenceGradientTests
{
    private const int B = 2, H = 4, Hkv = 2, D = 3;
    private const double Step = 1e-6, Tolerance = 1e-6;

    // Operand specs as in AttentionCase, with a key entry: 0 full, 1 broadcast, -1 kv heads (head entry only).
    private static readonly int[] Full = [0, 0, 0, 0];

    private static IEnumerable<TestCaseData> Cases()
    {
        // lq, lk, causal, softcap, mask, bias, varlen lengths (seqQ, seqK) or null
        TestCaseData Case(string name, int lq, int lk, bool causal, double softcap, int[]? mask, int[]? bias,
            int[]? seqQ = null, int[]? seqK = null)
            => new TestCaseData(lq, lk, causal, softcap, mask, bias, seqQ, seqK).SetName(name);

        yield return Case("Plain", 5, 7, false, 0, null, null);
        yield return Case("Causal full bias", 5, 7, true, 0, null, Full);
        yield return Case("Causal Lq>Lk (rows without keys) softcap 2", 7, 4, true, 2, null, [0, 0, 0, 0]);
        yield return Case("Softcap 30 batch-1 bias", 5, 7, false, 30, null, [1, 0, 0, 0]);
        yield return Case("Softcap 2 full mask with a masked row, head-1 bias", 5, 7, false, 2, Full, [0, 1, 0, 0]);
        yield return Case("Hkv-headed bias", 5, 7, false, 0, null, [0, -1, 0, 0]);
        yield return Case("Per-key bias and per-key mask", 5, 7, true, 0, [0, 0, 1, 0], [0, 0, 1, 0]);
        yield return Case("Key-dim-1 bias (B,H,Lq,1)", 5, 7, true, 2, Full, [0, 0, 0, 1]);
        yield return Case("Key-dim-1 bias (1,Hkv,1,1)", 5, 7, false, 0, null, [1, -1, 1, 1]);
        yield return Case("All-broadcast bias (1,1,1,Lk)", 5, 7, false, 2, [1, -1, 1, 0], [1, 1, 1, 0]);
        yield return Case("Key-dim-1 mask (B,H,Lq,1) with Hkv per-key bias", 5, 7, false, 0, [0, 0, 0, 1], [1, -1, 1, 0]);
        yield return Case("Varlen lengths causal, full mask and bias", 5, 7, true, 0, Full, Full, [5, 3], [7, 2]);
        yield return Case("Varlen lengths, a sequence without keys, per-key bias", 5, 7, false, 2, null, [0, 0, 1, 0], [4, 3], [6, 0]);
    }

    private static int[] Resolve(int[] spec, int lq, int lk)
        => [spec[0] == 1 ? 1 : B, spec[1] == 1 ? 1 : spec[1] == -1 ? Hkv : H, spec[2] == 1 ? 1 : lq, spec[3] == 1 ? 1 : lk];

    [TestCaseSource(nameof(Cases))]
    public void MatchesFiniteDifferences(int lq, int lk, bool causal, double softcap, int[]? maskSpec, int[]? biasSpec,
        int[]? seqQ, int[]? seqK)
    {
        var rng = TestData.NewRandom(out int seed);
        string what = $"seed={seed}";
        var q = Normal(rng, (long)B * lq * H * D, 1);
        var k = Normal(rng, (long)B * lk * Hkv * D, 1);
        var v = Normal(rng, (long)B * lk * Hkv * D, 1);
        var dO = Normal(rng, (long)B * lq * H * D, 1);
        HostOperand? mask = null, bias = null;
        if (maskSpec is not null)
        {
            var ms = Resolve(maskSpec, lq, lk);
            var md = new double[ms[0] * ms[1] * ms[2] * ms[3]];
            for (int i = 0; i < md.Length; i++) md[i] = rng.NextDouble() < 0.6 ? 1 : 0;
            if (ms[2] > 1) for (int j = 0; j < ms[3]; j++) md[j] = 0;   // a fully masked row
            mask = new HostOperand(md, ms);
        }
        if (biasSpec is not null)
        {
            var bs = Resolve(biasSpec, lq, lk);
            bias = new HostOperand(Normal(rng, bs[0] * bs[1] * bs[2] * bs[3], 2), bs);
        }
        double scale = 0.7;

        var g = BackwardReference.Gradients(q, k, v, dO, B, lq, lk, H, Hkv, D, mask, bias, scale, causal, softcap, seqQ, seqK);

        // The exact forward it carries is the forward reference's.
        var (oRef, lseRef) = Reference.Attention(q, k, v, B, lq, lk, H, Hkv, D, mask, bias, scale, causal, softcap, seqQ, seqK);
        Assert.That(g.O, Is.EqualTo(oRef).Within(1e-12), what + " o");
        Assert.That(g.Lse, Is.EqualTo(lseRef).Within(1e-12), what + " lse");

        double Loss()
        {
            var (o, _) = Reference.Attention(q, k, v, B, lq, lk, H, Hkv, D, mask, bias, scale, causal, softcap, seqQ, seqK);
            double l = 0;
            for (int i = 0; i < o.Length; i++) l += o[i] * dO[i];
            return l;
        }

        Assert.Multiple(() =>
        {
            TestData.AssertClose(g.DQ, FiniteDifferences(q, Loss), Tolerance, what + " dq");
            TestData.AssertClose(g.DK, FiniteDifferences(k, Loss), Tolerance, what + " dk");
            TestData.AssertClose(g.DV, FiniteDifferences(v, Loss), Tolerance, what + " dv");
            if (bias is not null)
            {
                var fd = FiniteDifferences(bias.Data, Loss);
                if (bias.Shape[3] == 1 && lk > 1)
                {
                    // A per-row constant: the output does not depend on it, the gradient is exactly 0.
                    Assert.That(Norm(g.DBias!), Is.LessThanOrEqualTo(1e-12), what + " dbias (key dim 1) analytic");
                    Assert.That(Norm(fd), Is.LessThanOrEqualTo(1e-7), what + " dbias (key dim 1) finite differences");
                }
                else
                {
                    TestData.AssertClose(g.DBias!, fd, Tolerance, what + " dbias");
                }
            }
            else
            {
                Assert.That(g.DBias, Is.Null);
            }
            // Rows with no visible key (and rows past a sequence's length) get exact zeros, never NaN.
            foreach (var arr in new[] { g.DQ, g.DK, g.DV, g.DBias ?? [] })
                Assert.That(arr, Has.None.NaN, what + " NaN in a gradient");
            for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
            for (int i = 0; i < lq; i++)
            {
                if (!double.IsNegativeInfinity(g.Lse[((long)b * H + h) * lq + i]) && i < (seqQ?[b] ?? lq)) continue;
                for (int x = 0; x < D; x++)
                    Assert.That(g.DQ[(((long)b * lq + i) * H + h) * D + x], Is.Zero, $"{what} dq of empty row b{b} h{h} i{i}");
            }
        });
    }

    [Test]
    public void EmptyRowsAndPaddingGetExactZeros()
    {
        // Everything masked: every gradient is exactly zero.
        var rng = TestData.NewRandom(out int seed);
        int lq = 3, lk = 4;
        var q = Normal(rng, (long)B * lq * H * D, 1);
        var k = Normal(rng, (long)B * lk * Hkv * D, 1);
        var v = Normal(rng, (long)B * lk * Hkv * D, 1);
        var dO = Normal(rng, (long)B * lq * H * D, 1);
        var mask = new HostOperand(new double[B * H * lq * lk], [B, H, lq, lk]);
        var bias = new HostOperand(Normal(rng, lk, 2), [1, 1, 1, lk]);
        var g = BackwardReference.Gradients(q, k, v, dO, B, lq, lk, H, Hkv, D, mask, bias, 0.5, true, 2);
        Assert.Multiple(() =>
        {
            Assert.That(g.DQ, Has.All.EqualTo(0.0), $"dq seed={seed}");
            Assert.That(g.DK, Has.All.EqualTo(0.0), $"dk seed={seed}");
            Assert.That(g.DV, Has.All.EqualTo(0.0), $"dv seed={seed}");
            Assert.That(g.DBias, Has.All.EqualTo(0.0), $"dbias seed={seed}");
            Assert.That(g.Lse, Has.All.EqualTo(double.NegativeInfinity), $"lse seed={seed}");
        });
    }

    /// <summary>Central differences of <paramref name="loss"/> with respect to every element of <paramref name="x"/> (restored after).</summary>
    private static double[] FiniteDifferences(double[] x, Func<double> loss)
    {
        var grad = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            double keep = x[i];
            x[i] = keep + Step;
            double plus = loss();
            x[i] = keep - Step;
            double minus = loss();
            x[i] = keep;
            grad[i] = (plus - minus) / (2 * Step);
        }
        return grad;
    }

    private static double[] Normal(Random rng, long n, double sigma) => TestData.Normal<float>(rng, n, sigma).Exact;

    private static double Norm(double[] a) => Math.Sqrt(a.Sum(x => x * x));
}
