using ILGPU;
using ILGPU.Algorithms;
using FlashDmAttn.Kernels.Numerics;

namespace FlashDmAttn.Kernels.Forward;

/// <summary>
/// Which scores are visible and what is added to them (the counterpart of FlashAttention's mask.h):
/// causal band, the dynamic mask, softcap and the additive bias. One place for their order:
/// s = q·k·scale; s = c·tanh(s/c) if softcap; s += bias; invisible → −∞.
/// </summary>
internal static class MaskBias
{
    public static bool CausalVisible(in KernelArgs p, in BlockInfo blk, int i, int j)
        => p.Causal == 0 || j <= i + blk.SeqK - blk.SeqQ;

    public static long MaskIndex(in KernelArgs p, int b, int h, int i)
        => b * p.MaskStrideB + (h / p.MaskHeadDiv) * p.MaskStrideH + i * p.MaskStrideQ;

    /// <summary>Mask element j of a row starting at <paramref name="rowIndex"/>; any nonzero magnitude is visible.</summary>
    public static bool MaskVisible(in KernelArgs p, ArrayView<byte> mask, long rowIndex, int j)
        => ElementVisible(mask, (rowIndex + j) * p.MaskElemBytes, p.MaskElemBytes);

    /// <summary>The mask element of <paramref name="elemBytes"/> bytes at byte <paramref name="a"/>: nonzero magnitude.</summary>
    public static bool ElementVisible(ArrayView<byte> mask, long a, int elemBytes)
    {
        if (elemBytes == 1) return mask[a] != 0;
        if (elemBytes == 2) return (mask[a] | (mask[a + 1] & 0x7F)) != 0;
        return (mask[a] | mask[a + 1] | mask[a + 2] | (mask[a + 3] & 0x7F)) != 0;
    }

    public static long BiasIndex(in KernelArgs p, int b, int h, int i)
        => b * p.BiasStrideB + (h / p.BiasHeadDiv) * p.BiasStrideH + i * p.BiasStrideQ;

    /// <summary>Scaled dot product → softcapped → biased score.</summary>
    public static float Score<TElem, TCodec>(in KernelArgs p, float dot, ArrayView<TElem> bias, long biasRow, int j)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        float s = dot * p.Scale;
        if (p.Softcap > 0f) s = p.Softcap * XMath.Tanh(s / p.Softcap);
        if (p.HasBias != 0) s += TCodec.ToFloat(bias[biasRow + j]);
        return s;
    }

    /// <summary><see cref="Score{TElem, TCodec}"/> and its slope ds/d(dot): the scale, times 1 − tanh² under softcap
    /// (the backward's chain rule through the same order).</summary>
    public static float ScoreWithSlope<TElem, TCodec>(in KernelArgs p, float dot, ArrayView<TElem> bias, long biasRow, int j, out float slope)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        float s = dot * p.Scale;
        slope = p.Scale;
        if (p.Softcap > 0f)
        {
            float t = XMath.Tanh(s / p.Softcap);
            s = p.Softcap * t;
            slope = p.Scale * (1f - t * t);
        }
        if (p.HasBias != 0) s += TCodec.ToFloat(bias[biasRow + j]);
        return s;
    }
}
