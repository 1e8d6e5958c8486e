using System.Runtime.CompilerServices;
using FlashDmAttn.Kernels.Numerics;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>Element type of the tensor-core kernel (16-bit storage, fp32 accumulation): its mma, packing and codec.</summary>
public interface ITcElem
{
    static abstract F4 Mma(U4 a, U2 b, F4 c);
    /// <summary>Two fp32 values → one register of two 16-bit values (lo in bits 0..15), round to nearest even.</summary>
    static abstract uint Pack(float lo, float hi);
    static abstract float ToFloat(ushort value);
    static abstract ushort FromFloat(float value);
}

public readonly struct Bf16Mma : ITcElem
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static F4 Mma(U4 a, U2 b, F4 c) => Ptx.MmaBf16(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static uint Pack(float lo, float hi) => Ptx.PackBf16(lo, hi);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float ToFloat(ushort value) => Bf16Codec.ToFloat(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ushort FromFloat(float value) => Bf16Codec.FromFloat(value);
}

public readonly struct Fp16Mma : ITcElem
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static F4 Mma(U4 a, U2 b, F4 c) => Ptx.MmaF16(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static uint Pack(float lo, float hi) => Ptx.PackF16(lo, hi);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float ToFloat(ushort value) => Fp16Codec.ToFloat(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ushort FromFloat(float value) => Fp16Codec.FromFloat(value);
}

/// <summary>
/// Head dim and tile shape. Br = 64 query rows per group (4 warps × 16 rows) for every head dim.
/// Shared memory: Q tile (64 rows) + double-buffered K and V tiles (Bc rows each), rows padded by 16 bytes
/// (row stride (D + 8)·2 bytes: an odd number of 16-byte chunks, so ldmatrix and cp.async rows are conflict-free).
/// </summary>
public interface ITcHeadDim
{
    static abstract int D { get; }
    /// <summary>Keys per tile (a multiple of 16, at most 64).</summary>
    static abstract int Bc { get; }
    /// <summary>Q fragments kept in registers (D ≤ 128); otherwise re-read from shared memory by ldmatrix each tile.</summary>
    static abstract bool QInRegs { get; }
    static abstract int RowBytes { get; }
}

public readonly struct Hd32 : ITcHeadDim { public static int D => 32; public static int Bc => 64; public static bool QInRegs => true; public static int RowBytes => (32 + 8) * 2; }
public readonly struct Hd64 : ITcHeadDim { public static int D => 64; public static int Bc => 64; public static bool QInRegs => true; public static int RowBytes => (64 + 8) * 2; }
public readonly struct Hd96 : ITcHeadDim { public static int D => 96; public static int Bc => 64; public static bool QInRegs => true; public static int RowBytes => (96 + 8) * 2; }
public readonly struct Hd128 : ITcHeadDim { public static int D => 128; public static int Bc => 64; public static bool QInRegs => true; public static int RowBytes => (128 + 8) * 2; }
public readonly struct Hd192 : ITcHeadDim { public static int D => 192; public static int Bc => 64; public static bool QInRegs => false; public static int RowBytes => (192 + 8) * 2; }
public readonly struct Hd256 : ITcHeadDim { public static int D => 256; public static int Bc => 32; public static bool QInRegs => false; public static int RowBytes => (256 + 8) * 2; }
