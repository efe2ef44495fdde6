/* out = x + scale * z, z ~ N(0, 1) i.i.d., for the training weight noise (analog/native loads this), and
 * the fast certify engine's tile periphery in one pass (certification/fast.py): `periphery`, `readout`.
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
#include <string.h>

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

void add_normal(const float *x, float *out, int64_t n, float scale, uint64_t seed) { /* x == out allowed */
    float zc[BLOCK], zs[BLOCK];
    const float half_pi = 1.57079632679489662f;
    for (int64_t start = 0; start < n; start += 2 * BLOCK) {
        uint64_t base = seed + (uint64_t)(start / 2) * GAMMA;
        for (int j = 0; j < BLOCK; j++) {
            uint64_t r = mix(base + (uint64_t)(j + 1) * GAMMA);
            float u1 = (float)((r >> 40) + 1) * 0x1.0p-24f;            /* (0, 1] */
            uint32_t b = (uint32_t)(r >> 16) & 0xFFFFFFu;                /* theta = 2 pi b / 2^24 */
            uint32_t q = b >> 22;                                        /* quadrant */
            float f = (float)(b & 0x3FFFFFu) * 0x1.0p-22f * half_pi;     /* angle within it, [0, pi/2) */
            float f2 = f * f;
            float s = f * (1.0f + f2 * (-1.0f / 6 + f2 * (1.0f / 120 + f2 * (-1.0f / 5040 + f2 * (1.0f / 362880
                      + f2 * (-1.0f / 39916800))))));
            float c = 1.0f + f2 * (-0.5f + f2 * (1.0f / 24 + f2 * (-1.0f / 720 + f2 * (1.0f / 40320
                      + f2 * (-1.0f / 3628800 + f2 * (1.0f / 479001600))))));
            float a = (q & 1u) ? s : c, d = (q & 1u) ? c : s;
            float cos_t = (q == 1u || q == 2u) ? -a : a;
            float sin_t = (q >= 2u) ? -d : d;
            float rad = scale * __builtin_sqrtf(-2.0f * log_unit(u1));
            zc[j] = rad * cos_t;
            zs[j] = rad * sin_t;
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
    const float half_pi = 1.57079632679489662f;
    for (int j = 0; j < BLOCK; j++) {
        uint64_t r = mix(base + (uint64_t)(j + 1) * GAMMA);
        float u1 = (float)((r >> 40) + 1) * 0x1.0p-24f;
        uint32_t b = (uint32_t)(r >> 16) & 0xFFFFFFu;
        uint32_t q = b >> 22;
        float f = (float)(b & 0x3FFFFFu) * 0x1.0p-22f * half_pi;
        float f2 = f * f;
        float s = f * (1.0f + f2 * (-1.0f / 6 + f2 * (1.0f / 120 + f2 * (-1.0f / 5040 + f2 * (1.0f / 362880
                  + f2 * (-1.0f / 39916800))))));
        float c = 1.0f + f2 * (-0.5f + f2 * (1.0f / 24 + f2 * (-1.0f / 720 + f2 * (1.0f / 40320
                  + f2 * (-1.0f / 3628800 + f2 * (1.0f / 479001600))))));
        float a = (q & 1u) ? s : c, d = (q & 1u) ? c : s;
        float rad = __builtin_sqrtf(-2.0f * log_unit(u1));
        z[j] = rad * ((q == 1u || q == 2u) ? -a : a);
        z[BLOCK + j] = rad * ((q >= 2u) ? -d : d);
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
void periphery(float *y, int64_t N, int64_t C, int64_t S, const float *nm, int64_t G, float red, int prescaled,
               const float *std, const float *post, float out_scale, float step, float bound, uint64_t seed,
               float *peak) {
    float z[2 * BLOCK];
    int zi = 2 * BLOCK;
    uint64_t ctr = seed;
    int64_t per_group = C / G;
    for (int64_t c = 0; c < C; c++) peak[c] = 0.0f;
    for (int64_t n = 0; n < N; n++) {
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
    for (int64_t t = 0; t < T; t++)
        means[t] = readout(w + t * n, n, q1, sigma, step, bound, mix(seed + (uint64_t)(t + 1) * GAMMA), peaks + t);
}
