using ILGPU;
using ILGPU.Runtime;
using FlashDmAttn.Api;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Validation;

namespace FlashDmAttn;

/// <summary>
/// Flash dynamic-mask attention on one ILGPU accelerator: the callable that <see cref="FlashDmAttention.Auto"/>
/// returns. Every method validates all of its arguments before anything is launched or written, then runs the
/// tiled online-softmax kernel for the tensors' dtype (float, Half or BFloat16; fp32 accumulation).
/// Methods are asynchronous with respect to the host except the variable-length one (it uploads cu_seqlens).
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

    /// <summary>Same as <see cref="Forward{T}"/>: the backend is callable with the main signature.</summary>
    public DeviceTensor<T> Invoke<T>(DeviceTensor<T> query, DeviceTensor<T> key, DeviceTensor<T> value,
        DeviceMask? attnMask = null, DeviceTensor<T>? attnBias = null, float? scale = null, bool isCausal = false,
        float? softcap = null, bool deterministic = false, DeviceTensor<T>? output = null, DeviceTensor<float>? softmaxLse = null)
        where T : unmanaged
        => Forward(query, key, value, attnMask, attnBias, scale, isCausal, softcap, deterministic, output, softmaxLse);

    /// <summary>
    /// Attention of query (B, Lq, H, D) over key/value (B, Lk, Hkv, D), H % Hkv == 0 (GQA/MQA).
    /// </summary>
    /// <param name="attnMask">(B|1, H|Hkv|1, Lq|1, Lk): nonzero = visible. Null: all visible.</param>
    /// <param name="attnBias">(B|1, H|Hkv|1, Lq|1, Lk) in the input dtype, added to the (softcapped) scores.</param>
    /// <param name="scale">Score scale; default 1/sqrt(D).</param>
    /// <param name="isCausal">Lower-triangular mask aligned to the bottom-right corner when Lq ≠ Lk.</param>
    /// <param name="softcap">c &gt; 0: s ← c·tanh(s/c) on the scaled score, before the bias.</param>
    /// <param name="deterministic">Accepted for API parity: the forward pass is always deterministic.</param>
    /// <param name="output">Where to write (B, Lq, H, D); allocated (and owned by the caller) when null.</param>
    /// <param name="softmaxLse">When given, receives the log-sum-exp (B, H, Lq) in fp32 (−∞ for rows with no visible key).</param>
    public DeviceTensor<T> Forward<T>(DeviceTensor<T> query, DeviceTensor<T> key, DeviceTensor<T> value,
        DeviceMask? attnMask = null, DeviceTensor<T>? attnBias = null, float? scale = null, bool isCausal = false,
        float? softcap = null, bool deterministic = false, DeviceTensor<T>? output = null, DeviceTensor<float>? softmaxLse = null)
        where T : unmanaged
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
        p.Batch = (int)b;
        p.SeqQ = checked((int)lq);
        p.SeqK = checked((int)lk);
        CheckTensor(query, nameof(query));
        CheckTensor(key, nameof(key));
        CheckTensor(value, nameof(value));
        (p.QStrideB, p.QStrideL, p.QStrideH) = (query.Strides[0], query.Strides[1], query.Strides[2]);
        (p.KStrideB, p.KStrideL, p.KStrideH) = (key.Strides[0], key.Strides[1], key.Strides[2]);
        (p.VStrideB, p.VStrideL, p.VStrideH) = (value.Strides[0], value.Strides[1], value.Strides[2]);
        ResolveMaskBias(ref p, attnMask, attnBias, b, h, hkv, lq, lk);
        if (output is not null)
        {
            Check.Rank(output.Shape, 4, "(batch, seqlen_q, heads, head_dim)", nameof(output));
            Check.Lengths(nameof(output), output.Shape, b, lq, h, d);
            CheckTensor(output, nameof(output));
            Check.NoOverlap(output.Shape, output.Strides, nameof(output));
        }
        if (softmaxLse is not null)
        {
            CheckLse(softmaxLse, [b, h, lq]);
            (p.WriteLse, p.LseStrideB, p.LseStrideH) = (1, h * lq, lq);
        }

        // Everything is valid: only now allocate and launch.
        var o = output ?? DeviceTensor<T>.Allocate(Accelerator, b, lq, h, d);
        (p.OStrideB, p.OStrideL, p.OStrideH) = (o.Strides[0], o.Strides[1], o.Strides[2]);
        Dispatch.Forward(Accelerator, Launch, p, query.Data, key.Data, value.Data, o.Data, attnBias?.Data ?? default,
            attnMask?.Bytes ?? default, softmaxLse?.Data ?? default, default);
        return o;
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

    private void ResolveMaskBias<T>(ref FwdParams p, DeviceMask? mask, DeviceTensor<T>? bias,
        long b, long h, long hkv, long lq, long lk) where T : unmanaged
    {
        if (mask is not null)
        {
            Check.Accelerator(mask.Accelerator, Accelerator, "attnMask");
            var m = BroadcastOperand.Resolve("attnMask", mask.Shape, mask.Strides, mask.Bytes.Length / mask.ElementBytes, b, h, hkv, lq, lk);
            (p.HasMask, p.MaskElemBytes, p.MaskHeadDiv) = (1, mask.ElementBytes, m.HeadDiv);
            (p.MaskStrideB, p.MaskStrideH, p.MaskStrideQ) = (m.StrideB, m.StrideH, m.StrideQ);
        }
        if (bias is not null)
        {
            Check.Accelerator(bias.Accelerator, Accelerator, "attnBias");
            var bb = BroadcastOperand.Resolve("attnBias", bias.Shape, bias.Strides, bias.Data.Length, b, h, hkv, lq, lk);
            (p.HasBias, p.BiasHeadDiv) = (1, bb.HeadDiv);
            (p.BiasStrideB, p.BiasStrideH, p.BiasStrideQ) = (bb.StrideB, bb.StrideH, bb.StrideQ);
        }
    }
}
