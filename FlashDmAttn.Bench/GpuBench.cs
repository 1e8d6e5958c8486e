using System.Globalization;
using ILGPU;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Planning;

namespace FlashDmAttn.Bench;

/// <summary>
/// GPU mode: times the forward on the cases of tools/gpu/peers.py (same case strings, bf16, layout (B,L,H,D))
/// with device events: warm-up, then the median of many timed launches, each after a 256 MB memset that clears L2
/// (triton.testing.do_bench's method, which peers.py uses), input sets rotated as well. Prints one line per case in
/// peers.py's format: FlashDmAttn|case|ms=..|tflops=..|idle_start_ms=.. (the last: timed from an idle GPU, host
/// launch overhead, clock ramp and a warm L2 included) and plan=.. (the launch plan of the case's attention call).
/// </summary>
public static class GpuBench
{
    private const long L2Bytes = 50L << 20;

    /// <param name="backward">Time forward + backward (dq, dk, dv, and dbias where the case has a bias), as peers.py
    /// --backward does (its peers form no dbias); also report the device memory in use at the backward's peak.</param>
    /// <param name="kvSplits">Split-KV ranges forced on every case (0: the planner's choice).</param>
    public static int Run(string cases, int reps, AttentionOptions options, bool backward = false, int kvSplits = 0)
    {
        var attn = FlashDmAttention.Auto().WithOptions(options);
        Console.WriteLine($"# FlashDmAttn GPU bench on {attn}{(backward ? ", forward + backward" : "")}");
        using var flush = attn.Accelerator.Allocate1D<int>(64L << 20); // 256 MB, as do_bench's cache clearing
        foreach (var c in cases.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            RunCase(attn, c, reps, flush.View, backward, kvSplits);
        return 0;
    }

    private static void RunCase(AttentionBackend attn, string caseString, int reps, ArrayView<int> flush, bool backward, int kvSplits)
    {
        ForwardPlan? plan = null;
        BackwardPlan? bplan = null;
        long freeAtStart = FreeBytes(attn.Accelerator), peakUsed = 0;
        attn = attn.WithLaunch(o => o with
        {
            KvSplits = kvSplits,
            Observer = p => plan = p,
            BackwardObserver = p =>
            {
                bplan = p;
                peakUsed = Math.Max(peakUsed, freeAtStart - FreeBytes(attn.Accelerator));
            },
        });
        var acc = attn.Accelerator;
        var (kind, p) = Parse(caseString);
        // decode: Lq queries over an Lk-key cache with Hkv kv heads (peers.py's decode cases); with w, a per-key
        // bias and its top-w mask over the cache (the reference library's top-k decode; peers.py runs no mask there).
        bool decode = kind == "decode";
        int B = p["B"], H = p["H"], D = p["D"];
        int Lq = decode ? p.GetValueOrDefault("Lq", 1) : p["L"], L = decode ? p["Lk"] : p["L"], Hkv = p.GetValueOrDefault("Hkv", H);
        int w = p.GetValueOrDefault("w", L);
        bool causal = p.GetValueOrDefault("causal", 0) == 1;
        if (decode && backward)
        {
            Console.WriteLine($"# skipped {caseString}: decode cases time the forward only");
            return;
        }
        long qkvBytes = 2L * B * (Lq * (long)H + L * (long)Hkv) * D;
        int sets = (int)Math.Clamp(4 * L2Bytes / Math.Max(qkvBytes, 1) + 1, 1, 3);
        var owned = new List<IDisposable>();
        try
        {
            var inputs = new List<(DeviceTensor<BFloat16> Q, DeviceTensor<BFloat16> K, DeviceTensor<BFloat16> V)>();
            for (int s = 0; s < sets; s++)
            {
                var q = Own(owned, DeviceTensor<BFloat16>.Allocate(acc, B, Lq, H, D));
                var k = Own(owned, DeviceTensor<BFloat16>.Allocate(acc, B, L, Hkv, D));
                var v = Own(owned, DeviceTensor<BFloat16>.Allocate(acc, B, L, Hkv, D));
                DeviceRandom.Normal(acc, q.Data, (ulong)(3 * s + 1));
                DeviceRandom.Normal(acc, k.Data, (ulong)(3 * s + 2));
                DeviceRandom.Normal(acc, v.Data, (ulong)(3 * s + 3));
                inputs.Add((q, k, v));
            }
            DeviceTensor<BFloat16>? bias = null;
            DeviceTensor<byte>? mask = null;
            if (kind is "maskbias" or "perkey" or "biasonly" or "maskonly" || decode && p.ContainsKey("w"))
            {
                // biasonly / maskonly: maskbias's tensors with one of them left out (no peer runs these: they split
                // maskbias's cost between its bias and its mask).
                bias = Own(owned, DeviceTensor<BFloat16>.Allocate(acc, B, H, kind is "perkey" or "decode" ? 1 : Lq, L));
                DeviceRandom.Normal(acc, bias.Data, 99);
                if (kind != "biasonly") mask = Own(owned, attn.TopK(bias, w));
                if (kind == "maskonly") bias = null;
            }
            else if (kind != "dense" && !decode)
            {
                Console.WriteLine($"# skipped {caseString}: kind '{kind}' not benchmarked here");
                return;
            }
            var outputs = inputs.Select(_ => Own(owned, DeviceTensor<BFloat16>.Allocate(acc, B, Lq, H, D))).ToList();
            // Backward: dO, LSE and the gradients of each input set.
            var grads = new List<(DeviceTensor<BFloat16> DO, DeviceTensor<float> Lse, DeviceTensor<BFloat16> DQ,
                DeviceTensor<BFloat16> DK, DeviceTensor<BFloat16> DV, DeviceTensor<BFloat16>? DB)>();
            if (backward)
            {
                for (int s = 0; s < sets; s++)
                {
                    var dO = Own(owned, DeviceTensor<BFloat16>.Allocate(acc, B, L, H, D));
                    DeviceRandom.Normal(acc, dO.Data, (ulong)(100 + s));
                    grads.Add((dO, Own(owned, DeviceTensor<float>.Allocate(acc, B, H, L)),
                        Own(owned, DeviceTensor<BFloat16>.Allocate(acc, B, L, H, D)), Own(owned, DeviceTensor<BFloat16>.Allocate(acc, B, L, H, D)),
                        Own(owned, DeviceTensor<BFloat16>.Allocate(acc, B, L, H, D)),
                        bias is null ? null : Own(owned, DeviceTensor<BFloat16>.Allocate(acc, bias.Shape.ToArray()))));
                }
            }
            acc.Synchronize();

            void Launch(int i)
            {
                var (q, k, v) = inputs[i % sets];
                var m = mask is null ? null : (DeviceMask)mask;
                if (!backward)
                {
                    attn.Forward(q, k, v, m, bias, isCausal: causal, output: outputs[i % sets]);
                    return;
                }
                var g = grads[i % sets];
                using var o = attn.Forward(q, k, v, m, bias, isCausal: causal, output: outputs[i % sets], softmaxLse: g.Lse);
                using var _ = attn.Backward(g.DO, q, k, v, o, g.Lse, m, bias, isCausal: causal,
                    gradQuery: g.DQ, gradKey: g.DK, gradValue: g.DV, gradBias: g.DB);
            }
            for (int i = 0; i < 3; i++) Launch(i);
            acc.Synchronize();
            var stream = acc.DefaultStream;

            // Kernel time as triton.testing.do_bench (peers.py) takes it: before each launch the stream zeroes a
            // 256 MB buffer, which clears L2 and keeps the GPU busy while the host prepares the launch, so the
            // events enclose the GPU work of one forward (all its launches) and not the host's launch overhead.
            var marks = new List<(ProfilingMarker Start, ProfilingMarker End)>();
            for (int i = 0; i < reps; i++)
            {
                flush.MemSetToZero(stream);
                var start = stream.AddProfilingMarker();
                Launch(i);
                marks.Add((start, stream.AddProfilingMarker()));
            }
            stream.Synchronize();
            var times = marks.Select(m => m.End.MeasureFrom(m.Start).TotalMilliseconds).Order().ToList();
            foreach (var (a, b) in marks) { a.Dispose(); b.Dispose(); }
            double ms = times[times.Count / 2];

            // The same with an idle GPU at each start: the host's launch overhead (validation, key gathering's
            // launches, ILGPU's argument marshalling), the clock ramp from idle and a warm L2 all show in this one.
            var hostTimes = new List<double>();
            for (int i = 0; i < Math.Min(reps, 10); i++)
            {
                stream.Synchronize();
                using var start = stream.AddProfilingMarker();
                Launch(i);
                using var end = stream.AddProfilingMarker();
                end.Synchronize();
                hostTimes.Add(end.MeasureFrom(start).TotalMilliseconds);
            }
            hostTimes.Sort();
            double idleMs = hostTimes[hostTimes.Count / 2];
            // Dense-equivalent FLOPs, as peers.py counts them (x3.5 for forward + backward).
            double flops = 4.0 * B * H * Lq * (double)L * D * (causal && !decode ? 0.5 : 1.0) * (backward ? 3.5 : 1.0);
            string bwd = backward ? $"|peak_mb={peakUsed / 1048576.0:F0}|bplan={bplan?.Describe()}" : "";
            // Decode: GB/s of the whole cache's K and V, as peers.py reports it (with a top-w mask only w keys are read).
            if (decode) bwd = $"|GB/s={2.0 * B * Hkv * L * D * 2 / ms / 1e6:F0}";
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"FlashDmAttn|{caseString}|ms={ms:F4}|tflops={flops / ms / 1e9:F1}|idle_start_ms={idleMs:F4}|plan={plan?.Describe()}{bwd}"));
        }
        finally
        {
            foreach (var o in owned) o.Dispose();
        }
    }

    /// <summary>
    /// Cold start: the time of this process's first forward of one case (backend creation, inputs, the call, its kernel
    /// loads or compiles, synchronisation), and from the process's start to the same point; whether the tensor-core
    /// kernel came from the disk cache. Run it in a fresh process per measurement.
    /// </summary>
    public static int FirstCall(string caseString, AttentionOptions options)
    {
        var total = System.Diagnostics.Stopwatch.StartNew();
        ForwardPlan? plan = null;
        var call = new System.Diagnostics.Stopwatch();
        double planMs = -1;
        var attn = FlashDmAttention.Auto().WithOptions(options).WithLaunch(o => o with
        {
            Observer = p =>
            {
                plan = p;
                if (planMs < 0) planMs = call.Elapsed.TotalMilliseconds;
            },
        });
        var acc = attn.Accelerator;
        var (kind, p) = Parse(caseString);
        int B = p["B"], H = p["H"], L = p["L"], D = p["D"], w = p.GetValueOrDefault("w", L);
        bool causal = p.GetValueOrDefault("causal", 0) == 1;
        using var q = DeviceTensor<BFloat16>.Allocate(acc, B, L, H, D);
        using var k = DeviceTensor<BFloat16>.Allocate(acc, B, L, H, D);
        using var v = DeviceTensor<BFloat16>.Allocate(acc, B, L, H, D);
        DeviceTensor<BFloat16>? bias = null;
        DeviceTensor<byte>? mask = null;
        if (kind is "maskbias" or "perkey")
        {
            bias = DeviceTensor<BFloat16>.Allocate(acc, B, H, kind == "perkey" ? 1 : L, L);
            DeviceRandom.Normal(acc, bias.Data, 99);
            mask = attn.TopK(bias, w);
        }
        acc.Synchronize();
        double setupMs = total.Elapsed.TotalMilliseconds;
        FlashDmAttn.Kernels.Caching.CachedKernels.LoadMs = 0;
        FlashDmAttn.Kernels.Caching.CachedKernels.ModuleLoadMs = 0;
        call.Start();
        using (attn.Forward(q, k, v, mask is null ? null : (DeviceMask)mask, bias, isCausal: causal)) acc.Synchronize();
        double callMs = call.Elapsed.TotalMilliseconds;
        double loadMs = FlashDmAttn.Kernels.Caching.CachedKernels.LoadMs, moduleMs = FlashDmAttn.Kernels.Caching.CachedKernels.ModuleLoadMs;
        bool hit = FlashDmAttn.Kernels.Caching.CachedKernels.LastWasHit;
        var warm = System.Diagnostics.Stopwatch.StartNew();
        using (attn.Forward(q, k, v, mask is null ? null : (DeviceMask)mask, bias, isCausal: causal)) acc.Synchronize();
        double warmMs = warm.Elapsed.TotalMilliseconds;
        double sinceStart = (DateTime.Now - System.Diagnostics.Process.GetCurrentProcess().StartTime).TotalMilliseconds;
        bias?.Dispose();
        mask?.Dispose();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"first_call|{caseString}|first_ms={callMs:F1}|second_ms={warmMs:F2}|plan_ms={planMs:F1}|portable_load_ms={loadMs:F1}|module_load_ms={moduleMs:F1}|setup_ms={setupMs:F0}|since_process_start_ms={sinceStart:F0}|disk_hit={(hit ? 1 : 0)}|plan={plan?.Describe()}"));
        return 0;
    }

    /// <summary>Free device memory (CUDA; 0 elsewhere).</summary>
    private static long FreeBytes(Accelerator acc)
        => acc.AcceleratorType == AcceleratorType.Cuda ? FlashDmAttn.Kernels.Launch.CudaDriver.MemoryInfo().Free : 0;

    private static T Own<T>(List<IDisposable> owned, T t) where T : IDisposable { owned.Add(t); return t; }

    private static (string Kind, Dictionary<string, int> P) Parse(string c)
    {
        var parts = c.Split(':', 2);
        var p = parts[1].Split(',', StringSplitOptions.RemoveEmptyEntries)
            .Select(x => x.Split('=')).ToDictionary(x => x[0].Trim(), x => int.Parse(x[1], CultureInfo.InvariantCulture));
        return (parts[0].Trim(), p);
    }
}
