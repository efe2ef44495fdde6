/* out = x + scale * z, z ~ N(0, 1) i.i.d., for the training weight noise (hardware/native loads this), and
 * the fast certify engine's tile periphery in one pass (certification/fast/periphery.py): `periphery`, `readout`.
 *
 * Bits: counter-based SplitMix64 (Steele, Lea, Flood 2014; Java's SplittableRandom), 64 bits per pair
 * of normals: word i of a call is mix(seed + (i + 1) * GAMMA). Transform: Box-Muller with 24-bit
 * uniforms, u1 in (0, 1] (so |z| <= 5.77), u2 in [0, 1) split into quadrant and fraction; log, sin and
 * cos are polynomials accurate to ~1e-7 written so that the compiler vectorises the whole loop
 * (glibc's scalar logf/sinf/cosf would cost more than torch's own normal_). No state: every call is a
 * pure function of (seed, n), so the caller draws `seed` from torch's generator and torch.manual_seed
 * keeps training reproducible.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Threads (OpenMP where the library was built with it): the fast engine sets the count to torch's
 * (set_threads). Work is split over tiles (each tile's stream has its own seed) or over rows (each
 * chunk starts at its own place in the one stream), so the numbers do not depend on the count. */
static int n_threads = 1;
void set_threads(int n) { n_threads = n > 0 ? n : 1; }

#define GAMMA 0x9E3779B97F4A7C15ULL
#define BLOCK 256 /* pairs per block: z[0:BLOCK] = r cos, z[BLOCK:2*BLOCK] = r sin */

static inline uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* log(u) for u in (0, 1]: u = m * 2^e, m in [sqrt(1/2), sqrt(2)), log m = 2 atanh((m - 1) / (m + 1)). */
static inline float log_unit(float u) {
    uint32_t i;
    memcpy(&i, &u, 4);
    int32_t e = (int32_t)(i >> 23) - 127;
    uint32_t mi = (i & 0x7FFFFFu) | 0x3F800000u;
    float m;
    memcpy(&m, &mi, 4);
    int32_t big = m > 1.41421356f;
    m = big ? 0.5f * m : m;
    e += big;
    float t = (m - 1.0f) / (m + 1.0f), t2 = t * t;
    float p = 1.0f + t2 * (1.0f / 3 + t2 * (1.0f / 5 + t2 * (1.0f / 7 + t2 * (1.0f / 9))));
    return (float)e * 0.693147180559945f + 2.0f * t * p;
}

/* Box-Muller's inputs from 64 random bits: u1 in (0, 1] and the angle's cosine and sine. */
struct polar { float u1, cos_t, sin_t; };

static inline struct polar polar_of(uint64_t r) {
    const float half_pi = 1.57079632679489662f;
    struct polar p;
    p.u1 = (float)((r >> 40) + 1) * 0x1.0p-24f;                  /* (0, 1] */
    uint32_t b = (uint32_t)(r >> 16) & 0xFFFFFFu;                /* theta = 2 pi b / 2^24 */
    uint32_t q = b >> 22;                                        /* quadrant */
    float f = (float)(b & 0x3FFFFFu) * 0x1.0p-22f * half_pi;     /* angle within it, [0, pi/2) */
    float f2 = f * f;
    float s = f * (1.0f + f2 * (-1.0f / 6 + f2 * (1.0f / 120 + f2 * (-1.0f / 5040 + f2 * (1.0f / 362880
              + f2 * (-1.0f / 39916800))))));
    float c = 1.0f + f2 * (-0.5f + f2 * (1.0f / 24 + f2 * (-1.0f / 720 + f2 * (1.0f / 40320
              + f2 * (-1.0f / 3628800 + f2 * (1.0f / 479001600))))));
    float a = (q & 1u) ? s : c, d = (q & 1u) ? c : s;
    p.cos_t = (q == 1u || q == 2u) ? -a : a;
    p.sin_t = (q >= 2u) ? -d : d;
    return p;
}

void add_normal(const float *x, float *out, int64_t n, float scale, uint64_t seed) { /* x == out allowed */
    float zc[BLOCK], zs[BLOCK];
    for (int64_t start = 0; start < n; start += 2 * BLOCK) {
        uint64_t base = seed + (uint64_t)(start / 2) * GAMMA;
        for (int j = 0; j < BLOCK; j++) {
            struct polar p = polar_of(mix(base + (uint64_t)(j + 1) * GAMMA));
            float rad = scale * __builtin_sqrtf(-2.0f * log_unit(p.u1));
            zc[j] = rad * p.cos_t;
            zs[j] = rad * p.sin_t;
        }
        int64_t m = n - start;
        if (m >= 2 * BLOCK) {
            const float *xa = x ? x + start : 0;
            float *oa = out + start;
            if (xa) {
                for (int j = 0; j < BLOCK; j++) oa[j] = xa[j] + zc[j];
                for (int j = 0; j < BLOCK; j++) oa[BLOCK + j] = xa[BLOCK + j] + zs[j];
            } else {
                for (int j = 0; j < BLOCK; j++) oa[j] = zc[j];
                for (int j = 0; j < BLOCK; j++) oa[BLOCK + j] = zs[j];
            }
        } else {
            for (int64_t j = 0; j < m; j++) {
                float z = j < BLOCK ? zc[j] : zs[j - BLOCK];
                out[start + j] = (x ? x[start + j] : 0.0f) + z;
            }
        }
    }
}

/* 2 * BLOCK fresh normals into z (the same transform as add_normal); returns the next counter. */
static uint64_t refill(float *z, uint64_t base) {
    for (int j = 0; j < BLOCK; j++) {
        struct polar p = polar_of(mix(base + (uint64_t)(j + 1) * GAMMA));
        float rad = __builtin_sqrtf(-2.0f * log_unit(p.u1));
        z[j] = rad * p.cos_t;
        z[BLOCK + j] = rad * p.sin_t;
    }
    return base + (uint64_t)BLOCK * GAMMA;
}

static inline float adc(float v, float step) {  /* torch.round(v / step) * step: half to even */
    return step > 0.0f ? __builtin_rintf(v / step) * step : v;
}

/* One analog tile's periphery on its normalised outputs, in place: y is [N, C, S] (conv: S = H * W;
 * linear: S = 1), nm is [N, G, S] (the noise-management max of each input vector; C / G outputs per
 * group). v = y * ((1 / nm) / red) + std[c] * z (aihwkit's input scale, applied after the MVM; prescaled:
 * the inputs were scaled before the MVM, v = y + std[c] * z); v = round(v / step) * step (step 0: no ADC); peak[c] =
 * max |v| (the bound test); v = clamp(v, +-bound) (bound 0: none); y = v * (out_scale / scale) * post[c],
 * scale = (1 / nm) / red: each operation in torch's order, so the result matches the torch path bit for bit. */
static void periphery_rows(float *y, int64_t lo, int64_t hi, int64_t C, int64_t S, const float *nm, int64_t G,
                           float red, int prescaled, const float *std, const float *post, float out_scale, float step,
                           float bound, uint64_t seed, float *peak) {
    /* rows lo..hi: the stream goes on where row lo starts in the one pass over all rows */
    float z[2 * BLOCK];
    int64_t e0 = lo * C * S;
    uint64_t ctr = seed + (uint64_t)(e0 / (2 * BLOCK)) * (uint64_t)BLOCK * GAMMA;
    int zi = 2 * BLOCK;
    if (e0 % (2 * BLOCK)) { ctr = refill(z, ctr); zi = (int)(e0 % (2 * BLOCK)); }
    int64_t per_group = C / G;
    for (int64_t c = 0; c < C; c++) peak[c] = 0.0f;
    for (int64_t n = lo; n < hi; n++) {
        if (S == 1) {
            float *row = y + n * C;
            for (int64_t c = 0; c < C; c++) {
                if (zi == 2 * BLOCK) { ctr = refill(z, ctr); zi = 0; }
                float sc = (1.0f / nm[n * G + c / per_group]) / red;
                float v = adc((prescaled ? row[c] : row[c] * sc) + std[c] * z[zi++], step);
                float a = v < 0 ? -v : v;
                if (a > peak[c]) peak[c] = a;
                if (bound > 0.0f) v = v > bound ? bound : (v < -bound ? -bound : v);
                row[c] = (v * (out_scale / sc)) * post[c];
            }
            continue;
        }
        for (int64_t c = 0; c < C; c++) {
            float *row = y + (n * C + c) * S;
            const float *m = nm + (n * G + c / per_group) * S;
            float sd = std[c], pc = post[c], pk = peak[c];
            int64_t s = 0;
            while (s < S) {
                if (zi == 2 * BLOCK) { ctr = refill(z, ctr); zi = 0; }
                int64_t len = S - s < 2 * BLOCK - zi ? S - s : 2 * BLOCK - zi;
                for (int64_t j = 0; j < len; j++) {
                    float sc = (1.0f / m[s + j]) / red;
                    float v = adc((prescaled ? row[s + j] : row[s + j] * sc) + sd * z[zi + j], step);
                    float a = v < 0 ? -v : v;
                    pk = a > pk ? a : pk;
                    if (bound > 0.0f) v = v > bound ? bound : (v < -bound ? -bound : v);
                    row[s + j] = (v * (out_scale / sc)) * pc;
                }
                s += len;
                zi += (int)len;
            }
            peak[c] = pk;
        }
    }
}

void periphery(float *y, int64_t N, int64_t C, int64_t S, const float *nm, int64_t G, float red, int prescaled,
               const float *std, const float *post, float out_scale, float step, float bound, uint64_t seed,
               float *peak) {
    int64_t nt = n_threads < N ? n_threads : N;
    float *peaks = nt > 1 && N * C * S >= 16384 ? malloc((size_t)(nt * C) * sizeof(float)) : NULL;
    if (peaks == NULL) {
        periphery_rows(y, 0, N, C, S, nm, G, red, prescaled, std, post, out_scale, step, bound, seed, peak);
        return;
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t k = 0; k < nt; k++)
        periphery_rows(y, N * k / nt, N * (k + 1) / nt, C, S, nm, G, red, prescaled, std, post, out_scale, step,
                       bound, seed, peaks + k * C);
    for (int64_t c = 0; c < C; c++) {
        float m = peaks[c];
        for (int64_t k = 1; k < nt; k++) m = peaks[k * C + c] > m ? peaks[k * C + c] : m;
        peak[c] = m;
    }
    free(peaks);
}

/* GlobalDriftCompensation's readout of one tile through the periphery with one-hot inputs: the mean
 * over the tile's n weights of |clamp(round((q1 * w + sigma * z) / step) * step, +-bound)|; *peak gets
 * max |.| before the clamp (the bound test). */
double readout(const float *w, int64_t n, float q1, float sigma, float step, float bound, uint64_t seed,
               float *peak) {
    float z[2 * BLOCK];
    uint64_t ctr = seed;
    float pk = 0.0f;
    double total = 0.0;
    for (int64_t i = 0; i < n; i += 2 * BLOCK) {
        ctr = refill(z, ctr);
        int64_t len = n - i < 2 * BLOCK ? n - i : 2 * BLOCK;
        float part = 0.0f;
        for (int64_t j = 0; j < len; j++) {
            float v = adc(q1 * w[i + j] + sigma * z[j], step);
            float a = v < 0 ? -v : v;
            pk = a > pk ? a : pk;
            part += (bound > 0.0f && a > bound) ? bound : a;
        }
        total += part;
    }
    *peak = pk;
    return total / (double)n;
}

/* readout of T tiles of n weights each, stored one after the other: means[t], peaks[t]. */
void readout_many(const float *w, int64_t T, int64_t n, float q1, float sigma, float step, float bound,
                  uint64_t seed, double *means, float *peaks) {
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) if (T > 1)
    for (int64_t t = 0; t < T; t++)
        means[t] = readout(w + t * n, n, q1, sigma, step, bound, mix(seed + (uint64_t)(t + 1) * GAMMA), peaks + t);
}

/* ---- PCM conductances (certification/fast/device.py): aihwkit 1.1's PCMLikeNoiseModel on a
 * SinglePairConductanceConverter with g_min = 0, the maths of its apply_programming_noise_to_conductance,
 * generate_drift_coefficients and apply_drift_noise_to_conductance, element-wise in float32.
 *
 * Exact shortcuts (the same distribution, fewer draws and passes):
 *  - a weight w maps to g = min(|w| r, g_max) on the device of its sign and 0 on the other; both are
 *    programmed (the zero device gets max(0, c0-noise)), so p = sign(w) (g_sig - g_other) / r.
 *  - aihwkit's drift converts the PROGRAMMED weights back to conductances, so exactly one device of a
 *    pair is non-zero there (the one of sign(p)); the other drifts and reads as 0. Only that device's
 *    nu is ever used: one nu is drawn per weight, from the target conductance of the device of sign(p)
 *    (|w| r when sign(p) = sign(w), else 0), which is the marginal aihwkit's selected nu has.
 *  - the 1/f read-noise factor q of a programmed weight is fixed per repeat: computed here once.
 * A drift step is then out = p * exp(-nu * log(t / t0)) * max(0, 1 + S q z), S = read_scale *
 * sqrt(log((t + t_read) / (2 t_read))), in one pass (with the drift compensation's readout fused). */

/* e^x for x in [-87, 88]: Cody-Waite reduction x = k ln2 + f, |f| <= ln2 / 2, degree-6 Taylor (~2e-7). */
static inline float exp_f(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float k = __builtin_rintf(x * 1.44269504088896341f);
    float f = (x - k * 0.693145751953125f) - k * 1.428606765330187e-06f;
    float p = 1.0f + f * (1.0f + f * (0.5f + f * (1.0f / 6 + f * (1.0f / 24 + f * (1.0f / 120 + f * (1.0f / 720))))));
    int32_t bits = ((int32_t)k + 127) << 23;
    float s;
    memcpy(&s, &bits, 4);
    return p * s;
}

/* log x for x >= 0: x + 1e-30 keeps log_unit's reduction on normal floats (it changes no x >= 1e-22) and
 * lets the compiler vectorise the callers (a select in front of it does not). */
static inline float log_f(float x) { return log_unit(x + 1e-30f); }

static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* max |x[i]|, in 16 lanes so that it vectorises without reassociating anything but the max */
static float absmax(const float *x, int64_t n) {
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) { float a = x[i + k] < 0 ? -x[i + k] : x[i + k]; acc[k] = a > acc[k] ? a : acc[k]; }
    float m = 0.0f;
    for (; i < n; i++) { float a = x[i] < 0 ? -x[i] : x[i]; m = a > m ? a : m; }
    for (int k = 0; k < 16; k++) m = acc[k] > m ? acc[k] : m;
    return m;
}

/* pcm_program's element-wise step on one block (its own function: inlined, gcc does not vectorise it) */
__attribute__((noinline)) static void program_block(const float *wb, float *pb, float *nb, const float *z1,
        const float *z2, const float *z3, int64_t len, float r, float g_max, const float *c, float coeff_scale,
        float prog_scale, float sig0, float lz, float drift_scale) {
    const float c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
    for (int64_t j = 0; j < len; j++) {
        float v = wb[j];
        float a = v < 0 ? -v : v;
        float g = a * r;
        g = g > g_max ? g_max : g;
        float x = g / g_max;
        float x2 = x * x;
        float sig = ((c0 + x * c1) + x2 * c2) + (x2 * x) * c3;
        sig *= coeff_scale;
        float gs = g + prog_scale * sig * z1[j];
        gs = gs < 0.0f ? 0.0f : gs;
        float go = sig0 * z2[j];
        go = go < 0.0f ? 0.0f : go;
        float d = (gs - go) / r;
        pb[j] = v < 0 ? -d : d;
        /* nu of the device of sign(p): the one holding g when gs >= go, else one with a zero target */
        float lr = log_f(x);
        lr = lr < lz ? lz : lr;
        lr = gs >= go ? lr : lz;
        float mu = clampf(-0.0155f * lr + 0.0244f, 0.049f, 0.1f);
        float sg = clampf(-0.0125f * lr - 0.0059f, 0.008f, 0.045f);
        float nv = mu + sg * z3[j];
        nb[j] = (nv < 0 ? -nv : nv) * drift_scale;
    }
}

/* T tiles of n normalised weights each (w, one after the other) programmed as aihwkit's
 * apply_programming_noise does per tile: p (programmed weights), nu (the drift coefficient of the device
 * of sign(p)), q (the read-noise factor 0.0088 / max((|g_p| / g_max)^0.65, 1e-3) clamped at 0.2, with g_p
 * the conductance drift re-derives from p). c: the programming polynomial's coefficients in g / g_max
 * (aihwkit's sum, up to degree 3, zeros padded), then times coeff_scale = g_max / prog_coeff_g_max_reference;
 * prog_scale, drift_scale: the model's scales. */
void pcm_program(const float *w, int64_t T, int64_t n, const float *c, float coeff_scale, float g_max,
                 float prog_scale, float drift_scale, uint64_t seed, float *p, float *nu, float *q) {
    const float zero_clip = 1e-7f, lz = log_f(1e-7f);  /* generate_drift_coefficients' _ZERO_CLIP */
    const float sig0 = prog_scale * (c[0] * coeff_scale);  /* a zero target's programming noise */
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) if (T > 1)
    for (int64_t t = 0; t < T; t++) {
        float z1[2 * BLOCK], z2[2 * BLOCK], z3[2 * BLOCK];
        const float *wt = w + t * n;
        float *pt = p + t * n, *nt = nu + t * n, *qt = q + t * n;
        uint64_t ctr = mix(seed + (uint64_t)(t + 1) * GAMMA);
        float amax = absmax(wt, n);
        float r = g_max / (amax > zero_clip ? amax : zero_clip);  /* SinglePairConductanceConverter's scale_ratio */
        for (int64_t i0 = 0; i0 < n; i0 += 2 * BLOCK) {
            ctr = refill(z1, ctr);
            ctr = refill(z2, ctr);
            ctr = refill(z3, ctr);
            int64_t len = n - i0 < 2 * BLOCK ? n - i0 : 2 * BLOCK;
            program_block(wt + i0, pt + i0, nt + i0, z1, z2, z3, len, r, g_max, c, coeff_scale, prog_scale,
                          sig0, lz, drift_scale);
        }
        /* drift's conversion of p: ratio g_max / max|p|, g = min(|p| r2, g_max) */
        float pmax = absmax(pt, n);
        float r2 = g_max / (pmax > zero_clip ? pmax : zero_clip);
        for (int64_t i = 0; i < n; i++) {
            float a = pt[i] < 0 ? -pt[i] : pt[i];
            float g = a * r2;
            g = g > g_max ? g_max : g;
            float pw = exp_f(0.65f * log_f(g / g_max));
            pw = pw < 1e-3f ? 1e-3f : pw;
            float qv = 0.0088f / pw;
            qt[i] = qv > 0.2f ? 0.2f : qv;
        }
    }
}

/* One drift step of T tiles of n programmed weights: out = p * exp(-nu * L) * max(0, 1 + S * q * z)
 * (L = log(t / t0), 0 at t = t0; S = read_scale * sqrt(log((t + t_read) / (2 t_read)))). readout != 0:
 * also the global drift compensation's readout of every tile (as readout_many, on the drifted weights,
 * in the same pass): means[t], peaks[t]. */
void pcm_drift(const float *p, const float *nu, const float *q, int64_t T, int64_t n, float L, float S,
               uint64_t seed, float *out, int readout, float q1, float sigma, float step, float bound,
               double *means, float *peaks) {
#pragma omp parallel for num_threads(n_threads) schedule(dynamic) if (T > 1)
    for (int64_t t = 0; t < T; t++) {
        float z[2 * BLOCK], zr[2 * BLOCK];
        const float *pt = p + t * n, *nt = nu + t * n, *qt = q + t * n;
        float *ot = out + t * n;
        uint64_t ctr = mix(seed + (uint64_t)(t + 1) * GAMMA);
        float pk[16] = {0}, part[16];
        double total = 0.0;
        for (int64_t i0 = 0; i0 < n; i0 += 2 * BLOCK) {
            ctr = refill(z, ctr);
            int64_t len = n - i0 < 2 * BLOCK ? n - i0 : 2 * BLOCK;
            const float *pb = pt + i0, *nb = nt + i0, *qb = qt + i0;
            float *ob = ot + i0;
            for (int64_t j = 0; j < len; j++) {
                float f = 1.0f + S * qb[j] * z[j];
                f = f < 0.0f ? 0.0f : f;
                ob[j] = pb[j] * exp_f(-nb[j] * L) * f;
            }
            if (!readout) continue;
            ctr = refill(zr, ctr);
            for (int k = 0; k < 16; k++) part[k] = 0.0f;
            int64_t j = 0;
            for (; j + 16 <= len; j += 16)
                for (int k = 0; k < 16; k++) {
                    float v = adc(q1 * ob[j + k] + sigma * zr[j + k], step);
                    float a = v < 0 ? -v : v;
                    pk[k] = a > pk[k] ? a : pk[k];
                    part[k] += (bound > 0.0f && a > bound) ? bound : a;
                }
            for (; j < len; j++) {
                float v = adc(q1 * ob[j] + sigma * zr[j], step);
                float a = v < 0 ? -v : v;
                pk[0] = a > pk[0] ? a : pk[0];
                part[0] += (bound > 0.0f && a > bound) ? bound : a;
            }
            for (int k = 0; k < 16; k++) total += part[k];
        }
        if (readout) {
            float m = 0.0f;
            for (int k = 0; k < 16; k++) m = pk[k] > m ? pk[k] : m;
            means[t] = total / (double)n;
            peaks[t] = m;
        }
    }
}

/* ---- conv noise management (certification/fast/kernels.py): aihwkit's ABS_MAX per im2col patch, without im2col */

/* The number of zeros in x[0:n] (the fused conv's DAC term counts the non-zero inputs). */
int64_t count_zeros(const float *x, int64_t n) {
    int64_t acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) acc[k] += x[i + k] == 0.0f;
    int64_t total = 0;
    for (; i < n; i++) total += x[i] == 0.0f;
    for (int k = 0; k < 16; k++) total += acc[k];
    return total;
}

/* out[n, g, oy, ox] = the max of |x| over the patch (oy, ox) of a conv (kernel kh x kw, stride, zero
 * padding, dilation) over the channels of group g's parts: part i holds channels c_lo[i]:c_hi[i] of x
 * ([N, C, H, W]) at the kernel positions mask[i * kh * kw + ki * kw + kj] != 0, and belongs to group[i]
 * (G groups; parts sorted by group). Any memory layout: xs and os are the element strides of x (n, c, h, w) and out (n, g, y, x)
 * (NCHW or channels last). Zero padding counts (a patch max is >= 0 anyway). scratch: (H + 2 ph) *
 * (W + 2 pw) floats. */
void patch_absmax(const float *x, int64_t N, int64_t H, int64_t W, const int64_t *xs, int64_t nparts,
                  const int64_t *c_lo, const int64_t *c_hi, const unsigned char *mask, const int64_t *group,
                  int64_t G, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                  int64_t dw, int64_t oh, int64_t ow, float *out, const int64_t *os, float *scratch) {
    int64_t Hp = H + 2 * ph, Wp = W + 2 * pw;
    int64_t xn = xs[0], xc = xs[1], xh = xs[2], xw = xs[3];
    int64_t on_ = os[0], og_ = os[1], oy_ = os[2], ox_ = os[3];
    float *pm = scratch + Hp * Wp;  /* one group's [oh, ow] patch max, then stored with out's strides */
    for (int64_t i = 0; i < Hp * Wp; i++) scratch[i] = 0.0f;
    for (int64_t n = 0; n < N; n++) {
        int64_t part = 0;  /* parts come sorted by group */
        for (int64_t g = 0; g < G; g++) {
            for (int64_t i = 0; i < oh * ow; i++) pm[i] = 0.0f;
            for (; part < nparts && group[part] == g; part++) {
                /* the channel max of |x| into the padded map's interior */
                for (int64_t c = c_lo[part]; c < c_hi[part]; c++) {
                    const float *xcp = x + n * xn + c * xc;
                    int first = c == c_lo[part];
                    for (int64_t y = 0; y < H; y++) {
                        float *row = scratch + (y + ph) * Wp + pw;
                        const float *xr = xcp + y * xh;
                        if (first)
                            for (int64_t j = 0; j < W; j++) { float v = xr[j * xw]; row[j] = v < 0 ? -v : v; }
                        else
                            for (int64_t j = 0; j < W; j++) {
                                float v = xr[j * xw], a = v < 0 ? -v : v;
                                row[j] = a > row[j] ? a : row[j];
                            }
                    }
                }
                const unsigned char *mk = mask + part * kh * kw;
                for (int64_t ki = 0; ki < kh; ki++)
                    for (int64_t kj = 0; kj < kw; kj++) {
                        if (!mk[ki * kw + kj]) continue;
                        for (int64_t oy = 0; oy < oh; oy++) {
                            const float *src = scratch + (oy * sh + ki * dh) * Wp + kj * dw;
                            float *dst = pm + oy * ow;
                            if (sw == 1)
                                for (int64_t ox = 0; ox < ow; ox++) dst[ox] = src[ox] > dst[ox] ? src[ox] : dst[ox];
                            else
                                for (int64_t ox = 0; ox < ow; ox++) {
                                    float v = src[ox * sw];
                                    dst[ox] = v > dst[ox] ? v : dst[ox];
                                }
                        }
                    }
            }
            float *o = out + n * on_ + g * og_;
            for (int64_t oy = 0; oy < oh; oy++)
                for (int64_t ox = 0; ox < ow; ox++) o[oy * oy_ + ox * ox_] = pm[oy * ow + ox];
        }
    }
}

/* out = x + (rel * max|x|) * z: the training weight noise relative to the tensor's own max in one call
 * (two passes: the max, then add_normal). Returns the scale used. */
float add_normal_rel(const float *x, float *out, int64_t n, float rel, uint64_t seed) {
    float scale = rel * absmax(x, n);
    add_normal(x, out, n, scale, seed);
    return scale;
}

/* ---- the training tile of one Linear layer (hardware/fused.py `fused_linear`): its weights, DAC and ADC
 * in three passes instead of a dozen torch operations, each a temporary the size of the weights or the
 * activations. One counter stream per call (seeded from torch's generator), consumed in row order. */

/* tile = w * s (s: per input column, or NULL) plus the programming noise: per row (per_row) or over the
 * tensor, m = max(max |tile|, 1e-12) before the noise; z ~ N(0, 1); gaussian (pcm = 0): tile += (m * csig) z;
 * pcm: tile += ((m * q(u)) * csig) z, u = min(|tile| / m, 1), q(u) = sqrt(p(u)^2 + p(0)^2) / norm,
 * p(u) = pc[0] + pc[1] u + pc[2] u^2 (csig 0: no noise). wmax[r]: max(max |row r of the noisy tile|, 1e-12)
 * (per_row) or the tensor's in every row: the periphery's weight scale. */
void tile_weights(const float *w, const float *s, int64_t R, int64_t C, int per_row, int pcm, float csig,
                  const float *pc, float norm, uint64_t seed, float *tile, float *wmax) {
    float z[2 * BLOCK];
    int zi = 2 * BLOCK;
    uint64_t ctr = seed;
    float gmax = 0.0f;
    for (int64_t r = 0; r < R; r++) {
        float *row = tile + r * C;
        const float *wr = w + r * C;
        if (s) for (int64_t j = 0; j < C; j++) row[j] = wr[j] * s[j];
        else memcpy(row, wr, (size_t)C * sizeof(float));
        wmax[r] = absmax(row, C);
        gmax = wmax[r] > gmax ? wmax[r] : gmax;
    }
    const float p0 = pc[0], p1 = pc[1], p2 = pc[2], pz = p0 * p0;
    if (csig > 0.0f) {
        for (int64_t r = 0; r < R; r++) {
            float m = per_row ? wmax[r] : gmax;
            m = m < 1e-12f ? 1e-12f : m;
            float *row = tile + r * C;
            int64_t j = 0;
            while (j < C) {
                if (zi == 2 * BLOCK) { ctr = refill(z, ctr); zi = 0; }
                int64_t len = C - j < 2 * BLOCK - zi ? C - j : 2 * BLOCK - zi;
                float *v = row + j;
                const float *zz = z + zi;
                if (pcm) {
                    for (int64_t k = 0; k < len; k++) {
                        float a = v[k] < 0 ? -v[k] : v[k];
                        float u = a / m;
                        u = u > 1.0f ? 1.0f : u;
                        float p = p0 + p1 * u + p2 * u * u;
                        float q = __builtin_sqrtf(p * p + pz) / norm;
                        v[k] = v[k] + ((m * q) * csig) * zz[k];
                    }
                } else {
                    float sc = m * csig;
                    for (int64_t k = 0; k < len; k++) v[k] = v[k] + sc * zz[k];
                }
                j += len;
                zi += (int)len;
            }
        }
        gmax = 0.0f;
        for (int64_t r = 0; r < R; r++) {
            wmax[r] = absmax(tile + r * C, C);
            gmax = wmax[r] > gmax ? wmax[r] : gmax;
        }
    }
    for (int64_t r = 0; r < R; r++) {
        float m = per_row ? wmax[r] : gmax;
        wmax[r] = m < 1e-12f ? 1e-12f : m;
    }
}

/* The DAC of N input vectors of K: v = x / s (s per input, or NULL), xmax[n] = max(max |v|, 1e-12),
 * xq = v / xmax, on bits > 0 rounded to the grid step = 2 / (2^bits - 2) after clipping to +-1. */
void tile_dac(const float *x, const float *s, int64_t N, int64_t K, int bits, float *xq, float *xmax) {
    const float step = bits > 0 ? 2.0f / (float)((1LL << bits) - 2) : 0.0f;
    for (int64_t n = 0; n < N; n++) {
        const float *xr = x + n * K;
        float *q = xq + n * K;
        const float *src = xr;
        if (s) {
            for (int64_t j = 0; j < K; j++) q[j] = xr[j] / s[j];
            src = q;
        }
        float m = absmax(src, K);
        m = m < 1e-12f ? 1e-12f : m;
        xmax[n] = m;
        if (step > 0.0f)
            for (int64_t j = 0; j < K; j++) q[j] = __builtin_rintf(clampf(src[j] / m, -1.0f, 1.0f) / step) * step;
        else
            for (int64_t j = 0; j < K; j++) q[j] = src[j] / m;
    }
}

/* The output side, in place on y = xq @ tile^T ([N, C]): v = y / wmax[c] (the tile's normalised output)
 * + out_noise * z; on bits > 0 clipped to +-bound and rounded to step = 2 bound / (2^bits - 2); then
 * y = (v * xmax[n]) * wmax[c] (+ bias[c], bias may be NULL). */
void tile_adc(float *y, int64_t N, int64_t C, const float *xmax, const float *wmax, const float *bias,
              float out_noise, int bits, float bound, uint64_t seed) {
    const float step = bits > 0 ? 2.0f * bound / (float)((1LL << bits) - 2) : 0.0f;
    float z[2 * BLOCK];
    int zi = 2 * BLOCK;
    uint64_t ctr = seed;
    for (int64_t n = 0; n < N; n++) {
        float *row = y + n * C;
        const float xm = xmax[n];
        int64_t c = 0;
        while (c < C) {
            int64_t len = C - c;
            if (out_noise > 0.0f) {
                if (zi == 2 * BLOCK) { ctr = refill(z, ctr); zi = 0; }
                len = len < 2 * BLOCK - zi ? len : 2 * BLOCK - zi;
            }
            float *v = row + c;
            const float *wm = wmax + c;
            for (int64_t k = 0; k < len; k++) {
                float t = v[k] / wm[k];
                if (out_noise > 0.0f) t = t + out_noise * z[zi + k];
                if (step > 0.0f) t = __builtin_rintf(clampf(t, -bound, bound) / step) * step;
                t = (t * xm) * wm[k];
                v[k] = bias ? t + bias[c + k] : t;
            }
            if (out_noise > 0.0f) zi += (int)len;
            c += len;
        }
    }
}
