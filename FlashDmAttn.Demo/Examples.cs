using System.Numerics.Tensors;
using FlashDmAttn;

namespace FlashDmAttn.Demo;

/// <summary>
/// The README's usage examples, verbatim (a test checks that README.md shows exactly these regions and runs them).
/// Sizes are parameters: the defaults run in seconds on the CPU accelerator; the reference's sizes suit a GPU.
/// </summary>
public static class Examples
{
    // region: standard
    public static DeviceTensor<BFloat16> Standard(int B = 2, int L = 256, int H = 12, int D = 128)
    {
        var attn = FlashDmAttention.Auto();                 // cuda > opencl > cpu
        var acc = attn.Accelerator;
        using var q = DeviceTensor<BFloat16>.FromHost(acc, Random<BFloat16>(B * L * H * D), B, L, H, D);
        using var k = DeviceTensor<BFloat16>.FromHost(acc, Random<BFloat16>(B * L * H * D), B, L, H, D);
        using var v = DeviceTensor<BFloat16>.FromHost(acc, Random<BFloat16>(B * L * H * D), B, L, H, D);

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
        using var q = DeviceTensor<BFloat16>.FromHost(acc, Random<BFloat16>(B * L * H * 128), B, L, H, 128);
        using var k = DeviceTensor<BFloat16>.FromHost(acc, Random<BFloat16>(B * L * H * 128), B, L, H, 128);
        using var v = DeviceTensor<BFloat16>.FromHost(acc, Random<BFloat16>(B * L * H * 128), B, L, H, 128);
        using var attentionBias = DeviceTensor<BFloat16>.FromHost(acc, Random<BFloat16>(B * H * L * L), B, H, L, L);

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
        using var q = DeviceTensor<BFloat16>.FromHost(acc, Random<BFloat16>(B * L * H * D), B, L, H, D);
        using var k = DeviceTensor<BFloat16>.FromHost(acc, Random<BFloat16>(B * L * Hkv * D), B, L, Hkv, D);
        using var v = DeviceTensor<BFloat16>.FromHost(acc, Random<BFloat16>(B * L * Hkv * D), B, L, Hkv, D);

        // A mask of ones, broadcast over batch, heads and queries: (1, 1, 1, L), never L x L.
        using var attnMask = DeviceTensor<byte>.FromHost(acc, Enumerable.Repeat((byte)1, L).ToArray(), 1, 1, 1, L);

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
        using var q = DeviceTensor<BFloat16>.FromHost(acc, Random<BFloat16>(T * H * D), T, H, D);
        using var k = DeviceTensor<BFloat16>.FromHost(acc, Random<BFloat16>(T * H * D), T, H, D);
        using var v = DeviceTensor<BFloat16>.FromHost(acc, Random<BFloat16>(T * H * D), T, H, D);

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
        var q = Tensor.Create(Random<float>(B * L * H * D), [B, L, H, D]);
        var k = Tensor.Create(Random<float>(B * L * H * D), [B, L, H, D]);
        var v = Tensor.Create(Random<float>(B * L * H * D), [B, L, H, D]);
        var perKeyBias = Tensor.Create(Random<float>(B * H * L), [B, H, 1, L]);   // broadcast over queries

        return attn.Forward(q, k, v, attnBias: perKeyBias, isCausal: true, softcap: 30f);
    }
    // endregion

    /// <summary>Standard-normal values in the element type T.</summary>
    public static T[] Random<T>(int n, int seed = 0)
    {
        var rng = new Random(seed == 0 ? System.Random.Shared.Next() : seed);
        var values = new T[n];
        for (int i = 0; i < n; i++)
        {
            float z = MathF.Sqrt(-2 * MathF.Log(1 - rng.NextSingle())) * MathF.Cos(2 * MathF.PI * rng.NextSingle());
            values[i] = typeof(T) == typeof(float) ? (T)(object)z
                : typeof(T) == typeof(Half) ? (T)(object)(Half)z
                : (T)(object)(BFloat16)z;
        }
        return values;
    }
}
