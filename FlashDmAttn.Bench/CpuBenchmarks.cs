using BenchmarkDotNet.Attributes;

namespace FlashDmAttn.Bench;

/// <summary>The portable kernel on ILGPU's CPU accelerator (BenchmarkDotNet): small shapes, bf16.</summary>
[MemoryDiagnoser]
public class CpuForwardBenchmarks
{
    private AttentionBackend _attn = null!;
    private DeviceTensor<BFloat16> _q = null!, _k = null!, _v = null!, _o = null!;

    [Params(64, 128)] public int HeadDim;
    [Params(false, true)] public bool Causal;
    public int L = 256, H = 2;

    [GlobalSetup]
    public void Setup()
    {
        _attn = FlashDmAttention.Auto("cpu");
        var acc = _attn.Accelerator;
        var rng = new Random(1);
        BFloat16[] R(int n) => Enumerable.Range(0, n).Select(_ => (BFloat16)(float)(rng.NextDouble() * 2 - 1)).ToArray();
        _q = DeviceTensor<BFloat16>.FromHost(acc, R(L * H * HeadDim), 1, L, H, HeadDim);
        _k = DeviceTensor<BFloat16>.FromHost(acc, R(L * H * HeadDim), 1, L, H, HeadDim);
        _v = DeviceTensor<BFloat16>.FromHost(acc, R(L * H * HeadDim), 1, L, H, HeadDim);
        _o = DeviceTensor<BFloat16>.Allocate(acc, 1, L, H, HeadDim);
    }

    [Benchmark]
    public void Forward()
    {
        _attn.Forward(_q, _k, _v, isCausal: Causal, output: _o);
        _attn.Accelerator.Synchronize();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _q.Dispose(); _k.Dispose(); _v.Dispose(); _o.Dispose();
    }
}
