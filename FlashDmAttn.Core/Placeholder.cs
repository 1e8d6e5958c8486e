namespace FlashDmAttn; public static class Placeholder2 {}
