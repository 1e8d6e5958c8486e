using ILGPU;
using System.Runtime.CompilerServices;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Planning;

namespace FlashDmAttn.Kernels.Launch;

/// <summary>Loaded kernels and small scratch buffers, kept once per accelerator and released with it.</summary>
internal sealed class KernelCache
{
    private static readonly ConditionalWeakTable<Accelerator, KernelCache> Caches = new();
    private readonly Dictionary<object, object> _entries = new();
    private readonly Accelerator _accelerator;

    private KernelCache(Accelerator accelerator)
    {
        _accelerator = accelerator;
        Dummy = accelerator.Allocate1D<byte>(64);
        // One handler for everything held: the scratch buffers present when the accelerator goes (a buffer replaced
        // or released earlier was disposed then).
        accelerator.Disposed += (_, _) =>
        {
            Dummy.Dispose();
            lock (_entries)
                foreach (var b in _scratch) b?.Dispose();
        };
    }

    /// <summary>64 bytes that stand in for absent optional buffers (never written).</summary>
    public MemoryBuffer1D<byte, ILGPU.Stride1D.Dense> Dummy { get; }

    /// <summary>
    /// Held while one forward call enqueues its launches: the scratch buffers are shared by every call on this
    /// accelerator, so two host threads must not interleave one call's table kernel and its attention kernel with
    /// another's (both run on the default stream, in the order enqueued). Growing a buffer synchronises first, so a
    /// call that already enqueued its kernels keeps valid views.
    /// </summary>
    public object LaunchLock { get; } = new();

    private readonly MemoryBuffer1D<int, ILGPU.Stride1D.Dense>?[] _scratch = new MemoryBuffer1D<int, ILGPU.Stride1D.Dense>?[10];

    /// <summary>
    /// A reusable int buffer of at least <paramref name="length"/> elements for per-call tables, zeroed when allocated.
    /// Kernels run in stream order on the default stream, so a later call's writes follow the earlier call's reads;
    /// growing synchronises first.
    /// </summary>
    /// <param name="slot">0: key tables; 1: gathered bias; 2: the tensor-core kernel's stream-K work (its users leave
    /// their counters at zero); 3: split-KV partial outputs; 4, 5: the backward's dS tiles and their flags; 6: its D
    /// vector; 7, 8: its fp32 dk and dv per query head; 9: its fp32 bias gradient before the broadcast reduction.</param>
    public ILGPU.ArrayView<int> Scratch(long length, int slot = 0)
    {
        lock (_entries)
        {
            var buffer = _scratch[slot];
            if (buffer is null || buffer.Length < length)
            {
                _accelerator.Synchronize();
                buffer?.Dispose();
                buffer = _accelerator.Allocate1D<int>(Math.Max(length, 1024L));
                buffer.MemSetToZero();
                _scratch[slot] = buffer;
            }
            return buffer.View.SubView(0, length);
        }
    }

    /// <summary>Bytes of device memory the scratch buffers hold now.</summary>
    public long ScratchBytes
    {
        get
        {
            lock (_entries) return _scratch.Sum(b => b is null ? 0L : b.LengthInBytes);
        }
    }

    /// <summary>
    /// Frees every scratch buffer (the next call that needs one allocates it again), after the work already enqueued on
    /// the accelerator has finished. Under <see cref="LaunchLock"/>, so no call is between enqueuing its kernels and
    /// returning while the buffers go.
    /// </summary>
    public void ReleaseScratch()
    {
        lock (LaunchLock)
        lock (_entries)
        {
            _accelerator.Synchronize();
            for (int i = 0; i < _scratch.Length; i++)
            {
                _scratch[i]?.Dispose();
                _scratch[i] = null;
            }
        }
    }

    private DeviceInfo? _device;

    /// <summary>The accelerator's properties for the planner, made once.</summary>
    public DeviceInfo Device(Func<DeviceInfo> make)
    {
        lock (_entries) return _device ??= make();
    }

    /// <summary>A 1-D launch for kernels that stride over <paramref name="elements"/> by the grid's size: at most 4096
    /// groups of 256 threads (16 on the CPU accelerator, one thread per core there).</summary>
    public static KernelConfig Linear(Accelerator accelerator, long elements)
    {
        int group = accelerator.AcceleratorType == AcceleratorType.CPU ? Math.Min(accelerator.MaxNumThreadsPerGroup, 16) : 256;
        return new KernelConfig((int)Math.Clamp((elements + group - 1) / group, 1, 4096), group);
    }

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
