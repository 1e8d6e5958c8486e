using System.Runtime.CompilerServices;

// Tests and the bench set launch options that are not part of the public API (the tensor-core kernel on the CPU
// accelerator, a plan observer).
[assembly: InternalsVisibleTo("FlashDmAttn.Tests")]
[assembly: InternalsVisibleTo("FlashDmAttn.Bench")]
