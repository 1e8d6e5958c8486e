using ILGPU;
using ILGPU.Runtime;
using FlashDmAttn.Api;
using FlashDmAttn.Kernels.Backward;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Validation;

namespace FlashDmAttn;

public sealed partial class AttentionBackend
{
    /// <summary>
    /// Gradients of <see cref="Forward{T}"/> (FlashAttention-2's backward): given the forward's inputs, its output and
    /// log-sum-exp, and the gradient of the output, returns dq, dk, dv, and dbias when a bias was given. Exactly the
    /// derivative of the forward as defined there: scale, softcap, bias after softcap, causal bottom-right, masks; masked
    /// entries and rows with no visible key get zero gradient. dk and dv are summed over the query heads of each kv head;
    /// dbias comes in the bias's own shape, summed over every dim it was broadcast along (a per-key bias (B, H, 1, Lk)
    /// gets its gradient without any Lq×Lk buffer); a bias broadcast over keys (key dim 1) shifts a row's scores alike,
    /// which the softmax ignores, and gets exactly 0. Gradient buffers must not share memory with the inputs or with each
    /// other (compared as byte ranges). A mask broadcast over queries walks only its visible keys, as the
    /// forward does. Blocks until the gradients are written.
    /// </summary>
    /// <param name="gradOutput">dO, (B, Lq, H, D).</param>
    /// <param name="output">The forward's output for these inputs, (B, Lq, H, D).</param>
    /// <param name="softmaxLse">The forward's log-sum-exp, (B, H, Lq) fp32 (its <c>softmaxLse</c> output).</param>
    /// <param name="deterministic">Repeated calls give bit-identical gradients. The backward kernels sum in a fixed
    /// order without atomics, so every call is deterministic.</param>
    /// <param name="gradQuery">Where to write dq (query's shape); allocated when null.</param>
    /// <param name="gradKey">Where to write dk (key's shape); allocated when null.</param>
    /// <param name="gradValue">Where to write dv (value's shape); allocated when null.</param>
    /// <param name="gradBias">Where to write dbias (the bias's shape); allocated when null and a bias is given.</param>
    public AttentionGradients<T> Backward<T>(DeviceTensor<T> gradOutput, DeviceTensor<T> query, DeviceTensor<T> key, DeviceTensor<T> value,
        DeviceTensor<T> output, DeviceTensor<float> softmaxLse,
        DeviceMask? attnMask = null, DeviceTensor<T>? attnBias = null, float? scale = null, bool isCausal = false,
        float? softcap = null, bool deterministic = false,
        DeviceTensor<T>? gradQuery = null, DeviceTensor<T>? gradKey = null, DeviceTensor<T>? gradValue = null, DeviceTensor<T>? gradBias = null)
        where T : unmanaged
    {
        var job = PrepareDense(gradOutput, query, key, value, output, softmaxLse, attnMask, attnBias, scale, isCausal, softcap,
            gradQuery, gradKey, gradValue, gradBias);
        return RunBackward(job, gradQuery, gradKey, gradValue, gradBias, null);
    }

    /// <summary>
    /// <see cref="Forward{T}"/> that keeps what its backward needs: the output, the log-sum-exp and the arguments
    /// (<see cref="SavedAttention{T}.Backward"/> then takes only dO). The arguments are referenced, not copied.
    /// </summary>
    public SavedAttention<T> ForwardForBackward<T>(DeviceTensor<T> query, DeviceTensor<T> key, DeviceTensor<T> value,
        DeviceMask? attnMask = null, DeviceTensor<T>? attnBias = null, float? scale = null, bool isCausal = false,
        float? softcap = null)
        where T : unmanaged
    {
        var (p, _) = ResolveDense(query, key, value, attnMask, attnBias, scale, isCausal, softcap);
        Check.Allocation<float>(Accelerator, [p.Batch, p.Heads, p.SeqQ], "softmaxLse (batch, heads, seqlen_q)", nameof(query));
        var lse = DeviceTensor<float>.Allocate(Accelerator, p.Batch, p.Heads, p.SeqQ);
        try
        {
            var o = Forward(query, key, value, attnMask, attnBias, scale, isCausal, softcap, softmaxLse: lse);
            return new SavedAttention<T>(this, query, key, value, attnMask, attnBias, scale, isCausal, softcap, o, lse);
        }
        catch
        {
            lse.Dispose();
            throw;
        }
    }

    /// <summary>Gradients of <see cref="ForwardQkvPacked{T}"/>: dq, dk, dv as slices of one packed (B, L, 3, H, D)
    /// gradient (<paramref name="gradQkv"/>, or allocated), plus dbias. See <see cref="Backward{T}"/>.</summary>
    public AttentionGradients<T> BackwardQkvPacked<T>(DeviceTensor<T> gradOutput, DeviceTensor<T> qkv, DeviceTensor<T> output,
        DeviceTensor<float> softmaxLse, DeviceMask? attnMask = null, DeviceTensor<T>? attnBias = null, float? scale = null,
        bool isCausal = false, float? softcap = null, bool deterministic = false,
        DeviceTensor<T>? gradQkv = null, DeviceTensor<T>? gradBias = null)
        where T : unmanaged
    {
        CheckPacked(qkv, 3, "(batch, seqlen, 3, heads, head_dim)", "the q/k/v dim", nameof(qkv));
        if (gradQkv is not null) CheckLike(gradQkv, qkv.Shape, nameof(gradQkv));
        var job = PrepareDense(gradOutput, Unpack(qkv, 0), Unpack(qkv, 1), Unpack(qkv, 2), output, softmaxLse, attnMask, attnBias,
            scale, isCausal, softcap, null, null, null, gradBias);
        CheckPackedGradient(job, gradQkv, nameof(gradQkv), gradBias);
        var packed = gradQkv?.Alias() ?? DeviceTensor<T>.Allocate(Accelerator, qkv.Shape.ToArray());
        return RunOwning(packed, gradQkv is null, () => RunBackward(job, Unpack(packed, 0), Unpack(packed, 1), Unpack(packed, 2), gradBias, packed));
    }

    /// <summary>Gradients of <see cref="ForwardKvPacked{T}"/>: dq, and dk, dv as slices of one packed (B, Lk, 2, Hkv, D)
    /// gradient (<paramref name="gradKv"/>, or allocated), plus dbias. See <see cref="Backward{T}"/>.</summary>
    public AttentionGradients<T> BackwardKvPacked<T>(DeviceTensor<T> gradOutput, DeviceTensor<T> query, DeviceTensor<T> kv,
        DeviceTensor<T> output, DeviceTensor<float> softmaxLse, DeviceMask? attnMask = null, DeviceTensor<T>? attnBias = null,
        float? scale = null, bool isCausal = false, float? softcap = null, bool deterministic = false,
        DeviceTensor<T>? gradQuery = null, DeviceTensor<T>? gradKv = null, DeviceTensor<T>? gradBias = null)
        where T : unmanaged
    {
        CheckPacked(kv, 2, "(batch, seqlen_k, 2, kv_heads, head_dim)", "the k/v dim", nameof(kv));
        if (gradKv is not null) CheckLike(gradKv, kv.Shape, nameof(gradKv));
        var job = PrepareDense(gradOutput, query, Unpack(kv, 0), Unpack(kv, 1), output, softmaxLse, attnMask, attnBias,
            scale, isCausal, softcap, gradQuery, null, null, gradBias);
        CheckPackedGradient(job, gradKv, nameof(gradKv), gradQuery, gradBias);
        var packed = gradKv?.Alias() ?? DeviceTensor<T>.Allocate(Accelerator, kv.Shape.ToArray());
        return RunOwning(packed, gradKv is null, () => RunBackward(job, gradQuery, Unpack(packed, 0), Unpack(packed, 1), gradBias, packed));
    }

    /// <summary>
    /// Gradients of <see cref="ForwardVarlen{T}"/>, with its layouts: dO and output (total_q, H, D), the LSE (H, total_q),
    /// dq (total_q, H, D), dk/dv like key/value — with <paramref name="blockTable"/> the paged cache's (num_blocks,
    /// page_size, Hkv, D), every row written (0 where no sequence's key lives). The pages of different sequences must
    /// be distinct (a page shared by two sequences would need its gradients summed). See <see cref="Backward{T}"/>.
    /// </summary>
    public AttentionGradients<T> BackwardVarlen<T>(DeviceTensor<T> gradOutput, DeviceTensor<T> query, DeviceTensor<T> key,
        DeviceTensor<T> value, DeviceTensor<T> output, DeviceTensor<float> softmaxLse,
        int[] cuSeqlensQ, int[] cuSeqlensK, int maxSeqlenQ, int maxSeqlenK,
        DeviceMask? attnMask = null, DeviceTensor<T>? attnBias = null, float? scale = null, bool isCausal = false,
        float? softcap = null, bool deterministic = false, int[,]? blockTable = null,
        DeviceTensor<T>? gradQuery = null, DeviceTensor<T>? gradKey = null, DeviceTensor<T>? gradValue = null, DeviceTensor<T>? gradBias = null)
        where T : unmanaged
    {
        var v = ResolveVarlen(ref query, ref key, ref value, cuSeqlensQ, cuSeqlensK, maxSeqlenQ, maxSeqlenK,
            attnMask, attnBias, scale, isCausal, softcap, blockTable);
        var p = v.P;
        long totalQ = v.TotalQ, h = p.Heads, d = p.HeadDim;
        if (blockTable is not null) CheckDistinctPages(blockTable, cuSeqlensK, p.PageSize);
        gradOutput = FlattenLive(gradOutput, nameof(gradOutput));
        output = FlattenLive(output, nameof(output));
        CheckLike(gradOutput, [totalQ, h, d], nameof(gradOutput));
        CheckLike(output, [totalQ, h, d], nameof(output));
        Check.NotNull(softmaxLse, nameof(softmaxLse));
        Check.Live(softmaxLse.IsDisposed, softmaxLse, nameof(softmaxLse));
        CheckLse(softmaxLse, [h, totalQ]);
        (p.WriteLse, p.LseStrideB, p.LseStrideH) = (1, 0, totalQ);
        bool paged = blockTable is not null;
        if (gradQuery is not null) gradQuery = FlattenLive(gradQuery, nameof(gradQuery));
        if (gradKey is not null && !paged) gradKey = FlattenLive(gradKey, nameof(gradKey));
        if (gradValue is not null && !paged) gradValue = FlattenLive(gradValue, nameof(gradValue));
        var job = new BackwardJob<T>(p, v.Rows, query, key, value, output, gradOutput, softmaxLse, attnMask, attnBias, v.SeqInfo);
        CheckGradients(job, gradQuery, gradKey, gradValue, gradBias);
        return RunBackward(job, gradQuery, gradKey, gradValue, gradBias, null);
    }

    /// <summary>A validated backward call: the forward problem and the tensors the kernels read.</summary>
    private sealed record BackwardJob<T>(FwdParams P, RowOperands Rows, DeviceTensor<T> Q, DeviceTensor<T> K, DeviceTensor<T> V,
        DeviceTensor<T> O, DeviceTensor<T> DO, DeviceTensor<float> Lse, DeviceMask? Mask, DeviceTensor<T>? Bias, int[]? SeqInfo)
        where T : unmanaged;

    private BackwardJob<T> PrepareDense<T>(DeviceTensor<T> gradOutput, DeviceTensor<T> query, DeviceTensor<T> key, DeviceTensor<T> value,
        DeviceTensor<T> output, DeviceTensor<float> softmaxLse, DeviceMask? attnMask, DeviceTensor<T>? attnBias,
        float? scale, bool isCausal, float? softcap,
        DeviceTensor<T>? gradQuery, DeviceTensor<T>? gradKey, DeviceTensor<T>? gradValue, DeviceTensor<T>? gradBias)
        where T : unmanaged
    {
        var (p, rows) = ResolveDense(query, key, value, attnMask, attnBias, scale, isCausal, softcap);
        long b = p.Batch, lq = p.SeqQ, h = p.Heads, d = p.HeadDim;
        CheckLike(gradOutput, [b, lq, h, d], nameof(gradOutput));
        CheckLike(output, [b, lq, h, d], nameof(output));
        Check.NotNull(softmaxLse, nameof(softmaxLse));
        Check.Live(softmaxLse.IsDisposed, softmaxLse, nameof(softmaxLse));
        CheckLse(softmaxLse, [b, h, lq]);
        (p.WriteLse, p.LseStrideB, p.LseStrideH) = (1, h * lq, lq);
        var job = new BackwardJob<T>(p, rows, query, key, value, output, gradOutput, softmaxLse, attnMask, attnBias, null);
        CheckGradients(job, gradQuery, gradKey, gradValue, gradBias);
        return job;
    }

    /// <summary>A tensor of exactly <paramref name="shape"/> on this accelerator, live, with a valid layout.</summary>
    private void CheckLike<T>(DeviceTensor<T>? t, ReadOnlySpan<long> shape, string name) where T : unmanaged
    {
        Check.NotNull(t, name);
        Check.Live(t!.IsDisposed, t, name);
        Check.Rank(t.Shape, shape.Length, Check.Dims(shape), name);
        for (int i = 0; i < shape.Length; i++)
            if (t.Shape[i] != shape[i])
                throw new ArgumentException($"{name}: expected shape {Check.Dims(shape)}, got {Check.Dims(t.Shape)}", name);
        CheckTensor(t, name);
    }

    /// <summary>Caller gradient buffers: the shape of what they are the gradient of, no overlapping elements; absent ones
    /// must be allocatable.</summary>
    private void CheckGradients<T>(BackwardJob<T> job, DeviceTensor<T>? dq, DeviceTensor<T>? dk, DeviceTensor<T>? dv, DeviceTensor<T>? dbias)
        where T : unmanaged
    {
        Check1(dq, job.Q, nameof(dq), "gradQuery", "query");
        Check1(dk, job.K, nameof(dk), "gradKey", "key");
        Check1(dv, job.V, nameof(dv), "gradValue", "value");
        if (job.Bias is null && dbias is not null)
            throw new ArgumentException("gradBias: expected null when no attnBias is given, got a tensor", "gradBias");
        if (job.Bias is not null)
            Check1(dbias, job.Bias, nameof(dbias), "gradBias", "attnBias");
        CheckApart(job, ("gradQuery", dq), ("gradKey", dk), ("gradValue", dv), ("gradBias", dbias));

        // The backward's fp32 scratch (dk/dv per query head, the bias gradient before its broadcast sums, D).
        var shape = new BwdParams { Forward = job.P };
        if (job.Bias is { } b)
            (shape.L.DbB, shape.L.DbH, shape.L.DbQ, shape.L.DbK) = ((int)b.Shape[0], (int)b.Shape[1], (int)b.Shape[2], (int)b.Shape[3]);
        Check.Allocation<float>(Accelerator, [Kernels.Planning.BackwardPlanner.ScratchFloats(shape, job.Lse.ElementCount)],
            "the backward's fp32 scratch (B, Lk, H, D) x 2 + the bias gradient's (B, H, rows, Lk)", "query");
        return;

        void Check1(DeviceTensor<T>? grad, DeviceTensor<T> of, string _, string name, string ofName)
        {
            if (grad is null)
            {
                Check.Allocation<T>(Accelerator, of.Shape.ToArray(), $"{name} (like {ofName})", ofName);
                return;
            }
            CheckLike(grad, of.Shape, name);
            Check.NoOverlap(grad.Shape, grad.Strides, name);
        }
    }

    /// <summary>A packed gradient given by the caller: whole elements, apart from every input and from the other gradients.</summary>
    private void CheckPackedGradient<T>(BackwardJob<T> job, DeviceTensor<T>? packed, string name, params DeviceTensor<T>?[] others)
        where T : unmanaged
    {
        if (packed is null) return;
        Check.NoOverlap(packed.Shape, packed.Strides, name);
        CheckApart(job, (name, packed), ("gradQuery", others.Length > 1 ? others[0] : null), ("gradBias", others[^1]));
    }

    /// <summary>
    /// Gradients are written while the inputs are read: a gradient's memory must be apart from q, k, v, the output, dO,
    /// the LSE, mask and bias, and from the other gradients (compared as byte ranges: gradients that interleave with an
    /// input inside one buffer are refused too).
    /// </summary>
    private static void CheckApart<T>(BackwardJob<T> job, params (string Name, DeviceTensor<T>? Tensor)[] writes) where T : unmanaged
    {
        int size = System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        (long, long)? Of(DeviceTensor<T> t) => Check.Extent(t.Data.Cast<byte>(), t.Shape, t.Strides, size);
        var reads = new List<(string, (long, long)?)>
        {
            ("query", Of(job.Q)), ("key", Of(job.K)), ("value", Of(job.V)), ("output", Of(job.O)), ("gradOutput", Of(job.DO)),
            ("softmaxLse", Check.Extent(job.Lse.Data.Cast<byte>(), job.Lse.Shape, job.Lse.Strides, sizeof(float))),
        };
        if (job.Mask is { } m) reads.Add(("attnMask", Check.Extent(m.Bytes, m.Shape, m.Strides, m.ElementBytes)));
        if (job.Bias is { } b) reads.Add(("attnBias", Of(b)));
        var written = new List<(string, (long, long)?)>();
        foreach (var (name, t) in writes)
        {
            if (t is null) continue;
            var extent = Of(t);
            foreach (var (otherName, other) in reads) Check.Apart(extent, name, other, otherName);
            foreach (var (otherName, other) in written) Check.Apart(extent, name, other, otherName);
            written.Add((name, extent));
        }
    }

    /// <summary>Runs <paramref name="run"/>; if it throws, disposes <paramref name="packed"/> when this call allocated it.</summary>
    private static AttentionGradients<T> RunOwning<T>(DeviceTensor<T> packed, bool owned, Func<AttentionGradients<T>> run) where T : unmanaged
    {
        try
        {
            return run();
        }
        catch
        {
            if (owned) packed.Dispose();
            throw;
        }
    }

    /// <summary>Live, then (B, L, H, D) flattened to (B·L, H, D) as the varlen entry points take it.</summary>
    private static DeviceTensor<T> FlattenLive<T>(DeviceTensor<T> t, string name) where T : unmanaged
    {
        Check.NotNull(t, name);
        Check.Live(t.IsDisposed, t, name);
        return FlattenBatch(t, name);
    }

    /// <summary>The gradient of a paged cache is written page by page: no page may hold keys of two sequences.</summary>
    private static void CheckDistinctPages(int[,] blockTable, int[] cuSeqlensK, int pageSize)
    {
        var seen = new Dictionary<int, (int Seq, int Slot)>();
        for (int s = 0; s < blockTable.GetLength(0); s++)
        {
            int used = pageSize == 0 ? 0 : (cuSeqlensK[s + 1] - cuSeqlensK[s] + pageSize - 1) / pageSize;
            for (int j = 0; j < used; j++)
                if (!seen.TryAdd(blockTable[s, j], (s, j)))
                {
                    var first = seen[blockTable[s, j]];
                    throw new ArgumentException($"blockTable: expected distinct pages for the backward, got block {blockTable[s, j]} at [{first.Seq}, {first.Slot}] and [{s}, {j}]", nameof(blockTable));
                }
        }
    }

    /// <summary>Allocates the gradients not given, fills in their strides, and launches. Everything is valid here.</summary>
    private AttentionGradients<T> RunBackward<T>(BackwardJob<T> job, DeviceTensor<T>? dq, DeviceTensor<T>? dk, DeviceTensor<T>? dv,
        DeviceTensor<T>? dbias, DeviceTensor<T>? packed) where T : unmanaged
    {
        var made = new List<DeviceTensor<T>>();
        try
        {
            var gq = dq?.Alias() ?? Own(made, job.Q.Shape);
            var gk = dk?.Alias() ?? Own(made, job.K.Shape);
            var gv = dv?.Alias() ?? Own(made, job.V.Shape);
            var gb = job.Bias is null ? null : dbias?.Alias() ?? Own(made, job.Bias.Shape);
            LaunchBackward(job, gq, gk, gv, gb);
            return new AttentionGradients<T>(gq, gk, gv, gb, packed);
        }
        catch
        {
            foreach (var t in made) t.Dispose();
            throw;
        }
    }

    private DeviceTensor<T> Own<T>(List<DeviceTensor<T>> made, ReadOnlySpan<long> shape) where T : unmanaged
    {
        var t = DeviceTensor<T>.Allocate(Accelerator, shape.ToArray());
        made.Add(t);
        return t;
    }

    /// <summary>Fills in the gradients' strides and launches.</summary>
    private void LaunchBackward<T>(BackwardJob<T> job, DeviceTensor<T> gq, DeviceTensor<T> gk, DeviceTensor<T> gv, DeviceTensor<T>? gb)
        where T : unmanaged
    {
        var f = job.P;
        (f.OStrideB, f.OStrideL, f.OStrideH) = Strides3(job.O);
        var p = new BwdParams { Forward = f };
        (p.L.DoStrideB, p.L.DoStrideL, p.L.DoStrideH) = Strides3(job.DO);
        (p.L.DqStrideB, p.L.DqStrideL, p.L.DqStrideH) = Strides3(gq);
        (p.L.DkStrideB, p.L.DkStrideL, p.L.DkStrideH) = Strides3(gk);
        (p.L.DvStrideB, p.L.DvStrideL, p.L.DvStrideH) = Strides3(gv);
        if (job.Rows.Mask is { } m)
        {
            (p.L.HasRowMask, p.L.RowMaskElemBytes, p.L.RowMaskHeadDiv) = (1, job.Rows.MaskElemBytes, m.HeadDiv);
            (p.L.RowMaskStrideB, p.L.RowMaskStrideH, p.L.RowMaskStrideQ) = (m.StrideB, m.StrideH, m.StrideQ);
        }
        if (job.Rows.Bias is { } rb)
        {
            (p.L.HasRowBias, p.L.RowBiasHeadDiv) = (1, rb.HeadDiv);
            (p.L.RowBiasStrideB, p.L.RowBiasStrideH, p.L.RowBiasStrideQ) = (rb.StrideB, rb.StrideH, rb.StrideQ);
        }
        if (gb is not null)
        {
            (p.L.DbB, p.L.DbH, p.L.DbQ, p.L.DbK) = ((int)gb.Shape[0], (int)gb.Shape[1], (int)gb.Shape[2], (int)gb.Shape[3]);
            (p.L.DbStrideB, p.L.DbStrideH, p.L.DbStrideQ, p.L.DbStrideK) = (gb.Strides[0], gb.Strides[1], gb.Strides[2], gb.Strides[3]);
        }
        if (f.Paged != 0)
        {
            // Page rows past every sequence's end get no gradient from the kernels.
            gk.Fill(default);
            gv.Fill(default);
        }

        var maskBytes = job.Mask is not null ? job.Mask.Bytes : default;
        var biasData = job.Bias is not null ? job.Bias.Data : default;
        using var seqInfo = job.SeqInfo is null ? null : UploadInts(job.SeqInfo);
        Dispatch.Backward(Accelerator, LaunchOptions, p, job.Q.Data, job.K.Data, job.V.Data, job.O.Data, job.DO.Data, biasData,
            maskBytes, job.Lse.Data, seqInfo?.View ?? default, gq.Data, gk.Data, gv.Data, gb?.Data ?? default);
    }

    private ILGPU.Runtime.MemoryBuffer1D<int, Stride1D.Dense> UploadInts(int[] data) => Accelerator.Allocate1D(data);

    /// <summary>(batch, row, head) strides of a (B, L, H, D) tensor, or (0, row, head) of a packed (total, H, D) one.</summary>
    private static (long, long, long) Strides3<T>(DeviceTensor<T> t) where T : unmanaged
        => t.Rank == 4 ? (t.Strides[0], t.Strides[1], t.Strides[2]) : (0, t.Strides[0], t.Strides[1]);
}
