using FlashDmAttn.Api;
using FlashDmAttn.Kernels.Caching;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Validation;

namespace FlashDmAttn;

/// <summary>How a mask or bias of an <see cref="AttentionShape"/> is shaped.</summary>
public enum OperandForm
{
    /// <summary>Not given.</summary>
    None,
    /// <summary>One row per query: (B, H, Lq, Lk).</summary>
    PerQuery,
    /// <summary>Broadcast over queries: (B, H, 1, Lk), e.g. a per-key top-w mask.</summary>
    PerKey,
}

/// <summary>The shape of a forward call, for <see cref="AttentionBackend.WarmUp{T}"/>: the kernel a call runs depends on
/// these (and on the dtype), not on the data.</summary>
public sealed record AttentionShape(int Batch, int SeqQ, int SeqK, int Heads, int KvHeads, int HeadDim, bool IsCausal = false,
    OperandForm Mask = OperandForm.None, OperandForm Bias = OperandForm.None, float? Softcap = null, float? Scale = null);

/// <summary>Progress of a warm-up: <paramref name="Done"/> of <paramref name="Total"/> kernels ready; the last one and
/// whether it was loaded from the disk cache.</summary>
public readonly record struct WarmUpProgress(int Done, int Total, string Kernel, bool FromDiskCache);

public sealed partial class AttentionBackend
{
    /// <summary>
    /// Compiles (or loads from the kernel cache) the tensor-core kernels that calls of these shapes with element type
    /// <typeparamref name="T"/> will run, so that their first call does not wait for it: e.g. at model load. With
    /// <paramref name="maxParallelism"/> &gt; 1 and the kernel cache on, the kernels the cache lacks are compiled that many
    /// at once first. Kernels of other kinds (the portable kernel, key gathering) compile in milliseconds to a few seconds
    /// on first use as before. Returns the number of tensor-core kernels made ready.
    /// </summary>
    public int WarmUp<T>(IEnumerable<AttentionShape> shapes, IProgress<WarmUpProgress>? progress = null, int maxParallelism = 1)
        where T : unmanaged
    {
        Check.DType<T>("T");
        ArgumentNullException.ThrowIfNull(shapes);
        if (maxParallelism < 1)
            throw new ArgumentOutOfRangeException(nameof(maxParallelism), maxParallelism, $"{nameof(maxParallelism)}: expected at least 1, got {maxParallelism}");
        var problems = shapes.Select((s, i) => Problem(s, $"shapes[{i}]")).ToList();
        var elem = DTypes.Of<T>() switch
        {
            DType.BFloat16 => ElemKind.BFloat16,
            DType.Float16 => ElemKind.Float16,
            _ => ElemKind.Float32,
        };
        return KernelWarmUp.Run(Accelerator, LaunchOptions, problems, elem, maxParallelism, progress is null ? null : new Relay(progress)).Count;
    }

    /// <summary>Reports on the warming thread, in order (System.Progress would post to a synchronisation context).</summary>
    private sealed class Relay(IProgress<WarmUpProgress> target) : IProgress<KernelWarmUp.Step>
    {
        public void Report(KernelWarmUp.Step s) => target.Report(new WarmUpProgress(s.Done, s.Total, s.Kernel, s.FromDisk));
    }

    /// <summary>Tests: the problem a shape describes.</summary>
    internal FwdParams ProblemOf(AttentionShape shape) => Problem(shape, "shape");

    /// <summary>A contiguous (B, L, H, D) problem of this shape, as a call with such tensors would describe it.</summary>
    private static FwdParams Problem(AttentionShape s, string name)
    {
        ArgumentNullException.ThrowIfNull(s, name);
        foreach (var (value, what) in new[] { (s.Batch, "Batch"), (s.SeqQ, "SeqQ"), (s.SeqK, "SeqK"), (s.Heads, "Heads"), (s.KvHeads, "KvHeads") })
            if (value < (what is "Heads" or "KvHeads" ? 1 : 0))
                throw new ArgumentOutOfRangeException(name, $"{name}: expected {what} ≥ {(what is "Heads" or "KvHeads" ? 1 : 0)}, got {value}");
        var p = CommonParams(s.HeadDim, s.Heads, s.KvHeads, s.Scale, s.Softcap, s.IsCausal);
        long d = s.HeadDim;
        (p.Batch, p.SeqQ, p.SeqK) = (s.Batch, s.SeqQ, s.SeqK);
        (p.QStrideB, p.QStrideL, p.QStrideH) = ((long)s.SeqQ * s.Heads * d, s.Heads * d, d);
        (p.KStrideB, p.KStrideL, p.KStrideH) = ((long)s.SeqK * s.KvHeads * d, s.KvHeads * d, d);
        (p.VStrideB, p.VStrideL, p.VStrideH) = (p.KStrideB, p.KStrideL, p.KStrideH);
        (p.OStrideB, p.OStrideL, p.OStrideH) = (p.QStrideB, p.QStrideL, p.QStrideH);
        if (s.Mask != OperandForm.None)
        {
            long rows = s.Mask == OperandForm.PerKey ? 1 : s.SeqQ;
            (p.HasMask, p.MaskElemBytes) = (1, 1);
            (p.MaskStrideB, p.MaskStrideH, p.MaskStrideQ) = (s.Heads * rows * s.SeqK, rows * s.SeqK, s.Mask == OperandForm.PerKey ? 0 : s.SeqK);
        }
        if (s.Bias != OperandForm.None)
        {
            long rows = s.Bias == OperandForm.PerKey ? 1 : s.SeqQ;
            p.HasBias = 1;
            (p.BiasStrideB, p.BiasStrideH, p.BiasStrideQ) = (s.Heads * rows * s.SeqK, rows * s.SeqK, s.Bias == OperandForm.PerKey ? 0 : s.SeqK);
        }
        return p;
    }
}
