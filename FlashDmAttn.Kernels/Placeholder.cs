namespace FlashDmAttn.Kernels; public static class Placeholder {}
