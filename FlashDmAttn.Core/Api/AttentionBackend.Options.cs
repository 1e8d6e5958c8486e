using FlashDmAttn.Kernels.Caching;
using FlashDmAttn.Kernels.Planning;

namespace FlashDmAttn;

public sealed partial class AttentionBackend
{
    /// <summary>How this backend launches its work.</summary>
    public AttentionOptions Options { get; private init; } = AttentionOptions.Default;

    /// <summary>What the launcher reads: <see cref="Options"/>, plus what only tests and the bench set.</summary>
    internal LaunchOptions LaunchOptions { get; private init; } = LaunchOptions.Default;

    /// <summary>A backend on the same accelerator with other options (this one is unchanged).</summary>
    public AttentionBackend WithOptions(AttentionOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new AttentionBackend(Name, Accelerator)
        {
            Options = options,
            LaunchOptions = LaunchOptions with
            {
                ForcePortable = options.PortableKernelOnly,
                DiskCache = !options.UseKernelCache ? null
                    : options.KernelCacheDirectory is { } dir ? new KernelDiskCache(dir) : KernelDiskCache.Default,
                StreamK = options.StreamK switch
                {
                    StreamKPolicy.On => StreamKMode.On,
                    StreamKPolicy.Off => StreamKMode.Off,
                    _ => StreamKMode.Auto,
                },
            },
        };
    }

    /// <summary>Tests and bench: a backend whose launcher reads <paramref name="change"/>(its launch options).</summary>
    internal AttentionBackend WithLaunch(Func<LaunchOptions, LaunchOptions> change)
        => new(Name, Accelerator) { Options = Options, LaunchOptions = change(LaunchOptions) };
}
