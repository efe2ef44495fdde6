/* out = x + scale * z, z ~ N(0, 1) i.i.d., for the training weight noise (analog/native.py loads this).
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

void add_normal(const float *restrict x, float *restrict out, int64_t n, float scale, uint64_t seed) {
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
