using BenchmarkDotNet.Running;
using FlashDmAttn.Bench;

// FlashDmAttn.Bench
//   --gpu --cases "dense:B=4,H=16,L=4096,D=128,causal=0;..." [--reps N]   GPU timings (peers.py case strings: dense,
//                                                                          maskbias, perkey; also biasonly and maskonly,
//                                                                          maskbias without its mask or its bias)
//   --ptx DIR [--extra] [--filter S]                                       PTX of the tensor-core kernels (--extra: also A/B variants and the other launched shapes; --filter: names containing S), for ptxas -v
//   anything else                                                          BenchmarkDotNet CPU benchmarks
string? Arg(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault();
if (args.Contains("--gpu"))
    return GpuBench.Run(Arg("--cases") ?? throw new ArgumentException("--cases: expected a case list"), int.Parse(Arg("--reps") ?? "30"));
if (args.Contains("--ptx"))
{
    FlashDmAttn.Kernels.TensorCore.TensorCorePtx.Dump(Arg("--ptx") ?? "ptx", Arg("--filter"), extra: args.Contains("--extra"));
    return 0;
}
BenchmarkSwitcher.FromAssembly(typeof(CpuForwardBenchmarks).Assembly).Run(args);
return 0;
