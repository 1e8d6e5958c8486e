using System.Runtime.CompilerServices;

// The kernels are an implementation detail of FlashDmAttn.Core (the package's public API); the tests and the bench
// reach the planner, the launch options and the kernels' device parts directly.
[assembly: InternalsVisibleTo("FlashDmAttn.Core")]
[assembly: InternalsVisibleTo("FlashDmAttn.Tests")]
[assembly: InternalsVisibleTo("FlashDmAttn.Bench")]
// ILGPU emits each kernel's launcher into a dynamic assembly of this name; it reads KernelArgs and the views' types.
[assembly: InternalsVisibleTo("ILGPURuntime")]
