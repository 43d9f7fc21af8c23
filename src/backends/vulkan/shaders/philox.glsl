// Philox 4x32-10 (src/backends/common/philox.h): the four words of counter
// (c0, c1) under key (k0, k1).
uvec4 philox(uint c0, uint c1, uint k0, uint k1) {
    uint c2 = 0u, c3 = 0u;
    for (int r = 0; r < 10; r++) {
        uint hi0, lo0, hi1, lo1;
        umulExtended(0xD2511F53u, c0, hi0, lo0);
        umulExtended(0xCD9E8D57u, c2, hi1, lo1);
        uint n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c1 = lo1;
        c3 = lo0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return uvec4(c0, c1, c2, c3);
}

// Dropout's keep decision for element k (RANDOM's UNIFORM draw u of element k
// kept when u >= p, i.e. its top 24 bits >= thresh = ceil(p 2^24)).
bool dropout_keep(uint64_t offset, uint k0, uint k1, uint k, uint thresh) {
    uint64_t ctr = offset + uint64_t(k / 4u);
    uvec4 w = philox(uint(ctr), uint(ctr >> 32), k0, k1);
    return (w[k % 4u] >> 8) >= thresh;
}
