using BenchmarkDotNet.Running;
using FlashDmAttn;
using FlashDmAttn.Bench;

// FlashDmAttn.Bench
//   --gpu --cases "dense:B=4,H=16,L=4096,D=128,causal=0;..." [--reps N]   GPU timings (peers.py case strings: dense,
//                                                                          maskbias, perkey; also biasonly and maskonly,
//                                                                          maskbias without its mask or its bias)
//   [--portable] [--stream-k auto|on|off]                                  launch options (AttentionOptions)
//   anything else                                                          BenchmarkDotNet CPU benchmarks
string? Arg(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault();
var options = new AttentionOptions
{
    PortableKernelOnly = args.Contains("--portable"),
    StreamK = Arg("--stream-k") switch
    {
        null or "auto" => StreamKPolicy.Auto,
        "on" => StreamKPolicy.On,
        "off" => StreamKPolicy.Off,
        var other => throw new ArgumentException($"--stream-k: expected auto, on or off, got '{other}'"),
    },
};
if (args.Contains("--gpu"))
    return GpuBench.Run(Arg("--cases") ?? throw new ArgumentException("--cases: expected a case list"), int.Parse(Arg("--reps") ?? "30"), options);
BenchmarkSwitcher.FromAssembly(typeof(CpuForwardBenchmarks).Assembly).Run(args);
return 0;
