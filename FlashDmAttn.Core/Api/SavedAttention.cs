namespace FlashDmAttn;

/// <summary>
/// A forward call kept for its backward (what an autograd context would save): the output, its log-sum-exp, and the
/// call's arguments. It holds references, not copies: the inputs, mask and bias must stay alive and unchanged until
/// <see cref="Backward"/> has run. Disposing it releases the output and the LSE it allocated.
/// </summary>
public sealed class SavedAttention<T> : IDisposable where T : unmanaged
{
    private readonly AttentionBackend _backend;
    private readonly DeviceTensor<T> _q, _k, _v;
    private readonly DeviceMask? _mask;
    private readonly DeviceTensor<T>? _bias;
    private readonly float? _scale, _softcap;
    private readonly bool _causal;

    internal SavedAttention(AttentionBackend backend, DeviceTensor<T> q, DeviceTensor<T> k, DeviceTensor<T> v,
        DeviceMask? mask, DeviceTensor<T>? bias, float? scale, bool causal, float? softcap, DeviceTensor<T> output, DeviceTensor<float> lse)
    {
        (_backend, _q, _k, _v, _mask, _bias, _scale, _causal, _softcap) = (backend, q, k, v, mask, bias, scale, causal, softcap);
        Output = output;
        SoftmaxLse = lse;
    }

    /// <summary>The attention output (B, Lq, H, D).</summary>
    public DeviceTensor<T> Output { get; }

    /// <summary>The log-sum-exp (B, H, Lq), fp32.</summary>
    public DeviceTensor<float> SoftmaxLse { get; }

    /// <summary>The gradients for <paramref name="gradOutput"/>, as <see cref="AttentionBackend.Backward{T}"/> gives them.</summary>
    public AttentionGradients<T> Backward(DeviceTensor<T> gradOutput, DeviceTensor<T>? gradQuery = null, DeviceTensor<T>? gradKey = null,
        DeviceTensor<T>? gradValue = null, DeviceTensor<T>? gradBias = null)
        => _backend.Backward(gradOutput, _q, _k, _v, Output, SoftmaxLse, _mask, _bias, _scale, _causal, _softcap,
            gradQuery: gradQuery, gradKey: gradKey, gradValue: gradValue, gradBias: gradBias);

    public void Dispose()
    {
        Output.Dispose();
        SoftmaxLse.Dispose();
    }
}
