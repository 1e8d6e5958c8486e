using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Launch;

// ILGPU's runtime assembly calls the fill kernel and reads its argument struct, both internal to this assembly.
[assembly: InternalsVisibleTo("ILGPURuntime")]

namespace FlashDmAttn;

/// <summary>
/// Device-side fill of a strided tensor (<see cref="DeviceTensor{T}.Fill"/>). Dims are merged where they are
/// contiguous with each other, so the usual tensor is one run; at most <see cref="Dims"/> dims go to one launch and
/// any dims beyond are walked on the host.
/// </summary>
internal static class TensorFill
{
    private const int Dims = 4;

    /// <summary>Sizes and strides of up to four dims, innermost last; unused leading dims have size 1.</summary>
    internal struct Layout4
    {
        public long N0, N1, N2, N3;
        public long S0, S1, S2, S3;
    }

    internal static void Kernel<T>(Index1D index, ArrayView<T> data, Layout4 l, T value, int stride) where T : unmanaged
    {
        long total = l.N0 * l.N1 * l.N2 * l.N3;
        for (long e = index; e < total; e += stride)
        {
            long r = e;
            long i3 = r % l.N3; r /= l.N3;
            long i2 = r % l.N2; r /= l.N2;
            long i1 = r % l.N1; r /= l.N1;
            data[r * l.S0 + i1 * l.S1 + i2 * l.S2 + i3 * l.S3] = value;
        }
    }

    public static void Fill<T>(ArrayView<T> data, long[] shape, long[] strides, T value) where T : unmanaged
    {
        var (n, s) = Merge(shape, strides);
        if (n.Count == 0 || n.Contains(0)) return;
        var accelerator = data.GetAccelerator();
        var kernel = KernelCache.For(accelerator).GetOrAdd(("tensor-fill", typeof(T)),
            acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<T>, Layout4, T, int>(Kernel));
        int outer = Math.Max(n.Count - Dims, 0);
        var l = new Layout4 { N0 = 1, N1 = 1, N2 = 1, N3 = 1 };
        int inner = n.Count - outer;
        for (int i = 0; i < inner; i++)
        {
            int slot = Dims - inner + i;
            SetDim(ref l, slot, n[outer + i], s[outer + i]);
        }
        long count = l.N0 * l.N1 * l.N2 * l.N3;
        int threads = (int)Math.Min(count, 1 << 20);
        // Host loop over the dims that do not fit one launch (rank > 4 after merging).
        var idx = new long[outer];
        while (true)
        {
            long offset = 0;
            for (int i = 0; i < outer; i++) offset += idx[i] * s[i];
            kernel(threads, data.SubView(offset), l, value, threads);
            int d = outer - 1;
            while (d >= 0 && ++idx[d] == n[d]) idx[d--] = 0;
            if (d < 0) break;
        }
    }

    private static void SetDim(ref Layout4 l, int slot, long size, long stride)
    {
        switch (slot)
        {
            case 0: (l.N0, l.S0) = (size, stride); break;
            case 1: (l.N1, l.S1) = (size, stride); break;
            case 2: (l.N2, l.S2) = (size, stride); break;
            default: (l.N3, l.S3) = (size, stride); break;
        }
    }

    /// <summary>Drops size-1 dims and merges a dim into the next when its stride is the next dim's extent.</summary>
    private static (List<long> Sizes, List<long> Strides) Merge(long[] shape, long[] strides)
    {
        var n = new List<long>();
        var s = new List<long>();
        for (int i = 0; i < shape.Length; i++)
        {
            if (shape[i] == 1) continue;
            if (n.Count > 0 && s[^1] == shape[i] * strides[i])
            {
                n[^1] *= shape[i];
                s[^1] = strides[i];
                continue;
            }
            n.Add(shape[i]);
            s.Add(strides[i]);
        }
        if (n.Count == 0 && !shape.Contains(0)) { n.Add(1); s.Add(1); }
        if (shape.Contains(0)) n.Add(0);
        return (n, s);
    }
}
