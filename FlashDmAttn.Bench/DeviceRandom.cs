using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Launch;

namespace FlashDmAttn.Bench;

/// <summary>Fills device buffers with N(0, 1) bf16 values on the device (inputs larger than any host array).</summary>
public static class DeviceRandom
{
    private static void FillKernel(Index1D index, ArrayView<ushort> data, ulong seed, long n, int stride)
    {
        for (long i = index; i < n; i += stride)
        {
            ulong z = (ulong)i * 0x9E3779B97F4A7C15UL + seed;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            float u1 = ((uint)(z >> 40) + 1) * (1f / 16777217f);
            float u2 = (uint)(z & 0xFFFFFF) * (1f / 16777216f);
            float g = XMath.Sqrt(-2f * XMath.Log(u1)) * XMath.Cos(6.2831853f * u2);
            uint bits = Interop.FloatAsInt(g);
            bits += 0x7FFFu + ((bits >> 16) & 1u);
            data[i] = (ushort)(bits >> 16);
        }
    }

    public static void Normal(Accelerator acc, ArrayView<BFloat16> data, ulong seed)
    {
        var kernel = KernelCache.For(acc).GetOrAdd("bench-fill",
            a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<ushort>, ulong, long, int>(FillKernel));
        int threads = 132 * 2048;
        kernel(threads, data.Cast<ushort>(), seed, data.Length, threads);
    }
}
