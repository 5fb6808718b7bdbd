// Packed binary GEMM of QNN (spec rnn-cells-and-normalization.md §8.1): out[i][j] = sum_k a[i][k] * b[j][k] for
// a, b in {-1, +1}, computed on bits (1 <-> +1, 0 <-> -1) as 2 * popcount(XNOR(a_i, b_j)) - K.
//
// Companion of seqzoo/ops/xnor.py (which has the torch-op twin and the ctypes calls). Rows are packed into 64-bit
// words, bit t of word w holding element 64 w + t, and each row is padded with zero words to a multiple of 8 words
// (512 bits) so the vector loop has no tail. Padding bits are 0 in both operands, so they never differ:
// out = K - 2 * popcount(a XOR b) over the whole padded row, which equals 2 * popcount(XNOR) - K over the K real
// bits (N not a multiple of 64 needs nothing else). Integer arithmetic only: results are exact.
//
// Popcount: AVX-512 VPOPCNTDQ when the compiler targets it (-march=native on a CPU that has it), else AVX-512BW
// nibble-lookup (vpshufb + vpsadbw), else the scalar popcnt instruction (__builtin_popcountll; with -march=native
// it is one instruction where the CPU has POPCNT). The library is cached per CPU (ops/native_kernels.py hashes
// /proc/cpuinfo's flags), and xnor_features() reports which path was compiled. No floating point is computed here
// except the sign test in packing (x >= 0 -> bit 1, so sign(0) = +1; NaN packs as 0), and nothing touches the FP
// mode of the process. Rows of `a` are split over OpenMP threads (torch's libgomp, see norm_lstm_step.cpp).
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

extern "C" {

int seqzoo_abi_version() { return 1; }

// Bit 0: hardware popcnt, bit 1: AVX-512BW lookup path, bit 2: AVX-512 VPOPCNTDQ path.
int xnor_features() {
    int f = 0;
#if defined(__POPCNT__)
    f |= 1;
#endif
#if defined(__AVX512BW__)
    f |= 2;
#endif
#if defined(__AVX512VPOPCNTDQ__)
    f |= 4;
#endif
    return f;
}

// Pack `rows` rows of `k` floats (row stride `k`) into rows of `stride` 64-bit words (stride >= ceil(k / 64)).
void xnor_pack_f32(const float* x, int64_t rows, int64_t k, int64_t stride, uint64_t* out) {
#pragma omp parallel for schedule(static) if (rows >= 64)
    for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * k;
        uint64_t* o = out + r * stride;
        for (int64_t w = 0; w < stride; ++w) {
            uint64_t word = 0;
            const int64_t base = w * 64;
            const int64_t n = k - base < 64 ? (k - base > 0 ? k - base : 0) : 64;
#if defined(__AVX512F__)
            if (n == 64) {  // 4 ordered compares (x >= 0; NaN gives 0), 16 bits each
                const __m512 zero = _mm512_setzero_ps();
                for (int q = 0; q < 4; ++q)
                    word |= static_cast<uint64_t>(_mm512_cmp_ps_mask(_mm512_loadu_ps(xr + base + 16 * q), zero,
                                                                     _CMP_GE_OQ)) << (16 * q);
                o[w] = word;
                continue;
            }
#endif
            for (int64_t t = 0; t < n; ++t) word |= static_cast<uint64_t>(xr[base + t] >= 0.0f) << t;
            o[w] = word;
        }
    }
}

}  // extern "C"

namespace {

#if defined(__AVX512BW__)
inline __m512i popcount_bytes_or_words(__m512i v) {
#if defined(__AVX512VPOPCNTDQ__)
    return _mm512_popcnt_epi64(v);  // per 64-bit lane
#else
    const __m512i lut = _mm512_set_epi8(4, 3, 3, 2, 3, 2, 2, 1, 3, 2, 2, 1, 2, 1, 1, 0, 4, 3, 3, 2, 3, 2, 2, 1, 3, 2,
                                        2, 1, 2, 1, 1, 0, 4, 3, 3, 2, 3, 2, 2, 1, 3, 2, 2, 1, 2, 1, 1, 0, 4, 3, 3, 2,
                                        3, 2, 2, 1, 3, 2, 2, 1, 2, 1, 1, 0);
    const __m512i low = _mm512_set1_epi8(0x0f);
    const __m512i lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(v, low));
    const __m512i hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi64(v, 4), low));
    return _mm512_add_epi8(lo, hi);  // per byte (<= 8)
#endif
}

// Sum of the per-lane counts of `acc` (bytes summed to 64-bit lanes first unless VPOPCNTDQ gave 64-bit lanes).
inline int64_t finish(__m512i acc) {
    alignas(64) int64_t lanes[8];
    _mm512_store_si512(lanes, acc);
    int64_t s = 0;
    for (int t = 0; t < 8; ++t) s += lanes[t];
    return s;
}

// Byte counts are folded into 64-bit lanes with vpsadbw after every 512-bit step (no byte overflow).
inline __m512i widen(__m512i counts) {
#if defined(__AVX512VPOPCNTDQ__)
    return counts;
#else
    return _mm512_sad_epu8(counts, _mm512_setzero_si512());
#endif
}

// 2 rows of a x 4 rows of b over `vecs` 512-bit blocks: mismatch counts into m[2][4].
inline void block_2x4(const uint64_t* a0, const uint64_t* a1, const uint64_t* const* b, int64_t vecs,
                      int64_t m[2][4]) {
    __m512i acc[2][4];
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_si512();
    for (int64_t v = 0; v < vecs; ++v) {
        const __m512i x0 = _mm512_loadu_si512(a0 + 8 * v), x1 = _mm512_loadu_si512(a1 + 8 * v);
        for (int j = 0; j < 4; ++j) {
            const __m512i y = _mm512_loadu_si512(b[j] + 8 * v);
            acc[0][j] = _mm512_add_epi64(acc[0][j], widen(popcount_bytes_or_words(_mm512_xor_si512(x0, y))));
            acc[1][j] = _mm512_add_epi64(acc[1][j], widen(popcount_bytes_or_words(_mm512_xor_si512(x1, y))));
        }
    }
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 4; ++j) m[i][j] = finish(acc[i][j]);
}
#endif

inline int64_t mismatches(const uint64_t* a, const uint64_t* b, int64_t words) {
    int64_t m = 0;
#if defined(__AVX512BW__)
    __m512i acc = _mm512_setzero_si512();
    for (int64_t v = 0; v < words / 8; ++v)
        acc = _mm512_add_epi64(acc, widen(popcount_bytes_or_words(
                                        _mm512_xor_si512(_mm512_loadu_si512(a + 8 * v), _mm512_loadu_si512(b + 8 * v)))));
    m = finish(acc);
#else
    for (int64_t w = 0; w < words; ++w) m += __builtin_popcountll(a[w] ^ b[w]);
#endif
    return m;
}

}  // namespace

extern "C" {

// The scalar path (always compiled; the tests run it against the vector path): 1 x 4 register blocks, each word of
// a_i loaded once for 4 rows of b.
void xnor_gemm_scalar(const uint64_t* a, const uint64_t* b, int64_t M, int64_t N, int64_t K, int64_t stride,
                      int32_t* out) {
#pragma omp parallel for schedule(dynamic, 4) if (M >= 4)
    for (int64_t i = 0; i < M; ++i) {
        const uint64_t* ai = a + i * stride;
        int64_t j = 0;
        for (; j + 4 <= N; j += 4) {
            const uint64_t *b0 = b + j * stride, *b1 = b0 + stride, *b2 = b1 + stride, *b3 = b2 + stride;
            int64_t m0 = 0, m1 = 0, m2 = 0, m3 = 0;
            for (int64_t w = 0; w < stride; ++w) {
                const uint64_t x = ai[w];
                m0 += __builtin_popcountll(x ^ b0[w]);
                m1 += __builtin_popcountll(x ^ b1[w]);
                m2 += __builtin_popcountll(x ^ b2[w]);
                m3 += __builtin_popcountll(x ^ b3[w]);
            }
            int32_t* o = out + i * N + j;
            o[0] = static_cast<int32_t>(K - 2 * m0);
            o[1] = static_cast<int32_t>(K - 2 * m1);
            o[2] = static_cast<int32_t>(K - 2 * m2);
            o[3] = static_cast<int32_t>(K - 2 * m3);
        }
        for (; j < N; ++j) {
            const uint64_t* bj = b + j * stride;
            int64_t m = 0;
            for (int64_t w = 0; w < stride; ++w) m += __builtin_popcountll(ai[w] ^ bj[w]);
            out[i * N + j] = static_cast<int32_t>(K - 2 * m);
        }
    }
}

// out (M, N) int32 = K - 2 * popcount(a_i XOR b_j); a: (M, stride) words, b: (N, stride) words, stride % 8 == 0.
// The AVX-512 path (2 x 4 register blocks of 512-bit vectors) when compiled, else the scalar path.
void xnor_gemm(const uint64_t* a, const uint64_t* b, int64_t M, int64_t N, int64_t K, int64_t stride,
               int32_t* out) {
#if defined(__AVX512BW__)
    const int64_t vecs = stride / 8;
    const int64_t M2 = M - M % 2, N4 = N - N % 4;
#pragma omp parallel for schedule(dynamic, 4) if (M >= 4)
    for (int64_t i = 0; i < M2; i += 2) {
        const uint64_t* a0 = a + i * stride;
        const uint64_t* a1 = a0 + stride;
        int64_t m[2][4];
        for (int64_t j = 0; j < N4; j += 4) {
            const uint64_t* bj[4] = {b + j * stride, b + (j + 1) * stride, b + (j + 2) * stride,
                                     b + (j + 3) * stride};
            block_2x4(a0, a1, bj, vecs, m);
            for (int r = 0; r < 2; ++r)
                for (int c = 0; c < 4; ++c) out[(i + r) * N + j + c] = static_cast<int32_t>(K - 2 * m[r][c]);
        }
        for (int64_t j = N4; j < N; ++j)
            for (int r = 0; r < 2; ++r)
                out[(i + r) * N + j] = static_cast<int32_t>(K - 2 * mismatches(a0 + r * stride, b + j * stride,
                                                                                stride));
    }
    for (int64_t i = M2; i < M; ++i)
        for (int64_t j = 0; j < N; ++j)
            out[i * N + j] = static_cast<int32_t>(K - 2 * mismatches(a + i * stride, b + j * stride, stride));
#else
    xnor_gemm_scalar(a, b, M, N, K, stride, out);
#endif
}

}  // extern "C"
