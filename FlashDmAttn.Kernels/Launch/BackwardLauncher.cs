using ILGPU;
using ILGPU.Runtime;
using FlashDmAttn.Kernels.Backward;
using FlashDmAttn.Kernels.Caching;
using FlashDmAttn.Kernels.Masking;
using FlashDmAttn.Kernels.Numerics;
using FlashDmAttn.Kernels.Planning;

namespace FlashDmAttn.Kernels.Launch;

/// <summary>The buffers of one backward call; absent optional ones are empty views. Mask and bias are the call's
/// (also when broadcast over keys: the row fields of <see cref="BwdParams"/> say so).</summary>
internal readonly record struct BwdBuffers<TElem>(
    ArrayView<TElem> Q, ArrayView<TElem> K, ArrayView<TElem> V, ArrayView<TElem> O, ArrayView<TElem> DO,
    ArrayView<TElem> Bias, ArrayView<byte> Mask, ArrayView<float> Lse, ArrayView<int> SeqInfo,
    ArrayView<TElem> DQ, ArrayView<TElem> DK, ArrayView<TElem> DV, ArrayView<TElem> DBias)
    where TElem : unmanaged;

/// <summary>Plans a validated backward problem (<see cref="BackwardPlanner"/>) and executes the plan: D = rowsum(dO∘O),
/// the key lists when keys are gathered, the query-block and key-block kernels, then the reductions. Synchronises
/// before returning (its fp32 scratch is released).</summary>
internal static class BackwardLauncher
{
    public static BackwardPlan Plan<TElem, TCodec>(Accelerator accelerator, LaunchOptions options, in BwdParams p, in BwdBuffers<TElem> buffers,
        int keySlots = -1)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        var device = KernelCache.For(accelerator).Device(() => DeviceInfo.Of(accelerator, null));
        var elem = typeof(TCodec) == typeof(Bf16Codec) ? ElemKind.BFloat16 : typeof(TCodec) == typeof(Fp16Codec) ? ElemKind.Float16 : ElemKind.Float32;
        var facts = new BufferFacts(elem, Aligned16(accelerator, buffers), buffers.SeqInfo.IsValid ? checked((int)buffers.SeqInfo.Length) : 0);
        return BackwardPlanner.Plan(p, facts, device, options, keySlots);
    }

    /// <summary>q, k, v and dO start 16-byte aligned (asked only where the tensor-core backward may run: CUDA and CPU).</summary>
    private static bool Aligned16<TElem>(Accelerator accelerator, in BwdBuffers<TElem> b) where TElem : unmanaged
    {
        if (accelerator.AcceleratorType is not (AcceleratorType.Cuda or AcceleratorType.CPU)) return false;
        return Aligned(b.Q.Cast<byte>()) && Aligned(b.K.Cast<byte>()) && Aligned(b.V.Cast<byte>()) && Aligned(b.DO.Cast<byte>());

        static bool Aligned(ArrayView<byte> view)
            => view.IsValid && view.Length > 0 && (view.LoadEffectiveAddressAsPtr().ToInt64() & 15) == 0;
    }

    public static void Launch<TElem, TCodec>(Accelerator accelerator, LaunchOptions options, in BwdParams p, in BwdBuffers<TElem> buffers)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        var cache = KernelCache.For(accelerator);
        var disk = options.DiskCache;
        var plan = Plan<TElem, TCodec>(accelerator, options, p, buffers);
        var a = BwdArgs.From(p);
        a.F.TileQ = plan.Shape.TileQ;
        a.F.TileK = plan.Shape.TileK;
        a.DBias = (int)plan.DBias;
        a.DbRows = plan.DbRows;
        a.DbDirect = plan.DbDirect ? 1 : 0;
        a.KvDirect = plan.KvDirect ? 1 : 0;
        var f = p.Forward;
        long rowsTotal = (long)f.Batch * f.Heads * f.SeqQ;

        ArrayView<byte> dummy = cache.Dummy.View;
        var b = buffers;
        var bias = Or(b.Bias, dummy.Cast<TElem>());
        var lse = Or(b.Lse, dummy.Cast<float>());
        lock (cache.LaunchLock)
        {
            var seq = b.SeqInfo;
            var mask = b.Mask;
            if (plan.Gather is { } g)
            {
                seq = KeyGatherKernel.BuildTable(accelerator, g, ref a.F, b.Mask, b.SeqInfo, disk);
                if (plan.TensorCore is not null && options.BackwardDsTiles != false)
                {
                    // The dS tiles' key dim is the longest key list, not Lk: plan again with it (one small read back),
                    // unless the options ask for the query-block path, where the lists' lengths do not matter.
                    var counts = new int[g.Rows];
                    seq.SubView(a.F.GatherOffset, g.Rows).CopyToCPU(counts);
                    plan = Plan<TElem, TCodec>(accelerator, options, p, buffers, counts.Length == 0 ? 0 : counts.Max());
                }
            }
            // The D vector and the fp32 scratch (dk and dv per query head, the bias gradient before its reduction) are
            // the cache's, as the dS tiles are: freeing a per-call buffer would synchronise the device, and the backward,
            // like the forward, returns with its kernels enqueued. Each is zeroed in stream order.
            var dvec = Zeroed(accelerator, cache, b.Lse.Length, 6);
            long keyScratch = plan.KvDirect ? 1 : plan.KeyScratch;
            var dkh = Zeroed(accelerator, cache, keyScratch, 7);
            var dvh = Zeroed(accelerator, cache, keyScratch, 8);
            long dbLength = plan.DBias == DBiasMode.None || plan.DbDirect ? 1 : (long)f.Batch * f.Heads * plan.DbRows * plan.DbCols;
            var dbs = Zeroed(accelerator, cache, dbLength, 9);
            a.DsQTiles = plan.DsQTiles;
            a.DsKTiles = plan.DsKTiles;
            // The dS tiles (16-bit) and one flag per tile (set where the key blocks wrote the tile), sized once the
            // plan is final; kept by the accelerator's cache for the next call (up to the plan's scratch bound), as
            // an allocation and release of this size each call cost more than the dq kernel.
            var dsTiles = plan.DsTiles ? cache.Scratch(checked((int)(plan.DsBytes / sizeof(int))), slot: 4).Cast<ushort>() : dummy.Cast<ushort>();
            var dsFlags = plan.DsTiles ? cache.Scratch(checked((int)(plan.DsBytes / (sizeof(ushort) * TcBackwardTile.TileElems))), slot: 5) : dummy.Cast<int>();
            if (plan.DsTiles) dsFlags.MemSetToZero(accelerator.DefaultStream);
            // After the scratch is allocated: an observer that reads the device's memory sees the call's peak.
            options.BackwardObserver?.Invoke(plan);
            seq = Or(seq, dummy.Cast<int>());
            mask = Or(mask, dummy);
            int group = plan.Shape.GroupSize;

            if (rowsTotal > 0)
            {
                var rowDot = cache.GetOrAdd(("bwd-rowdot", typeof(TElem), typeof(TCodec)),
                    acc => CachedKernels.Launcher<Action<AcceleratorStream, KernelConfig, ArrayView<TElem>, ArrayView<TElem>,
                        ArrayView<int>, ArrayView<float>, BwdArgs>>(acc, disk, BackwardReduce.RowDot<TElem, TCodec>));
                rowDot(accelerator.DefaultStream, BackwardReduce.WarpRowsConfig(accelerator, rowsTotal), b.O, b.DO, seq, dvec, a);
            }

            long keyElems = (long)f.Batch * f.SeqK * f.KvHeads * f.HeadDim;
            if (keyElems > 0 && plan.KvZero)
            {
                var zero = cache.GetOrAdd(("bwd-zerokeys", typeof(TElem), typeof(TCodec)),
                    acc => CachedKernels.Launcher<Action<AcceleratorStream, KernelConfig, ArrayView<int>, ArrayView<TElem>,
                        ArrayView<TElem>, BwdArgs>>(acc, disk, BackwardReduce.ZeroKeys<TElem, TCodec>));
                zero(accelerator.DefaultStream, BackwardReduce.WarpRowsConfig(accelerator, (long)f.Batch * f.SeqK * f.KvHeads), seq, b.DK, b.DV, a);
            }

            if (plan.TensorCore is not null)
            {
                var tcBias = bias.Cast<ushort>();
                if (plan.Gather is { GatherBias: true } && b.Bias.IsValid && b.Bias.Length > 0)
                    tcBias = KeyGatherKernel.GatherBias(accelerator, ref a.F, b.Bias, seq, disk).Cast<ushort>();
                TcBackwardLauncher.Execute(accelerator, plan, a, new TcBwdBuffers(
                    b.Q.Cast<ushort>(), b.K.Cast<ushort>(), b.V.Cast<ushort>(), b.DO.Cast<ushort>(), tcBias, mask, lse, dvec, seq,
                    b.DQ.Cast<ushort>(), dkh, dvh, dbs,
                    plan.DbDirect ? b.DBias.Cast<ushort>() : dummy.Cast<ushort>(), b.DK.Cast<ushort>(), b.DV.Cast<ushort>(),
                    dsTiles, dsFlags), disk);
            }
            else if (plan.QueryGrid.X > 0)
            {
                var qk = cache.GetOrAdd(("bwd-query", typeof(TElem), typeof(TCodec)),
                    acc => CachedKernels.Launcher<Action<AcceleratorStream, KernelConfig, ArrayView<TElem>, ArrayView<TElem>, ArrayView<TElem>,
                        ArrayView<TElem>, ArrayView<TElem>, ArrayView<byte>, ArrayView<float>, ArrayView<float>, ArrayView<int>,
                        ArrayView<TElem>, BwdArgs>>(acc, disk, PortableBackwardKernels.QueryBlock<TElem, TCodec>));
                qk(accelerator.DefaultStream, Config(plan.QueryGrid, group, plan.QuerySharedBytes),
                    b.Q, b.K, b.V, b.DO, bias, mask, lse, dvec, seq, b.DQ, a);
            }
            if (plan.TensorCore is null && plan.KeyGrid.X > 0)
            {
                var kk = cache.GetOrAdd(("bwd-key", typeof(TElem), typeof(TCodec)),
                    acc => CachedKernels.Launcher<Action<AcceleratorStream, KernelConfig, ArrayView<TElem>, ArrayView<TElem>, ArrayView<TElem>,
                        ArrayView<TElem>, ArrayView<TElem>, ArrayView<byte>, ArrayView<float>, ArrayView<float>, ArrayView<int>,
                        ArrayView<float>, ArrayView<float>, ArrayView<float>, BwdArgs>>(acc, disk, PortableBackwardKernels.KeyBlock<TElem, TCodec>));
                kk(accelerator.DefaultStream, Config(plan.KeyGrid, group, plan.KeySharedBytes),
                    b.Q, b.K, b.V, b.DO, bias, mask, lse, dvec, seq, dkh, dvh, dbs, a);
            }

            if (keyElems > 0 && !plan.KvDirect)
            {
                var heads = cache.GetOrAdd(("bwd-keyheads", typeof(TElem), typeof(TCodec)),
                    acc => CachedKernels.Launcher<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>,
                        ArrayView<int>, ArrayView<TElem>, ArrayView<TElem>, BwdArgs>>(acc, disk, BackwardReduce.KeyHeads<TElem, TCodec>));
                heads(accelerator.DefaultStream, BackwardReduce.WarpRowsConfig(accelerator, (long)f.Batch * f.SeqK * f.KvHeads), dkh, dvh, seq, b.DK, b.DV, a);
            }

            long dbElems = (long)p.L.DbB * p.L.DbH * p.L.DbQ * p.L.DbK;
            if (plan.DBias != DBiasMode.None && !plan.DbDirect && dbElems > 0)
            {
                var red = cache.GetOrAdd(("bwd-dbias", typeof(TElem), typeof(TCodec)),
                    acc => CachedKernels.Launcher<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<TElem>,
                        BwdArgs, int, int>>(acc, disk, BackwardReduce.BiasBroadcast<TElem, TCodec>));
                red(accelerator.DefaultStream, KernelCache.Linear(accelerator, dbElems), dbs, b.DBias, a, plan.DbRows, plan.DbCols);
            }
        }
    }

    /// <summary>A zeroed fp32 view of at least one element from the cache's <paramref name="slot"/>.</summary>
    private static ArrayView<float> Zeroed(Accelerator accelerator, KernelCache cache, long length, int slot)
    {
        var view = cache.Scratch(Math.Max(1L, length), slot).Cast<float>();
        view.MemSetToZero(accelerator.DefaultStream);
        return view;
    }

    private static ArrayView<T> Or<T>(ArrayView<T> view, ArrayView<T> dummy) where T : unmanaged
        => view.IsValid && view.Length > 0 ? view : dummy;

    private static KernelConfig Config((int X, int Y, int Z) grid, int group, int sharedBytes)
        => new(new Index3D(grid.X, grid.Y, grid.Z), new Index3D(group, 1, 1), SharedMemoryConfig.RequestDynamic<float>(sharedBytes / sizeof(float)));
}
