using ILGPU;
using ILGPU.Runtime;
using FlashDmAttn.Api;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Planning;
using FlashDmAttn.Kernels.Launch;
using FlashDmAttn.Kernels.TensorCore;
using FlashDmAttn.Validation;

namespace FlashDmAttn;

/// <summary>
/// Flash dynamic-mask attention on one ILGPU accelerator: the callable that <see cref="FlashDmAttention.Auto"/>
/// returns. Every method validates all of its arguments before anything is launched or written, then runs the
/// tiled online-softmax kernel for the tensors' dtype (float, Half or BFloat16; fp32 accumulation).
/// Methods are asynchronous with respect to the host except the variable-length and KV-cache ones (they upload the
/// sequence table).
/// </summary>
public sealed partial class AttentionBackend
{
    internal AttentionBackend(string name, Accelerator accelerator)
    {
        Name = name;
        Accelerator = accelerator;
    }

    /// <summary>"cuda", "opencl" or "cpu".</summary>
    public string Name { get; }

    /// <summary>The accelerator every tensor passed to this backend must live on.</summary>
    public Accelerator Accelerator { get; }

    public override string ToString() => $"{Name} ({Accelerator.Name})";

    /// <summary>
    /// Device memory held between calls by the buffers this library keeps on <see cref="Accelerator"/>: the backward's
    /// dS tiles (up to 2 GiB, or an eighth of the device's memory), the forward's split-KV partial outputs, key lists and
    /// gathered bias. Kept because allocating them in every call cost more than the kernels that use them.
    /// </summary>
    public long CachedScratchBytes => KernelCache.For(Accelerator).ScratchBytes;

    /// <summary>
    /// Frees the buffers of <see cref="CachedScratchBytes"/> once the work enqueued on the accelerator has finished; the
    /// next call that needs one allocates it again. Calls from other threads on this accelerator wait while it runs.
    /// </summary>
    public void ReleaseCachedScratch() => KernelCache.For(Accelerator).ReleaseScratch();

    /// <summary>Same as <see cref="Forward{T}"/>: the backend is callable with the main signature.</summary>
    public DeviceTensor<T> Invoke<T>(DeviceTensor<T> query, DeviceTensor<T> key, DeviceTensor<T> value,
        DeviceMask? attnMask = null, DeviceTensor<T>? attnBias = null, float? scale = null, bool isCausal = false,
        float? softcap = null, bool deterministic = false, DeviceTensor<T>? output = null, DeviceTensor<float>? softmaxLse = null)
        where T : unmanaged
        => Forward(query, key, value, attnMask, attnBias, scale, isCausal, softcap, deterministic, output, softmaxLse);

    /// <summary>
    /// Attention of query (B, Lq, H, D) over key/value (B, Lk, Hkv, D), H % Hkv == 0 (GQA/MQA).
    /// </summary>
    /// <param name="attnMask">(B|1, H|Hkv|1, Lq|1, Lk|1): nonzero = visible. Null: all visible. With key dim 1 a row
    /// sees all of its keys or none.</param>
    /// <param name="attnBias">(B|1, H|Hkv|1, Lq|1, Lk|1) in the input dtype, added to the (softcapped) scores. With key
    /// dim 1 it adds one constant per row: the output is unchanged and the row's LSE moves by it.</param>
    /// <param name="scale">Score scale; default 1/sqrt(D).</param>
    /// <param name="isCausal">Lower-triangular mask aligned to the bottom-right corner when Lq ≠ Lk.</param>
    /// <param name="softcap">c &gt; 0: s ← c·tanh(s/c) on the scaled score, before the bias.</param>
    /// <param name="deterministic">Accepted for API parity: the forward pass is always deterministic.</param>
    /// <param name="output">Where to write (B, Lq, H, D); allocated (and owned by the caller) when null.</param>
    /// <param name="softmaxLse">When given, receives the log-sum-exp (B, H, Lq) in fp32 (−∞ for rows with no visible key).</param>
    /// <returns>The output: a new tensor the caller owns, or, when <paramref name="output"/> was given, a view of it that
    /// does not own its buffer (disposing the view leaves <paramref name="output"/> usable).</returns>
    public DeviceTensor<T> Forward<T>(DeviceTensor<T> query, DeviceTensor<T> key, DeviceTensor<T> value,
        DeviceMask? attnMask = null, DeviceTensor<T>? attnBias = null, float? scale = null, bool isCausal = false,
        float? softcap = null, bool deterministic = false, DeviceTensor<T>? output = null, DeviceTensor<float>? softmaxLse = null)
        where T : unmanaged
    {
        var (p, rows) = ResolveDense(query, key, value, attnMask, attnBias, scale, isCausal, softcap);
        long b = p.Batch, lq = p.SeqQ, h = p.Heads, d = p.HeadDim;
        if (output is not null) CheckOutput(output, b, lq, h, d);
        else
        {
            Check.Allocation<T>(Accelerator, [b, lq, h, d], "output (batch, seqlen_q, heads, head_dim)", nameof(query));
        }
        if (softmaxLse is not null)
        {
            CheckLse(softmaxLse, [b, h, lq]);
            (p.WriteLse, p.LseStrideB, p.LseStrideH) = (1, h * lq, lq);
        }

        // Everything is valid: only now allocate and launch.
        var o = output?.Alias() ?? DeviceTensor<T>.Allocate(Accelerator, b, lq, h, d);
        (p.OStrideB, p.OStrideL, p.OStrideH) = (o.Strides[0], o.Strides[1], o.Strides[2]);
        Launch(p, rows, query, key, value, o, attnMask, attnBias, softmaxLse, default);
        return o;
    }

    /// <summary>Validates the operands of a dense call (q, k, v, mask, bias, score options) into a problem.</summary>
    private (FwdParams P, RowOperands Rows) ResolveDense<T>(DeviceTensor<T> query, DeviceTensor<T> key, DeviceTensor<T> value,
        DeviceMask? attnMask, DeviceTensor<T>? attnBias, float? scale, bool isCausal, float? softcap) where T : unmanaged
    {
        Check.DType<T>(nameof(query));
        Check.NotNull(query, nameof(query));
        Check.NotNull(key, nameof(key));
        Check.NotNull(value, nameof(value));
        Check.Rank(query.Shape, 4, "(batch, seqlen_q, heads, head_dim)", nameof(query));
        Check.Rank(key.Shape, 4, "(batch, seqlen_k, kv_heads, head_dim)", nameof(key));
        Check.Rank(value.Shape, 4, "(batch, seqlen_k, kv_heads, head_dim)", nameof(value));
        long b = query.Shape[0], lq = query.Shape[1], h = query.Shape[2], d = query.Shape[3];
        long lk = key.Shape[1], hkv = key.Shape[2];
        Check.Lengths(nameof(key), key.Shape, b, lk, hkv, d);
        Check.Lengths(nameof(value), value.Shape, b, lk, hkv, d);
        var p = CommonParams(d, h, hkv, scale, softcap, isCausal);
        p.Batch = Check.IntSize(b, "batch", nameof(query), query.Shape);
        p.SeqQ = Check.IntSize(lq, "seqlen_q", nameof(query), query.Shape);
        p.SeqK = Check.IntSize(lk, "seqlen_k", nameof(key), key.Shape);
        CheckGrid(b, h, "batch", nameof(query), query.Shape);
        CheckTensor(query, nameof(query));
        CheckTensor(key, nameof(key));
        CheckTensor(value, nameof(value));
        (p.QStrideB, p.QStrideL, p.QStrideH) = (query.Strides[0], query.Strides[1], query.Strides[2]);
        (p.KStrideB, p.KStrideL, p.KStrideH) = (key.Strides[0], key.Strides[1], key.Strides[2]);
        (p.VStrideB, p.VStrideL, p.VStrideH) = (value.Strides[0], value.Strides[1], value.Strides[2]);
        var rows = ResolveMaskBias(ref p, attnMask, attnBias, b, h, hkv, lq, lk, 0);
        return (p, rows);
    }

    /// <summary>Self-attention on a packed qkv of shape (B, L, 3, H, D).</summary>
    public DeviceTensor<T> ForwardQkvPacked<T>(DeviceTensor<T> qkv,
        DeviceMask? attnMask = null, DeviceTensor<T>? attnBias = null, float? scale = null, bool isCausal = false,
        float? softcap = null, bool deterministic = false, DeviceTensor<T>? output = null, DeviceTensor<float>? softmaxLse = null)
        where T : unmanaged
    {
        CheckPacked(qkv, 3, "(batch, seqlen, 3, heads, head_dim)", "the q/k/v dim", nameof(qkv));
        var (q, k, v) = (Unpack(qkv, 0), Unpack(qkv, 1), Unpack(qkv, 2));
        return Forward(q, k, v, attnMask, attnBias, scale, isCausal, softcap, deterministic, output, softmaxLse);
    }

    /// <summary>Attention of query (B, Lq, H, D) over a packed kv of shape (B, Lk, 2, Hkv, D).</summary>
    public DeviceTensor<T> ForwardKvPacked<T>(DeviceTensor<T> query, DeviceTensor<T> kv,
        DeviceMask? attnMask = null, DeviceTensor<T>? attnBias = null, float? scale = null, bool isCausal = false,
        float? softcap = null, bool deterministic = false, DeviceTensor<T>? output = null, DeviceTensor<float>? softmaxLse = null)
        where T : unmanaged
    {
        CheckPacked(kv, 2, "(batch, seqlen_k, 2, kv_heads, head_dim)", "the k/v dim", nameof(kv));
        return Forward(query, Unpack(kv, 0), Unpack(kv, 1), attnMask, attnBias, scale, isCausal, softcap, deterministic, output, softmaxLse);
    }

    /// <summary>A packed (B, L, n, H, D) tensor: dtype, rank 5, n in dim 2, layout and accelerator.</summary>
    private void CheckPacked<T>(DeviceTensor<T> packed, int count, string layout, string what, string name) where T : unmanaged
    {
        Check.DType<T>(name);
        Check.NotNull(packed, name);
        Check.Live(packed.IsDisposed, packed, name);
        Check.Rank(packed.Shape, 5, layout, name);
        Check.Dim(packed.Shape, 2, count, what, name);
        CheckTensor(packed, name);
    }

    private static DeviceTensor<T> Unpack<T>(DeviceTensor<T> packed, int which) where T : unmanaged
    {
        var s = packed.Shape;
        var st = packed.Strides;
        return packed.View(which * st[2], [s[0], s[1], s[3], s[4]], [st[0], st[1], st[3], st[4]]);
    }

    private static FwdParams CommonParams(long d, long h, long hkv, float? scale, float? softcap, bool isCausal)
    {
        Check.HeadDim(d, "query");
        if (h <= 0 || hkv <= 0 || h % hkv != 0)
            throw new ArgumentException($"key: expected kv_heads to divide heads = {h} (GQA/MQA), got kv_heads = {hkv}", "key");
        return new FwdParams
        {
            Heads = (int)h,
            KvHeads = (int)hkv,
            HeadGroup = (int)(h / hkv),
            HeadDim = (int)d,
            Scale = Check.Scale(scale, (int)d),
            Softcap = Check.Softcap(softcap),
            Causal = isCausal ? 1 : 0,
            MaskHeadDiv = 1,
            BiasHeadDiv = 1,
        };
    }

    private void CheckTensor<T>(DeviceTensor<T> t, string name) where T : unmanaged
    {
        Check.Live(t.IsDisposed, t, name);
        if (!t.Data.IsValid || t.Data.Length == 0)
            throw new ArgumentException($"{name}: expected a tensor backed by a buffer on '{Accelerator.Name}', got an empty view (shape {Check.Dims(t.Shape)})", name);
        Check.Accelerator(t.Accelerator, Accelerator, name);
        Check.Layout(t.Shape, t.Strides, t.Data.Length, name);
    }

    private void CheckLse(DeviceTensor<float> lse, long[] expected)
    {
        const string name = "softmaxLse";
        Check.Rank(lse.Shape, expected.Length, $"[{string.Join(", ", expected)}]", name);
        for (int i = 0; i < expected.Length; i++)
            Check.Dim(lse.Shape, i, expected[i], "size", name);
        if (!lse.IsContiguous)
            throw new ArgumentException($"{name}: expected a contiguous tensor, got strides {Check.Dims(lse.Strides)}", name);
        CheckTensor(lse, name);
    }

    /// <summary>The operands broadcast over keys, which the row epilogue applies after the attention kernels.</summary>
    private readonly record struct RowOperands(BroadcastOperand? Mask, int MaskElemBytes, BroadcastOperand? Bias);

    /// <summary>
    /// Puts mask and bias into <paramref name="p"/>, except those broadcast over keys, which are returned for the
    /// epilogue. <paramref name="prefixInts"/>: ints of the sequence table ahead of a key list (varlen).
    /// </summary>
    private RowOperands ResolveMaskBias<T>(ref FwdParams p, DeviceMask? mask, DeviceTensor<T>? bias,
        long b, long h, long hkv, long lq, long lk, long prefixInts) where T : unmanaged
    {
        BroadcastOperand? rowMask = null, rowBias = null;
        int maskBytes = 0;
        if (mask is not null)
        {
            Check.Live(mask.IsDisposed, mask, "attnMask");
            Check.Accelerator(mask.Accelerator, Accelerator, "attnMask");
            var m = BroadcastOperand.Resolve("attnMask", mask.Shape, mask.Strides, mask.Bytes.Length / mask.ElementBytes, b, h, hkv, lq, lk);
            if (m.KeyBroadcast)
            {
                (rowMask, maskBytes) = (m, mask.ElementBytes);
            }
            else
            {
                (p.HasMask, p.MaskElemBytes, p.MaskHeadDiv) = (1, mask.ElementBytes, m.HeadDiv);
                (p.MaskStrideB, p.MaskStrideH, p.MaskStrideQ) = (m.StrideB, m.StrideH, m.StrideQ);
            }
        }
        if (bias is not null)
        {
            Check.Live(bias.IsDisposed, bias, "attnBias");
            Check.Accelerator(bias.Accelerator, Accelerator, "attnBias");
            var bb = BroadcastOperand.Resolve("attnBias", bias.Shape, bias.Strides, bias.Data.Length, b, h, hkv, lq, lk);
            if (bb.KeyBroadcast)
            {
                rowBias = bb;
            }
            else
            {
                (p.HasBias, p.BiasHeadDiv) = (1, bb.HeadDiv);
                (p.BiasStrideB, p.BiasStrideH, p.BiasStrideQ) = (bb.StrideB, bb.StrideH, bb.StrideQ);
            }
        }
        CheckKeyLists<T>(p, mask, b, h, lk, prefixInts);
        return new RowOperands(rowMask, maskBytes, rowBias);
    }

    /// <summary>
    /// A mask broadcast over queries (with no bias, or one broadcast over queries too) is turned into per-row key lists
    /// of int indices, (2·Lk + 1) ints per mask row, and such a bias into (B, H, Lk) copies: both must be int-addressable.
    /// </summary>
    private static void CheckKeyLists<T>(in FwdParams p, DeviceMask? mask, long b, long h, long lk, long prefixInts) where T : unmanaged
    {
        // The planner's own decision and table size (PlanGather), with the call's seqInfo prefix added.
        if (ForwardPlanner.PlanGather(p, 0) is not { } gather) return;
        long maskRows = gather.Rows;
        Int128 ints = prefixInts + (Int128)gather.TableLength;
        if (ints > int.MaxValue)
            throw new ArgumentOutOfRangeException("attnMask", $"attnMask: a mask broadcast over queries is listed as {maskRows} rows of 2·{lk} + 1 key indices; expected at most {int.MaxValue} ints, got {ints} (shape {Check.Dims(mask!.Shape)})");
        Int128 biasInts = ((Int128)b * h * lk * System.Runtime.CompilerServices.Unsafe.SizeOf<T>() + 3) / 4;
        if (p.HasBias != 0 && biasInts > int.MaxValue)
            throw new ArgumentOutOfRangeException("attnBias", $"attnBias: a bias broadcast over queries with such a mask is copied into key-list order, {b}·{h}·{lk} elements; expected at most {int.MaxValue} ints of them, got {biasInts}");
    }

    /// <summary>The kernels index (batch, head) pairs with an int; see <see cref="Check.BatchHeads"/>.</summary>
    private static void CheckGrid(long batch, long heads, string batchWhat, string name, ReadOnlySpan<long> shape)
        => Check.BatchHeads(batch, heads, int.MaxValue, batchWhat, name, shape);

    /// <summary>
    /// Runs the attention kernels on the operands in <paramref name="p"/>, then the row epilogue for those broadcast over
    /// keys. <paramref name="seqInfo"/>: the varlen sequence table (empty for dense calls).
    /// </summary>
    private void Launch<T>(in FwdParams p, RowOperands rows, DeviceTensor<T> q, DeviceTensor<T> k, DeviceTensor<T> v,
        DeviceTensor<T> o, DeviceMask? mask, DeviceTensor<T>? bias, DeviceTensor<float>? lse, ArrayView<int> seqInfo)
        where T : unmanaged
    {
        var maskBytes = p.HasMask != 0 ? mask!.Bytes : default;
        var biasData = p.HasBias != 0 ? bias!.Data : default;
        Dispatch.Forward(Accelerator, LaunchOptions, p, q.Data, k.Data, v.Data, o.Data, biasData, maskBytes, lse?.Data ?? default, seqInfo);

        // A key-broadcast bias leaves the output as it is: with no LSE requested there is nothing to do for it.
        bool biasRows = rows.Bias is not null && p.WriteLse != 0;
        if (rows.Mask is null && !biasRows) return;
        var rp = p;
        (rp.HasMask, rp.HasBias) = (0, 0);
        if (rows.Mask is { } m)
        {
            (rp.HasMask, rp.MaskElemBytes, rp.MaskHeadDiv) = (1, rows.MaskElemBytes, m.HeadDiv);
            (rp.MaskStrideB, rp.MaskStrideH, rp.MaskStrideQ) = (m.StrideB, m.StrideH, m.StrideQ);
        }
        if (rows.Bias is { } bb && biasRows)
        {
            (rp.HasBias, rp.BiasHeadDiv) = (1, bb.HeadDiv);
            (rp.BiasStrideB, rp.BiasStrideH, rp.BiasStrideQ) = (bb.StrideB, bb.StrideH, bb.StrideQ);
        }
        RowBroadcast.Apply(Accelerator, rp, o.Data, rows.Mask is null ? default : mask!.Bytes,
            rp.HasBias != 0 ? bias!.Data : default, lse?.Data ?? default, seqInfo, LaunchOptions.DiskCache);
    }

    /// <summary>A caller's (B, Lq, H, D) output: rank, lengths, dtype and accelerator, no overlapping elements.</summary>
    private void CheckOutput<T>(DeviceTensor<T> output, long b, long lq, long h, long d) where T : unmanaged
    {
        Check.Rank(output.Shape, 4, "(batch, seqlen_q, heads, head_dim)", nameof(output));
        Check.Lengths(nameof(output), output.Shape, b, lq, h, d);
        CheckTensor(output, nameof(output));
        Check.NoOverlap(output.Shape, output.Strides, nameof(output));
    }
}
