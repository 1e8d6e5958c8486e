using System.Runtime.InteropServices;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace FlashDmAttn.Kernels.Launch;

/// <summary>The CUDA driver calls ILGPU does not wrap: the opt-in shared-memory limit, opting a kernel in to more than
/// 48 KiB of dynamic shared memory, and the device's free memory.</summary>
internal static class CudaDriver
{
    private const int FuncAttributeMaxDynamicSharedSizeBytes = 8;
    private const int DeviceAttributeMaxSharedMemoryPerBlockOptin = 97;

    /// <summary>Dynamic shared memory a group may opt in to (48 KiB if the driver does not answer).</summary>
    public static int OptInSharedLimit(CudaAccelerator cuda)
    {
        try
        {
            return CudaAPI.CurrentAPI.GetDeviceAttribute((DeviceAttributeKind)DeviceAttributeMaxSharedMemoryPerBlockOptin, cuda.DeviceId);
        }
        catch (Exception)
        {
            return 48 * 1024;
        }
    }

    public static unsafe void AllowLargeSharedMemory(CudaKernel kernel, int bytes)
    {
        var fn = (delegate* unmanaged<IntPtr, int, int, int>)Symbol("cuFuncSetAttribute");
        int rc = fn(kernel.FunctionPtr, FuncAttributeMaxDynamicSharedSizeBytes, bytes);
        if (rc != 0)
            throw new InvalidOperationException($"cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES, {bytes}) failed: CUresult {rc}");
    }

    /// <summary>Free and total device memory of the current context (cuMemGetInfo), for the bench's memory reports.</summary>
    public static unsafe (long Free, long Total) MemoryInfo()
    {
        var fn = (delegate* unmanaged<nuint*, nuint*, int>)Symbol("cuMemGetInfo_v2");
        nuint free, total;
        int rc = fn(&free, &total);
        if (rc != 0)
            throw new InvalidOperationException($"cuMemGetInfo failed: CUresult {rc}");
        return ((long)free, (long)total);
    }

    private static IntPtr Symbol(string name)
    {
        foreach (var lib in new[] { "libcuda.so.1", "libcuda.so", "nvcuda.dll" })
            if (NativeLibrary.TryLoad(lib, out var h) && NativeLibrary.TryGetExport(h, name, out var sym))
                return sym;
        throw new DllNotFoundException($"CUDA driver symbol {name} not found");
    }
}
