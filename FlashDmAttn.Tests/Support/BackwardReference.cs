namespace FlashDmAttn.Tests.Support;

/// <summary>Float64 gradients of <see cref="Reference.Attention"/>; O and LSE are those of the same exact forward.</summary>
public sealed record HostGradients(double[] DQ, double[] DK, double[] DV, double[]? DBias, double[] O, double[] Lse);

/// <summary>
/// Float64 attention backward: the truth every backward kernel is compared with. Differentiates exactly the forward
/// of <see cref="Reference.Attention"/> (GQA, per-sequence lengths, causal bottom-right, softcap, mask and bias with
/// every broadcast form, key dim 1 included) for the loss Σ o∘dO.
/// </summary>
public static class BackwardReference
{
    /// <summary>
    /// q (B, Lq, H, D), k/v (B, Lk, Hkv, D), dO (B, Lq, H, D) row-major; per-batch lengths may be shorter (varlen:
    /// seqQ[b], seqK[b]; rows past them get zero gradients). Returns dq (B, Lq, H, D), dk/dv (B, Lk, Hkv, D) and, with a
    /// bias, dbias in the bias's own shape: summed over each dim it broadcasts (batch 1, heads 1 or Hkv, query 1, key 1).
    /// <paramref name="outputForD"/> (B, Lq, H, D): the output D_i = dO_i·o_i is formed from, as a kernel forms it from the
    /// forward's output rounded to its dtype; null: the exact output (the true gradient).
    /// </summary>
    public static HostGradients Gradients(double[] q, double[] k, double[] v, double[] dO,
        int batch, int lq, int lk, int heads, int kvHeads, int d,
        HostOperand? mask, HostOperand? bias, double scale, bool causal, double softcap,
        int[]? seqQ = null, int[]? seqK = null, double[]? outputForD = null)
    {
        var dq = new double[q.Length];
        var dk = new double[k.Length];
        var dv = new double[v.Length];
        var dbias = bias is null ? null : new double[bias.Data.Length];
        var o = new double[(long)batch * lq * heads * d];
        var lse = new double[(long)batch * heads * lq];
        var s = new double[lk];      // final scores (−∞ where invisible)
        var capDeriv = new double[lk]; // ds/d(scale·q·k): 1 − tanh² with softcap, else 1
        var p = new double[lk];
        int group = heads / kvHeads;
        for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
        {
            int hk = h / group;
            int nq = seqQ?[b] ?? lq, nk = seqK?[b] ?? lk;
            for (int i = 0; i < nq; i++)
            {
                long qo = (((long)b * lq + i) * heads + h) * d;
                double max = double.NegativeInfinity;
                for (int j = 0; j < nk; j++)
                {
                    bool visible = (!causal || j <= i + nk - nq) && (mask is null || mask.At(b, h, heads, i, j) != 0);
                    if (!visible) { s[j] = double.NegativeInfinity; continue; }
                    long ko = (((long)b * lk + j) * kvHeads + hk) * d;
                    double dot = 0;
                    for (int x = 0; x < d; x++) dot += q[qo + x] * k[ko + x];
                    double sc = dot * scale;
                    capDeriv[j] = 1;
                    if (softcap > 0)
                    {
                        double t = Math.Tanh(sc / softcap);
                        sc = softcap * t;
                        capDeriv[j] = 1 - t * t;
                    }
                    if (bias is not null) sc += bias.At(b, h, heads, i, j);
                    s[j] = sc;
                    max = Math.Max(max, sc);
                }
                double sum = 0;
                for (int j = 0; j < nk; j++) sum += s[j] == double.NegativeInfinity ? 0 : Math.Exp(s[j] - max);
                lse[((long)b * heads + h) * lq + i] = sum > 0 ? max + Math.Log(sum) : double.NegativeInfinity;
                if (sum == 0) continue; // no visible key: o = 0, every gradient of this row is 0

                // Forward row: P and o_i.
                for (int j = 0; j < nk; j++)
                {
                    p[j] = s[j] == double.NegativeInfinity ? 0 : Math.Exp(s[j] - max) / sum;
                    if (p[j] == 0) continue;
                    long vo = (((long)b * lk + j) * kvHeads + hk) * d;
                    for (int x = 0; x < d; x++) o[qo + x] += p[j] * v[vo + x];
                }
                // D_i = dO_i · o_i, then dS = P ∘ (dP − D_i) with dP_ij = dO_i · v_j.
                var oD = outputForD ?? o;
                double rowD = 0;
                for (int x = 0; x < d; x++) rowD += dO[qo + x] * oD[qo + x];
                for (int j = 0; j < nk; j++)
                {
                    if (s[j] == double.NegativeInfinity) continue;
                    long kvo = (((long)b * lk + j) * kvHeads + hk) * d;
                    double dp = 0;
                    for (int x = 0; x < d; x++)
                    {
                        dp += dO[qo + x] * v[kvo + x];
                        dv[kvo + x] += p[j] * dO[qo + x];
                    }
                    double ds = p[j] * (dp - rowD);
                    if (dbias is not null) dbias[Index(bias!, b, h, heads, i, j)] += ds;
                    // Through the softcap (ds/ds_raw = 1 − tanh²) and the scale.
                    double dRaw = ds * capDeriv[j] * scale;
                    for (int x = 0; x < d; x++)
                    {
                        dq[qo + x] += dRaw * k[kvo + x];
                        dk[kvo + x] += dRaw * q[qo + x];
                    }
                }
            }
        }
        return new HostGradients(dq, dk, dv, dbias, o, lse);
    }

    /// <summary>The flat index in the operand's own (broadcast) shape that (b, h, i, j) reads; see <see cref="HostOperand.At"/>.</summary>
    public static long Index(HostOperand op, int b, int h, int heads, int i, int j)
    {
        var sh = op.Shape;
        int hb = sh[1] == heads ? h : sh[1] == 1 ? 0 : h / (heads / sh[1]);
        int bb = sh[0] == 1 ? 0 : b;
        int ii = sh[2] == 1 ? 0 : i;
        int jj = sh[3] == 1 ? 0 : j;
        return (((long)bb * sh[1] + hb) * sh[2] + ii) * sh[3] + jj;
    }
}
