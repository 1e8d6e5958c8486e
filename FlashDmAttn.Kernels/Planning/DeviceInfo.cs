using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using FlashDmAttn.Kernels.Launch;

namespace FlashDmAttn.Kernels.Planning;

/// <summary>
/// What the planner needs to know about an accelerator. <see cref="GroupsPerSm"/> answers how many groups of a
/// tensor-core kernel are resident on one SM at once (the driver's occupancy of the compiled kernel); without it, or on
/// accelerators other than CUDA, the planner assumes <see cref="DefaultGroupsPerSm"/>.
/// </summary>
/// <param name="Type">The accelerator type.</param>
/// <param name="ComputeCapability">CUDA compute capability × 10 (90 for sm_90); 0 elsewhere.</param>
/// <param name="Multiprocessors">SMs the launch order is sized for (1 on accelerators other than CUDA).</param>
/// <param name="OptInSharedBytes">Dynamic shared memory a group may opt in to.</param>
/// <param name="MaxSharedPerGroup">Shared memory a group gets without opting in.</param>
/// <param name="WarpSize">Threads per warp.</param>
/// <param name="MaxThreadsPerGroup">Threads per group at most.</param>
internal sealed record DeviceInfo(
    AcceleratorType Type, int ComputeCapability, int Multiprocessors, int OptInSharedBytes, int MaxSharedPerGroup,
    int WarpSize, int MaxThreadsPerGroup)
{
    /// <summary>Resident groups per SM where the driver is not asked (the D ≤ 128 kernels' occupancy on Hopper).</summary>
    public const int DefaultGroupsPerSm = 2;

    /// <summary>The accelerator's memory in bytes (0: unknown, and the planner takes no scratch it may choose to skip).</summary>
    public long MemoryBytes { get; init; }

    /// <summary>Occupancy of a tensor-core kernel (loads it); null: <see cref="DefaultGroupsPerSm"/>.</summary>
    public Func<TcKernelSpec, int>? GroupsPerSm { get; init; }

    public int ResidentGroups(TcKernelSpec spec)
        => Type == AcceleratorType.Cuda && GroupsPerSm is { } f ? f(spec) : DefaultGroupsPerSm;

    /// <summary>The properties of <paramref name="accelerator"/>, with <paramref name="groupsPerSm"/> as its occupancy oracle.</summary>
    public static DeviceInfo Of(Accelerator accelerator, Func<TcKernelSpec, int>? groupsPerSm)
    {
        if (accelerator is CudaAccelerator cuda)
        {
            var arch = cuda.Architecture;
            return new DeviceInfo(AcceleratorType.Cuda, arch.Major * 10 + arch.Minor, cuda.NumMultiprocessors,
                CudaDriver.OptInSharedLimit(cuda), cuda.MaxSharedMemoryPerGroup, cuda.WarpSize, cuda.MaxNumThreadsPerGroup)
            { GroupsPerSm = groupsPerSm, MemoryBytes = cuda.MemorySize };
        }
        return new DeviceInfo(accelerator.AcceleratorType, 0, 1, accelerator.MaxSharedMemoryPerGroup,
            accelerator.MaxSharedMemoryPerGroup, accelerator.WarpSize, accelerator.MaxNumThreadsPerGroup)
        { MemoryBytes = accelerator.MemorySize };
    }
}
