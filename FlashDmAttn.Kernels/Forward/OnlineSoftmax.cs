using ILGPU.Algorithms;

namespace FlashDmAttn.Kernels.Forward;

/// <summary>
/// The online-softmax step for one row (the counterpart of FlashAttention's softmax.h): running max m,
/// running sum l, and the factor that rescales what was accumulated before. A row that has seen no visible
/// key keeps m = −∞, l = 0, and ends with output 0 and LSE −∞ instead of NaN.
/// </summary>
internal static class OnlineSoftmax
{
    /// <summary>New running max and the rescale factor exp(m_old − m_new) (1 while the row is still empty).</summary>
    public static float Rescale(float mOld, float tileMax, out float mNew)
    {
        mNew = XMath.Max(mOld, tileMax);
        if (mNew == float.NegativeInfinity) return 1f;
        return XMath.Exp(mOld - mNew);
    }

    /// <summary>exp(s − m) with −∞ scores (masked) giving exactly 0.</summary>
    public static float Prob(float s, float m)
        => s == float.NegativeInfinity ? 0f : XMath.Exp(s - m);

    public static float Normaliser(float l) => l > 0f ? 1f / l : 0f;

    public static float LogSumExp(float m, float l)
        => l > 0f ? m + XMath.Log(l) : float.NegativeInfinity;
}
