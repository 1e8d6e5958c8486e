namespace FlashDmAttn.Kernels.Planning;

/// <summary>Whether the planner may launch equal-work problems as stream-K.</summary>
internal enum StreamKMode
{
    /// <summary>Where the head-dim policy's measured bits say so, on CUDA.</summary>
    Auto,
    /// <summary>Wherever the problem has equal work per block and the split shortens the launch (any accelerator).</summary>
    On,
    /// <summary>Never.</summary>
    Off,
}

/// <summary>
/// The choices a caller may make about how a problem is launched (the public <c>AttentionOptions</c> map onto these),
/// plus what only the tests and the bench set: the tensor-core kernel on the CPU accelerator (its device seam has C#
/// twins), and an observer that sees every plan the launcher executes.
/// </summary>
internal sealed record LaunchOptions
{
    public static LaunchOptions Default { get; } = new();

    /// <summary>Every problem takes the portable kernel.</summary>
    public bool ForcePortable { get; init; }

    public StreamKMode StreamK { get; init; } = StreamKMode.Auto;

    /// <summary>Where compiled CUDA kernels are kept across processes; null: compile in every process.</summary>
    public Caching.KernelDiskCache? DiskCache { get; init; } = Caching.KernelDiskCache.Default;

    /// <summary>Split-KV ranges per query block of the tensor-core kernel: 0 chooses (CUDA: where the groups would
    /// underfill the GPU; elsewhere none), n ≥ 1 forces n (tests, bench).</summary>
    public int KvSplits { get; init; }

    /// <summary>Packed GQA for one query per sequence: null chooses (CUDA), true/false forces where it applies (tests, bench).</summary>
    public bool? PackGqa { get; init; }

    /// <summary>The tensor-core backward's dq from the key blocks' dS tiles: null chooses (wherever one (batch, head)'s
    /// tiles fit the scratch bound), true/false forces it on or off (tests, bench).</summary>
    public bool? BackwardDsTiles { get; init; }

    /// <summary>The dS tiles' scratch bound in bytes; null: <see cref="BackwardPlanner.DefaultDsBytes"/> or an eighth of
    /// the device's memory, the smaller (tests set it low to run the pairs in several launches).</summary>
    public long? BackwardDsBytes { get; init; }

    /// <summary>Tests: the tensor-core kernel also on a CPU accelerator with 32-thread warps.</summary>
    public bool TensorCoreOnCpu { get; init; }

    /// <summary>Called with each plan just before the launcher executes it (tests, bench).</summary>
    public Action<ForwardPlan>? Observer { get; init; }

    /// <summary>Called with each backward plan just before the launcher executes it (tests, bench).</summary>
    public Action<BackwardPlan>? BackwardObserver { get; init; }
}
