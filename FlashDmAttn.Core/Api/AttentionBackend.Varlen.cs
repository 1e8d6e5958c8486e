using ILGPU;
using ILGPU.Runtime;
using FlashDmAttn.Api;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Validation;

namespace FlashDmAttn;

public sealed partial class AttentionBackend
{
    /// <summary>
    /// Variable-length attention: the sequences of a batch packed without padding.
    /// query (total_q, H, D); key/value (total_k, Hkv, D), or with <paramref name="blockTable"/> a paged cache
    /// (num_blocks, page_size, Hkv, D) where key j of sequence b is row j % page_size of block blockTable[b, j / page_size].
    /// Sequence b owns query rows cuSeqlensQ[b]..cuSeqlensQ[b+1] and has cuSeqlensK[b+1] − cuSeqlensK[b] keys.
    /// Mask and bias have logical shape (B, H, maxSeqlenQ, maxSeqlenK), indexed by positions inside each sequence, with
    /// the broadcasts of <see cref="Forward{T}"/> (key dim 1 included).
    /// The LSE, when requested, is (H, total_q). Blocks until the kernel is done (the sequence table is uploaded).
    /// Returns a new tensor, or a non-owning view of <paramref name="output"/> when given.
    /// </summary>
    public DeviceTensor<T> ForwardVarlen<T>(DeviceTensor<T> query, DeviceTensor<T> key, DeviceTensor<T> value,
        int[] cuSeqlensQ, int[] cuSeqlensK, int maxSeqlenQ, int maxSeqlenK,
        DeviceMask? attnMask = null, DeviceTensor<T>? attnBias = null, float? scale = null, bool isCausal = false,
        float? softcap = null, bool deterministic = false, int[,]? blockTable = null,
        DeviceTensor<T>? output = null, DeviceTensor<float>? softmaxLse = null)
        where T : unmanaged
    {
        var v = ResolveVarlen(ref query, ref key, ref value, cuSeqlensQ, cuSeqlensK, maxSeqlenQ, maxSeqlenK,
            attnMask, attnBias, scale, isCausal, softcap, blockTable);
        var (p, rows) = (v.P, v.Rows);
        long totalQ = v.TotalQ, h = p.Heads, d = p.HeadDim;
        if (output is not null)
        {
            Check.Rank(output.Shape, 3, "(total_q, heads, head_dim)", nameof(output));
            if (output.Shape[0] != totalQ || output.Shape[1] != h || output.Shape[2] != d)
                throw new ArgumentException($"output: expected shape [{totalQ}, {h}, {d}], got {Check.Dims(output.Shape)}", nameof(output));
            CheckTensor(output, nameof(output));
            Check.NoOverlap(output.Shape, output.Strides, nameof(output));
        }
        else
        {
            Check.Allocation<T>(Accelerator, [totalQ, h, d], "output (total_q, heads, head_dim)", nameof(query));
        }
        if (softmaxLse is not null)
        {
            CheckLse(softmaxLse, [h, totalQ]);
            (p.WriteLse, p.LseStrideB, p.LseStrideH) = (1, 0, totalQ);
        }

        var o = output?.Alias() ?? DeviceTensor<T>.Allocate(Accelerator, totalQ, h, d);
        (p.OStrideB, p.OStrideL, p.OStrideH) = (0, o.Strides[0], o.Strides[1]);
        using var seqInfo = Accelerator.Allocate1D(v.SeqInfo);
        Launch(p, rows, query, key, value, o, attnMask, attnBias, softmaxLse, seqInfo.View);
        Accelerator.Synchronize();
        return o;
    }

    /// <summary>A validated variable-length problem: its parameters, row operands, sequence table
    /// ([cu_q | cu_k | block table]) and total query rows.</summary>
    private readonly record struct VarlenProblem(FwdParams P, RowOperands Rows, int[] SeqInfo, long TotalQ);

    /// <summary>Validates the operands of a variable-length call; q, k and v come back flattened to (total, H, D).</summary>
    private VarlenProblem ResolveVarlen<T>(ref DeviceTensor<T> query, ref DeviceTensor<T> key, ref DeviceTensor<T> value,
        int[] cuSeqlensQ, int[] cuSeqlensK, int maxSeqlenQ, int maxSeqlenK,
        DeviceMask? attnMask, DeviceTensor<T>? attnBias, float? scale, bool isCausal, float? softcap, int[,]? blockTable)
        where T : unmanaged
    {
        Check.DType<T>(nameof(query));
        Check.NotNull(query, nameof(query));
        Check.NotNull(key, nameof(key));
        Check.NotNull(value, nameof(value));
        Check.NotNullArray(cuSeqlensQ, nameof(cuSeqlensQ));
        Check.NotNullArray(cuSeqlensK, nameof(cuSeqlensK));
        Check.Live(query.IsDisposed, query, nameof(query));
        Check.Live(key.IsDisposed, key, nameof(key));
        Check.Live(value.IsDisposed, value, nameof(value));
        query = FlattenBatch(query, nameof(query));
        Check.Rank(query.Shape, 3, "(total_q, heads, head_dim)", nameof(query));
        long totalQ = query.Shape[0], h = query.Shape[1], d = query.Shape[2];
        bool paged = blockTable is not null;
        long hkv;
        if (paged)
        {
            Check.Rank(key.Shape, 4, "(num_blocks, page_size, kv_heads, head_dim) with a block table", nameof(key));
            Check.Rank(value.Shape, 4, "(num_blocks, page_size, kv_heads, head_dim) with a block table", nameof(value));
            hkv = key.Shape[2];
            Check.Lengths(nameof(key), key.Shape, key.Shape[0], key.Shape[1], hkv, d);
            Check.Lengths(nameof(value), value.Shape, key.Shape[0], key.Shape[1], hkv, d);
        }
        else
        {
            key = FlattenBatch(key, nameof(key));
            value = FlattenBatch(value, nameof(value));
            Check.Rank(key.Shape, 3, "(total_k, kv_heads, head_dim)", nameof(key));
            Check.Rank(value.Shape, 3, "(total_k, kv_heads, head_dim)", nameof(value));
            hkv = key.Shape[1];
            if (key.Shape[2] != d)
                throw new ArgumentException($"key: expected head_dim {d} like query, got {key.Shape[2]} in shape {Check.Dims(key.Shape)}", nameof(key));
            if (value.Shape[0] != key.Shape[0] || value.Shape[1] != hkv || value.Shape[2] != d)
                throw new ArgumentException($"value: expected shape [{key.Shape[0]}, {hkv}, {d}] like key, got {Check.Dims(value.Shape)}", nameof(value));
        }
        var p = CommonParams(d, h, hkv, scale, softcap, isCausal);
        CheckTensor(query, nameof(query));
        CheckTensor(key, nameof(key));
        CheckTensor(value, nameof(value));

        int batch = cuSeqlensQ.Length - 1;
        if (batch < 1)
            throw new ArgumentException($"cuSeqlensQ: expected batch + 1 >= 2 entries, got {cuSeqlensQ.Length}", nameof(cuSeqlensQ));
        if (cuSeqlensK.Length != cuSeqlensQ.Length)
            throw new ArgumentException($"cuSeqlensK: expected {cuSeqlensQ.Length} entries like cuSeqlensQ, got {cuSeqlensK.Length}", nameof(cuSeqlensK));
        int maxQ = CheckCumulative(cuSeqlensQ, totalQ, nameof(cuSeqlensQ), "query.Shape[0]");
        int maxK = CheckCumulative(cuSeqlensK, paged ? -1 : key.Shape[0], nameof(cuSeqlensK), "key.Shape[0]");
        if (maxSeqlenQ < maxQ)
            throw new ArgumentOutOfRangeException(nameof(maxSeqlenQ), $"maxSeqlenQ: expected at least the longest query sequence, {maxQ}, got {maxSeqlenQ}");
        if (maxSeqlenK < maxK)
            throw new ArgumentOutOfRangeException(nameof(maxSeqlenK), $"maxSeqlenK: expected at least the longest key sequence, {maxK}, got {maxSeqlenK}");

        int maxPages = 0, pageSize = 0;
        if (blockTable is not null)
        {
            pageSize = Check.IntSize(key.Shape[1], "page_size", nameof(key), key.Shape);
            long numBlocks = key.Shape[0];
            maxPages = blockTable.GetLength(1);
            if (blockTable.GetLength(0) != batch)
                throw new ArgumentException($"blockTable: expected {batch} rows (one per sequence), got {blockTable.GetLength(0)}", nameof(blockTable));
            for (int s = 0; s < batch; s++)
            {
                int len = cuSeqlensK[s + 1] - cuSeqlensK[s];
                if ((long)maxPages * pageSize < len)
                    throw new ArgumentException($"blockTable: sequence {s} has {len} keys, more than {maxPages} pages of {pageSize} hold", nameof(blockTable));
                int used = pageSize == 0 ? 0 : (len + pageSize - 1) / pageSize;
                for (int j = 0; j < used; j++)
                    if (blockTable[s, j] < 0 || blockTable[s, j] >= numBlocks)
                        throw new ArgumentOutOfRangeException(nameof(blockTable), $"blockTable: expected block indices in [0, {numBlocks}), got {blockTable[s, j]} at [{s}, {j}]");
            }
        }

        CheckGrid(batch, h, "sequences (cuSeqlensQ.Length - 1)", nameof(query), query.Shape);
        p.Batch = batch;
        p.SeqQ = maxSeqlenQ;
        p.SeqK = maxSeqlenK;
        p.Varlen = 1;
        p.SeqQUniform = Enumerable.Range(0, batch).All(s => cuSeqlensQ[s + 1] - cuSeqlensQ[s] == maxSeqlenQ) ? 1 : 0;
        (p.Paged, p.PageSize, p.MaxPages) = (paged ? 1 : 0, pageSize, maxPages);
        (p.QStrideB, p.QStrideL, p.QStrideH) = (0, query.Strides[0], query.Strides[1]);
        if (paged)
        {
            (p.KStrideB, p.KStrideL, p.KStrideH) = (key.Strides[0], key.Strides[1], key.Strides[2]);
            (p.VStrideB, p.VStrideL, p.VStrideH) = (value.Strides[0], value.Strides[1], value.Strides[2]);
        }
        else
        {
            (p.KStrideB, p.KStrideL, p.KStrideH) = (0, key.Strides[0], key.Strides[1]);
            (p.VStrideB, p.VStrideL, p.VStrideH) = (0, value.Strides[0], value.Strides[1]);
        }
        var rows = ResolveMaskBias(ref p, attnMask, attnBias, batch, h, hkv, maxSeqlenQ, maxSeqlenK, 2L * (batch + 1) + (long)batch * maxPages);
        var info = new int[2 * (batch + 1) + batch * maxPages];
        cuSeqlensQ.CopyTo(info, 0);
        cuSeqlensK.CopyTo(info, batch + 1);
        for (int s = 0; s < batch; s++)
            for (int j = 0; j < maxPages; j++)
                info[2 * (batch + 1) + s * maxPages + j] = blockTable![s, j];
        return new VarlenProblem(p, rows, info, totalQ);
    }

    /// <summary>(B, L, H, D) with batch-major rows → (B·L, H, D); other ranks pass through.</summary>
    private static DeviceTensor<T> FlattenBatch<T>(DeviceTensor<T> t, string name) where T : unmanaged
    {
        if (t.Rank != 4) return t;
        var s = t.Shape;
        var st = t.Strides;
        if ((Int128)s[0] * s[1] > long.MaxValue)
            throw new ArgumentOutOfRangeException(name, $"{name}: expected batch·seqlen to fit a long, got shape {Check.Dims(s)}");
        if (s[0] > 1 && st[0] != s[1] * st[1])
            throw new ArgumentException($"{name}: expected (total, heads, head_dim), or (batch, seqlen, heads, head_dim) whose batches are packed back to back; got shape {Check.Dims(s)} with strides {Check.Dims(st)}", name);
        return t.View(0, [s[0] * s[1], s[2], s[3]], [st[1], st[2], st[3]]);
    }

    /// <summary>Checks cu_seqlens (0 first, non-decreasing, last = total when known) and returns the longest length.</summary>
    private static int CheckCumulative(int[] cu, long total, string name, string totalName)
    {
        if (cu[0] != 0)
            throw new ArgumentException($"{name}: expected cu_seqlens to start at 0, got {cu[0]}", name);
        int max = 0;
        for (int i = 1; i < cu.Length; i++)
        {
            if (cu[i] < cu[i - 1])
                throw new ArgumentException($"{name}: expected non-decreasing cumulative lengths, got {cu[i - 1]} then {cu[i]} at index {i}", name);
            max = Math.Max(max, cu[i] - cu[i - 1]);
        }
        if (total >= 0 && cu[^1] != total)
            throw new ArgumentException($"{name}: expected the last entry to equal {totalName} = {total}, got {cu[^1]}", name);
        return max;
    }
}
