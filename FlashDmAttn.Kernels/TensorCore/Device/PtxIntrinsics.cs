// Register-only PTX intrinsics for ILGPU 1.5.3 with portable C# twins.
// PTX: every [IntrinsicImplementation] method below is registered (RegisterTensorCoreIntrinsics) as a
// PTXIntrinsic in GenerateCode mode; its generator in PtxGen writes one instruction into ILGPU's
// PTXCodeGenerator with ILGPU-allocated registers (no .local depot, no inline-asm operand spills).
// CPU accelerator: the C# body runs. The warp-cooperative twins (mma, ldmatrix) need warp size 32 and all
// 32 lanes calling together, exactly like the .sync.aligned hardware instructions.
using System.Reflection;
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.PTX;
using ILGPU.IR;
using ILGPU.IR.Intrinsics;
using ILGPU.IR.Values;
using FlashDmAttn.Kernels.Numerics;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>Four fp32 values: an m16n8 accumulator fragment (c0..c3).</summary>
internal struct F4
{
    public float X, Y, Z, W;
    public F4(float x, float y, float z, float w) { X = x; Y = y; Z = z; W = w; }
}

/// <summary>Four 32-bit registers: an A fragment (4 × 16-bit pairs) or one ldmatrix.x4 result.</summary>
internal struct U4
{
    public uint X, Y, Z, W;
    public U4(uint x, uint y, uint z, uint w) { X = x; Y = y; Z = z; W = w; }
}

/// <summary>Two 32-bit registers: a B fragment of m16n8k16.</summary>
internal struct U2
{
    public uint X, Y;
    public U2(uint x, uint y) { X = x; Y = y; }
}

/// <summary>A 16-byte shared-memory element: makes ILGPU declare the dynamic shared array .align 16.</summary>
internal struct Chunk16
{
    public uint A, B, C, D;
}

/// <summary>The tensor-core PTX instructions as custom intrinsics; the C# bodies are their portable twins.</summary>
internal static class Ptx
{
    // ---------------- mma.sync m16n8k16 (row.col, fp32 accumulate) ----------------
    [IntrinsicImplementation]
    public static F4 MmaBf16(U4 a, U2 b, F4 c) => MmaTwin(a, b, c, false);

    [IntrinsicImplementation]
    public static F4 MmaF16(U4 a, U2 b, F4 c) => MmaTwin(a, b, c, true);

    /// <summary>
    /// Warp-cooperative twin in the PTX ISA fragment layout (g = lane/4, t = lane%4). Lanes exchange their fragments
    /// through a per-warp scratch buffer (set up by <see cref="SharedAddr"/>) with two warp barriers, which is much
    /// cheaper on the CPU accelerator than one shuffle per register.
    /// </summary>
    private static unsafe F4 MmaTwin(U4 a, U2 b, F4 c, bool half)
    {
        int lane = Warp.LaneIdx;
        uint* x = CpuScratch();
        x[lane * 6 + 0] = a.X; x[lane * 6 + 1] = a.Y; x[lane * 6 + 2] = a.Z; x[lane * 6 + 3] = a.W;
        x[lane * 6 + 4] = b.X; x[lane * 6 + 5] = b.Y;
        Warp.Barrier();
        int g = lane >> 2, t = lane & 3;
        float d0 = c.X, d1 = c.Y, d2 = c.Z, d3 = c.W;
        for (int tp = 0; tp < 4; tp++)
        {
            uint* pa = x + (g * 4 + tp) * 6;            // rows g / g+8, k 2tp..2tp+1 (+8)
            uint* pb0 = x + ((2 * t) * 4 + tp) * 6;     // column 2t
            uint* pb1 = x + ((2 * t + 1) * 4 + tp) * 6; // column 2t+1
            d0 += Dot2(pa[0], pb0[4], half) + Dot2(pa[2], pb0[5], half);
            d1 += Dot2(pa[0], pb1[4], half) + Dot2(pa[2], pb1[5], half);
            d2 += Dot2(pa[1], pb0[4], half) + Dot2(pa[3], pb0[5], half);
            d3 += Dot2(pa[1], pb1[4], half) + Dot2(pa[3], pb1[5], half);
        }
        Warp.Barrier();
        return new F4(d0, d1, d2, d3);
    }

    private static float Lo(uint v, bool half) => half ? HalfBits.ToFloat((ushort)v) : Interop.IntAsFloat(v << 16);
    private static float Hi(uint v, bool half) => half ? HalfBits.ToFloat((ushort)(v >> 16)) : Interop.IntAsFloat(v & 0xFFFF0000u);
    private static float Dot2(uint a, uint b, bool half) => Lo(a, half) * Lo(b, half) + Hi(a, half) * Hi(b, half);

    // ---------------- fp32 pair → packed 16-bit pair (round to nearest even) ----------------
    /// <summary>cvt.rn.bf16x2.f32: lo in bits 0..15, hi in bits 16..31.</summary>
    [IntrinsicImplementation]
    public static uint PackBf16(float lo, float hi) => BFloat16Bits.FromFloat(lo) | ((uint)BFloat16Bits.FromFloat(hi) << 16);

    /// <summary>cvt.rn.f16x2.f32: lo in bits 0..15, hi in bits 16..31.</summary>
    [IntrinsicImplementation]
    public static uint PackF16(float lo, float hi) => HalfBits.FromFloat(lo) | ((uint)HalfBits.FromFloat(hi) << 16);

    // ---------------- addresses ----------------
    // PTX: a ref into a shared view is a 64-bit shared-window pointer (cvt.u32.u64 gives the 32-bit address);
    // a ref into a kernel-argument view is generic (cvta.to.global.u64).
    // CPU twin: a "shared address" is the low 32 bits of the host pointer; the high bits are remembered per
    // thread (each CPU lane is an OS thread). Valid while the shared buffer does not straddle 4 GiB.
    [ThreadStatic] private static ulong cpuSharedHi;
    [ThreadStatic] private static uint[]? cpuOwnScratch;
    [ThreadStatic] private static ulong cpuWarpScratch;

    /// <summary>This warp's exchange buffer (lane 0's pinned array), valid after SharedAddr ran in all lanes.</summary>
    private static unsafe uint* CpuScratch() => (uint*)cpuWarpScratch;

    private static unsafe byte* CpuShared(uint addr) => (byte*)(cpuSharedHi | addr);

    /// <summary>32-bit shared-window byte address of a shared-memory element. All lanes must call it (uniformly, once) before the other twins.</summary>
    [IntrinsicImplementation]
    public static unsafe uint SharedAddr(ref Chunk16 sharedElem)
    {
        ulong p = (ulong)Unsafe.AsPointer(ref sharedElem);
        cpuSharedHi = p & 0xFFFFFFFF00000000ul;
        // Twins only: lane 0 lends its pinned scratch to the warp.
        ulong mine = 0;
        if (Warp.LaneIdx == 0)
        {
            cpuOwnScratch ??= GC.AllocateArray<uint>(32 * 6, pinned: true);
            mine = (ulong)Unsafe.AsPointer(ref cpuOwnScratch[0]);
        }
        uint lo = Warp.Shuffle((uint)mine, 0), hi = Warp.Shuffle((uint)(mine >> 32), 0);
        cpuWarpScratch = ((ulong)hi << 32) | lo;
        return (uint)p;
    }

    /// <summary>64-bit global byte address of a global-memory element.</summary>
    [IntrinsicImplementation]
    public static unsafe ulong GlobalAddr(ref ushort globalElem) => (ulong)Unsafe.AsPointer(ref globalElem);

    /// <summary>64-bit global byte address of a global byte (masks).</summary>
    [IntrinsicImplementation]
    public static unsafe ulong GlobalAddrB(ref byte globalElem) => (ulong)Unsafe.AsPointer(ref globalElem);

    // ---------------- ldmatrix ----------------
    /// <summary>ldmatrix.x4: lanes 8i..8i+7 give the 16-byte row addresses of matrix i; result i = row lane/4, cols 2(lane%4)..+1.</summary>
    [IntrinsicImplementation]
    public static unsafe U4 LdMatrixX4(uint addr)
    {
        int lane = Warp.LaneIdx;
        uint* x = CpuScratch();
        x[lane] = addr;
        Warp.Barrier();
        uint off = (uint)(lane & 3) * 4;
        int r = lane >> 2;
        var res = new U4(*(uint*)CpuShared(x[r] + off), *(uint*)CpuShared(x[8 + r] + off),
                         *(uint*)CpuShared(x[16 + r] + off), *(uint*)CpuShared(x[24 + r] + off));
        Warp.Barrier();
        return res;
    }

    /// <summary>ldmatrix.x4.trans: result i = (M_i[2t][g], M_i[2t+1][g]) with g = lane/4, t = lane%4.</summary>
    [IntrinsicImplementation]
    public static unsafe U4 LdMatrixX4Trans(uint addr)
    {
        int lane = Warp.LaneIdx;
        uint* x = CpuScratch();
        x[lane] = addr;
        Warp.Barrier();
        int col = lane >> 2, row = (lane & 3) * 2;
        var res = new U4(TransWord(x, 0, row, col), TransWord(x, 8, row, col), TransWord(x, 16, row, col), TransWord(x, 24, row, col));
        Warp.Barrier();
        return res;
    }

    private static unsafe uint TransWord(uint* rowAddr, int mbase, int row, int col)
        => Half16(rowAddr[mbase + row] + (uint)col * 2) | (Half16(rowAddr[mbase + row + 1] + (uint)col * 2) << 16);

    private static unsafe uint Half16(uint byteAddr) => *(ushort*)CpuShared(byteAddr);

    // ---------------- math ----------------
    /// <summary>ex2.approx.ftz.f32 (2^x; −∞ → +0).</summary>
    [IntrinsicImplementation]
    public static float Ex2(float x) => MathF.Pow(2f, x);

    // ---------------- global loads / stores through 64-bit byte addresses ----------------
    /// <summary>st.global.u32: one packed pair of 16-bit outputs (addr 4-byte aligned).</summary>
    [IntrinsicImplementation]
    public static unsafe void StGlobalU32(ulong addr, uint value) => *(uint*)addr = value;

    /// <summary>st.global.v4.u32: 16 bytes (addr 16-byte aligned).</summary>
    [IntrinsicImplementation]
    public static unsafe void StGlobalV4U32(ulong addr, U4 value)
    {
        uint* x = (uint*)addr;
        x[0] = value.X; x[1] = value.Y; x[2] = value.Z; x[3] = value.W;
    }

    /// <summary>ld.global.nc.u32 (read-only path; addr 4-byte aligned).</summary>
    [IntrinsicImplementation]
    public static unsafe uint LdGlobalNcU32(ulong addr) => *(uint*)addr;

    /// <summary>ld.global.nc.u16, zero-extended (addr 2-byte aligned).</summary>
    [IntrinsicImplementation]
    public static unsafe uint LdGlobalNcU16(ulong addr) => *(ushort*)addr;

    /// <summary>ld.global.nc.v4.u32: 16 bytes (addr 16-byte aligned).</summary>
    [IntrinsicImplementation]
    public static unsafe U4 LdGlobalNcV4U32(ulong addr)
    {
        uint* x = (uint*)addr;
        return new U4(x[0], x[1], x[2], x[3]);
    }

    /// <summary>ld.global.nc.v2.u32: 8 bytes (addr 8-byte aligned).</summary>
    [IntrinsicImplementation]
    public static unsafe U2 LdGlobalNcV2U32(ulong addr)
    {
        uint* x = (uint*)addr;
        return new U2(x[0], x[1]);
    }

    /// <summary>ld.shared.v4.u32 through a 32-bit shared-window byte address (16-byte aligned).</summary>
    [IntrinsicImplementation]
    public static unsafe U4 LdSharedV4U32(uint addr)
    {
        uint* x = (uint*)CpuShared(addr);
        return new U4(x[0], x[1], x[2], x[3]);
    }

    /// <summary>st.shared.u32 through a 32-bit shared-window byte address (4-byte aligned).</summary>
    [IntrinsicImplementation]
    public static unsafe void StSharedU32(uint addr, uint value) => *(uint*)CpuShared(addr) = value;

    /// <summary>ld.shared.u32 through a 32-bit shared-window byte address (4-byte aligned).</summary>
    [IntrinsicImplementation]
    public static unsafe uint LdSharedU32(uint addr) => *(uint*)CpuShared(addr);

    // ---------------- cp.async ----------------
    /// <summary>cp.async.cg.shared.global 16 bytes with src-size: copies srcBytes (0 or 16) bytes, zero-fills the rest.
    /// With srcBytes = 0 nothing is read from gaddr. CPU twin: synchronous copy.</summary>
    [IntrinsicImplementation]
    public static unsafe void CpAsync16(uint dst, ulong gaddr, uint srcBytes)
    {
        byte* d = CpuShared(dst);
        byte* s = (byte*)gaddr;
        for (uint i = 0; i < 16; i++) d[i] = i < srcBytes ? s[i] : (byte)0;
    }

    [IntrinsicImplementation]
    public static void CpAsyncCommit() { }

    /// <summary>cp.async.wait_group n; n must be a literal (a compile-time constant after inlining).</summary>
    [IntrinsicImplementation]
    public static void CpAsyncWait(int n) { }
}

/// <summary>Registration of the intrinsics with a context builder.</summary>
internal static class PtxIntrinsics
{
    /// <summary>Registers the PTX implementations with a context builder (called once for the shared context).</summary>
    public static Context.Builder RegisterTensorCoreIntrinsics(this Context.Builder builder)
    {
        var mgr = builder.GetIntrinsicManager();
        void Reg(string name, string gen) =>
            mgr.RegisterMethod(
                typeof(Ptx).GetMethod(name, BindingFlags.Public | BindingFlags.Static)
                    ?? throw new InvalidOperationException(name),
                new PTXIntrinsic(typeof(PtxGen), gen, IntrinsicImplementationMode.GenerateCode));
        Reg(nameof(Ptx.MmaBf16), nameof(PtxGen.MmaBf16));
        Reg(nameof(Ptx.MmaF16), nameof(PtxGen.MmaF16));
        Reg(nameof(Ptx.PackBf16), nameof(PtxGen.PackBf16));
        Reg(nameof(Ptx.PackF16), nameof(PtxGen.PackF16));
        Reg(nameof(Ptx.SharedAddr), nameof(PtxGen.SharedAddr));
        Reg(nameof(Ptx.GlobalAddr), nameof(PtxGen.GlobalAddr));
        Reg(nameof(Ptx.GlobalAddrB), nameof(PtxGen.GlobalAddr));
        Reg(nameof(Ptx.LdMatrixX4), nameof(PtxGen.LdMatrix));
        Reg(nameof(Ptx.LdMatrixX4Trans), nameof(PtxGen.LdMatrixTrans));
        Reg(nameof(Ptx.Ex2), nameof(PtxGen.Ex2));
        Reg(nameof(Ptx.CpAsync16), nameof(PtxGen.CpAsync));
        Reg(nameof(Ptx.StGlobalU32), nameof(PtxGen.StGlobalU32));
        Reg(nameof(Ptx.StGlobalV4U32), nameof(PtxGen.StGlobalV4U32));
        Reg(nameof(Ptx.LdGlobalNcU32), nameof(PtxGen.LdGlobalNcU32));
        Reg(nameof(Ptx.LdGlobalNcU16), nameof(PtxGen.LdGlobalNcU16));
        Reg(nameof(Ptx.LdGlobalNcV4U32), nameof(PtxGen.LdGlobalNcV4U32));
        Reg(nameof(Ptx.LdGlobalNcV2U32), nameof(PtxGen.LdGlobalNcV2U32));
        Reg(nameof(Ptx.LdSharedV4U32), nameof(PtxGen.LdSharedV4U32));
        Reg(nameof(Ptx.StSharedU32), nameof(PtxGen.StSharedU32));
        Reg(nameof(Ptx.LdSharedU32), nameof(PtxGen.LdSharedU32));
        Reg(nameof(Ptx.CpAsyncCommit), nameof(PtxGen.Commit));
        Reg(nameof(Ptx.CpAsyncWait), nameof(PtxGen.Wait));
        return builder;
    }
}

/// <summary>PTX generators; signatures match PTXIntrinsic.Handler.</summary>
internal static class PtxGen
{
    private static PTXCodeGenerator.HardwareRegister Hw(PTXCodeGenerator cg, PTXCodeGenerator.Register r) =>
        cg.EnsureHardwareRegister((PTXCodeGenerator.PrimitiveRegister)r);

    private static PTXCodeGenerator.HardwareRegister[] Parts(PTXCodeGenerator cg, PTXCodeGenerator.Register r, int n)
    {
        var c = (PTXCodeGenerator.CompoundRegister)r;
        if (c.NumChildren != n) throw new NotSupportedException($"expected {n} fields, got {c.NumChildren}");
        var res = new PTXCodeGenerator.HardwareRegister[n];
        for (int i = 0; i < n; i++) res[i] = Hw(cg, c.Children[i]);
        return res;
    }

    private static PTXCodeGenerator.PrimitiveRegister[] Vec(PTXCodeGenerator.HardwareRegister[] hs) =>
        Array.ConvertAll(hs, x => (PTXCodeGenerator.PrimitiveRegister)x);

    private static void Mma(PTXCodeGenerator cg, Value value, string type)
    {
        var call = (MethodCall)value;
        var a = Parts(cg, cg.Load(call[0]), 4);
        var b = Parts(cg, cg.Load(call[1]), 2);
        var c = Parts(cg, cg.Load(call[2]), 4);
        var d = Parts(cg, cg.Allocate(call), 4);
        using var cmd = cg.BeginCommand($"mma.sync.aligned.m16n8k16.row.col.f32.{type}.{type}.f32");
        cmd.AppendVectorArgument(Vec(d));
        cmd.AppendVectorArgument(Vec(a));
        cmd.AppendVectorArgument(Vec(b));
        cmd.AppendVectorArgument(Vec(c));
    }

    public static void MmaBf16(PTXBackend backend, PTXCodeGenerator cg, Value value) => Mma(cg, value, "bf16");
    public static void MmaF16(PTXBackend backend, PTXCodeGenerator cg, Value value) => Mma(cg, value, "f16");

    private static void Pack(PTXCodeGenerator cg, Value value, string instr)
    {
        var call = (MethodCall)value;
        var lo = Hw(cg, cg.Load(call[0]));
        var hi = Hw(cg, cg.Load(call[1]));
        var r = cg.AllocateHardware(value);
        using var cmd = cg.BeginCommand(instr); // d = {a → upper half, b → lower half}
        cmd.AppendArgument(r);
        cmd.AppendArgument(hi);
        cmd.AppendArgument(lo);
    }

    public static void PackBf16(PTXBackend backend, PTXCodeGenerator cg, Value value) => Pack(cg, value, "cvt.rn.bf16x2.f32");
    public static void PackF16(PTXBackend backend, PTXCodeGenerator cg, Value value) => Pack(cg, value, "cvt.rn.f16x2.f32");

    /// <summary>A load into four 32-bit registers from one address operand (ldmatrix.x4, ld.v4).</summary>
    private static void Load4(PTXCodeGenerator cg, Value value, string instr, int n = 4)
    {
        var call = (MethodCall)value;
        var addr = Hw(cg, cg.Load(call[0]));
        var d = Parts(cg, cg.Allocate(call), n);
        using var cmd = cg.BeginCommand(instr);
        cmd.AppendVectorArgument(Vec(d));
        cmd.AppendArgumentValue(addr);
    }

    public static void LdMatrix(PTXBackend backend, PTXCodeGenerator cg, Value value) =>
        Load4(cg, value, "ldmatrix.sync.aligned.m8n8.x4.shared.b16");

    public static void LdMatrixTrans(PTXBackend backend, PTXCodeGenerator cg, Value value) =>
        Load4(cg, value, "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16");

    public static void Ex2(PTXBackend backend, PTXCodeGenerator cg, Value value)
    {
        var call = (MethodCall)value;
        var x = Hw(cg, cg.Load(call[0]));
        var r = cg.AllocateHardware(value);
        using var cmd = cg.BeginCommand("ex2.approx.ftz.f32");
        cmd.AppendArgument(r);
        cmd.AppendArgument(x);
    }

    public static void CpAsync(PTXBackend backend, PTXCodeGenerator cg, Value value)
    {
        var call = (MethodCall)value;
        var dst = Hw(cg, cg.Load(call[0]));
        var g = Hw(cg, cg.Load(call[1]));
        var n = Hw(cg, cg.Load(call[2]));
        using var cmd = cg.BeginCommand("cp.async.cg.shared.global");
        cmd.AppendArgumentValue(dst);
        cmd.AppendArgumentValue(g);
        cmd.AppendRawValueReference("16");
        cmd.AppendArgument(n);
    }

    public static void SharedAddr(PTXBackend backend, PTXCodeGenerator cg, Value value)
    {
        var call = (MethodCall)value;
        var p = Hw(cg, cg.Load(call[0]));
        var space = (call[0].Type as ILGPU.IR.Types.PointerType)?.AddressSpace ?? MemoryAddressSpace.Generic;
        if (space != MemoryAddressSpace.Shared)
        {
            var t = cg.AllocateRegister(BasicValueType.Int64, PTXRegisterKind.Int64);
            using (var c = cg.BeginCommand("cvta.to.shared.u64")) { c.AppendArgument(t); c.AppendArgument(p); }
            p = t;
        }
        var r = cg.AllocateHardware(value);
        using var cmd = cg.BeginCommand("cvt.u32.u64");
        cmd.AppendArgument(r);
        cmd.AppendArgument(p);
    }

    public static void GlobalAddr(PTXBackend backend, PTXCodeGenerator cg, Value value)
    {
        var call = (MethodCall)value;
        var p = Hw(cg, cg.Load(call[0]));
        var r = cg.AllocateHardware(value);
        var space = (call[0].Type as ILGPU.IR.Types.PointerType)?.AddressSpace ?? MemoryAddressSpace.Generic;
        using var cmd = cg.BeginCommand(space == MemoryAddressSpace.Global ? "mov.b64" : "cvta.to.global.u64");
        cmd.AppendArgument(r);
        cmd.AppendArgument(p);
    }

    public static void StGlobalU32(PTXBackend backend, PTXCodeGenerator cg, Value value)
    {
        var call = (MethodCall)value;
        var a = Hw(cg, cg.Load(call[0]));
        var v = Hw(cg, cg.Load(call[1]));
        using var cmd = cg.BeginCommand("st.global.u32");
        cmd.AppendArgumentValue(a);
        cmd.AppendArgument(v);
    }

    public static void StGlobalV4U32(PTXBackend backend, PTXCodeGenerator cg, Value value)
    {
        var call = (MethodCall)value;
        var a = Hw(cg, cg.Load(call[0]));
        var v = Parts(cg, cg.Load(call[1]), 4);
        using var cmd = cg.BeginCommand("st.global.v4.u32");
        cmd.AppendArgumentValue(a);
        cmd.AppendVectorArgument(Vec(v));
    }

    public static void StSharedU32(PTXBackend backend, PTXCodeGenerator cg, Value value)
    {
        var call = (MethodCall)value;
        var a = Hw(cg, cg.Load(call[0]));
        var v = Hw(cg, cg.Load(call[1]));
        using var cmd = cg.BeginCommand("st.shared.u32");
        cmd.AppendArgumentValue(a);
        cmd.AppendArgument(v);
    }

    public static void LdSharedU32(PTXBackend backend, PTXCodeGenerator cg, Value value) => LdGlobal(cg, value, "ld.shared.u32");

    private static void LdGlobal(PTXCodeGenerator cg, Value value, string instr)
    {
        var call = (MethodCall)value;
        var a = Hw(cg, cg.Load(call[0]));
        var r = cg.AllocateHardware(value);
        using var cmd = cg.BeginCommand(instr);
        cmd.AppendArgument(r);
        cmd.AppendArgumentValue(a);
    }

    public static void LdGlobalNcU32(PTXBackend backend, PTXCodeGenerator cg, Value value) => LdGlobal(cg, value, "ld.global.nc.u32");
    public static void LdGlobalNcU16(PTXBackend backend, PTXCodeGenerator cg, Value value) => LdGlobal(cg, value, "ld.global.nc.u16");

    public static void LdGlobalNcV4U32(PTXBackend backend, PTXCodeGenerator cg, Value value) =>
        Load4(cg, value, "ld.global.nc.v4.u32");

    public static void LdSharedV4U32(PTXBackend backend, PTXCodeGenerator cg, Value value) =>
        Load4(cg, value, "ld.shared.v4.u32");

    public static void LdGlobalNcV2U32(PTXBackend backend, PTXCodeGenerator cg, Value value) =>
        Load4(cg, value, "ld.global.nc.v2.u32", 2);

    public static void Commit(PTXBackend backend, PTXCodeGenerator cg, Value value) =>
        cg.Command("cp.async.commit_group");

    public static void Wait(PTXBackend backend, PTXCodeGenerator cg, Value value)
    {
        var call = (MethodCall)value;
        if (cg.Load(call[0]) is not PTXCodeGenerator.ConstantRegister k)
            throw new NotSupportedException("CpAsyncWait needs a compile-time constant");
        using var cmd = cg.BeginCommand("cp.async.wait_group");
        cmd.AppendArgument(k);
    }
}
