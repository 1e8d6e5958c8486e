using System.Runtime.CompilerServices;
using ILGPU.Runtime;

namespace FlashDmAttn.Kernels.Launch;

/// <summary>Loaded kernels and small scratch buffers, kept once per accelerator and released with it.</summary>
public sealed class KernelCache
{
    private static readonly ConditionalWeakTable<Accelerator, KernelCache> Caches = new();
    private readonly Dictionary<object, object> _entries = new();
    private readonly Accelerator _accelerator;

    private KernelCache(Accelerator accelerator)
    {
        _accelerator = accelerator;
        Dummy = accelerator.Allocate1D<byte>(64);
        accelerator.Disposed += (_, _) => Dummy.Dispose();
    }

    /// <summary>64 bytes that stand in for absent optional buffers (never written).</summary>
    public MemoryBuffer1D<byte, ILGPU.Stride1D.Dense> Dummy { get; }

    public static KernelCache For(Accelerator accelerator) => Caches.GetValue(accelerator, a => new KernelCache(a));

    public T GetOrAdd<T>(object key, Func<Accelerator, T> load) where T : class
    {
        lock (_entries)
        {
            if (!_entries.TryGetValue(key, out var value))
            {
                value = load(_accelerator);
                _entries[key] = value;
            }
            return (T)value;
        }
    }
}
