using BenchmarkDotNet.Running;
using FlashDmAttn;
using FlashDmAttn.Bench;

// FlashDmAttn.Bench
//   --gpu --cases "dense:B=4,H=16,L=4096,D=128,causal=0;..." [--reps N]   GPU timings (peers.py case strings: dense,
//                                                                          maskbias, perkey; also biasonly and maskonly,
//                                                                          maskbias without its mask or its bias)
//   --gpu --cases-file tools/gpu/cases.txt [--list NAME] [--reps N]       the same on a named list of that file ([NAME]
//                                                                          then one case a line, '#' comments; default list: default)
//   [--backward]                                                           time forward + backward (peers.py --backward), peak memory
//   [--kv-splits N]                                                        force N split-KV ranges (A/B; 0: the planner's choice)
//   [--portable] [--stream-k auto|on|off]                                  launch options (AttentionOptions)
//   --first-call CASE                                                      cold start: this process's first forward of CASE
//   [--no-kernel-cache] [--kernel-cache DIR]                               the disk kernel cache off, or in DIR
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
    UseKernelCache = !args.Contains("--no-kernel-cache"),
    KernelCacheDirectory = Arg("--kernel-cache"),
};
if (Arg("--first-call") is { } firstCase)
    return GpuBench.FirstCall(firstCase, options);
if (args.Contains("--gpu"))
{
    string cases = Arg("--cases-file") is { } file ? CaseList(file, Arg("--list") ?? "default")
        : Arg("--cases") ?? throw new ArgumentException("--cases or --cases-file: expected a case list");
    return GpuBench.Run(cases, int.Parse(Arg("--reps") ?? "30"), options, args.Contains("--backward"), int.Parse(Arg("--kv-splits") ?? "0"));
}
BenchmarkSwitcher.FromAssembly(typeof(CpuForwardBenchmarks).Assembly).Run(args);
return 0;

// The cases of list [name] in a case file (tools/gpu/cases.txt's format), joined by ';' as --cases takes them.
static string CaseList(string file, string name)
{
    var cases = new List<string>();
    bool on = false, found = false;
    foreach (var raw in File.ReadLines(file))
    {
        int hash = raw.IndexOf('#');
        string line = (hash >= 0 ? raw[..hash] : raw).Replace(" ", "").Replace("\t", "").Trim();
        if (line.StartsWith('[') && line.EndsWith(']'))
        {
            on = line[1..^1] == name;
            found |= on;
        }
        else if (on && line.Length > 0)
            cases.Add(line);
    }
    if (cases.Count == 0)
        throw new ArgumentException(found ? $"{file}: list [{name}] is empty" : $"{file}: no list [{name}]");
    return string.Join(';', cases);
}
