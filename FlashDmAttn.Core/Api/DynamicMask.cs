using ILGPU;
using FlashDmAttn.Kernels.Masking;
using FlashDmAttn.Kernels.Numerics;
using FlashDmAttn.Validation;

namespace FlashDmAttn;

/// <summary>
/// The dynamic-mask workflow of flash-dmattn: keep, for every query row, the keepWindowSize keys with the
/// largest bias, computed on the device (no L×L array on the host).
/// </summary>
public static class DynamicMask
{
    /// <summary>
    /// A byte mask with the shape of <paramref name="attnBias"/> ((B|1, H|Hkv|1, Lq|1, Lk)): 1 at the
    /// <paramref name="keepWindowSize"/> largest entries of each row (ties: lowest key index first), 0 elsewhere;
    /// all ones when Lk ≤ keepWindowSize. Pass it as attnMask together with the bias.
    /// </summary>
    /// <param name="output">Contiguous byte tensor of the bias's shape to write into; allocated when null.</param>
    public static DeviceTensor<byte> TopK<T>(this AttentionBackend backend, DeviceTensor<T> attnBias, int keepWindowSize,
        DeviceTensor<byte>? output = null) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(backend);
        Check.DType<T>(nameof(attnBias));
        Check.NotNull(attnBias, nameof(attnBias));
        Check.Live(attnBias.IsDisposed, attnBias, nameof(attnBias));
        Check.Rank(attnBias.Shape, 4, "(batch, heads, seqlen_q, seqlen_k)", nameof(attnBias));
        Check.Accelerator(attnBias.Accelerator, backend.Accelerator, nameof(attnBias));
        Check.Layout(attnBias.Shape, attnBias.Strides, attnBias.Data.Length, nameof(attnBias));
        if (keepWindowSize < 1)
            throw new ArgumentOutOfRangeException(nameof(keepWindowSize), $"keepWindowSize: expected at least 1, got {keepWindowSize}");
        var s = attnBias.Shape;
        if (output is not null)
        {
            Check.Live(output.IsDisposed, output, nameof(output));
            Check.Rank(output.Shape, 4, "like attnBias", nameof(output));
            for (int i = 0; i < 4; i++) Check.Dim(output.Shape, i, s[i], "the bias's size", nameof(output));
            Check.Accelerator(output.Accelerator, backend.Accelerator, nameof(output));
            Check.Layout(output.Shape, output.Strides, output.Data.Length, nameof(output));
        }
        Int128 rows = (Int128)s[0] * s[1] * s[2];
        if (rows > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(attnBias), $"attnBias: expected at most {int.MaxValue} rows, got {rows} in shape {Check.Dims(s)}");
        int seqK = Check.IntSize(s[3], "seqlen_k", nameof(attnBias), s);
        if (output is null)
            Check.Allocation<byte>(backend.Accelerator, s.ToArray(), "mask (like attnBias)", nameof(attnBias));
        var mask = output ?? DeviceTensor<byte>.Allocate(backend.Accelerator, s[0], s[1], s[2], s[3]);
        var p = new TopKParams
        {
            Heads = (int)s[1], RowsPerHead = (int)s[2], SeqK = seqK, Keep = keepWindowSize,
            InStrideB = attnBias.Strides[0], InStrideH = attnBias.Strides[1], InStrideQ = attnBias.Strides[2],
            OutStrideB = mask.Strides[0], OutStrideH = mask.Strides[1], OutStrideQ = mask.Strides[2],
        };
        var acc = backend.Accelerator;
        switch (DTypes.Of<T>())
        {
            case DType.Float32: TopKMaskKernel.Launch<float, Fp32Codec>(acc, attnBias.Data.Cast<float>(), mask.Data, p, (int)rows, backend.LaunchOptions.DiskCache); break;
            case DType.Float16: TopKMaskKernel.Launch<ushort, Fp16Codec>(acc, attnBias.Data.Cast<ushort>(), mask.Data, p, (int)rows, backend.LaunchOptions.DiskCache); break;
            default: TopKMaskKernel.Launch<ushort, Bf16Codec>(acc, attnBias.Data.Cast<ushort>(), mask.Data, p, (int)rows, backend.LaunchOptions.DiskCache); break;
        }
        return mask;
    }
}
