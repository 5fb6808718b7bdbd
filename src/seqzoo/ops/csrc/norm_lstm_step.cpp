// One time step of the LN-/ATN-LSTM loop (forward and backward), fused over all pointwise work of the step.
//
// Companion of seqzoo/ops/lstm_loop.py (called from lstm_kernel_driver.py; structs mirrored in lstm_kernel_abi.py):
// Python keeps the chunking, the GEMMs (oneDNN via torch) and every per-chunk reduction; these kernels replace the dozen small torch ops per step between the
// GEMMs. The math is exactly the module's fast path (see its docstring); tests compare both against the autograd
// reference twin. Plain C ABI (no torch headers) so it compiles in about a second; loaded with ctypes. Rows of the
// batch are independent and split over OpenMP threads: built with -fopenmp, the library binds to the libgomp torch
// has already loaded (same soname), so it shares torch's thread pool and its torch.set_num_threads setting.
// Gain/bias gradients are accumulated per thread and added under a lock at the end of each call.
#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

// Built with IEEE semantics (no fast-math flags; see ops/native_kernels.py): NaN and Inf propagate exactly as on the
// torch-op path and nothing here touches the FP mode (FTZ/DAZ) of the process. Reductions that must be reassociated
// to vectorize say so with an OpenMP SIMD reduction (each operation stays IEEE; only the summation order changes).
#ifdef _OPENMP
#define SEQZOO_PRAGMA(x) _Pragma(#x)
#define SEQZOO_SIMD_SUM(...) SEQZOO_PRAGMA(omp simd reduction(+ : __VA_ARGS__))
#define SEQZOO_SIMD SEQZOO_PRAGMA(omp simd)
#else
#define SEQZOO_SIMD_SUM(...)
#define SEQZOO_SIMD
#endif

extern "C" {

struct SiteCfg {
    int32_t kind;  // 0: LayerNorm, 1: ATN window, 2: identity (no statistics; only the gate scaling wf)
    int32_t k;     // window length (ATN)
    int32_t F;     // features
    int32_t L;     // sequence length (ATN backward: DS is dropped k steps later)
    double eps;
    void* wf;  // forward gain (scaled by the gate scale), F
    void* bf;  // forward bias (scaled) or null
    void* w;   // unscaled gain (backward) or null
    void* mu;  // LN: (L, B) means, or null
    void* rs;  // (L, B) reciprocal standard deviations, or null (LN inference)
    void* E;   // ATN: (L + k, B, 2) per-step (sum a, sum a^2); E[k + t] is step t
    void* W;   // ATN: (L + 1, B, 2) window sums after each step
    void* IC;  // ATN: (L, B) 1 / (window count * F)
    void* M;   // ATN: (L, B, 2) window (mean, E a^2)
    void* DS;  // ATN backward: (L + k, B, 2) d(window sums) of every step
    void* R;   // ATN backward: (B, 2) running sum of DS over the steps whose window holds the current step
    void* gw;  // backward: gain gradient accumulator (F) or null
    void* gb;  // backward: bias gradient accumulator (F) or null
};

struct LoopCfg {
    int32_t B, H, has_mask, pad;
    void* hs;    // (L + 1, B, H), h0 first
    void* cs;    // (L + 1, B, H), c0 first
    void* acts;  // chunk (n, B, 4H): gate inputs in, activations out
    void* pre;   // chunk (n, B, 4H): recurrent pre-activations kept for backward, or null
    void* tcn;   // chunk (n, B, H): tanh(N_c(c_t))
    void* mask;  // (L, B) uint8, time-major, or null
    // backward
    void* q;    // chunk (n, B, 4H): d(gate pre-activations) out
    void* dcn;  // chunk (n, B, H): d N_c(c_t) out
    void* da;   // chunk (n, B, 4H): d(recurrent pre-activation) out
    void* dh;   // (L, B, H): gradient w.r.t. h_t, accumulated
    void* dc;   // (B, H): running gradient w.r.t. c_t
    SiteCfg sh, sc;
};

}  // extern "C"

namespace {

// exp(x) in float32, written so the compiler can vectorize it (no libm call) while keeping IEEE results at the
// edges: NaN stays NaN, exp(+inf) and every overflow give +inf, exp(-inf) and every underflow give +0, and the
// denormal range is reached by scaling in two exact steps. Cody-Waite range reduction and the Cephes polynomial:
// about 1 ulp from the correctly rounded value, like the SLEEF exp (1.0 ulp) torch's CPU sigmoid uses.
inline float exp_f32(float x) {
    float xc = x >= -104.0f ? x : -104.0f;  // NaN compares false: computed as -104, fixed up at the end
    xc = xc <= 89.0f ? xc : 89.0f;
    const float fn = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
    float r = xc - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t n = int32_t(fn);  // in [-150, 128]: two factors 2^n1 2^n2, each a normal float
    const int32_t n1 = n / 2, n2 = n - n1;
    const float s1 = __builtin_bit_cast(float, (n1 + 127) << 23);
    const float s2 = __builtin_bit_cast(float, (n2 + 127) << 23);
    float y = (p * s1) * s2;  // p * s1 is exact; one rounding, also into the denormal range
    y = x > 88.72283935546875f ? __builtin_inff() : y;
    y = x < -103.972084045410156f ? 0.0f : y;
    return x != x ? x : y;
}

inline float exp_t(float x) { return exp_f32(x); }
inline double exp_t(double x) { return std::exp(x); }

// The logistic sigmoid 1 / (1 + exp(-x)) with IEEE division, no clamp: like torch.sigmoid it gives exactly 0 once
// exp(-x) overflows (x < -88.72 in float32), denormals just above that, 1 for large x, and NaN for NaN.
template <typename T>
inline T sigm(T x) {
    return T(1) / (T(1) + exp_t(-x));
}

// Per-row statistics of a site at step t: (mean, rs) and, for ATN, the window bookkeeping.
template <typename T>
inline void site_stats(const SiteCfg& s, int B, int t, int b, const T* a, T& mean, T& rs) {
    const int F = s.F;
    if (s.kind == 2) {
        mean = T(0);
        rs = T(1);
        return;
    }
    if (s.kind == 0) {
        double s1 = 0.0;
        SEQZOO_SIMD_SUM(s1)
        for (int f = 0; f < F; ++f) s1 += a[f];
        const T m = T(s1 / F);
        double s2 = 0.0;
        SEQZOO_SIMD_SUM(s2)
        for (int f = 0; f < F; ++f) {
            const double d = double(a[f]) - double(m);
            s2 += d * d;
        }
        mean = m;
        rs = T(1.0 / std::sqrt(s2 / F + s.eps));
        if (s.mu) static_cast<T*>(s.mu)[(size_t)t * B + b] = mean;
        if (s.rs) static_cast<T*>(s.rs)[(size_t)t * B + b] = rs;
        return;
    }
    double s1 = 0.0, s2 = 0.0;
    SEQZOO_SIMD_SUM(s1, s2)
    for (int f = 0; f < F; ++f) {
        s1 += a[f];
        s2 += double(a[f]) * a[f];
    }
    T* E = static_cast<T*>(s.E);
    T* W = static_cast<T*>(s.W);
    T* e_new = E + ((size_t)(s.k + t) * B + b) * 2;
    const T* e_old = E + ((size_t)t * B + b) * 2;
    const T* w_old = W + ((size_t)t * B + b) * 2;
    T* w_new = W + ((size_t)(t + 1) * B + b) * 2;
    e_new[0] = T(s1);
    e_new[1] = T(s2);
    w_new[0] = (w_old[0] + e_new[0]) - e_old[0];
    w_new[1] = (w_old[1] + e_new[1]) - e_old[1];
    const T ic = static_cast<const T*>(s.IC)[(size_t)t * B + b];
    T* M = static_cast<T*>(s.M) + ((size_t)t * B + b) * 2;
    M[0] = w_new[0] * ic;
    M[1] = w_new[1] * ic;
    T var = M[1] - M[0] * M[0];
    if (var < T(0)) var = T(0);
    mean = M[0];
    rs = T(1) / std::sqrt(var + T(s.eps));
    static_cast<T*>(s.rs)[(size_t)t * B + b] = rs;
}

// Per-thread gain/bias gradient accumulators: with one thread they are the real buffers; with several, zeroed
// thread-local arrays that flush() adds into the real ones (one thread at a time).
template <typename T>
struct GradAcc {
    T* gw = nullptr;
    T* gb = nullptr;
    T* out_w = nullptr;
    T* out_b = nullptr;
    int F = 0;
    std::vector<T> local;
    GradAcc(void* w, void* b, int features, bool shared) : F(features) {
        out_w = static_cast<T*>(w);
        out_b = static_cast<T*>(b);
        if (!shared) {
            gw = out_w;
            gb = out_b;
            return;
        }
        local.assign((size_t)2 * F, T(0));
        if (out_w) gw = local.data();
        if (out_b) gb = local.data() + F;
    }
    void flush() {
        if (local.empty()) return;
#ifdef _OPENMP
#pragma omp critical(seqzoo_grad_flush)
#endif
        {
            if (out_w) for (int f = 0; f < F; ++f) out_w[f] += gw[f];
            if (out_b) for (int f = 0; f < F; ++f) out_b[f] += gb[f];
        }
    }
};

inline int team_size() {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

inline bool go_parallel(int rows) {
#ifdef _OPENMP
    return rows >= 4 && omp_get_max_threads() > 1;
#else
    (void)rows;
    return false;
#endif
}

// Backward of a site at step t for one row: da = d(site input) from dy = d(site output before the affine).
template <typename T>
inline void site_backward(const SiteCfg& s, int B, int t, int b, const T* __restrict__ dy, const T* __restrict__ a,
                          T* __restrict__ da, bool accumulate, GradAcc<T>& acc) {
    const int F = s.F;
    if (s.kind == 2) {  // identity: the gradient passes through
        if (accumulate) {
            for (int f = 0; f < F; ++f) da[f] += dy[f];
        } else {
            std::memcpy(da, dy, sizeof(T) * F);
        }
        return;
    }
    const T* __restrict__ w = static_cast<const T*>(s.w);
    const T rs = static_cast<const T*>(s.rs)[(size_t)t * B + b];
    const T mean = s.kind == 0 ? static_cast<const T*>(s.mu)[(size_t)t * B + b]
                               : static_cast<const T*>(s.M)[((size_t)t * B + b) * 2];
    double sa = 0.0, sb = 0.0;
    T* __restrict__ gw = acc.gw;
    T* __restrict__ gb = acc.gb;
    SEQZOO_SIMD_SUM(sa, sb)
    for (int f = 0; f < F; ++f) {
        const T dz = w ? dy[f] * w[f] : dy[f];
        const T z = (a[f] - mean) * rs;
        sa += dz;
        sb += double(dz) * z;
    }
    if (gw) for (int f = 0; f < F; ++f) gw[f] += dy[f] * ((a[f] - mean) * rs);
    if (gb) for (int f = 0; f < F; ++f) gb[f] += dy[f];
    if (s.kind == 0) {
        const T ma = T(sa / F), mb = T(sb / F);
        for (int f = 0; f < F; ++f) {
            const T dz = w ? dy[f] * w[f] : dy[f];
            const T z = (a[f] - mean) * rs;
            const T v = rs * (dz - ma - z * mb);
            da[f] = accumulate ? da[f] + v : v;
        }
        return;
    }
    const T ic = static_cast<const T*>(s.IC)[(size_t)t * B + b];
    const T c00 = -ic * rs, c10 = ic * rs * rs * mean, c11 = -ic * rs * rs;
    T* DS = static_cast<T*>(s.DS);
    T* ds = DS + ((size_t)t * B + b) * 2;
    ds[0] = T(sa) * c00 + T(sb) * c10;
    ds[1] = T(sb) * c11;
    T* R = static_cast<T*>(s.R) + (size_t)b * 2;
    R[0] += ds[0];
    R[1] += ds[1];
    if (t + s.k < s.L) {
        const T* old = DS + ((size_t)(t + s.k) * B + b) * 2;
        R[0] -= old[0];
        R[1] -= old[1];
    }
    const T r0 = R[0], r1 = R[1];
    for (int f = 0; f < F; ++f) {
        const T dz = w ? dy[f] * w[f] : dy[f];
        const T v = r0 + dz * rs + a[f] * r1;
        da[f] = accumulate ? da[f] + v : v;
    }
}

// d N_c(c_t) = dh o (1 - tanh(N_c(c))^2). Separate functions with restrict pointers so the loops vectorize.
template <typename T>
inline void out_grad(int H, const T* __restrict__ dh, const T* __restrict__ tc, const T* __restrict__ o,
                     T* __restrict__ dcn) {
    for (int f = 0; f < H; ++f) dcn[f] = dh[f] * (T(1) - tc[f] * tc[f]) * o[f];
}

// Gate pre-activation gradients from dc (and dh for o); then dc <- dc f for the step before.
template <typename T>
inline void gate_grads(int H, const T* __restrict__ i_, const T* __restrict__ f_, const T* __restrict__ g_,
                       const T* __restrict__ o_, const T* __restrict__ c_prev, const T* __restrict__ tc,
                       const T* __restrict__ dh, T* __restrict__ dc, T* __restrict__ q) {
    T* __restrict__ qi = q;
    T* __restrict__ qf = q + H;
    T* __restrict__ qg = q + 2 * H;
    T* __restrict__ qo = q + 3 * H;
    for (int f = 0; f < H; ++f) {
        const T d = dc[f];
        qi[f] = i_[f] * (T(1) - i_[f]) * g_[f] * d;
        qf[f] = f_[f] * (T(1) - f_[f]) * c_prev[f] * d;
        qg[f] = (T(1) - g_[f] * g_[f]) * i_[f] * d;
        qo[f] = o_[f] * (T(1) - o_[f]) * tc[f] * dh[f];
        dc[f] = d * f_[f];
    }
}

template <typename T>
void forward_row(const LoopCfg& c, int t, int j, const T* p, int b) {
    const int B = c.B, H = c.H, H4 = 4 * H;
    const SiteCfg& sh = c.sh;
    const SiteCfg& sc = c.sc;
    const T* wfh = static_cast<const T*>(sh.wf);
    const T* bfh = static_cast<const T*>(sh.bf);
    const T* wfc = static_cast<const T*>(sc.wf);
    const T* bfc = static_cast<const T*>(sc.bf);
    {
        const T* pp = p + (size_t)b * H4;
        T* a = static_cast<T*>(c.acts) + ((size_t)j * B + b) * H4;
        T* keep = c.pre ? static_cast<T*>(c.pre) + ((size_t)j * B + b) * H4 : nullptr;
        if (keep && keep != pp) std::memcpy(keep, pp, sizeof(T) * H4);
        T mean, rs;
        site_stats<T>(sh, B, t, b, pp, mean, rs);
        if (bfh) {
            SEQZOO_SIMD
            for (int f = 0; f < H4; ++f) a[f] = sigm<T>(a[f] + (pp[f] - mean) * rs * wfh[f] + bfh[f]);
        } else {
            SEQZOO_SIMD
            for (int f = 0; f < H4; ++f) a[f] = sigm<T>(a[f] + (pp[f] - mean) * rs * wfh[f]);
        }
        T* g = a + 2 * H;
        for (int f = 0; f < H; ++f) g[f] = T(2) * g[f] - T(1);
        const T* i_ = a;
        const T* f_ = a + H;
        const T* o_ = a + 3 * H;
        const T* c_prev = static_cast<const T*>(c.cs) + ((size_t)t * B + b) * H;
        T* c_t = static_cast<T*>(c.cs) + ((size_t)(t + 1) * B + b) * H;
        for (int f = 0; f < H; ++f) c_t[f] = f_[f] * c_prev[f] + i_[f] * g[f];
        site_stats<T>(sc, B, t, b, c_t, mean, rs);
        T* tc = static_cast<T*>(c.tcn) + ((size_t)j * B + b) * H;
        const T* h_prev = static_cast<const T*>(c.hs) + ((size_t)t * B + b) * H;
        T* h_t = static_cast<T*>(c.hs) + ((size_t)(t + 1) * B + b) * H;
        if (bfc) {
            SEQZOO_SIMD
            for (int f = 0; f < H; ++f) tc[f] = T(2) * sigm<T>((c_t[f] - mean) * rs * wfc[f] + bfc[f]) - T(1);
        } else {
            SEQZOO_SIMD
            for (int f = 0; f < H; ++f) tc[f] = T(2) * sigm<T>((c_t[f] - mean) * rs * wfc[f]) - T(1);
        }
        for (int f = 0; f < H; ++f) h_t[f] = o_[f] * tc[f];
        if (c.has_mask && !static_cast<const uint8_t*>(c.mask)[(size_t)t * B + b]) {
            std::memcpy(h_t, h_prev, sizeof(T) * H);
            std::memcpy(c_t, c_prev, sizeof(T) * H);
        }
    }
}

template <typename T>
void forward_step(const LoopCfg& c, int t, int j, const T* p) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (go_parallel(c.B))
#endif
    for (int b = 0; b < c.B; ++b) forward_row<T>(c, t, j, p, b);
}

template <typename T>
void backward_row(const LoopCfg& c, int t, int j, const T* extra_dh, int b, GradAcc<T>& acc_h, GradAcc<T>& acc_c);

template <typename T>
void backward_step(const LoopCfg& c, int t, int j, const T* extra_dh) {
#ifdef _OPENMP
#pragma omp parallel if (go_parallel(c.B))
#endif
    {
        const bool shared = team_size() > 1;
        GradAcc<T> acc_h(c.sh.gw, c.sh.gb, c.sh.F, shared), acc_c(c.sc.gw, c.sc.gb, c.sc.F, shared);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int b = 0; b < c.B; ++b) backward_row<T>(c, t, j, extra_dh, b, acc_h, acc_c);
        acc_h.flush();
        acc_c.flush();
    }
}

template <typename T>
void backward_row(const LoopCfg& c, int t, int j, const T* extra_dh, int b, GradAcc<T>& acc_h, GradAcc<T>& acc_c) {
    // Gate derivatives are formed here from the saved activations (i, f, o sigmoids; g tanh), c_{t-1}, c_t and
    // tanh(N_c(c_t)); padded steps (mask 0) get zero gate gradients and pass dh and dc straight through.
    const int B = c.B, H = c.H, H4 = 4 * H;
    {
        T* dh = static_cast<T*>(c.dh) + ((size_t)t * B + b) * H;
        if (extra_dh) {
            const T* e = extra_dh + (size_t)b * H;
            for (int f = 0; f < H; ++f) dh[f] += e[f];
        }
        const bool live = !c.has_mask || static_cast<const uint8_t*>(c.mask)[(size_t)t * B + b];
        T* dc = static_cast<T*>(c.dc) + (size_t)b * H;
        const size_t rowh = ((size_t)j * B + b) * H, row4 = ((size_t)j * B + b) * H4;
        const T* act = static_cast<const T*>(c.acts) + row4;
        const T *i_ = act, *f_ = act + H, *g_ = act + 2 * H, *o_ = act + 3 * H;
        const T* tc = static_cast<const T*>(c.tcn) + rowh;
        T* q = static_cast<T*>(c.q) + row4;
        T* dcn = static_cast<T*>(c.dcn) + rowh;
        T* da = static_cast<T*>(c.da) + row4;
        if (!live) {
            std::memset(dcn, 0, sizeof(T) * H);
            std::memset(q, 0, sizeof(T) * H4);
            std::memset(da, 0, sizeof(T) * H4);
            if (t > 0) {
                T* dh_prev = static_cast<T*>(c.dh) + ((size_t)(t - 1) * B + b) * H;
                for (int f = 0; f < H; ++f) dh_prev[f] += dh[f];
            }
            return;  // dc passes through unchanged
        }
        out_grad<T>(H, dh, tc, o_, dcn);
        const T* c_t = static_cast<const T*>(c.cs) + ((size_t)(t + 1) * B + b) * H;
        site_backward<T>(c.sc, B, t, b, dcn, c_t, dc, true, acc_c);
        gate_grads<T>(H, i_, f_, g_, o_, static_cast<const T*>(c.cs) + ((size_t)t * B + b) * H, tc, dh, dc, q);
        const T* pre = static_cast<const T*>(c.pre) + row4;
        site_backward<T>(c.sh, B, t, b, q, pre, da, false, acc_h);
    }
}


// ----- small GEMMs for the recurrent products, split over the threads by columns ---------------------------------
// C[0:M, n0:n1] (= or +=) A[0:M, 0:K] @ Bm[0:K, n0:n1], all row-major with leading dimensions lda, ldb, ldc.
// oneDNN runs these (M = batch, a few dozen rows) on one thread; splitting the columns lets both cores work and
// keeps each thread's slice of the weight in its own L2 cache across the steps of a chunk.
template <typename T>
void gemm_cols_generic(int M, int K, int n0, int n1, const T* A, int lda, const T* Bm, int ldb, T* C, int ldc,
                       bool accumulate, const T* bias) {
    for (int m = 0; m < M; ++m) {
        T* c = C + (size_t)m * ldc;
        if (!accumulate) {
            if (bias) {
                for (int n = n0; n < n1; ++n) c[n] = bias[n];
            } else {
                for (int n = n0; n < n1; ++n) c[n] = T(0);
            }
        }
        const T* a = A + (size_t)m * lda;
        for (int k = 0; k < K; ++k) {
            const T av = a[k];
            const T* b = Bm + (size_t)k * ldb;
            for (int n = n0; n < n1; ++n) c[n] += av * b[n];
        }
    }
}

#if defined(__AVX512F__)
// A register tile of R rows x 64 columns (4 zmm accumulators per row).
template <int R>
inline void tile_f32(int K, const float* A, int lda, const float* Bm, int ldb, float* C, int ldc, bool accumulate,
                     const float* bias) {
    __m512 acc[R][4];
    for (int r = 0; r < R; ++r) {
        for (int v = 0; v < 4; ++v) {
            if (accumulate) acc[r][v] = _mm512_loadu_ps(C + (size_t)r * ldc + 16 * v);
            else if (bias) acc[r][v] = _mm512_loadu_ps(bias + 16 * v);
            else acc[r][v] = _mm512_setzero_ps();
        }
    }
    for (int k = 0; k < K; ++k) {
        const float* b = Bm + (size_t)k * ldb;
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), b2 = _mm512_loadu_ps(b + 32),
                     b3 = _mm512_loadu_ps(b + 48);
        for (int r = 0; r < R; ++r) {
            const __m512 a = _mm512_set1_ps(A[(size_t)r * lda + k]);
            acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(a, b2, acc[r][2]);
            acc[r][3] = _mm512_fmadd_ps(a, b3, acc[r][3]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < 4; ++v) _mm512_storeu_ps(C + (size_t)r * ldc + 16 * v, acc[r][v]);
}

inline void gemm_cols(int M, int K, int n0, int n1, const float* A, int lda, const float* Bm, int ldb, float* C,
                      int ldc, bool accumulate, const float* bias) {
    int n = n0;
    for (; n + 64 <= n1; n += 64) {
        const float* bn = Bm + n;
        float* cn = C + n;
        const float* biasn = bias ? bias + n : nullptr;
        int m = 0;
        for (; m + 6 <= M; m += 6)
            tile_f32<6>(K, A + (size_t)m * lda, lda, bn, ldb, cn + (size_t)m * ldc, ldc, accumulate, biasn);
        const float* am = A + (size_t)m * lda;
        float* cm = cn + (size_t)m * ldc;
        switch (M - m) {
            case 5: tile_f32<5>(K, am, lda, bn, ldb, cm, ldc, accumulate, biasn); break;
            case 4: tile_f32<4>(K, am, lda, bn, ldb, cm, ldc, accumulate, biasn); break;
            case 3: tile_f32<3>(K, am, lda, bn, ldb, cm, ldc, accumulate, biasn); break;
            case 2: tile_f32<2>(K, am, lda, bn, ldb, cm, ldc, accumulate, biasn); break;
            case 1: tile_f32<1>(K, am, lda, bn, ldb, cm, ldc, accumulate, biasn); break;
            default: break;
        }
    }
    if (n < n1) gemm_cols_generic<float>(M, K, n, n1, A, lda, Bm, ldb, C, ldc, accumulate, bias);
}
#else
inline void gemm_cols(int M, int K, int n0, int n1, const float* A, int lda, const float* Bm, int ldb, float* C,
                      int ldc, bool accumulate, const float* bias) {
    gemm_cols_generic<float>(M, K, n0, n1, A, lda, Bm, ldb, C, ldc, accumulate, bias);
}
#endif

inline void gemm_cols(int M, int K, int n0, int n1, const double* A, int lda, const double* Bm, int ldb, double* C,
                      int ldc, bool accumulate, const double* bias) {
    gemm_cols_generic<double>(M, K, n0, n1, A, lda, Bm, ldb, C, ldc, accumulate, bias);
}

// This thread's share [n0, n1) of N columns, in multiples of 64 where N allows.
inline void my_columns(int N, int& n0, int& n1) {
    int nt = 1, id = 0;
#ifdef _OPENMP
    nt = omp_get_num_threads();
    id = omp_get_thread_num();
#endif
    const int blocks = (N + 63) / 64;
    const int per = (blocks + nt - 1) / nt;
    n0 = std::min(N, id * per * 64);
    n1 = std::min(N, (id + 1) * per * 64);
}

// A whole chunk of forward steps in one call: per step the recurrent product p = h_{t-1} W_hh^T + b_hh (into the
// kept pre-activation buffer, or a workspace) and then the pointwise step per row.
template <typename T>
void forward_chunk(const LoopCfg& c, int t0, int n, const T* WT, const T* bias, T* pwork) {
    const int B = c.B, H = c.H, H4 = 4 * H;
#ifdef _OPENMP
#pragma omp parallel if (go_parallel(B))
#endif
    {
        int n0, n1;
        my_columns(H4, n0, n1);
        for (int j = 0; j < n; ++j) {
            const int t = t0 + j;
            T* p = c.pre ? static_cast<T*>(c.pre) + (size_t)j * B * H4 : pwork;
            const T* h_prev = static_cast<const T*>(c.hs) + (size_t)t * B * H;
            if (n0 < n1) gemm_cols(B, H, n0, n1, h_prev, H, WT, H4, p, H4, false, bias);
#ifdef _OPENMP
#pragma omp barrier
#pragma omp for schedule(static)
#endif
            for (int b = 0; b < B; ++b) forward_row<T>(c, t, j, p, b);
        }
    }
}

// A whole chunk of backward steps (reverse time): per step the pointwise backward per row, then
// dh_{t-1} += da_t W_hh (or dh0 = da_0 W_hh at t = 0 when dh0 is given).
template <typename T>
void backward_chunk(const LoopCfg& c, int t0, int n, const T* W, T* dh0) {
    const int B = c.B, H = c.H, H4 = 4 * H;
#ifdef _OPENMP
#pragma omp parallel if (go_parallel(B))
#endif
    {
        const bool shared = team_size() > 1;
        GradAcc<T> acc_h(c.sh.gw, c.sh.gb, c.sh.F, shared), acc_c(c.sc.gw, c.sc.gb, c.sc.F, shared);
        int n0, n1;
        my_columns(H, n0, n1);
        for (int j = n - 1; j >= 0; --j) {
            const int t = t0 + j;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (int b = 0; b < B; ++b) backward_row<T>(c, t, j, nullptr, b, acc_h, acc_c);
            const T* da = static_cast<const T*>(c.da) + (size_t)j * B * H4;
            if (n0 < n1) {
                if (t > 0)
                    gemm_cols(B, H4, n0, n1, da, H4, W, H, static_cast<T*>(c.dh) + (size_t)(t - 1) * B * H, H, true,
                              static_cast<const T*>(nullptr));
                else if (dh0)
                    gemm_cols(B, H4, n0, n1, da, H4, W, H, dh0, H, false, static_cast<const T*>(nullptr));
            }
#ifdef _OPENMP
#pragma omp barrier
#endif
        }
        acc_h.flush();
        acc_c.flush();
    }
}
}  // namespace

extern "C" {

int seqzoo_abi_version() { return 7; }

void norm_lstm_forward_step_f32(const LoopCfg* c, int t, int j, const void* p) {
    forward_step<float>(*c, t, j, static_cast<const float*>(p));
}
void norm_lstm_forward_step_f64(const LoopCfg* c, int t, int j, const void* p) {
    forward_step<double>(*c, t, j, static_cast<const double*>(p));
}
void norm_lstm_forward_chunk_f32(const LoopCfg* c, int t0, int n, const void* wt, const void* bias, void* pwork) {
    forward_chunk<float>(*c, t0, n, static_cast<const float*>(wt), static_cast<const float*>(bias),
                         static_cast<float*>(pwork));
}
void norm_lstm_forward_chunk_f64(const LoopCfg* c, int t0, int n, const void* wt, const void* bias, void* pwork) {
    forward_chunk<double>(*c, t0, n, static_cast<const double*>(wt), static_cast<const double*>(bias),
                          static_cast<double*>(pwork));
}
void norm_lstm_backward_chunk_f32(const LoopCfg* c, int t0, int n, const void* w, void* dh0) {
    backward_chunk<float>(*c, t0, n, static_cast<const float*>(w), static_cast<float*>(dh0));
}
void norm_lstm_backward_chunk_f64(const LoopCfg* c, int t0, int n, const void* w, void* dh0) {
    backward_chunk<double>(*c, t0, n, static_cast<const double*>(w), static_cast<double*>(dh0));
}
void norm_lstm_backward_step_f32(const LoopCfg* c, int t, int j, const void* extra_dh) {
    backward_step<float>(*c, t, j, static_cast<const float*>(extra_dh));
}
void norm_lstm_backward_step_f64(const LoopCfg* c, int t, int j, const void* extra_dh) {
    backward_step<double>(*c, t, j, static_cast<const double*>(extra_dh));
}

}  // extern "C"

extern "C" {

// ATN at the input site, a whole chunk of steps [t0, t0 + n) at once (no recurrence through this site, so the
// only sequential part is the running window sums). xc/y/dg/dx: (n, B, F) time-major; E: (L + k, B, 2) per-step
// (sum x, sum x^2) in T; P/Q: (L + k + 1, B, 2) float64 prefix sums; IC: (L, B) float64; MEAN, RS: (L, B) in T.
struct InputAtnCfg {
    int32_t B, F, k, n, t0, pad;
    double eps;
    void* xc; void* y; void* E; void* P; void* IC; void* MEAN; void* RS; void* wf; void* bf;
    // backward
    void* dg; void* dx; void* Q; void* w; void* gw; void* gb;
};

}  // extern "C"

namespace {

template <typename T>
void input_atn_forward(const InputAtnCfg& c) {
    const int B = c.B, F = c.F, k = c.k;
    const T* wf = static_cast<const T*>(c.wf);
    const T* bf = static_cast<const T*>(c.bf);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (go_parallel(B))
#endif
    for (int b = 0; b < B; ++b) {
        for (int j = 0; j < c.n; ++j) {  // sequential in time: the window sums run along it
            const int t = c.t0 + j;
            const size_t row = ((size_t)j * B + b) * F;
            const T* x = static_cast<const T*>(c.xc) + row;
            double s1 = 0.0, s2 = 0.0;
            SEQZOO_SIMD_SUM(s1, s2)
            for (int f = 0; f < F; ++f) {
                s1 += x[f];
                s2 += double(x[f]) * x[f];
            }
            T* e = static_cast<T*>(c.E) + ((size_t)(k + t) * B + b) * 2;
            e[0] = T(s1);
            e[1] = T(s2);
            double* P = static_cast<double*>(c.P);
            const double* p_prev = P + ((size_t)(k + t) * B + b) * 2;
            double* p_new = P + ((size_t)(k + t + 1) * B + b) * 2;
            p_new[0] = p_prev[0] + double(e[0]);
            p_new[1] = p_prev[1] + double(e[1]);
            const double* p_old = P + ((size_t)(t + 1) * B + b) * 2;
            const double ic = static_cast<const double*>(c.IC)[(size_t)t * B + b];
            const double mean = (p_new[0] - p_old[0]) * ic;
            double var = (p_new[1] - p_old[1]) * ic - mean * mean;
            if (var < 0.0) var = 0.0;
            const T mt = T(mean), rt = T(1.0 / std::sqrt(var + c.eps));
            static_cast<T*>(c.MEAN)[(size_t)t * B + b] = mt;
            static_cast<T*>(c.RS)[(size_t)t * B + b] = rt;
            T* y = static_cast<T*>(c.y) + row;
            if (bf) {
                for (int f = 0; f < F; ++f) y[f] = (x[f] - mt) * rt * wf[f] + bf[f];
            } else {
                for (int f = 0; f < F; ++f) y[f] = (x[f] - mt) * rt * wf[f];
            }
        }
    }
}

template <typename T>
void input_atn_backward(const InputAtnCfg& c) {
    const int B = c.B, F = c.F, k = c.k;
    const T* w = static_cast<const T*>(c.w);
    double* Q = static_cast<double*>(c.Q);
#ifdef _OPENMP
#pragma omp parallel if (go_parallel(B))
#endif
    {
    GradAcc<T> acc(c.gw, c.gb, F, team_size() > 1);
    T* gw = acc.gw;
    T* gb = acc.gb;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (int b = 0; b < B; ++b) {
        for (int j = c.n - 1; j >= 0; --j) {  // reverse time: the window's gradient sums run backwards
            const int t = c.t0 + j;
            const size_t row = ((size_t)j * B + b) * F;
            const T* x = static_cast<const T*>(c.xc) + row;
            const T* dg = static_cast<const T*>(c.dg) + row;
            const T mt = static_cast<const T*>(c.MEAN)[(size_t)t * B + b];
            const T rt = static_cast<const T*>(c.RS)[(size_t)t * B + b];
            double sa = 0.0, sb = 0.0;
            SEQZOO_SIMD_SUM(sa, sb)
            for (int f = 0; f < F; ++f) {
                const T z = (x[f] - mt) * rt;
                const T dz = w ? dg[f] * w[f] : dg[f];
                sa += dz;
                sb += double(dz) * z;
            }
            if (gw) for (int f = 0; f < F; ++f) gw[f] += dg[f] * ((x[f] - mt) * rt);
            if (gb) for (int f = 0; f < F; ++f) gb[f] += dg[f];
            const double ic = static_cast<const double*>(c.IC)[(size_t)t * B + b];
            const double md = mt, rd = rt;
            const double ds0 = ic * (md * rd * rd * sb - rd * sa), ds1 = -ic * rd * rd * sb;
            double* q = Q + ((size_t)t * B + b) * 2;
            const double* q_next = Q + ((size_t)(t + 1) * B + b) * 2;
            q[0] = q_next[0] + ds0;
            q[1] = q_next[1] + ds1;
            const double* q_far = Q + ((size_t)(t + k) * B + b) * 2;
            const T r0 = T(q[0] - q_far[0]), r1 = T(q[1] - q_far[1]);
            T* dx = static_cast<T*>(c.dx) + row;
            for (int f = 0; f < F; ++f) {
                const T dz = w ? dg[f] * w[f] : dg[f];
                dx[f] = r0 + dz * rt + x[f] * r1;
            }
        }
    }
    acc.flush();
    }
}

}  // namespace

extern "C" {

void input_atn_forward_f32(const InputAtnCfg* c) { input_atn_forward<float>(*c); }
void input_atn_forward_f64(const InputAtnCfg* c) { input_atn_forward<double>(*c); }
void input_atn_backward_f32(const InputAtnCfg* c) { input_atn_backward<float>(*c); }
void input_atn_backward_f64(const InputAtnCfg* c) { input_atn_backward<double>(*c); }

}  // extern "C"
