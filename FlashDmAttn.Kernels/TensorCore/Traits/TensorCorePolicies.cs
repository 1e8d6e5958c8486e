using System.Runtime.CompilerServices;
using FlashDmAttn.Kernels.Numerics;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>Element type of the tensor-core kernel (16-bit storage, fp32 accumulation): its mma, packing and codec.</summary>
internal interface ITcElem
{
    static abstract F4 Mma(U4 a, U2 b, F4 c);
    /// <summary>Two fp32 values → one register of two 16-bit values (lo in bits 0..15), round to nearest even.</summary>
    static abstract uint Pack(float lo, float hi);
    static abstract float ToFloat(ushort value);
    static abstract ushort FromFloat(float value);
    /// <summary>The value in bits 0..15 of a register of two (bf16: one shift).</summary>
    static abstract float LoToFloat(uint pair);
    /// <summary>The value in bits 16..31 of a register of two (bf16: one AND, where ToFloat of the shifted half took a
    /// shift and a multiply).</summary>
    static abstract float HiToFloat(uint pair);
}

internal readonly struct Bf16Mma : ITcElem
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static F4 Mma(U4 a, U2 b, F4 c) => Ptx.MmaBf16(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static uint Pack(float lo, float hi) => Ptx.PackBf16(lo, hi);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float ToFloat(ushort value) => Bf16Codec.ToFloat(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ushort FromFloat(float value) => Bf16Codec.FromFloat(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float LoToFloat(uint pair) => ILGPU.Interop.IntAsFloat(pair << 16);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float HiToFloat(uint pair) => ILGPU.Interop.IntAsFloat(pair & 0xFFFF0000u);
}

internal readonly struct Fp16Mma : ITcElem
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static F4 Mma(U4 a, U2 b, F4 c) => Ptx.MmaF16(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static uint Pack(float lo, float hi) => Ptx.PackF16(lo, hi);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float ToFloat(ushort value) => Fp16Codec.ToFloat(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ushort FromFloat(float value) => Fp16Codec.FromFloat(value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float LoToFloat(uint pair) => Fp16Codec.ToFloat((ushort)pair);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float HiToFloat(uint pair) => Fp16Codec.ToFloat((ushort)(pair >> 16));
}

/// <summary>
/// Head dim and tile shape. Br = 64·Mt query rows per group (4 warps, each Mt m-tiles of 16 rows that share every
/// K/V ldmatrix fragment). Shared memory: Q tile (Br rows) + double-buffered K and V tiles (Bc rows each), rows
/// padded by 16 bytes (row stride (D + 8)·2 bytes: an odd number of 16-byte chunks, so ldmatrix and cp.async rows
/// are conflict-free).
/// </summary>
internal interface ITcHeadDim
{
    static abstract int D { get; }
    /// <summary>Keys per tile (a multiple of 16, at most 64).</summary>
    static abstract int Bc { get; }
    /// <summary>Q fragments kept in registers; otherwise re-read from shared memory by ldmatrix each tile.</summary>
    static abstract bool QInRegs { get; }
    static abstract int RowBytes { get; }
    /// <summary>m-tiles (16 rows each) per warp: 1 or 2.</summary>
    static abstract int Mt { get; }
    /// <summary>Loop-shape switches (<see cref="TcTune"/> bits), each policy's measured best.</summary>
    static abstract int Tune { get; }
}

/// <summary>
/// Bits of <see cref="ITcHeadDim.Tune"/>: loop-shape variants of the kernel. Each head-dim policy carries the bits that
/// were measured fastest for it (docs/perf/PERF-NOTES.md); a policy without <see cref="SkipRescale"/> always rescales.
/// </summary>
internal static class TcTune
{
    /// <summary>The next tile's V copies are issued after this tile's Q·Kᵀ (its K copies stay right after the barrier), so
    /// that the copies' address registers and the Q·Kᵀ fragments are not live at once (the 128-row shapes sit at the
    /// register limit).</summary>
    public const int SplitKv = 8;

    /// <summary>Bias without softcap as one FFMA per score (natural units; log2(e) in the exponent), see TcScore.Natural.</summary>
    public const int BiasFfma = 16;

    /// <summary>With a mask: a next tile below the causal band's partial tiles decides the barrier's skip test from "any
    /// mask word nonzero" (a few ORs) and turns its words into bits after the barrier, beside the copies, instead of
    /// before it (about 50 dependent instructions off the barrier's path).</summary>
    public const int LateBits = 32;

    /// <summary>Skip O·α in the lanes none of whose rows changed its max (lazy rescale, see TcSoftmax.Rescale; the test is
    /// per lane, so lanes of a warp may diverge).</summary>
    public const int SkipRescale = 64;

    /// <summary>Launch-level, not compiled into the kernel: the planner may launch equal-work problems of this policy as
    /// stream-K (<see cref="TcStreamK"/>).</summary>
    public const int StreamK = 256;
}

internal readonly struct Hd32 : ITcHeadDim { public static int D => 32; public static int Bc => 64; public static bool QInRegs => true; public static int RowBytes => (32 + 8) * 2; public static int Mt => 2; public static int Tune => 0; }
internal readonly struct Hd64 : ITcHeadDim { public static int D => 64; public static int Bc => 64; public static bool QInRegs => true; public static int RowBytes => (64 + 8) * 2; public static int Mt => 2; public static int Tune => TcTune.SplitKv | TcTune.SkipRescale | TcTune.StreamK; }
internal readonly struct Hd96 : ITcHeadDim { public static int D => 96; public static int Bc => 64; public static bool QInRegs => false; public static int RowBytes => (96 + 8) * 2; public static int Mt => 2; public static int Tune => 0; }
internal readonly struct Hd128 : ITcHeadDim { public static int D => 128; public static int Bc => 64; public static bool QInRegs => false; public static int RowBytes => (128 + 8) * 2; public static int Mt => 2; public static int Tune => TcTune.SplitKv | TcTune.SkipRescale; }
internal readonly struct Hd192 : ITcHeadDim { public static int D => 192; public static int Bc => 64; public static bool QInRegs => false; public static int RowBytes => (192 + 8) * 2; public static int Mt => 1; public static int Tune => 0; }
internal readonly struct Hd256 : ITcHeadDim { public static int D => 256; public static int Bc => 32; public static bool QInRegs => false; public static int RowBytes => (256 + 8) * 2; public static int Mt => 1; public static int Tune => 0; }

// The 64-row shapes of D ≤ 128 (one m-tile per warp, Q fragments in registers): the planner takes them with a mask,
// bias or gathered keys, where the 128-row shapes spill. Each carries its own measured tune bits; gathered keys on
// D = 128 run without LateBits (they never take the mask-word path).
internal readonly struct Hd32R64 : ITcHeadDim { public static int D => 32; public static int Bc => 64; public static bool QInRegs => true; public static int RowBytes => (32 + 8) * 2; public static int Mt => 1; public static int Tune => 0; }
internal readonly struct Hd64R64 : ITcHeadDim { public static int D => 64; public static int Bc => 64; public static bool QInRegs => true; public static int RowBytes => (64 + 8) * 2; public static int Mt => 1; public static int Tune => TcTune.BiasFfma; }
internal readonly struct Hd96R64 : ITcHeadDim { public static int D => 96; public static int Bc => 64; public static bool QInRegs => true; public static int RowBytes => (96 + 8) * 2; public static int Mt => 1; public static int Tune => 0; }
internal readonly struct Hd128R64 : ITcHeadDim { public static int D => 128; public static int Bc => 64; public static bool QInRegs => true; public static int RowBytes => (128 + 8) * 2; public static int Mt => 1; public static int Tune => TcTune.LateBits | TcTune.SkipRescale; }
internal readonly struct Hd128R64Gather : ITcHeadDim { public static int D => 128; public static int Bc => 64; public static bool QInRegs => true; public static int RowBytes => (128 + 8) * 2; public static int Mt => 1; public static int Tune => 0; }

// The backward's shapes (TcBackwardKernels): 64 query rows × 64 keys per tile, one m-tile per warp, every operand read from
// shared memory (Q, dO and K change roles between the products), no tune bits.
internal readonly struct Hd32Bwd : ITcHeadDim { public static int D => 32; public static int Bc => 64; public static bool QInRegs => false; public static int RowBytes => (32 + 8) * 2; public static int Mt => 1; public static int Tune => 0; }
internal readonly struct Hd64Bwd : ITcHeadDim { public static int D => 64; public static int Bc => 64; public static bool QInRegs => false; public static int RowBytes => (64 + 8) * 2; public static int Mt => 1; public static int Tune => 0; }
internal readonly struct Hd96Bwd : ITcHeadDim { public static int D => 96; public static int Bc => 64; public static bool QInRegs => false; public static int RowBytes => (96 + 8) * 2; public static int Mt => 1; public static int Tune => 0; }
internal readonly struct Hd128Bwd : ITcHeadDim { public static int D => 128; public static int Bc => 64; public static bool QInRegs => false; public static int RowBytes => (128 + 8) * 2; public static int Mt => 1; public static int Tune => 0; }

/// <summary>A compile-time boolean (FlashAttention's static_switch): kernels specialise on these, branches fold away.</summary>
internal interface IStaticBool { static abstract bool V { get; } }
internal readonly struct On : IStaticBool { public static bool V => true; }
internal readonly struct Off : IStaticBool { public static bool V => false; }

/// <summary>Which score features a specialisation handles; a feature that is off costs nothing in the kernel.</summary>
internal interface ITcFlags
{
    static abstract bool Causal { get; }
    static abstract bool Mask { get; }
    static abstract bool Bias { get; }
    static abstract bool Softcap { get; }
    /// <summary>Stream-K launch (<see cref="TcStreamK"/>): the last waves' key tiles spread evenly over the resident groups.</summary>
    static abstract bool StreamK { get; }
}

internal readonly struct TcFlags<TCausal, TMask, TBias, TCap> : ITcFlags
    where TCausal : struct, IStaticBool where TMask : struct, IStaticBool
    where TBias : struct, IStaticBool where TCap : struct, IStaticBool
{
    public static bool Causal => TCausal.V;
    public static bool Mask => TMask.V;
    public static bool Bias => TBias.V;
    public static bool Softcap => TCap.V;
    public static bool StreamK => false;
}

/// <summary>The stream-K specialisation: no causal band, mask or bias (every block has the same work); softcap as
/// <typeparamref name="TCap"/>.</summary>
internal readonly struct TcStreamKFlags<TCap> : ITcFlags where TCap : struct, IStaticBool
{
    public static bool Causal => false;
    public static bool Mask => false;
    public static bool Bias => false;
    public static bool Softcap => TCap.V;
    public static bool StreamK => true;
}
