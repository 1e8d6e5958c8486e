using FlashDmAttn.Kernels.Backward;
using FlashDmAttn.Kernels.TensorCore;

namespace FlashDmAttn.Kernels.Planning;

/// <summary>Element type of a tensor-core kernel (16-bit storage).</summary>
internal enum TcElemKind { Bf16, Fp16 }

/// <summary>
/// The tensor-core head-dim policies (<see cref="ITcHeadDim"/>): a head dim and its rows per group. The R64 shapes run
/// 64 query rows per group (one m-tile per warp); the others 128 for D ≤ 128, 64 for D = 192 and 256. The Bwd shapes
/// are the backward kernels' (<see cref="TcBackwardKernels"/>).
/// </summary>
internal enum TcShape { D32, D32R64, D64, D64R64, D96, D96R64, D128, D128R64, D128R64Gather, D192, D256, D32Bwd, D64Bwd, D96Bwd, D128Bwd }

/// <summary>
/// One compiled tensor-core kernel: element type, head-dim policy and the features compiled in (the static switch).
/// A stream-K kernel has no causal band, mask or bias. The launcher keys its loaded kernels by this value.
/// </summary>
internal readonly record struct TcKernelSpec(TcElemKind Elem, TcShape Shape, bool Causal, bool Mask, bool Bias, bool Softcap, bool StreamK)
{
    public override string ToString()
    {
        var features = new List<string>();
        if (StreamK) features.Add("stream-K");
        if (Causal) features.Add("causal");
        if (Mask) features.Add("mask");
        if (Bias) features.Add("bias");
        if (Softcap) features.Add("softcap");
        return $"{Elem.ToString().ToLowerInvariant()} {TcShapes.Name(Shape)} {(features.Count == 0 ? "dense" : string.Join('+', features))}";
    }
}

/// <summary>Host-side facts of each <see cref="TcShape"/>, read from its policy type.</summary>
internal static class TcShapes
{
    /// <summary>Head dims that have a tensor-core policy.</summary>
    public static readonly int[] HeadDims = [32, 64, 96, 128, 192, 256];

    public static bool Supports(int headDim) => Array.IndexOf(HeadDims, headDim) >= 0;

    /// <summary>The shape for a head dim: 64 rows per group when <paramref name="rows64"/> (D ≤ 128), the gathered-keys
    /// variant of D = 128 when <paramref name="gather"/>.</summary>
    public static TcShape For(int headDim, bool rows64, bool gather) => headDim switch
    {
        32 => rows64 ? TcShape.D32R64 : TcShape.D32,
        64 => rows64 ? TcShape.D64R64 : TcShape.D64,
        96 => rows64 ? TcShape.D96R64 : TcShape.D96,
        128 => rows64 ? (gather ? TcShape.D128R64Gather : TcShape.D128R64) : TcShape.D128,
        192 => TcShape.D192,
        256 => TcShape.D256,
        _ => throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "no tensor-core policy"),
    };

    public static string Name(TcShape shape) => shape switch
    {
        TcShape.D128R64Gather => "d128r64-gather",
        TcShape.D32Bwd => "d32-bwd",
        TcShape.D64Bwd => "d64-bwd",
        TcShape.D96Bwd => "d96-bwd",
        TcShape.D128Bwd => "d128-bwd",
        _ => shape.ToString().ToLowerInvariant(),
    };

    public static int Rows(TcShape shape) => Of(shape).Rows;
    public static int KeysPerTile(TcShape shape) => Of(shape).Bc;
    public static int Tune(TcShape shape) => Of(shape).Tune;
    public static int HeadDim(TcShape shape) => Of(shape).D;

    /// <summary>Dynamic shared memory of a kernel of this shape, with or without staged bias tiles.</summary>
    public static int SharedBytes(TcShape shape, bool bias) => bias ? Of(shape).SharedBias : Of(shape).Shared;

    /// <summary>Most shared memory any kernel of this head dim may need (the planner's check against the device).</summary>
    public static int MaxSharedBytes(int headDim) => headDim switch
    {
        192 or 256 => SharedBytes(For(headDim, false, false), true),
        _ => Math.Max(SharedBytes(For(headDim, false, false), true), SharedBytes(For(headDim, true, false), true)),
    };

    /// <summary>Head dims with a tensor-core backward (the others take the portable one).</summary>
    public static readonly int[] BackwardHeadDims = [32, 64, 96, 128];

    /// <summary>The backward's shape for a head dim in <see cref="BackwardHeadDims"/>.</summary>
    public static TcShape Backward(int headDim) => headDim switch
    {
        32 => TcShape.D32Bwd,
        64 => TcShape.D64Bwd,
        96 => TcShape.D96Bwd,
        128 => TcShape.D128Bwd,
        _ => throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "no tensor-core backward policy"),
    };

    private readonly record struct Facts(int D, int Rows, int Bc, int Tune, int Shared, int SharedBias);

    private static Facts Of(TcShape shape) => shape switch
    {
        TcShape.D32 => Get<Hd32>(),
        TcShape.D32R64 => Get<Hd32R64>(),
        TcShape.D64 => Get<Hd64>(),
        TcShape.D64R64 => Get<Hd64R64>(),
        TcShape.D96 => Get<Hd96>(),
        TcShape.D96R64 => Get<Hd96R64>(),
        TcShape.D128 => Get<Hd128>(),
        TcShape.D128R64 => Get<Hd128R64>(),
        TcShape.D128R64Gather => Get<Hd128R64Gather>(),
        TcShape.D192 => Get<Hd192>(),
        TcShape.D256 => Get<Hd256>(),
        TcShape.D32Bwd => Get<Hd32Bwd>(),
        TcShape.D64Bwd => Get<Hd64Bwd>(),
        TcShape.D96Bwd => Get<Hd96Bwd>(),
        TcShape.D128Bwd => Get<Hd128Bwd>(),
        _ => throw new ArgumentOutOfRangeException(nameof(shape)),
    };

    private static Facts Get<THd>() where THd : struct, ITcHeadDim
        => new(THd.D, TensorCoreForwardKernel.RowsOf<THd>(), THd.Bc, THd.Tune,
            TensorCoreForwardKernel.SharedBytes<THd>(false), TensorCoreForwardKernel.SharedBytes<THd>(true));
}
