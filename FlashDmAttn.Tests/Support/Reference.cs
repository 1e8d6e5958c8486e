namespace FlashDmAttn.Tests.Support;

/// <summary>A 4-D host array with broadcastable dims, read with (b, h, i, j) after GQA head mapping.</summary>
public sealed record HostOperand(double[] Data, int[] Shape)
{
    public double At(int b, int h, int heads, int i, int j)
    {
        int hb = Shape[1] == heads ? h : Shape[1] == 1 ? 0 : h / (heads / Shape[1]);
        int bb = Shape[0] == 1 ? 0 : b;
        int ii = Shape[2] == 1 ? 0 : i;
        int jj = Shape[3] == 1 ? 0 : j;
        return Data[(((long)bb * Shape[1] + hb) * Shape[2] + ii) * Shape[3] + jj];
    }
}

/// <summary>Float64 attention: the truth every kernel is compared with.</summary>
public static class Reference
{
    /// <summary>
    /// q (B, Lq, H, D), k/v (B, Lk, Hkv, D) row-major; per-batch lengths may be shorter (varlen: seqQ[b], seqK[b]).
    /// Returns o (B, Lq, H, D) and lse (B, H, Lq).
    /// </summary>
    public static (double[] O, double[] Lse) Attention(double[] q, double[] k, double[] v,
        int batch, int lq, int lk, int heads, int kvHeads, int d,
        HostOperand? mask, HostOperand? bias, double scale, bool causal, double softcap,
        int[]? seqQ = null, int[]? seqK = null)
    {
        var o = new double[(long)batch * lq * heads * d];
        var lse = new double[(long)batch * heads * lq];
        var s = new double[lk];
        int group = heads / kvHeads;
        for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
        {
            int hk = h / group;
            int nq = seqQ?[b] ?? lq, nk = seqK?[b] ?? lk;
            for (int i = 0; i < nq; i++)
            {
                double max = double.NegativeInfinity;
                for (int j = 0; j < nk; j++)
                {
                    bool visible = (!causal || j <= i + nk - nq) && (mask is null || mask.At(b, h, heads, i, j) != 0);
                    if (!visible) { s[j] = double.NegativeInfinity; continue; }
                    double dot = 0;
                    long qo = (((long)b * lq + i) * heads + h) * d, ko = (((long)b * lk + j) * kvHeads + hk) * d;
                    for (int x = 0; x < d; x++) dot += q[qo + x] * k[ko + x];
                    double sc = dot * scale;
                    if (softcap > 0) sc = softcap * Math.Tanh(sc / softcap);
                    if (bias is not null) sc += bias.At(b, h, heads, i, j);
                    s[j] = sc;
                    max = Math.Max(max, sc);
                }
                double sum = 0;
                for (int j = 0; j < nk; j++) sum += s[j] == double.NegativeInfinity ? 0 : Math.Exp(s[j] - max);
                long oo = (((long)b * lq + i) * heads + h) * d;
                lse[((long)b * heads + h) * lq + i] = sum > 0 ? max + Math.Log(sum) : double.NegativeInfinity;
                if (sum == 0) continue;
                for (int j = 0; j < nk; j++)
                {
                    if (s[j] == double.NegativeInfinity) continue;
                    double pj = Math.Exp(s[j] - max) / sum;
                    long vo = (((long)b * lk + j) * kvHeads + hk) * d;
                    for (int x = 0; x < d; x++) o[oo + x] += pj * v[vo + x];
                }
            }
        }
        return (o, lse);
    }
}
