using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Kernels.TensorCore;

namespace FlashDmAttn.Kernels.Launch;

/// <summary>Something done with the generic instantiation of one tensor-core kernel.</summary>
internal interface ITcKernelVisitor<out TResult>
{
    TResult Visit<TE, THd, TF>() where TE : struct, ITcElem where THd : struct, ITcHeadDim where TF : struct, ITcFlags;
}

/// <summary>
/// FlashAttention's static_switch.h: a <see cref="TcKernelSpec"/> (runtime values) to the generic arguments of its
/// kernel, one specialization per combination, so a feature that is off costs nothing in the kernel.
/// </summary>
internal static class TcStaticSwitch
{
    public static TResult Dispatch<TV, TResult>(in TcKernelSpec s, TV v) where TV : ITcKernelVisitor<TResult>
        => s.Elem == TcElemKind.Bf16 ? Shape<Bf16Mma, TV, TResult>(s, v) : Shape<Fp16Mma, TV, TResult>(s, v);

    private static TResult Shape<TE, TV, TResult>(in TcKernelSpec s, TV v) where TE : struct, ITcElem where TV : ITcKernelVisitor<TResult>
        => s.Shape switch
        {
            TcShape.D32 => Causal<TE, Hd32, TV, TResult>(s, v),
            TcShape.D32R64 => Causal<TE, Hd32R64, TV, TResult>(s, v),
            TcShape.D64 => Causal<TE, Hd64, TV, TResult>(s, v),
            TcShape.D64R64 => Causal<TE, Hd64R64, TV, TResult>(s, v),
            TcShape.D96 => Causal<TE, Hd96, TV, TResult>(s, v),
            TcShape.D96R64 => Causal<TE, Hd96R64, TV, TResult>(s, v),
            TcShape.D128 => Causal<TE, Hd128, TV, TResult>(s, v),
            TcShape.D128R64 => Causal<TE, Hd128R64, TV, TResult>(s, v),
            TcShape.D128R64Gather => Causal<TE, Hd128R64Gather, TV, TResult>(s, v),
            TcShape.D192 => Causal<TE, Hd192, TV, TResult>(s, v),
            TcShape.D256 => Causal<TE, Hd256, TV, TResult>(s, v),
            TcShape.D32Bwd => Causal<TE, Hd32Bwd, TV, TResult>(s, v),
            TcShape.D64Bwd => Causal<TE, Hd64Bwd, TV, TResult>(s, v),
            TcShape.D96Bwd => Causal<TE, Hd96Bwd, TV, TResult>(s, v),
            TcShape.D128Bwd => Causal<TE, Hd128Bwd, TV, TResult>(s, v),
            _ => throw new ArgumentOutOfRangeException(nameof(s), s.Shape, "unknown tensor-core shape"),
        };

    private static TResult Causal<TE, THd, TV, TResult>(in TcKernelSpec s, TV v)
        where TE : struct, ITcElem where THd : struct, ITcHeadDim where TV : ITcKernelVisitor<TResult>
    {
        if (s.StreamK)
            return s.Softcap ? v.Visit<TE, THd, TcStreamKFlags<On>>() : v.Visit<TE, THd, TcStreamKFlags<Off>>();
        return s.Causal ? Mask<TE, THd, On, TV, TResult>(s, v) : Mask<TE, THd, Off, TV, TResult>(s, v);
    }

    private static TResult Mask<TE, THd, TC, TV, TResult>(in TcKernelSpec s, TV v)
        where TE : struct, ITcElem where THd : struct, ITcHeadDim where TC : struct, IStaticBool where TV : ITcKernelVisitor<TResult>
        => s.Mask ? Bias<TE, THd, TC, On, TV, TResult>(s, v) : Bias<TE, THd, TC, Off, TV, TResult>(s, v);

    private static TResult Bias<TE, THd, TC, TM, TV, TResult>(in TcKernelSpec s, TV v)
        where TE : struct, ITcElem where THd : struct, ITcHeadDim where TC : struct, IStaticBool where TM : struct, IStaticBool
        where TV : ITcKernelVisitor<TResult>
        => (s.Bias, s.Softcap) switch
        {
            (true, true) => v.Visit<TE, THd, TcFlags<TC, TM, On, On>>(),
            (true, false) => v.Visit<TE, THd, TcFlags<TC, TM, On, Off>>(),
            (false, true) => v.Visit<TE, THd, TcFlags<TC, TM, Off, On>>(),
            _ => v.Visit<TE, THd, TcFlags<TC, TM, Off, Off>>(),
        };
}
