using System.Runtime.CompilerServices;

namespace FlashDmAttn.Kernels.TensorCore;

/// <summary>
/// Order of the keys inside a tile of Bc keys. An S fragment puts lane (g, t) (g = lane / 4, t = lane % 4) on
/// columns 8j + 2t + u of n-tile j (u = 0, 1). The K and V rows are copied into shared memory so that column
/// c = 8j + 2t + u holds key (Bc/4)·t + 2j + u: each lane's Bc/4 keys of a row are contiguous, so its mask bytes
/// and bias values are one or two vector loads with no exchange inside the quad. Softmax and P·V sum over the keys
/// and do not see the order; only the copies (<see cref="TcLoads"/>), the geometry (<see cref="TcGeom"/>), the mask
/// words (<see cref="TcMask"/>) and the bias addresses use it.
/// </summary>
internal static class TcKeyOrder
{
    /// <summary>Key offset (in the tile) held by shared row / fragment column <paramref name="c"/> of a tile of <paramref name="bc"/> keys.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int KeyOfColumn(int bc, int c) => (bc >> 2) * ((c >> 1) & 3) + 2 * (c >> 3) + (c & 1);

    /// <summary>Key offset of this lane's first element (n-tile 0, u = 0); element (j, u) is this + 2j + u.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int LaneKey0(int bc, int t) => (bc >> 2) * t;
}
