// region: usings
using System.Numerics.Tensors;   // Tensor<T>, for host tensors
using FlashDmAttn;               // FlashDmAttention, DeviceTensor<T>, DeviceMask, BFloat16, RandomData
// endregion

namespace FlashDmAttn.Demo;

/// <summary>
/// The README's usage examples, verbatim (a test checks that README.md shows exactly these regions and runs them);
/// they use only the library, so a region pasted under the usings region compiles.
/// Sizes are parameters: the defaults run in seconds on the CPU accelerator; the reference's sizes suit a GPU.
/// </summary>
public static class Examples
{
    // region: standard
    public static DeviceTensor<BFloat16> Standard(int B = 2, int L = 256, int H = 12, int D = 128)
    {
        var attn = FlashDmAttention.Auto();                 // cuda > opencl > cpu
        var acc = attn.Accelerator;
        using var q = DeviceTensor<BFloat16>.Random(acc, B, L, H, D);
        using var k = DeviceTensor<BFloat16>.Random(acc, B, L, H, D);
        using var v = DeviceTensor<BFloat16>.Random(acc, B, L, H, D);

        var output = attn.Forward(q, k, v, isCausal: true);
        Console.WriteLine($"[{string.Join(", ", output.Shape.ToArray())}]");   // [2, 256, 12, 128]
        return output;
    }
    // endregion

    // region: dynamic-mask
    public static DeviceTensor<BFloat16> DynamicMaskAttention(int B = 2, int H = 12, int L = 256, int keepWindowSize = 64)
    {
        var attn = FlashDmAttention.Auto();
        var acc = attn.Accelerator;
        using var q = DeviceTensor<BFloat16>.Random(acc, B, L, H, 128);
        using var k = DeviceTensor<BFloat16>.Random(acc, B, L, H, 128);
        using var v = DeviceTensor<BFloat16>.Random(acc, B, L, H, 128);
        using var attentionBias = DeviceTensor<BFloat16>.Random(acc, B, H, L, L);

        // Keep the top keepWindowSize keys of each row, selected on the device (all keys when L <= keepWindowSize).
        using var attentionMask = attn.TopK(attentionBias, keepWindowSize);

        return attn.Forward(q, k, v, attnMask: attentionMask, attnBias: attentionBias,
            isCausal: true, scale: 1f / MathF.Sqrt(128));
    }
    // endregion

    // region: gqa
    public static DeviceTensor<BFloat16> GroupedQueryAttention(int B = 2, int L = 128, int H = 32, int Hkv = 8, int D = 128)
    {
        var attn = FlashDmAttention.Auto();
        var acc = attn.Accelerator;
        using var q = DeviceTensor<BFloat16>.Random(acc, B, L, H, D);
        using var k = DeviceTensor<BFloat16>.Random(acc, B, L, Hkv, D);
        using var v = DeviceTensor<BFloat16>.Random(acc, B, L, Hkv, D);

        // A mask of ones, broadcast over batch, heads and queries: (1, 1, 1, L), never L x L.
        using var attnMask = DeviceTensor<byte>.Allocate(acc, 1, 1, 1, L);
        attnMask.Fill(1);                                    // on the device

        return attn.Forward(q, k, v, attnMask: attnMask, isCausal: true);
    }
    // endregion

    // region: varlen
    public static DeviceTensor<BFloat16> VariableLength(int[]? seqLens = null, int H = 16, int D = 64)
    {
        seqLens ??= [64, 128, 96];
        int T = seqLens.Sum();
        var attn = FlashDmAttention.Auto();
        var acc = attn.Accelerator;
        using var q = DeviceTensor<BFloat16>.Random(acc, T, H, D);
        using var k = DeviceTensor<BFloat16>.Random(acc, T, H, D);
        using var v = DeviceTensor<BFloat16>.Random(acc, T, H, D);

        int[] cu = [0, .. seqLens.Select((_, i) => seqLens.Take(i + 1).Sum())];   // cumulative lengths

        return attn.ForwardVarlen(q, k, v,
            cuSeqlensQ: cu, cuSeqlensK: cu,
            maxSeqlenQ: seqLens.Max(), maxSeqlenK: seqLens.Max(),
            isCausal: true);
    }
    // endregion

    // region: host-tensors
    public static Tensor<float> HostTensors(int B = 1, int L = 64, int H = 4, int D = 32)
    {
        var attn = FlashDmAttention.Auto();
        var q = Tensor.Create(RandomData.Normal<float>(B * L * H * D), [B, L, H, D]);
        var k = Tensor.Create(RandomData.Normal<float>(B * L * H * D), [B, L, H, D]);
        var v = Tensor.Create(RandomData.Normal<float>(B * L * H * D), [B, L, H, D]);
        var perKeyBias = Tensor.Create(RandomData.Normal<float>(B * H * L), [B, H, 1, L]);   // broadcast over queries

        return attn.Forward(q, k, v, attnBias: perKeyBias, isCausal: true, softcap: 30f);
    }
    // endregion

    // region: training
    public static AttentionGradients<BFloat16> TrainingStep(int B = 2, int L = 256, int H = 8, int D = 64, int keepWindowSize = 64)
    {
        var attn = FlashDmAttention.Auto();
        var acc = attn.Accelerator;
        using var q = DeviceTensor<BFloat16>.Random(acc, B, L, H, D);
        using var k = DeviceTensor<BFloat16>.Random(acc, B, L, H, D);
        using var v = DeviceTensor<BFloat16>.Random(acc, B, L, H, D);
        using var perKeyBias = DeviceTensor<BFloat16>.Random(acc, B, H, 1, L);   // learned; broadcast over queries
        using var mask = attn.TopK(perKeyBias, keepWindowSize);                   // the top keys of each (b, h)

        // The forward keeps its log-sum-exp for the backward.
        using var lse = DeviceTensor<float>.Allocate(acc, B, H, L);
        using var output = attn.Forward(q, k, v, attnMask: mask, attnBias: perKeyBias, isCausal: true, softmaxLse: lse);

        using var gradOutput = DeviceTensor<BFloat16>.Random(acc, B, L, H, D);    // dLoss/dOutput from the layers above
        var grads = attn.Backward(gradOutput, q, k, v, output, lse,
            attnMask: mask, attnBias: perKeyBias, isCausal: true);
        // dq, dk, dv, and dbias in the bias's own shape: no L x L buffer anywhere.
        Console.WriteLine($"dbias [{string.Join(", ", grads.DBias!.Shape.ToArray())}]");   // [2, 8, 1, 256]
        return grads;
    }
    // endregion

    // region: generation
    public static DeviceTensor<BFloat16> Generation(int B = 2, int prompt = 16, int steps = 32,
        int H = 16, int Hkv = 4, int D = 64, int pageSize = 16)
    {
        var attn = FlashDmAttention.Auto();
        var acc = attn.Accelerator;
        // A paged cache with room for prompt + steps tokens a sequence; sequence b owns the blocks from b·pages.
        int pages = (prompt + steps + pageSize - 1) / pageSize;
        var blockTable = new int[B, pages];
        for (int b = 0; b < B; b++)
            for (int j = 0; j < pages; j++) blockTable[b, j] = b * pages + j;
        using var keyCache = DeviceTensor<BFloat16>.Allocate(acc, B * pages, pageSize, Hkv, D);
        using var valueCache = DeviceTensor<BFloat16>.Allocate(acc, B * pages, pageSize, Hkv, D);
        var cacheSeqlens = new int[B];                                    // tokens cached per sequence

        // One call a step: append the n new tokens' k, v at cacheSeqlens[b], then attend over everything cached.
        DeviceTensor<BFloat16> Step(int n)
        {
            using var q = DeviceTensor<BFloat16>.Random(acc, B, n, H, D);   // the model's projections in practice
            using var k = DeviceTensor<BFloat16>.Random(acc, B, n, Hkv, D);
            using var v = DeviceTensor<BFloat16>.Random(acc, B, n, Hkv, D);
            var output = attn.ForwardWithKvCache(q, keyCache, valueCache, cacheSeqlens,
                keyNew: k, valueNew: v, blockTable: blockTable, isCausal: true);
            for (int b = 0; b < B; b++) cacheSeqlens[b] += n;              // the caller advances the lengths
            return output;
        }

        Step(prompt).Dispose();                              // prefill: the prompt's tokens, causal among themselves
        for (int t = 1; t < steps; t++) Step(1).Dispose();   // decode: one token a sequence and step
        return Step(1);                                      // the last step's output, (B, 1, H, D)
    }
    // endregion

    // region: warm-up
    public static int WarmUp(string? cacheDirectory = null, int H = 32, int Hkv = 8, int D = 128)
    {
        var attn = FlashDmAttention.Auto().WithOptions(new AttentionOptions
        {
            KernelCacheDirectory = cacheDirectory,   // null: the per-user default
            UseKernelCache = true,                   // false: compile in every process, write nothing
        });
        // At model load: compile (or load from the cache) what calls of these shapes will run, 4 kernels at once.
        AttentionShape[] shapes =
        [
            new(Batch: 1, SeqQ: 4096, SeqK: 4096, Heads: H, KvHeads: Hkv, HeadDim: D, IsCausal: true),
            new(Batch: 1, SeqQ: 4096, SeqK: 4096, Heads: H, KvHeads: Hkv, HeadDim: D, IsCausal: true,
                Mask: OperandForm.PerKey, Bias: OperandForm.PerKey),
        ];
        return attn.WarmUp<BFloat16>(shapes,
            new Progress<WarmUpProgress>(p => Console.WriteLine($"{p.Done}/{p.Total} {p.Kernel}")), maxParallelism: 4);
    }
    // endregion
}
