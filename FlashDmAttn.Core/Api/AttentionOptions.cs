namespace FlashDmAttn;

/// <summary>Whether equal-work problems may run as stream-K launches (the last waves' key tiles spread evenly over the
/// resident groups, so no SM idles at the end of the launch).</summary>
public enum StreamKPolicy
{
    /// <summary>Where it was measured faster: on CUDA, for the head dims whose policy says so.</summary>
    Auto,
    /// <summary>Wherever a problem has equal work per block (no causal band, mask, bias, variable lengths or paging) and
    /// the split shortens the launch.</summary>
    On,
    /// <summary>Never.</summary>
    Off,
}

/// <summary>
/// How a backend launches its work. The defaults are the measured best; a backend with other options comes from
/// <see cref="AttentionBackend.WithOptions"/>.
/// </summary>
public sealed record AttentionOptions
{
    /// <summary>The defaults.</summary>
    public static AttentionOptions Default { get; } = new();

    /// <summary>Run every call on the portable kernel (every accelerator, dtype and head dim), never the tensor-core
    /// one: for debugging and baselines.</summary>
    public bool PortableKernelOnly { get; init; }

    /// <summary>Stream-K launches of the tensor-core kernel.</summary>
    public StreamKPolicy StreamK { get; init; } = StreamKPolicy.Auto;

    /// <summary>Keep compiled CUDA kernels on disk, so that later processes load them instead of compiling them again
    /// (the first call of a specialization compiles for seconds). On by default.</summary>
    public bool UseKernelCache { get; init; } = true;

    /// <summary>Where the kernel cache lives; null: the per-user default (the platform's local application-data
    /// folder, FlashDmAttn/kernels).</summary>
    public string? KernelCacheDirectory { get; init; }
}
