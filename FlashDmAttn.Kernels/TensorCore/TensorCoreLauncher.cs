using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using FlashDmAttn.Kernels.Forward;
using FlashDmAttn.Kernels.Launch;
using FlashDmAttn.Kernels.Numerics;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>Launches the tensor-core forward kernel when it covers the problem.</summary>
public static class TensorCoreLauncher
{
    private static readonly AsyncLocal<bool> Force = new();
    private static long _launches;

    /// <summary>
    /// Test hook: also run the tensor-core kernel on non-CUDA accelerators (the CPU accelerator with warp size 32 runs
    /// the portable twins of the PTX intrinsics). Scoped to the current async flow (safe with parallel tests).
    /// </summary>
    public static bool ForceOnAnyAccelerator
    {
        get => Force.Value;
        set => Force.Value = value;
    }

    /// <summary>Number of tensor-core launches so far (tests use it to prove the kernel ran).</summary>
    public static long LaunchCount => Interlocked.Read(ref _launches);

    private static int _lastPerSm;

    /// <summary>Groups per SM that the latest launch sized its launch order for (the benchmark prints it).</summary>
    public static int LastResidentGroupsPerSm => Volatile.Read(ref _lastPerSm);

    /// <summary>Whether the tensor-core kernel has a specialization for this head dim.</summary>
    public static bool SupportsHeadDim(int headDim) => headDim is 32 or 64 or 96 or 128 or 192 or 256;

    /// <summary>Most dynamic shared memory bytes any specialization for a head dim uses (0 if none).</summary>
    public static int SharedBytes(int headDim) => headDim switch
    {
        32 => SharedOfBoth<Hd32, Hd32R64>(),
        64 => SharedOfBoth<Hd64, Hd64R64>(),
        96 => SharedOfBoth<Hd96, Hd96R64>(),
        128 => SharedOfBoth<Hd128, Hd128R64>(),
        192 => TensorCoreForwardKernel.SharedBytes<Hd192>(true),
        256 => TensorCoreForwardKernel.SharedBytes<Hd256>(true),
        _ => 0,
    };

    /// <summary>Shared bytes of a head dim's 128-row and 64-row shapes, whichever is larger.</summary>
    private static int SharedOfBoth<TRows128, TRows64>() where TRows128 : struct, ITcHeadDim where TRows64 : struct, ITcHeadDim
        => Math.Max(TensorCoreForwardKernel.SharedBytes<TRows128>(true), TensorCoreForwardKernel.SharedBytes<TRows64>(true));

    /// <summary>Launches and returns true when the tensor-core kernel covers this problem on this accelerator.</summary>
    public static bool TryLaunch<TElem, TCodec>(Accelerator accelerator, FwdParams p, in FwdBuffers<TElem> buffers)
        where TElem : unmanaged
        where TCodec : struct, IElementCodec<TElem>
    {
        if (typeof(TElem) != typeof(ushort) || !SupportsHeadDim(p.HeadDim)) return false;
        bool bf16 = typeof(TCodec) == typeof(Bf16Codec);
        if (!bf16 && typeof(TCodec) != typeof(Fp16Codec)) return false;
        if (!AcceleratorOk(accelerator, SharedBytes(p.HeadDim))) return false;
        // The grid's y size is the query blocks (of at least 64 rows): a query length over 65535·64 rows per sequence takes
        // the portable kernel.
        if ((p.SeqQ + 63) / 64 > TcBlockOrder.MaxGridYz) return false;

        var q = buffers.Q.Cast<ushort>();
        var k = buffers.K.Cast<ushort>();
        var v = buffers.V.Cast<ushort>();
        // cp.async moves 16-byte chunks: rows of q/k/v must start 16-byte aligned.
        if (!Aligned(q) || !Aligned(k) || !Aligned(v)) return false;
        if (((p.QStrideB | p.QStrideL | p.QStrideH | p.KStrideB | p.KStrideL | p.KStrideH
              | p.VStrideB | p.VStrideL | p.VStrideH) & 7) != 0) return false;

        var o = buffers.O.Cast<ushort>();
        var b = buffers.Bias.IsValid && buffers.Bias.Length > 0 ? buffers.Bias.Cast<ushort>() : ArrayView<ushort>.Empty;
        var tc = new TcBuffers(q, k, v, o, b, buffers.Mask, buffers.Lse, buffers.SeqInfo);
        if (bf16) Dispatch<Bf16Mma>(accelerator, p, tc);
        else Dispatch<Fp16Mma>(accelerator, p, tc);
        return true;
    }

    private readonly record struct TcBuffers(
        ArrayView<ushort> Q, ArrayView<ushort> K, ArrayView<ushort> V, ArrayView<ushort> O,
        ArrayView<ushort> Bias, ArrayView<byte> Mask, ArrayView<float> Lse, ArrayView<int> SeqInfo);

    private static bool Aligned(ArrayView<ushort> view)
        => view.IsValid && view.Length > 0 && (view.LoadEffectiveAddressAsPtr().ToInt64() & 15) == 0;

    private static bool AcceleratorOk(Accelerator accelerator, int sharedBytes)
    {
        if (accelerator is CudaAccelerator cuda)
        {
            if (cuda.Architecture < CudaArchitecture.SM_80) return false;
            return sharedBytes <= OptInSharedLimit(cuda);
        }
        return ForceOnAnyAccelerator
               && accelerator.AcceleratorType == AcceleratorType.CPU
               && accelerator.WarpSize == 32
               && accelerator.MaxNumThreadsPerGroup >= TensorCoreForwardKernel.Threads;
    }

    /// <summary>FLASHDMATTN_TC_ROWS=64: D ≤ 128 uses the 64-row groups (one m-tile per warp) always; =128: with a mask
    /// or bias too. For A/B timing.</summary>
    private static readonly bool Rows64 = Environment.GetEnvironmentVariable("FLASHDMATTN_TC_ROWS") == "64";
    private static readonly bool Rows128 = Environment.GetEnvironmentVariable("FLASHDMATTN_TC_ROWS") == "128";

    /// <summary>FLASHDMATTN_TC_CHUNK=N: about N heads per chunk of the launch order (<see cref="TcBlockOrder"/>) for every
    /// launch, 1 = blocks first, "heads" = all heads in one chunk; for A/B timing (unset or 0: <see cref="TcBlockOrder.ChunkFor"/>).</summary>
    private static readonly int ChunkHeads = Environment.GetEnvironmentVariable("FLASHDMATTN_TC_CHUNK") is { } c
        ? (c == "heads" ? -1 : int.TryParse(c, out int n) && n >= 0 ? n : 0) : 0;

    /// <summary>FLASHDMATTN_TC_GENERIC=1: one specialisation with every feature on (runtime checks), for A/B timing.</summary>
    private static readonly bool Generic = Environment.GetEnvironmentVariable("FLASHDMATTN_TC_GENERIC") == "1";

    private static void Dispatch<TE>(Accelerator acc, FwdParams p, in TcBuffers buf) where TE : struct, ITcElem
    {
        // With a mask, bias or gathered keys, D ≤ 128 runs 64 rows per group: the 128-row shapes spill there (100–740 B)
        // and measured slower (PERF-NOTES.md).
        bool rows64 = Rows64 || (!Rows128 && (p.HasMask != 0 || p.HasBias != 0 || p.GatherKeys != 0));
        switch (p.HeadDim)
        {
            case 32: if (rows64) Flags<TE, Hd32R64>(acc, p, buf); else Flags<TE, Hd32>(acc, p, buf); break;
            case 64: if (rows64) Tuning<TE, Hd64R64>(acc, p, buf); else Tuning<TE, Hd64>(acc, p, buf); break;
            case 96: if (rows64) Flags<TE, Hd96R64>(acc, p, buf); else Flags<TE, Hd96>(acc, p, buf); break;
            case 128:
                if (rows64 && p.GatherKeys != 0) Tuning<TE, Hd128R64Gather>(acc, p, buf);
                else if (rows64) Tuning<TE, Hd128R64>(acc, p, buf);
                else Tuning<TE, Hd128>(acc, p, buf);
                break;
            case 192: Flags<TE, Hd192>(acc, p, buf); break;
            default: Flags<TE, Hd256>(acc, p, buf); break;
        }
    }

    /// <summary>FLASHDMATTN_TC_TUNE=0, 8, 16, 32, 72 or 96: D = 64/128 run with exactly those <see cref="TcTune"/> bits instead of their
    /// policy's, for A/B timing (unset: the policy's). None has <see cref="TcTune.StreamK"/>: with one set, stream-K runs
    /// only where FLASHDMATTN_TC_STREAMK=1. The values 64, 200 and 224 (rescale skip alone on gathered keys, Q re-read
    /// from shared memory) lost their A/B (PERF-NOTES v12) and were removed.</summary>
    private static readonly int TuneBits = int.TryParse(Environment.GetEnvironmentVariable("FLASHDMATTN_TC_TUNE"), out int t) ? t : -1;

    private static void Tuning<TE, THd>(Accelerator acc, FwdParams p, in TcBuffers buf)
        where TE : struct, ITcElem where THd : struct, ITcHeadDim
    {
        switch (TuneBits)
        {
            case 0: Flags<TE, Tuned<THd, NoTuneBits>>(acc, p, buf); break;
            case TcTune.SplitKv: Flags<TE, Tuned<THd, SplitKvBits>>(acc, p, buf); break;
            case TcTune.BiasFfma: Flags<TE, Tuned<THd, BiasFfmaBits>>(acc, p, buf); break;
            case TcTune.LateBits: Flags<TE, Tuned<THd, LateBitsBits>>(acc, p, buf); break;
            case TcTune.SplitKv | TcTune.SkipRescale: Flags<TE, Tuned<THd, Bits<SplitKvBits, SkipBits>>>(acc, p, buf); break;
            case TcTune.LateBits | TcTune.SkipRescale: Flags<TE, Tuned<THd, Bits<LateBitsBits, SkipBits>>>(acc, p, buf); break;
            default: Flags<TE, THd>(acc, p, buf); break;
        }
    }

    // Static switch (FlashAttention's static_switch.h): one specialisation per combination of features.
    private static void Flags<TE, THd>(Accelerator acc, FwdParams p, in TcBuffers buf)
        where TE : struct, ITcElem where THd : struct, ITcHeadDim
    {
        if (Generic) { Launch<TE, THd, TcFlags<On, On, On, On>>(acc, p, buf); return; }
        if (p.Causal != 0) FlagsMask<TE, THd, On>(acc, p, buf);
        else FlagsMask<TE, THd, Off>(acc, p, buf);
    }

    private static void FlagsMask<TE, THd, TC>(Accelerator acc, FwdParams p, in TcBuffers buf)
        where TE : struct, ITcElem where THd : struct, ITcHeadDim where TC : struct, IStaticBool
    {
        // Gathered keys (a query-broadcast mask turned into key lists) take the mask specialisation: its K/V loads
        // follow the lists, and the kernels without a mask carry no gathering code.
        if (p.HasMask != 0 || p.GatherKeys != 0) FlagsBias<TE, THd, TC, On>(acc, p, buf);
        else FlagsBias<TE, THd, TC, Off>(acc, p, buf);
    }

    private static void FlagsBias<TE, THd, TC, TM>(Accelerator acc, FwdParams p, in TcBuffers buf)
        where TE : struct, ITcElem where THd : struct, ITcHeadDim where TC : struct, IStaticBool where TM : struct, IStaticBool
    {
        // A negative scale reverses the order of raw scores: the softcap specialisation (scores scaled before the
        // row max; no tanh when Softcap is 0) handles it.
        bool bias = p.HasBias != 0, cap = p.Softcap > 0f || p.Scale < 0f;
        if (StreamKOn<THd>(acc) && !Generic && (cap ? TryStreamK<TE, THd, On>(acc, p, buf) : TryStreamK<TE, THd, Off>(acc, p, buf)))
            return;
        if (bias && cap) Launch<TE, THd, TcFlags<TC, TM, On, On>>(acc, p, buf);
        else if (bias) Launch<TE, THd, TcFlags<TC, TM, On, Off>>(acc, p, buf);
        else if (cap) Launch<TE, THd, TcFlags<TC, TM, Off, On>>(acc, p, buf);
        else Launch<TE, THd, TcFlags<TC, TM, Off, Off>>(acc, p, buf);
    }

    /// <summary>FLASHDMATTN_TC_STREAMK=1: stream-K launches (<see cref="TcStreamK"/>) for every head dim where they
    /// shorten the launch; 0: none; unset: as the policy's <see cref="TcTune.StreamK"/> bit says, on CUDA only (the
    /// CPU accelerator has no waves to even out; its tests turn stream-K on with <see cref="StreamKForTests"/>).</summary>
    private static readonly bool? StreamKEnv = Environment.GetEnvironmentVariable("FLASHDMATTN_TC_STREAMK") switch
    {
        "1" => true,
        "0" => false,
        _ => null,
    };

    private static readonly AsyncLocal<bool> ForceStreamK = new();

    /// <summary>Test hook: stream-K launches on (as FLASHDMATTN_TC_STREAMK=1) in the current async flow.</summary>
    public static bool StreamKForTests
    {
        get => ForceStreamK.Value;
        set => ForceStreamK.Value = value;
    }

    private static bool StreamKOn<THd>(Accelerator acc) where THd : struct, ITcHeadDim
        => ForceStreamK.Value || (StreamKEnv ?? (acc is CudaAccelerator && (THd.Tune & TcTune.StreamK) != 0));

    private static long _streamKLaunches;

    /// <summary>Number of stream-K launches so far (tests use it to prove that a case took that path).</summary>
    public static long StreamKLaunchCount => Interlocked.Read(ref _streamKLaunches);

    /// <summary>A launch as <see cref="TcStreamK"/> plans it, sized by the stream-K kernel's resident groups (2 per SM
    /// for D = 64 and 128 on an H100, as the plain kernels'); false (nothing launched) for problems whose blocks have
    /// unequal work, or where the plan gains too little.</summary>
    private static bool TryStreamK<TE, THd, TCap>(Accelerator acc, FwdParams p, in TcBuffers buf)
        where TE : struct, ITcElem where THd : struct, ITcHeadDim where TCap : struct, IStaticBool
    {
        // Equal work in every block; the work buffer takes the place of seqInfo, which these problems leave unused.
        if (p.HasBias != 0 || p.Causal != 0 || p.HasMask != 0 || p.GatherKeys != 0 || p.Varlen != 0 || p.Paged != 0)
            return false;
        int rows = TensorCoreForwardKernel.RowsOf<THd>();
        long groups = (long)((p.SeqQ + rows - 1) / rows) * p.Batch * p.Heads;
        int tiles = (p.SeqK + THd.Bc - 1) / THd.Bc;
        // Cases no plan takes (a block of one tile, at most one group per SM) do not compile the stream-K kernel.
        if (tiles < 2 || groups <= Multiprocessors(acc)) return false;
        var (kernel, perSm) = Load<TE, THd, TcStreamKFlags<TCap>>(acc);
        if (TcStreamK.Plan(groups, tiles, perSm * Multiprocessors(acc)) is not { } plan) return false;
        p.SplitDp = plan.Dp;
        p.SplitTiles = tiles;
        p.SplitPerWorker = plan.PerWorker;
        var work = KernelCache.For(acc).Scratch(checked((int)TcStreamK.WorkWords<THd>(plan.Workers)), slot: 2);
        Interlocked.Increment(ref _streamKLaunches);
        Start<THd, TcStreamKFlags<TCap>>(acc, kernel, (plan.Dp + plan.Workers, 1, 1), p, buf with { SeqInfo = work }, perSm);
        return true;
    }

    private static int Multiprocessors(Accelerator acc) => acc is CudaAccelerator cuda ? cuda.NumMultiprocessors : 1;

    private static (Action<KernelConfig, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>,
        ArrayView<ushort>, ArrayView<byte>, ArrayView<float>, ArrayView<int>, FwdParams> Kernel, int PerSm) Load<TE, THd, TF>(Accelerator acc)
        where TE : struct, ITcElem
        where THd : struct, ITcHeadDim
        where TF : struct, ITcFlags
    {
        int shared = TensorCoreForwardKernel.SharedBytes<THd>(TF.Bias);
        var entry = KernelCache.For(acc).GetOrAdd(("tc-fwd", typeof(TE), typeof(THd), typeof(TF)), a =>
        {
            var launcher = a.LoadStreamKernel<ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>,
                ArrayView<ushort>, ArrayView<byte>, ArrayView<float>, ArrayView<int>, FwdParams>(
                TensorCoreForwardKernel.Run<TE, THd, TF>,
                new KernelSpecialization(TensorCoreForwardKernel.Threads, 1));
            if (a is CudaAccelerator && shared > 48 * 1024)
                AllowLargeSharedMemory((CudaKernel)launcher.GetKernel(), shared);
            return Tuple.Create(launcher, ResidentGroupsPerSm(a, launcher.GetKernel(), shared));
        });
        return (entry.Item1, entry.Item2);
    }

    private static void Launch<TE, THd, TF>(Accelerator acc, FwdParams p, in TcBuffers buf)
        where TE : struct, ITcElem
        where THd : struct, ITcHeadDim
        where TF : struct, ITcFlags
    {
        var (kernel, perSm) = Load<TE, THd, TF>(acc);
        int rows = TensorCoreForwardKernel.RowsOf<THd>();
        int blocks = (p.SeqQ + rows - 1) / rows, heads = p.Batch * p.Heads;
        // Causal and variable-length problems give their groups unequal work: long blocks of several heads first, in
        // chunks sized by the groups resident at once.
        int slots = perSm * Multiprocessors(acc);
        int chunk = ChunkHeads switch
        {
            0 => TcBlockOrder.ChunkFor(blocks, heads, p.Causal != 0 || p.Varlen != 0, slots),
            < 0 => heads,
            _ => ChunkHeads,
        };
        Start<THd, TF>(acc, kernel, TcBlockOrder.Grid3(blocks, heads, chunk), p, buf, perSm);
    }

    private static void Start<THd, TF>(Accelerator acc,
        Action<KernelConfig, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>, ArrayView<ushort>,
            ArrayView<ushort>, ArrayView<byte>, ArrayView<float>, ArrayView<int>, FwdParams> kernel,
        (int X, int Y, int Z) grid, FwdParams p, in TcBuffers buf, int perSm)
        where THd : struct, ITcHeadDim
        where TF : struct, ITcFlags
    {
        ArrayView<byte> dummy = KernelCache.For(acc).Dummy.View;
        var bias = buf.Bias.IsValid && buf.Bias.Length > 0 ? buf.Bias : dummy.Cast<ushort>();
        var mask = buf.Mask.IsValid && buf.Mask.Length > 0 ? buf.Mask : dummy;
        var lse = buf.Lse.IsValid && buf.Lse.Length > 0 ? buf.Lse : dummy.Cast<float>();
        var seq = buf.SeqInfo.IsValid && buf.SeqInfo.Length > 0 ? buf.SeqInfo : dummy.Cast<int>();

        Volatile.Write(ref _lastPerSm, perSm);
        Interlocked.Increment(ref _launches);
        if (grid.X == 0) return;
        int shared = TensorCoreForwardKernel.SharedBytes<THd>(TF.Bias);
        var config = new KernelConfig(
            new Index3D(grid.X, grid.Y, grid.Z), new Index3D(TensorCoreForwardKernel.Threads, 1, 1),
            SharedMemoryConfig.RequestDynamic<Chunk16>(shared / 16));
        kernel(config, buf.Q, buf.K, buf.V, buf.O, bias, mask, lse, seq, p);
    }

    /// <summary>
    /// Groups of this kernel resident on one SM at once, from the driver's occupancy calculator (registers and shared
    /// memory: 2 measured for D = 128 on an H100; D = 192's shared memory should allow 1, not measured); 2 elsewhere (the
    /// CPU accelerator's tests keep the launch order they were written for) or if the driver does not answer.
    /// </summary>
    private static int ResidentGroupsPerSm(Accelerator acc, Kernel kernel, int sharedBytes)
    {
        if (acc is not CudaAccelerator) return DefaultGroupsPerSm;
        try
        {
            int n = acc.EstimateMaxActiveGroupsPerMultiprocessor(kernel, TensorCoreForwardKernel.Threads, sharedBytes);
            return n > 0 ? n : DefaultGroupsPerSm;
        }
        catch (Exception)
        {
            return DefaultGroupsPerSm;
        }
    }

    /// <summary>Resident groups per SM where the driver does not say (the D ≤ 128 kernels' occupancy on an H100).</summary>
    private const int DefaultGroupsPerSm = 2;

    // ---------------- CUDA driver: opt-in dynamic shared memory above 48 KiB ----------------
    private const int FuncAttributeMaxDynamicSharedSizeBytes = 8;
    private const int DeviceAttributeMaxSharedMemoryPerBlockOptin = 97;

    private static int OptInSharedLimit(CudaAccelerator cuda)
    {
        try
        {
            return CudaAPI.CurrentAPI.GetDeviceAttribute((DeviceAttributeKind)DeviceAttributeMaxSharedMemoryPerBlockOptin, cuda.DeviceId);
        }
        catch (Exception)
        {
            return 48 * 1024;
        }
    }

    private static unsafe void AllowLargeSharedMemory(CudaKernel kernel, int bytes)
    {
        var fn = (delegate* unmanaged<IntPtr, int, int, int>)CudaDriverSymbol("cuFuncSetAttribute");
        int rc = fn(kernel.FunctionPtr, FuncAttributeMaxDynamicSharedSizeBytes, bytes);
        if (rc != 0)
            throw new InvalidOperationException($"cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES, {bytes}) failed: CUresult {rc}");
    }

    private static IntPtr CudaDriverSymbol(string name)
    {
        foreach (var lib in new[] { "libcuda.so.1", "libcuda.so", "nvcuda.dll" })
            if (NativeLibrary.TryLoad(lib, out var h) && NativeLibrary.TryGetExport(h, name, out var sym))
                return sym;
        throw new DllNotFoundException($"CUDA driver symbol {name} not found");
    }
}
