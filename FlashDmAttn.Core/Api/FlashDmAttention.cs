using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;
using FlashDmAttn.Kernels.TensorCore;

namespace FlashDmAttn;

/// <summary>
/// Entry point: the backends this machine has and automatic selection among them.
/// Backends are ILGPU accelerators: "cuda", "opencl" and "cpu" (ILGPU's CPU accelerator, always there).
/// Priority of <see cref="Auto"/>: cuda &gt; opencl &gt; cpu.
/// </summary>
public static class FlashDmAttention
{
    /// <summary>Backend names in priority order.</summary>
    public static IReadOnlyList<string> AllBackends { get; } = ["cuda", "opencl", "cpu"];

    private static readonly Lazy<Context> SharedContext = new(() => Context.Create(b => b
        .Cuda()
        .OpenCL()
        .CPU(new CPUDevice(numThreadsPerWarp: 32, numWarpsPerMultiprocessor: 4, numMultiprocessors: Math.Max(1, Environment.ProcessorCount)))
        .EnableAlgorithms()
        .Profiling()
        .RegisterTensorCoreIntrinsics()
        // O1: O2 was seen moving shared-memory loads across Group.Barrier() (ILGPU 1.5.3).
        .Optimize(OptimizationLevel.O1)));

    private static readonly Dictionary<string, AttentionBackend> Created = new();

    /// <summary>The ILGPU context all backends share.</summary>
    public static Context Context => SharedContext.Value;

    /// <summary>Names of the backends that have a device here, in priority order (e.g. ["cuda", "cpu"]).</summary>
    public static IReadOnlyList<string> GetAvailableBackends()
        => AllBackends.Where(n => FindDevice(n) is not null).ToArray();

    public static bool CudaAvailable => FindDevice("cuda") is not null;
    public static bool OpenCLAvailable => FindDevice("opencl") is not null;
    public static bool CpuAvailable => FindDevice("cpu") is not null;

    /// <summary>
    /// The attention callable of <paramref name="backend"/>, or of the best available backend when null.
    /// Backends are created once and shared. Throws if the named backend is unknown or has no device here.
    /// </summary>
    public static AttentionBackend Auto(string? backend = null)
    {
        string name;
        if (backend is null)
        {
            name = GetAvailableBackends()[0];
        }
        else
        {
            name = backend.Trim().ToLowerInvariant();
            if (!AllBackends.Contains(name))
                throw new ArgumentException($"backend: expected one of {string.Join(", ", AllBackends)}, got '{backend}'", nameof(backend));
            if (FindDevice(name) is null)
                throw new ArgumentException($"backend: '{name}' has no device on this machine; available: {string.Join(", ", GetAvailableBackends())}", nameof(backend));
        }
        lock (Created)
        {
            if (!Created.TryGetValue(name, out var b))
            {
                b = new AttentionBackend(name, FindDevice(name)!.CreateAccelerator(Context));
                Created[name] = b;
            }
            return b;
        }
    }

    private static Device? FindDevice(string name)
    {
        var type = name switch
        {
            "cuda" => AcceleratorType.Cuda,
            "opencl" => AcceleratorType.OpenCL,
            "cpu" => AcceleratorType.CPU,
            _ => (AcceleratorType?)null,
        };
        return type is null ? null : Context.Devices.FirstOrDefault(d => d.AcceleratorType == type);
    }
}
