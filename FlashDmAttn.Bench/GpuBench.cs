using System.Globalization;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Launch;

namespace FlashDmAttn.Bench;

/// <summary>
/// GPU mode: times the forward on the cases of ../shared/gpu/peers.py (same case strings, bf16, layout (B,L,H,D))
/// with device events: warm-up, then the median of many timed launches, rotating input sets when one set would
/// sit in L2. Prints one line per case in peers.py's format: FlashDmAttn|case|ms=..|tflops=..
/// </summary>
public static class GpuBench
{
    private const long L2Bytes = 50L << 20;

    public static int Run(string cases, int reps)
    {
        var attn = FlashDmAttention.Auto();
        Console.WriteLine($"# FlashDmAttn GPU bench on {attn}");
        foreach (var c in cases.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            RunCase(attn, c, reps);
        return 0;
    }

    private static void RunCase(AttentionBackend attn, string caseString, int reps)
    {
        var acc = attn.Accelerator;
        var (kind, p) = Parse(caseString);
        int B = p["B"], H = p["H"], L = p["L"], D = p["D"], w = p.GetValueOrDefault("w", L);
        bool causal = p.GetValueOrDefault("causal", 0) == 1;
        long qkvBytes = 3L * B * L * H * D * 2;
        int sets = (int)Math.Clamp(4 * L2Bytes / Math.Max(qkvBytes, 1) + 1, 1, 3);
        var owned = new List<IDisposable>();
        try
        {
            var inputs = new List<(DeviceTensor<BFloat16> Q, DeviceTensor<BFloat16> K, DeviceTensor<BFloat16> V)>();
            for (int s = 0; s < sets; s++)
            {
                var q = Own(owned, DeviceTensor<BFloat16>.Allocate(acc, B, L, H, D));
                var k = Own(owned, DeviceTensor<BFloat16>.Allocate(acc, B, L, H, D));
                var v = Own(owned, DeviceTensor<BFloat16>.Allocate(acc, B, L, H, D));
                DeviceRandom.Normal(acc, q.Data, (ulong)(3 * s + 1));
                DeviceRandom.Normal(acc, k.Data, (ulong)(3 * s + 2));
                DeviceRandom.Normal(acc, v.Data, (ulong)(3 * s + 3));
                inputs.Add((q, k, v));
            }
            DeviceTensor<BFloat16>? bias = null;
            DeviceTensor<byte>? mask = null;
            if (kind is "maskbias" or "perkey")
            {
                bias = Own(owned, DeviceTensor<BFloat16>.Allocate(acc, B, H, kind == "perkey" ? 1 : L, L));
                DeviceRandom.Normal(acc, bias.Data, 99);
                mask = Own(owned, attn.TopK(bias, w));
            }
            else if (kind != "dense")
            {
                Console.WriteLine($"# skipped {caseString}: kind '{kind}' not benchmarked here");
                return;
            }
            var outputs = inputs.Select(_ => Own(owned, DeviceTensor<BFloat16>.Allocate(acc, B, L, H, D))).ToList();
            acc.Synchronize();

            void Launch(int i)
            {
                var (q, k, v) = inputs[i % sets];
                attn.Forward(q, k, v, mask is null ? null : (DeviceMask)mask, bias, isCausal: causal, output: outputs[i % sets]);
            }
            for (int i = 0; i < 3; i++) Launch(i);
            acc.Synchronize();
            var times = new List<double>();
            var stream = acc.DefaultStream;
            for (int i = 0; i < reps; i++)
            {
                using var start = stream.AddProfilingMarker();
                Launch(i);
                using var end = stream.AddProfilingMarker();
                end.Synchronize();
                times.Add(end.MeasureFrom(start).TotalMilliseconds);
            }
            times.Sort();
            double ms = times[times.Count / 2];
            double flops = 4.0 * B * H * L * (double)L * D * (causal ? 0.5 : 1.0);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"FlashDmAttn|{caseString}|ms={ms:F4}|tflops={flops / ms / 1e9:F1}|kernel={ForwardLauncher.Describe(acc, D)}"));
        }
        finally
        {
            foreach (var o in owned) o.Dispose();
        }
    }

    private static T Own<T>(List<IDisposable> owned, T t) where T : IDisposable { owned.Add(t); return t; }

    private static (string Kind, Dictionary<string, int> P) Parse(string c)
    {
        var parts = c.Split(':', 2);
        var p = parts[1].Split(',', StringSplitOptions.RemoveEmptyEntries)
            .Select(x => x.Split('=')).ToDictionary(x => x[0].Trim(), x => int.Parse(x[1], CultureInfo.InvariantCulture));
        return (parts[0].Trim(), p);
    }
}
