using ILGPU;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Cache;
using FlashDmAttn.Validation;

namespace FlashDmAttn;

public sealed partial class AttentionBackend
{
    /// <summary>
    /// Attention over a K/V cache, optionally appending new keys and values to it first, in one call (the counterpart
    /// of flash_attn_with_kvcache): the decoding step of generation. Sequence b attends over its first
    /// cacheSeqlens[b] + Lnew cache rows, those already there followed by the appended ones. It runs as the paged
    /// variable-length forward (<see cref="ForwardVarlen{T}"/>); a contiguous cache is one page per sequence.
    /// Blocks until the kernels are done (the sequence table is uploaded).
    /// </summary>
    /// <param name="query">(B, Lq, H, D); its batches packed back to back.</param>
    /// <param name="keyCache">(B, Lmax, Hkv, D), one contiguous stretch per sequence; or, with
    /// <paramref name="blockTable"/>, a paged cache (num_blocks, page_size, Hkv, D). H % Hkv == 0 (GQA/MQA).</param>
    /// <param name="valueCache">The same shape as <paramref name="keyCache"/>.</param>
    /// <param name="cacheSeqlens">(B): the rows already in each sequence's cache, before the append. Not changed by the
    /// call: after it, the caller advances each entry by Lnew.</param>
    /// <param name="keyNew">(B, Lnew, Hkv, D), or null (with <paramref name="valueNew"/>) to append nothing: written into
    /// the cache at positions cacheSeqlens[b] .. cacheSeqlens[b] + Lnew − 1 of sequence b before attending. Only those
    /// rows of the caches are written.</param>
    /// <param name="valueNew">(B, Lnew, Hkv, D) like <paramref name="keyNew"/>: both or neither.</param>
    /// <param name="blockTable">(B, max_pages): the cache blocks of each sequence, in order; position j of sequence b is
    /// row j % page_size of block blockTable[b, j / page_size]. Null for a contiguous cache.</param>
    /// <param name="attnMask">Logical shape (B, H, Lq, capacity) over cache positions, capacity = Lmax (contiguous) or
    /// max_pages·page_size (paged), with the broadcasts of <see cref="Forward{T}"/>; positions past a sequence's length
    /// are not read.</param>
    /// <param name="attnBias">(B, H, Lq, capacity) like <paramref name="attnMask"/>, in the input dtype.</param>
    /// <param name="scale">Score scale; default 1/sqrt(D).</param>
    /// <param name="isCausal">Query i sees cache position j iff j ≤ i + len_b − Lq, len_b = cacheSeqlens[b] + Lnew
    /// (bottom-right aligned: the queries are the last Lq positions of the sequence).</param>
    /// <param name="softcap">c &gt; 0: s ← c·tanh(s/c) on the scaled score, before the bias.</param>
    /// <param name="output">Where to write (B, Lq, H, D), batches packed back to back; allocated (and owned by the caller)
    /// when null.</param>
    /// <param name="softmaxLse">When given, receives the log-sum-exp (B, H, Lq) in fp32 (−∞ for rows with no visible key).</param>
    /// <returns>The output: a new tensor the caller owns, or, when <paramref name="output"/> was given, a view of it that
    /// does not own its buffer.</returns>
    public DeviceTensor<T> ForwardWithKvCache<T>(DeviceTensor<T> query, DeviceTensor<T> keyCache, DeviceTensor<T> valueCache,
        int[] cacheSeqlens, DeviceTensor<T>? keyNew = null, DeviceTensor<T>? valueNew = null, int[,]? blockTable = null,
        DeviceMask? attnMask = null, DeviceTensor<T>? attnBias = null, float? scale = null, bool isCausal = false,
        float? softcap = null, DeviceTensor<T>? output = null, DeviceTensor<float>? softmaxLse = null)
        where T : unmanaged
    {
        var c = ResolveKvCache(query, keyCache, valueCache, cacheSeqlens, keyNew, valueNew, blockTable);

        // The attention is the paged varlen problem over each sequence's length after the append; its checks (mask and
        // bias among them) run before the append, so a rejected call writes nothing.
        var (q, k, v) = (query, keyCache, valueCache);
        var vp = ResolveVarlen(ref q, ref k, ref v, c.CuQ, c.CuK, c.SeqQ, c.Capacity,
            attnMask, attnBias, scale, isCausal, softcap, c.Table);
        var p = vp.P;
        long b = c.Batch, lq = c.SeqQ, h = p.Heads, d = p.HeadDim;
        if (output is not null)
        {
            CheckOutput(output, b, lq, h, d);
            FlattenBatch(output, nameof(output));
        }
        else
        {
            Check.Allocation<T>(Accelerator, [b, lq, h, d], "output (batch, seqlen_q, heads, head_dim)", nameof(query));
        }
        if (softmaxLse is not null)
        {
            // The kernels index the LSE as b·StrideB + h·StrideH + (b·Lq + i) in a varlen call (the query rows of
            // sequence b start at b·Lq): StrideB = (H − 1)·Lq and StrideH = Lq make that the (B, H, Lq) layout.
            CheckLse(softmaxLse, [b, h, lq]);
            (p.WriteLse, p.LseStrideB, p.LseStrideH) = (1, (h - 1) * lq, lq);
        }

        // Everything is valid: only now allocate, append and launch.
        using var seqInfo = Accelerator.Allocate1D(vp.SeqInfo);
        var o = output?.Alias() ?? DeviceTensor<T>.Allocate(Accelerator, b, lq, h, d);
        var flat = FlattenBatch(o, nameof(output));
        (p.OStrideB, p.OStrideL, p.OStrideH) = (0, flat.Strides[0], flat.Strides[1]);
        if (c.NewRows > 0)
            Append(c, keyCache, valueCache, keyNew!, valueNew!, seqInfo.View);
        Launch(p, vp.Rows, q, k, v, flat, attnMask, attnBias, softmaxLse, seqInfo.View);
        Accelerator.Synchronize();
        return o;
    }

    /// <summary>
    /// A validated cache problem as the paged varlen forward takes it: cu_seqlens of the queries (Lq each) and of the
    /// keys (each sequence's length after the append), the block table (one page per sequence for a contiguous cache),
    /// and the sizes the append needs.
    /// </summary>
    private readonly record struct KvCacheProblem(int Batch, int SeqQ, int NewRows, int Capacity, int PageSize,
        int[] CuQ, int[] CuK, int[,] Table);

    /// <summary>
    /// Checks the arguments that <see cref="ResolveVarlen{T}"/> would otherwise report under its own names (key, value,
    /// cuSeqlensK, maxSeqlenK) and those it does not know (cacheSeqlens, keyNew, valueNew, where appended rows land).
    /// </summary>
    private KvCacheProblem ResolveKvCache<T>(DeviceTensor<T> query, DeviceTensor<T> keyCache, DeviceTensor<T> valueCache,
        int[] cacheSeqlens, DeviceTensor<T>? keyNew, DeviceTensor<T>? valueNew, int[,]? blockTable) where T : unmanaged
    {
        Check.DType<T>(nameof(query));
        Check.NotNull(query, nameof(query));
        Check.NotNull(keyCache, nameof(keyCache));
        Check.NotNull(valueCache, nameof(valueCache));
        if (cacheSeqlens is null)
            throw new ArgumentNullException(nameof(cacheSeqlens), "cacheSeqlens: expected an int[] of one cache length per sequence, got null");
        if ((keyNew is null) != (valueNew is null))
        {
            string missing = keyNew is null ? nameof(keyNew) : nameof(valueNew), other = keyNew is null ? nameof(valueNew) : nameof(keyNew);
            throw new ArgumentNullException(missing, $"{missing}: expected a tensor, since {other} is given (new keys and values come together), got null");
        }

        Check.Rank(query.Shape, 4, "(batch, seqlen_q, heads, head_dim)", nameof(query));
        long b = query.Shape[0], lq = query.Shape[1], h = query.Shape[2], d = query.Shape[3];
        if (b < 1)
            throw new ArgumentException($"query: expected batch >= 1, got {b} in shape {Check.Dims(query.Shape)}", nameof(query));
        if ((Int128)b * lq > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(query), $"query: expected batch·seqlen_q at most {int.MaxValue} (query rows are numbered with an int), got {b}·{lq} in shape {Check.Dims(query.Shape)}");
        bool paged = blockTable is not null;
        string layout = paged ? "(num_blocks, page_size, kv_heads, head_dim) with a block table" : "(batch, max_seqlen, kv_heads, head_dim)";
        Check.Rank(keyCache.Shape, 4, layout, nameof(keyCache));
        Check.Rank(valueCache.Shape, 4, layout, nameof(valueCache));
        long hkv = keyCache.Shape[2];
        Check.HeadDim(d, nameof(query));
        if (keyCache.Shape[3] != d)
            throw new ArgumentException($"keyCache: expected head_dim {d} like query, got {keyCache.Shape[3]} in shape {Check.Dims(keyCache.Shape)}", nameof(keyCache));
        if (hkv <= 0 || h % hkv != 0)
            throw new ArgumentException($"keyCache: expected kv_heads to divide heads = {h} (GQA/MQA), got kv_heads = {hkv} in shape {Check.Dims(keyCache.Shape)}", nameof(keyCache));
        if (!paged) Check.Dim(keyCache.Shape, 0, b, "batch like query", nameof(keyCache));
        Check.Lengths(nameof(valueCache), valueCache.Shape, keyCache.Shape[0], keyCache.Shape[1], hkv, d);
        int pageSize = Check.IntSize(keyCache.Shape[1], paged ? "page_size" : "max_seqlen", nameof(keyCache), keyCache.Shape);

        long lnew = 0;
        if (keyNew is not null)
        {
            Check.Rank(keyNew.Shape, 4, "(batch, seqlen_new, kv_heads, head_dim)", nameof(keyNew));
            Check.Rank(valueNew!.Shape, 4, "(batch, seqlen_new, kv_heads, head_dim)", nameof(valueNew));
            lnew = keyNew.Shape[1];
            Check.Lengths(nameof(keyNew), keyNew.Shape, b, lnew, hkv, d);
            Check.Lengths(nameof(valueNew), valueNew.Shape, b, lnew, hkv, d);
        }

        long capacity = pageSize;
        int maxPages = 1;
        if (blockTable is not null)
        {
            if (blockTable.GetLength(0) != b)
                throw new ArgumentException($"blockTable: expected {b} rows (one per sequence, like query's batch), got {blockTable.GetLength(0)}", nameof(blockTable));
            maxPages = blockTable.GetLength(1);
            capacity = (long)maxPages * pageSize;
            if (capacity > int.MaxValue)
                throw new ArgumentOutOfRangeException(nameof(blockTable), $"blockTable: expected max_pages·page_size at most {int.MaxValue} (cache positions are numbered with an int), got {maxPages}·{pageSize}");
        }
        if (lnew > capacity)
            throw new ArgumentException($"keyNew: expected at most the cache's {capacity} positions per sequence as new rows, got {lnew} in shape {Check.Dims(keyNew!.Shape)}", nameof(keyNew));
        if (cacheSeqlens.Length != b)
            throw new ArgumentException($"cacheSeqlens: expected {b} entries (one per sequence, like query's batch), got {cacheSeqlens.Length}", nameof(cacheSeqlens));
        long totalK = 0;
        for (int s = 0; s < b; s++)
        {
            if (cacheSeqlens[s] < 0 || cacheSeqlens[s] > capacity - lnew)
                throw new ArgumentOutOfRangeException(nameof(cacheSeqlens), $"cacheSeqlens: expected entries in [0, {capacity - lnew}] (a cache of {capacity} positions per sequence, {lnew} new rows appended), got {cacheSeqlens[s]} at index {s}");
            totalK += cacheSeqlens[s] + lnew;
        }
        if (totalK > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(cacheSeqlens), $"cacheSeqlens: expected the sequences' lengths after the append to total at most {int.MaxValue} (cu_seqlens are ints), got {totalK}");

        CheckTensor(keyCache, nameof(keyCache));
        CheckTensor(valueCache, nameof(valueCache));
        if (keyNew is not null)
        {
            CheckTensor(keyNew, nameof(keyNew));
            CheckTensor(valueNew!, nameof(valueNew));
            CheckAppend(keyCache, valueCache, keyNew, valueNew!, cacheSeqlens, (int)lnew, blockTable, pageSize);
        }

        int batch = (int)b, seqQ = (int)lq;
        var cuQ = new int[batch + 1];
        var cuK = new int[batch + 1];
        for (int s = 0; s < batch; s++)
        {
            cuQ[s + 1] = cuQ[s] + seqQ;
            cuK[s + 1] = cuK[s] + cacheSeqlens[s] + (int)lnew;
        }
        // A contiguous cache is a paged one whose page is a whole sequence: block b of (B, Lmax, Hkv, D) is sequence b.
        var table = blockTable ?? new int[batch, 1];
        if (blockTable is null)
            for (int s = 0; s < batch; s++) table[s, 0] = s;
        return new KvCacheProblem(batch, seqQ, (int)lnew, (int)capacity, pageSize, cuQ, cuK, table);
    }

    /// <summary>
    /// The append copies keyNew/valueNew into the caches: their memory must be apart from the caches' (as byte ranges),
    /// and in a paged cache no two new rows may land on one cache row (a block listed twice in the appended stretch).
    /// Block indices themselves are checked with the rest of the table by <see cref="ResolveVarlen{T}"/>.
    /// </summary>
    private static void CheckAppend<T>(DeviceTensor<T> keyCache, DeviceTensor<T> valueCache, DeviceTensor<T> keyNew, DeviceTensor<T> valueNew,
        int[] cacheSeqlens, int lnew, int[,]? blockTable, int pageSize) where T : unmanaged
    {
        int size = System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        (long, long)? Of(DeviceTensor<T> t) => Check.Extent(t.Data.Cast<byte>(), t.Shape, t.Strides, size);
        var (kc, vc, kn, vn) = (Of(keyCache), Of(valueCache), Of(keyNew), Of(valueNew));
        Check.Apart(kc, nameof(keyCache), kn, nameof(keyNew));
        Check.Apart(kc, nameof(keyCache), vn, nameof(valueNew));
        Check.Apart(vc, nameof(valueCache), kn, nameof(keyNew));
        Check.Apart(vc, nameof(valueCache), vn, nameof(valueNew));
        if (blockTable is null || lnew == 0) return;

        // Each block's rows are claimed by the first (sequence, position) that appends there. A block index outside the
        // cache is left to the table check (it reports it by its place in the table).
        var claimed = new Dictionary<long, (int Seq, int Pos)>();
        long blocks = keyCache.Shape[0];
        for (int s = 0; s < cacheSeqlens.Length; s++)
            for (int pos = cacheSeqlens[s]; pos < cacheSeqlens[s] + lnew; pos++)
            {
                int block = blockTable[s, pos / pageSize];
                if (block < 0 || block >= blocks) continue;
                long row = (long)block * pageSize + pos % pageSize;
                if (claimed.TryGetValue(row, out var first))
                    throw new ArgumentException($"blockTable: expected the appended positions of the sequences on distinct cache rows, got row {pos % pageSize} of block {block} for position {first.Pos} of sequence {first.Seq} and position {pos} of sequence {s}", nameof(blockTable));
                claimed.Add(row, (s, pos));
            }
    }

    /// <summary>Enqueues the append of keyNew/valueNew (validated) into the caches; only the element width matters to a copy.</summary>
    private void Append<T>(in KvCacheProblem c, DeviceTensor<T> keyCache, DeviceTensor<T> valueCache, DeviceTensor<T> keyNew,
        DeviceTensor<T> valueNew, ArrayView<int> seqInfo) where T : unmanaged
    {
        ReadOnlySpan<long> kc = keyCache.Strides, vc = valueCache.Strides, kn = keyNew.Strides, vn = valueNew.Strides;
        var a = new KvAppendArgs
        {
            Batch = c.Batch,
            NewRows = c.NewRows,
            KvHeads = (int)keyCache.Shape[2],
            HeadDim = (int)keyCache.Shape[3],
            PageSize = c.PageSize,
            MaxPages = c.Table.GetLength(1),
            CuKOffset = c.Batch + 1,
            TableOffset = 2 * (c.Batch + 1),
            KCacheStrideP = kc[0], KCacheStrideL = kc[1], KCacheStrideH = kc[2],
            VCacheStrideP = vc[0], VCacheStrideL = vc[1], VCacheStrideH = vc[2],
            KNewStrideB = kn[0], KNewStrideL = kn[1], KNewStrideH = kn[2],
            VNewStrideB = vn[0], VNewStrideL = vn[1], VNewStrideH = vn[2],
        };
        var disk = LaunchOptions.DiskCache;
        if (DTypes.Of<T>() == DType.Float32)
            KvAppendKernel.Launch(Accelerator, a, keyCache.Data.Cast<float>(), valueCache.Data.Cast<float>(),
                keyNew.Data.Cast<float>(), valueNew.Data.Cast<float>(), seqInfo, disk);
        else
            KvAppendKernel.Launch(Accelerator, a, keyCache.Data.Cast<ushort>(), valueCache.Data.Cast<ushort>(),
                keyNew.Data.Cast<ushort>(), valueNew.Data.Cast<ushort>(), seqInfo, disk);
    }
}
