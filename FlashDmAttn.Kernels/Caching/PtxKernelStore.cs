using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace FlashDmAttn.Kernels.Caching;

/// <summary>
/// Everything that changes a kernel's PTX, as text: the kernel method with its generic arguments (the plan's
/// specialization), the group-size specialization, this library's assembly version and build (module version id,
/// which changes with every change of the kernels' code), ILGPU's version and build, the compile options of the context,
/// the device's architecture and PTX instruction set, and the driver version.
/// </summary>
internal sealed record KernelCacheKey(
    string Method, string Specialization, string Library, string Ilgpu, string ContextOptions, string Device, string Driver)
{
    public string Text => $"method={Method}\nspecialization={Specialization}\nlibrary={Library}\nilgpu={Ilgpu}\n" +
                          $"context={ContextOptions}\ndevice={Device}\ndriver={Driver}";

    public static KernelCacheKey For(MethodInfo method, KernelSpecialization specialization, Context context,
        CudaArchitecture architecture, CudaInstructionSet instructionSet, string driver)
    {
        var p = context.Properties;
        return new KernelCacheKey(
            MethodIdentity(method),
            $"{specialization.MaxNumThreadsPerGroup},{specialization.MinNumGroupsPerMultiprocessor}",
            $"{typeof(KernelCacheKey).Assembly.GetName().Version} {typeof(KernelCacheKey).Module.ModuleVersionId}",
            $"{Context.Version} {typeof(Context).Module.ModuleVersionId} {typeof(ILGPU.Algorithms.XMath).Module.ModuleVersionId}",
            $"{p.OptimizationLevel},{p.DebugSymbolsMode},{p.EnableAssertions},{p.EnableIOOperations},{p.InliningMode}," +
            $"{p.MathMode},{p.StaticFieldMode},{p.ArrayMode}",
            $"{architecture} {instructionSet}",
            driver);
    }

    /// <summary>Declaring type, name, generic arguments and parameter types, each with its assembly's build.</summary>
    public static string MethodIdentity(MethodInfo m)
    {
        var sb = new StringBuilder();
        sb.Append(m.DeclaringType!.FullName).Append("::").Append(m.Name);
        if (m.IsGenericMethod)
            sb.Append('<').AppendJoin(',', m.GetGenericArguments().Select(TypeIdentity)).Append('>');
        sb.Append('(').AppendJoin(',', m.GetParameters().Select(p => TypeIdentity(p.ParameterType))).Append(')');
        return sb.ToString();
    }

    private static string TypeIdentity(Type t) => $"{t.FullName}@{t.Module.ModuleVersionId}";
}

/// <summary>What a PTX kernel needs besides its method to be loaded without compiling: the PTX text, the entry name
/// (a check), the shared-memory specification the compiler derived, and the group-size specialization.</summary>
internal sealed record PtxEntry(string Ptx, string Name, int SharedStaticSize, bool SharedDynamic, int? MaxThreads, int? MinGroups)
{
    public byte[] Encode()
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(Name);
            w.Write(SharedStaticSize);
            w.Write(SharedDynamic);
            w.Write(MaxThreads ?? -1);
            w.Write(MinGroups ?? -1);
            w.Write(Ptx);
        }
        return ms.ToArray();
    }

    public static PtxEntry? Decode(byte[] bytes)
    {
        try
        {
            using var r = new BinaryReader(new MemoryStream(bytes), Encoding.UTF8);
            string name = r.ReadString();
            int shared = r.ReadInt32();
            bool dynamic = r.ReadBoolean();
            int maxThreads = r.ReadInt32(), minGroups = r.ReadInt32();
            string ptx = r.ReadString();
            return new PtxEntry(ptx, name, shared, dynamic, maxThreads < 0 ? null : maxThreads, minGroups < 0 ? null : minGroups);
        }
        catch (EndOfStreamException)
        {
            return null;
        }
    }

    public static PtxEntry From(PTXCompiledKernel compiled)
    {
        var shared = EntryPointOf(compiled).SharedMemory;
        return new PtxEntry(compiled.PTXAssembly, compiled.Name, shared.StaticSize, shared.HasDynamicMemory,
            compiled.Specialization.MaxNumThreadsPerGroup, compiled.Specialization.MinNumGroupsPerMultiprocessor);
    }

    /// <summary>The compiled kernel again, from the method and this entry, without running ILGPU's compiler.</summary>
    public PTXCompiledKernel Rebuild(Context context, MethodInfo method)
    {
        var entry = new EntryPoint(EntryPointDescription.FromExplicitlyGroupedKernel(method),
            new SharedMemorySpecification(SharedStaticSize, SharedDynamic), new KernelSpecialization(MaxThreads, MinGroups));
        if (entry.Name != Name)
            throw new InvalidDataException($"cached kernel '{Name}' does not match the method's entry '{entry.Name}'");
        return NewPtxCompiledKernel(context, entry, null, Ptx);
    }

    // ILGPU 1.5.3 builds these only inside its compiler; the cache reaches the constructor and the entry point directly.
    [UnsafeAccessor(UnsafeAccessorKind.Constructor)]
    private static extern PTXCompiledKernel NewPtxCompiledKernel(Context context, EntryPoint entryPoint, CompiledKernel.KernelInfo? info, string ptxAssembly);

    [UnsafeAccessor(UnsafeAccessorKind.Method, Name = "get_EntryPoint")]
    private static extern EntryPoint EntryPointOf(CompiledKernel kernel);
}

/// <summary>
/// Loads explicitly grouped kernels on CUDA through the disk cache: a hit rebuilds the compiled kernel from the stored
/// PTX (no ILGPU compile; the driver's own JIT cache then sees the same PTX bytes in every process), a miss compiles,
/// loads and stores. Any failure on the hit path (an entry the driver refuses, a changed ILGPU) falls back to compiling.
/// Other accelerators, or no cache, compile as ILGPU always does.
/// </summary>
internal static class CachedKernels
{
    /// <summary>Whether the last load on this thread came from the disk cache (for tests and the bench).</summary>
    [ThreadStatic] public static bool LastWasHit;

    /// <summary>Milliseconds that loads on this thread took since the bench last reset it (read, rebuild or compile,
    /// module load, launcher): where a process's first call spends besides the launch.</summary>
    [ThreadStatic] public static double LoadMs;

    /// <summary>Milliseconds of that in the driver's module load (cuModuleLoadData: its JIT, or its JIT cache).</summary>
    [ThreadStatic] public static double ModuleLoadMs;

    /// <summary>As <see cref="Load"/>, with the time it took added to <see cref="LoadMs"/>; then the launcher.</summary>
    public static TLauncher Launcher<TLauncher>(Accelerator accelerator, KernelDiskCache? cache, Delegate kernel,
        KernelSpecialization specialization = default) where TLauncher : Delegate
    {
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        var launcher = Load(accelerator, cache, kernel.Method, specialization).CreateLauncherDelegate<TLauncher>();
        LoadMs += System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        return launcher;
    }

    public static Kernel Load(Accelerator accelerator, KernelDiskCache? cache, MethodInfo method, KernelSpecialization specialization)
    {
        LastWasHit = false;
        if (cache is null || accelerator is not CudaAccelerator cuda)
            return accelerator.LoadKernel(method, specialization);
        var key = KernelCacheKey.For(method, specialization, accelerator.Context, cuda.Architecture, cuda.InstructionSet,
            cuda.DriverVersion.ToString()).Text;
        if (cache.TryRead(key) is { } bytes && PtxEntry.Decode(bytes) is { } hit)
        {
            try
            {
                var rebuilt = hit.Rebuild(accelerator.Context, method);
                long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
                var kernel = accelerator.LoadKernel(rebuilt);
                ModuleLoadMs += System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                LastWasHit = true;
                return kernel;
            }
            catch (Exception e) when (e is InvalidDataException or CudaException or InvalidOperationException or NotSupportedException)
            {
                // Compiled again below, and the entry replaced.
            }
        }
        var compiled = (PTXCompiledKernel)accelerator.CompileKernel(EntryPointDescription.FromExplicitlyGroupedKernel(method), specialization);
        var loaded = accelerator.LoadKernel(compiled);
        cache.Write(key, PtxEntry.From(compiled).Encode());
        return loaded;
    }
}
