/*
 * Dense CRF on the CPU: the permutohedral lattice (build, filter) and fused mean-field iterations.
 *
 * Compiled on first use by deeplab_resnet/crf/native.py (plain C99 + optional OpenMP, loaded with
 * ctypes; no Python or torch headers). The lattice is densecrf's (Kraehenbuehl's code inside
 * pydensecrf) step for step in float32: elevation, rounding to the nearest remainder-0 point,
 * ranking, barycentric weights, vertex keys and blur neighbours, vertices numbered in the order
 * points first touch them. So filtering is the same linear operator as pydensecrf's and as
 * permutohedral.py's, up to float summation order. Compile with -ffp-contract=off: a fused
 * multiply-add in the elevation would move points across simplex boundaries.
 *
 * Where the time goes and what makes it faster than pydensecrf (BENCHMARKS.md):
 * - the lattice build: one-word packed keys, numbered through a table indexed by the key when the
 *   key space is small (the position kernel's grid) and else through hash tables filled on all
 *   threads (one cache line per look-up), prefetched one-sided neighbour look-ups, runs by a
 *   parallel counting sort (~60-90 ms for a VOC image's bilateral lattice, ~17 ms for its position
 *   lattice; pydensecrf ~0.4 s for both);
 * - the iterations are bound by memory: rows hold all labels (padded to a multiple of 8, whole
 *   vectors), rows read at scattered places are prefetched ahead, every stage runs in parallel over
 *   vertices or points (splat is a gather: each vertex sums its own run), and blur tables too large
 *   for the cache are written with non-temporal stores;
 * - slice, the Potts messages of both kernels, the unary and the softmax are one pass per pixel,
 *   with the pixel's labels held in vector registers (8 labels each) from slice to softmax: written
 *   with scalar loops over a row in memory, this pass took three times as long (40 ms of a 65 ms
 *   iteration on a VOC image); the unary's log is vectorised too;
 * - absent blur neighbours point at a row of zeros: no branches in the blur;
 * - large buffers sit on 2 MB pages and are reused from image to image (first-touching memory is
 *   what costs most in a virtual machine), with headroom for the next, slightly larger image.
 * A built lattice is read-only: several threads may filter with one lattice at once.
 */
#define _DEFAULT_SOURCE /* madvise */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __linux__
#include <sys/mman.h>
#endif
#include <unistd.h> /* sysconf */
#ifdef __AVX__
#include <immintrin.h> /* non-temporal stores */
#endif
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
/* Denormals flushed to zero (and read as zero) inside our parallel regions: probabilities of absent
   labels reach 1e-38 and below, and float arithmetic on denormals is ~100x slower on x86. This
   changes nothing above 1e-38. Each thread's previous mode is restored at the end of the region,
   so neither the caller nor a thread pool shared with torch is affected. */
static inline unsigned int ftz_on(void) {
    unsigned int old = _mm_getcsr();
    _mm_setcsr(old | 0x8040);
    return old;
}
static inline void ftz_restore(unsigned int old) { _mm_setcsr(old); }
#else
static inline unsigned int ftz_on(void) { return 0; }
static inline void ftz_restore(unsigned int old) { (void)old; }
#endif
/* A parallel region over `nthreads` threads with denormals flushed; put `#pragma omp for` loops inside. */
#define PARALLEL_BEGIN _Pragma("omp parallel num_threads(nthreads)") { unsigned int csr_ = ftz_on();
#define PARALLEL_END ftz_restore(csr_); }

typedef float v8f __attribute__((vector_size(32))); /* GCC/Clang vector extensions */
typedef int32_t v8i __attribute__((vector_size(32)));

#define MAX_ELEVATED 4194304.0f /* 2^22: float32 still represents the lattice grid exactly below it */
#define PREFETCH_KEYS 4 /* vertices ahead whose neighbour lookups are prefetched */
#define CW 8 /* rows of labels are padded to a multiple of this (one AVX register) */

typedef struct {
    int d;          /* feature dimension */
    int kdim;       /* key length: d, plus 1 when points carry an image index */
    int64_t n;      /* points */
    int64_t m;      /* vertices */
    int32_t *vertex; /* n * (d+1): the vertex of each (point, corner) */
    float *bary;     /* n * (d+1): barycentric weights */
    int32_t *nb;     /* (d+1) * m * 2: blur neighbours + 1 along each direction; 0 = absent */
    int64_t *run;    /* m + 1: where each vertex's (point, corner) run starts in the splat arrays */
    int32_t *entry;  /* n * (d+1): (point, corner) positions sorted by vertex, then by position */
    int32_t *point;  /* n * (d+1): the point of each entry */
    float alpha;     /* densecrf's slicing constant 1 / (1 + 2^-d) */
} lattice_t; /* read-only once built: several threads may filter with one lattice at once */

/* ---------------------------------------------------------------- memory */

/* Large arrays read at random places live on 2 MB pages where the OS allows it (Linux THP in
   "madvise" mode): a VOC image's tables span ~100 MB, and with 4 KB pages nearly every random read
   misses the TLB and every first touch page-faults. Getting fresh huge pages can be slow when memory
   is fragmented (other work between two CRF calls: measured 20% slower per image), so freed large
   blocks are kept in a small process-wide cache (at most CACHE_BYTES unused) and reused by the
   next image. Every buffer is initialised before use. */
#define HUGE_PAGE ((size_t)2 << 20)
#define CACHE_SLOTS 512 /* 8 cached position lattices, a bilateral one, a mean-field call: ~80 blocks at once */
#define CACHE_BYTES ((size_t)384 << 20)

static struct {
    void *p;
    size_t size;
    int used;
} block_cache[CACHE_SLOTS];
static pthread_mutex_t blocks_lock = PTHREAD_MUTEX_INITIALIZER;

/* Give unused cached blocks back until at most `keep` bytes stay unused (call with the lock held). */
static void trim_cache(size_t keep) {
    for (;;) {
        size_t unused = 0;
        int largest = -1;
        for (int i = 0; i < CACHE_SLOTS; i++)
            if (block_cache[i].p && !block_cache[i].used) {
                unused += block_cache[i].size;
                if (largest < 0 || block_cache[i].size > block_cache[largest].size) largest = i;
            }
        if (unused <= keep || largest < 0) return;
        free(block_cache[largest].p);
        block_cache[largest].p = NULL;
    }
}

static void *big_alloc(size_t bytes) {
    if (bytes < HUGE_PAGE) return malloc(bytes ? bytes : 1);
    if (bytes > SIZE_MAX - HUGE_PAGE) return NULL;
    const size_t rounded = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    pthread_mutex_lock(&blocks_lock);
    int best = -1, empty = -1;
    for (int i = 0; i < CACHE_SLOTS; i++) {
        if (!block_cache[i].p) {
            empty = empty < 0 ? i : empty;
        } else if (!block_cache[i].used && block_cache[i].size >= rounded && block_cache[i].size <= 2 * rounded &&
                   (best < 0 || block_cache[i].size < block_cache[best].size)) {
            best = i;
        }
    }
    if (best >= 0) {
        block_cache[best].used = 1;
        pthread_mutex_unlock(&blocks_lock);
        return block_cache[best].p;
    }
    pthread_mutex_unlock(&blocks_lock);
    /* A new block gets 25% headroom (address space only: pages are backed when first written), so
       that the next, slightly larger image reuses it: touching memory for the first time costs up to
       2 ms per MB in a virtual machine (measured: 66 MB of new blocks made an image 50% slower). */
    const size_t size = rounded > SIZE_MAX / 2 ? rounded : rounded + (rounded / 4 + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    void *p = NULL;
    if (posix_memalign(&p, HUGE_PAGE, size)) return NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(p, size, MADV_HUGEPAGE);
#endif
    pthread_mutex_lock(&blocks_lock);
    if (empty < 0 || block_cache[empty].p) /* the slot was taken meanwhile: look again */
        for (empty = 0; empty < CACHE_SLOTS && block_cache[empty].p; empty++) {
        }
    if (empty < CACHE_SLOTS) block_cache[empty].p = p, block_cache[empty].size = size, block_cache[empty].used = 1;
    pthread_mutex_unlock(&blocks_lock);
    return p; /* untracked when the table is full: big_free frees it */
}

/* Free what big_alloc (or malloc) returned: cached blocks go back to the cache. */
static void big_free(void *p) {
    if (!p) return;
    pthread_mutex_lock(&blocks_lock);
    for (int i = 0; i < CACHE_SLOTS; i++)
        if (block_cache[i].p == p) {
            block_cache[i].used = 0;
            trim_cache(CACHE_BYTES);
            pthread_mutex_unlock(&blocks_lock);
            return;
        }
    pthread_mutex_unlock(&blocks_lock);
    free(p);
}

/* ---------------------------------------------------------------- hash table of integer keys */

typedef struct {
    int kdim;
    int64_t cap; /* table slots, a power of two */
    int64_t m;   /* keys stored */
    int64_t keycap;
    int32_t *table; /* slot -> key id, -1 empty */
    int32_t *keys;  /* m * kdim */
} hash_t;

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint64_t hash_key(const int32_t *k, int kdim) {
    uint64_t r = 0;
    for (int i = 0; i < kdim; i++) {
        r += (uint64_t)(int64_t)k[i];
        r *= 0x9E3779B97F4A7C15ull;
    }
    return mix64(r); /* the table index takes the low bits */
}

static int hash_rehash(hash_t *h, int64_t cap) {
    int32_t *t = malloc((size_t)cap * sizeof(int32_t));
    if (!t) return -1;
    memset(t, 0xff, (size_t)cap * sizeof(int32_t));
    for (int64_t e = 0; e < h->m; e++) {
        uint64_t i = hash_key(h->keys + e * h->kdim, h->kdim) & (uint64_t)(cap - 1);
        while (t[i] >= 0) i = (i + 1) & (uint64_t)(cap - 1);
        t[i] = (int32_t)e;
    }
    big_free(h->table);
    h->table = t;
    h->cap = cap;
    return 0;
}

static int hash_init(hash_t *h, int kdim, int64_t expected) {
    memset(h, 0, sizeof *h);
    h->kdim = kdim;
    int64_t cap = 1024;
    while (cap < 2 * expected) cap *= 2;
    h->keycap = expected > 16 ? expected : 16;
    h->keys = malloc((size_t)h->keycap * kdim * sizeof(int32_t));
    if (!h->keys || hash_rehash(h, cap)) {
        free(h->keys);
        h->keys = NULL;
        return -1;
    }
    return 0;
}

static void hash_free(hash_t *h) {
    big_free(h->table);
    big_free(h->keys);
}

/* The id of `key`; with `create`, a new id when it is absent (-2 when out of memory), else -1. */
static int32_t hash_find(hash_t *h, const int32_t *key, int create) {
    uint64_t mask = (uint64_t)(h->cap - 1);
    uint64_t i = hash_key(key, h->kdim) & mask;
    for (;;) {
        int32_t e = h->table[i];
        if (e < 0) break;
        if (memcmp(h->keys + (int64_t)e * h->kdim, key, (size_t)h->kdim * sizeof(int32_t)) == 0) return e;
        i = (i + 1) & mask;
    }
    if (!create) return -1;
    if (h->m == h->keycap) {
        int32_t *k = realloc(h->keys, (size_t)h->keycap * 2 * h->kdim * sizeof(int32_t));
        if (!k) return -2;
        h->keys = k;
        h->keycap *= 2;
    }
    memcpy(h->keys + h->m * h->kdim, key, (size_t)h->kdim * sizeof(int32_t));
    h->table[i] = (int32_t)h->m;
    h->m++;
    if (2 * h->m > h->cap && hash_rehash(h, 2 * h->cap)) return -2;
    return (int32_t)(h->m - 1);
}

/* ---------------------------------------------------------------- lattice construction */

void dcrf_lattice_free(lattice_t *L) {
    if (!L) return;
    big_free(L->vertex);
    big_free(L->bary);
    big_free(L->nb);
    big_free(L->run);
    big_free(L->entry);
    big_free(L->point);
    big_free(L);
}

int64_t dcrf_lattice_vertices(const lattice_t *L) { return L->m; }

/* Copy out the per-(point, corner) vertex ids and weights and the blur neighbours (for tests). */
void dcrf_lattice_export(const lattice_t *L, int32_t *vertex, float *bary, int32_t *nb) {
    int64_t k = L->d + 1;
    memcpy(vertex, L->vertex, (size_t)(L->n * k) * sizeof(int32_t));
    memcpy(bary, L->bary, (size_t)(L->n * k) * sizeof(float));
    for (int64_t i = 0; i < k * L->m * 2; i++) nb[i] = L->nb[i] - 1;
}

/* Simplex of one point, densecrf's float32 operations in densecrf's order. */
/* Returns 0, or -1 for a point the lattice cannot hold (non-finite, or so large that float32 loses
   the integer grid): its ranks would index outside the simplex. */
static int simplex(const float *f, int d, const float *scale, float *el, float *rem0, float *rank, float *bar) {
    const float invdp1 = 1.0f / (float)(d + 1), dp1 = (float)(d + 1);
    float sm = 0.0f;
    for (int j = d; j > 0; j--) {
        float cf = f[j - 1] * scale[j - 1];
        float t = (float)j * cf;
        el[j] = sm - t;
        sm += cf;
    }
    el[0] = sm;
    float sum = 0.0f;
    for (int i = 0; i <= d; i++) {
        float v = rintf(invdp1 * el[i]); /* nearest, ties to even, as cvtps2dq */
        rem0[i] = v * dp1;
        sum += v;
        rank[i] = 0.0f;
    }
    for (int i = 0; i < d; i++) {
        float di = el[i] - rem0[i];
        for (int j = i + 1; j <= d; j++) {
            float dj = el[j] - rem0[j];
            if (di < dj)
                rank[i] += 1.0f;
            else
                rank[j] += 1.0f;
        }
    }
    for (int i = 0; i <= d; i++) { /* bring the point back onto the plane */
        rank[i] += sum;
        if (rank[i] < 0.0f) {
            rank[i] += dp1;
            rem0[i] += dp1;
        } else if (rank[i] >= dp1) {
            rank[i] -= dp1;
            rem0[i] -= dp1;
        }
    }
    for (int i = 0; i <= d; i++)
        if (!(fabsf(el[i]) < MAX_ELEVATED) || !(rank[i] >= 0.0f && rank[i] <= (float)d)) return -1;
    for (int i = 0; i <= d + 1; i++) bar[i] = 0.0f;
    for (int i = 0; i <= d; i++) {
        float v = (el[i] - rem0[i]) * invdp1;
        int p = d - (int)rank[i];
        bar[p] += v;
        bar[p + 1] -= v;
    }
    bar[0] += 1.0f + bar[d + 1];
    return 0;
}

/* The key of vertex r of a point: coordinate i is rem0_i + r, or rem0_i + r - (d+1) when its rank
   is among the top r (densecrf's canonical simplex); then the image index, if any. */
/*
 * simplex() for 8 points at once (f: 8 x d), lane by lane the same float operations in the same
 * order, so the same results; rounding uses 1.5 * 2^23 (exact for |x| < 2^22: larger elevated
 * coordinates are invalid anyway). Writes rem (8 x d), rank and bary (8 x (d+1)); an invalid point
 * gets zeros, as in the scalar path. Returns 1 when a point is invalid.
 */
static int simplex8(const float *f, int d, const float *scale, int32_t *rem, uint8_t *rank, float *bary) {
    const int k = d + 1;
    const float invdp1 = 1.0f / (float)(d + 1), dp1 = (float)(d + 1), magic = 12582912.0f;
    const v8f one = {1, 1, 1, 1, 1, 1, 1, 1}, step = one * dp1;
    v8f el[16], rem0[16], rk[16], bar[17];
    v8f sm = {0};
    for (int j = d; j > 0; j--) {
        v8f fj;
        for (int l = 0; l < 8; l++) fj[l] = f[l * d + j - 1];
        const v8f cf = fj * scale[j - 1];
        const v8f t = (float)j * cf;
        el[j] = sm - t;
        sm += cf;
    }
    el[0] = sm;
    v8f sum = {0};
    for (int i = 0; i <= d; i++) {
        const v8f v = ((invdp1 * el[i]) + magic) - magic; /* rintf: nearest, ties to even */
        rem0[i] = v * dp1;
        sum += v;
        rk[i] = (v8f){0};
    }
    for (int i = 0; i < d; i++) {
        const v8f di = el[i] - rem0[i];
        for (int j = i + 1; j <= d; j++) {
            const v8i less = di < (el[j] - rem0[j]);
            rk[i] += (v8f)((v8i)one & less);
            rk[j] += (v8f)((v8i)one & ~less);
        }
    }
    v8i bad = {0};
    for (int i = 0; i <= d; i++) {
        rk[i] += sum;
        const v8f up = (v8f)((v8i)step & (rk[i] < 0.0f)), down = (v8f)((v8i)step & (rk[i] >= dp1));
        rk[i] = rk[i] + up - down;
        rem0[i] = rem0[i] + up - down;
        const v8f magnitude = (v8f)((v8i)el[i] & 0x7fffffff);
        bad |= ~(magnitude < MAX_ELEVATED) | ~((rk[i] >= 0.0f) & (rk[i] <= (float)d));
    }
    for (int q = 0; q <= d + 1; q++) bar[q] = (v8f){0};
    for (int i = 0; i <= d; i++) {
        const v8f v = (el[i] - rem0[i]) * invdp1, at_rank = (float)d - rk[i];
        for (int q = 0; q <= d; q++) { /* bar[d - rank] += v, bar[d - rank + 1] -= v */
            const v8f part = (v8f)((v8i)v & (at_rank == (float)q));
            bar[q] += part;
            bar[q + 1] -= part;
        }
    }
    bar[0] += 1.0f + bar[d + 1];
    int any = 0;
    for (int l = 0; l < 8; l++) {
        const int ok = !bad[l];
        any |= !ok;
        for (int i = 0; i < d; i++) rem[l * d + i] = ok ? (int32_t)rem0[i][l] : 0;
        for (int r = 0; r <= d; r++) {
            rank[l * k + r] = ok ? (uint8_t)rk[r][l] : 0;
            bary[l * k + r] = ok ? bar[r][l] : 0.0f;
        }
    }
    return any;
}

static inline void vertex_key(const int32_t *rem, const uint8_t *rank, int d, int r, const int32_t *image, int64_t p,
                              int32_t *key) {
    for (int i = 0; i < d; i++) key[i] = rem[i] + (rank[i] <= d - r ? r : r - (d + 1));
    if (image) key[d] = image[p];
}

/* Generic construction: keys as rows of ints in a hash table (any feature range). */
static int build_generic(lattice_t *L, const int32_t *rem, const uint8_t *rank, const int32_t *image, int nthreads) {
    const int d = L->d, k = d + 1, kdim = L->kdim;
    hash_t h;
    if (hash_init(&h, kdim, L->n)) return -1;
    int32_t key[16];
    for (int64_t p = 0; p < L->n; p++) {
        for (int r = 0; r <= d; r++) {
            vertex_key(rem + p * d, rank + p * k, d, r, image, p, key);
            int32_t id = hash_find(&h, key, 1);
            if (id < 0) {
                hash_free(&h);
                return -1;
            }
            L->vertex[p * k + r] = id;
        }
    }
    L->m = h.m;
    const int64_t m = L->m;
    L->nb = big_alloc((size_t)(k * m * 2) * sizeof(int32_t));
    if (!L->nb) {
        hash_free(&h);
        return -1;
    }
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t i = 0; i < m; i++) {
        int32_t n1[16], n2[16];
        const int32_t *key_i = h.keys + i * kdim;
        for (int j = 0; j <= d; j++) {
            for (int c = 0; c < kdim; c++) {
                n1[c] = key_i[c] - 1;
                n2[c] = key_i[c] + 1;
            }
            if (j < d) {
                n1[j] = key_i[j] + d;
                n2[j] = key_i[j] - d;
            }
            if (kdim > d) n1[d] = n2[d] = key_i[d]; /* the image index never changes */
            L->nb[(j * m + i) * 2 + 0] = hash_find(&h, n1, 0) + 1;
            L->nb[(j * m + i) * 2 + 1] = hash_find(&h, n2, 0) + 1;
        }
    }
    hash_free(&h);
    return 0;
}

/* Packed construction: when every coordinate's range (with room for blur neighbours) fits, a key is
   one uint64 (mixed radix) and a neighbour's key is the key plus a constant per direction. */
#define EMPTY_KEY UINT64_MAX

typedef struct {
    uint64_t key; /* EMPTY_KEY when free */
    int64_t id;   /* key and id in one 16-byte slot: a look-up reads one cache line */
} slot_t;

typedef struct {
    int64_t cap, m, keycap;
    slot_t *slot;
    uint64_t *keys; /* by id */
} phash_t;


static int phash_rehash(phash_t *h, int64_t cap) {
    slot_t *slot = big_alloc((size_t)cap * sizeof(slot_t));
    if (!slot) return -1;
    for (int64_t i = 0; i < cap; i++) slot[i].key = EMPTY_KEY;
    for (int64_t e = 0; e < h->m; e++) {
        uint64_t i = mix64(h->keys[e]) & (uint64_t)(cap - 1);
        while (slot[i].key != EMPTY_KEY) i = (i + 1) & (uint64_t)(cap - 1);
        slot[i].key = h->keys[e];
        slot[i].id = e;
    }
    big_free(h->slot);
    h->slot = slot, h->cap = cap;
    return 0;
}

static inline int32_t phash_lookup(const phash_t *h, uint64_t key) {
    const uint64_t mask = (uint64_t)(h->cap - 1);
    for (uint64_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        const uint64_t sk = h->slot[i].key;
        if (sk == key) return (int32_t)h->slot[i].id;
        if (sk == EMPTY_KEY) return -1;
    }
}

static int32_t phash_insert(phash_t *h, uint64_t key) {
    const uint64_t mask = (uint64_t)(h->cap - 1);
    uint64_t i = mix64(key) & mask;
    for (;; i = (i + 1) & mask) {
        const uint64_t sk = h->slot[i].key;
        if (sk == key) return (int32_t)h->slot[i].id;
        if (sk == EMPTY_KEY) break;
    }
    if (h->m == h->keycap) {
        uint64_t *k = big_alloc((size_t)h->keycap * 2 * sizeof(uint64_t));
        if (!k) return -1;
        memcpy(k, h->keys, (size_t)h->keycap * sizeof(uint64_t));
        big_free(h->keys);
        h->keys = k, h->keycap *= 2;
    }
    h->keys[h->m] = key;
    h->slot[i].key = key;
    h->slot[i].id = h->m;
    if (2 * ++h->m > h->cap && phash_rehash(h, 2 * h->cap)) return -1;
    return (int32_t)(h->m - 1);
}

static int phash_init(phash_t *h, int64_t points) {
    memset(h, 0, sizeof *h);
    int64_t cap = 1024;
    while (cap < 4 * points) cap *= 2;
    h->keycap = 2 * points + 16;
    h->keys = big_alloc((size_t)h->keycap * sizeof(uint64_t));
    if (!h->keys || phash_rehash(h, cap)) {
        big_free(h->keys);
        h->keys = NULL;
        return -1;
    }
    return 0;
}

static void phash_free(phash_t *h) { big_free(h->slot), big_free(h->keys); }

/* Insert the keys of points [p0, p1) into h in order (ids: first touch), writing their ids. */
static int insert_points(phash_t *h, const uint64_t *keys, int64_t p0, int64_t p1, int k, int32_t *vertex) {
    uint64_t last_key[16]; /* the previous point's vertex keys: neighbouring pixels mostly share them */
    int32_t last_id[16];
    for (int r = 0; r < k; r++) last_key[r] = EMPTY_KEY, last_id[r] = -1;
    for (int64_t p = p0; p < p1; p++)
        for (int r = 0; r < k; r++) {
            const uint64_t key = keys[p * k + r];
            if (key != last_key[r]) {
                last_key[r] = key;
                last_id[r] = phash_insert(h, key);
                if (last_id[r] < 0) return -1;
            }
            vertex[p * k + r] = last_id[r];
        }
    return 0;
}

/* Number the keys in first-touch order with a table indexed by the key itself (small key spaces:
   the position kernel's grid). Fills L->vertex and h->keys / h->m (no slots); returns the table. */
static int32_t *number_direct(lattice_t *L, const uint64_t *keys, int64_t space, phash_t *h) {
    const int64_t total = L->n * (L->d + 1);
    int32_t *table = big_alloc((size_t)space * sizeof(int32_t));
    memset(h, 0, sizeof *h);
    h->keys = big_alloc((size_t)total * sizeof(uint64_t)); /* at most one vertex per entry */
    if (!table || !h->keys) {
        big_free(table), big_free(h->keys);
        h->keys = NULL;
        return NULL;
    }
    memset(table, 0xff, (size_t)space * sizeof(int32_t));
    for (int64_t e = 0; e < total; e++) {
        int32_t id = table[keys[e]];
        if (id < 0) {
            id = table[keys[e]] = (int32_t)h->m;
            h->keys[h->m++] = keys[e];
        }
        L->vertex[e] = id;
    }
    return table;
}

/* Number the keys in first-touch order with hash tables: each of T threads numbers the vertices of
   its share of the points in its own table; then the tables are merged in order (table t's new keys
   after those of tables < t), which numbers all vertices in the order points first touch them, as
   one table filled point by point would. Returns 0, or -1 when out of memory. */
static int number_hashed(lattice_t *L, const uint64_t *keys, phash_t *h, int nthreads) {
    const int k = L->d + 1;
    const int64_t n = L->n;
    enum { MAX_PARTS = 16 };
    int parts = nthreads < 1 ? 1 : (nthreads > MAX_PARTS ? MAX_PARTS : nthreads);
    if (n < 8192 * (int64_t)parts) parts = 1;
    phash_t part[MAX_PARTS];
    int status[MAX_PARTS];
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int t = 0; t < parts; t++) {
        const int64_t p0 = n * t / parts, p1 = n * (t + 1) / parts;
        status[t] = phash_init(&part[t], t ? p1 - p0 : n); /* the first takes in the others' keys */
        if (!status[t]) status[t] = insert_points(&part[t], keys, p0, p1, k, L->vertex);
    }
    int ok = 1;
    for (int t = 0; t < parts; t++) ok = ok && !status[t];
    *h = part[0];
    for (int t = 1; t < parts; t++) {
        int32_t *map = ok ? malloc((size_t)(part[t].m + 1) * sizeof(int32_t)) : NULL;
        for (int64_t id = 0; map && ok && id < part[t].m; id++)
            if ((map[id] = phash_insert(h, part[t].keys[id])) < 0) ok = 0;
        if (!map) ok = 0;
        if (ok) {
            const int64_t e0 = n * t / parts * k, e1 = n * (t + 1) / parts * k;
#pragma omp parallel for num_threads(nthreads) schedule(static)
            for (int64_t e = e0; e < e1; e++) L->vertex[e] = map[L->vertex[e]];
        }
        free(map);
        phash_free(&part[t]); /* safe after a failed init: its arrays are NULL */
    }
    return ok ? 0 : -1;
}

static int build_packed(lattice_t *L, const int32_t *rem, const uint8_t *rank, const int32_t *image, const int64_t *lo,
                        const int64_t *stride, int64_t space, int nthreads) {
    const int d = L->d, k = d + 1;
    const int64_t n = L->n;
    int64_t all = 0; /* sum of the coordinate strides */
    for (int i = 0; i < d; i++) all += stride[i];
    uint64_t *keys = big_alloc((size_t)(n * k) * sizeof(uint64_t));
    if (!keys) return -1;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t p = 0; p < n; p++) {
        const int32_t *rp = rem + p * d;
        const uint8_t *kp = rank + p * k;
        int64_t base = image ? (int64_t)image[p] * stride[d] : 0, by_rank[16] = {0};
        for (int i = 0; i < d; i++) {
            base += (rp[i] - lo[i]) * stride[i];
            by_rank[kp[i]] = stride[i];
        }
        int64_t top = 0; /* strides of the coordinates ranked in the top r */
        for (int r = 0; r <= d; r++) {
            if (r > 0) top += by_rank[d + 1 - r];
            keys[p * k + r] = (uint64_t)(base + r * all - (int64_t)(d + 1) * top);
        }
    }
    /* a key space a few times the entries: direct addressing (one array access per key, and keys
       that differ by a blur step sit close together) */
    const int direct = space <= 4 * n * k + ((int64_t)1 << 20);
    phash_t h;
    int32_t *table = direct ? number_direct(L, keys, space, &h) : NULL;
    int ok = direct ? table != NULL : !number_hashed(L, keys, &h, nthreads);
    big_free(keys);
    const int64_t m = L->m = h.m;
    L->nb = ok ? big_alloc((size_t)(k * m * 2) * sizeof(int32_t)) : NULL;
    if (L->nb) {
        int64_t shift[16]; /* n1 = key + shift_j, n2 = key - shift_j */
        for (int j = 0; j <= d; j++) shift[j] = -all + (j < d ? (int64_t)(d + 1) * stride[j] : 0);
        /* Only n1 is looked up: u = n1(v) exactly when v = n2(u), and n1 is one-to-one, so each n2
           slot is written by at most one thread. Slots never written stay 0 (absent). */
#pragma omp parallel for num_threads(nthreads) schedule(static)
        for (int64_t i = 0; i < m; i++)
            for (int j = 0; j <= d; j++) L->nb[(j * m + i) * 2 + 1] = 0;
#pragma omp parallel for num_threads(nthreads) schedule(static)
        for (int64_t i = 0; i < m; i++) {
            if (!direct && i + PREFETCH_KEYS < m)
                for (int j = 0; j <= d; j++)
                    __builtin_prefetch(h.slot + (mix64(h.keys[i + PREFETCH_KEYS] + shift[j]) & (uint64_t)(h.cap - 1)));
            for (int j = 0; j <= d; j++) {
                const int32_t u = direct ? table[h.keys[i] + shift[j]] : phash_lookup(&h, h.keys[i] + shift[j]);
                L->nb[(j * m + i) * 2 + 0] = u + 1;
                if (u >= 0) L->nb[(j * m + u) * 2 + 1] = (int32_t)i + 1;
            }
        }
    }
    phash_free(&h);
    big_free(table);
    return L->nb ? 0 : -1;
}

/* Each vertex's (point, corner) entries in increasing order, as runs: a counting sort, on all threads
   (thread t counts and places its share of the entries after those of threads < t). */
static int build_runs(lattice_t *L, int nthreads) {
    const int64_t total = L->n * (L->d + 1), m = L->m;
    const int parts = nthreads < 1 ? 1 : (nthreads > 16 ? 16 : nthreads);
    L->run = big_alloc((size_t)(m + 1) * sizeof(int64_t));
    L->entry = big_alloc((size_t)total * sizeof(int32_t));
    L->point = big_alloc((size_t)total * sizeof(int32_t));
    int32_t *count = big_alloc((size_t)(parts * m) * sizeof(int32_t)); /* per part and vertex */
    if (!L->run || !L->entry || !L->point || !count) {
        big_free(count);
        return -1;
    }
    memset(count, 0, (size_t)(parts * m) * sizeof(int32_t));
#pragma omp parallel num_threads(parts)
    {
#ifdef _OPENMP
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        const int t = 0, nt = 1;
#endif
        const int64_t e0 = total * t / nt, e1 = total * (t + 1) / nt;
        int32_t *mine = count + (int64_t)t * m;
        for (int64_t e = e0; e < e1; e++) mine[L->vertex[e]]++;
#pragma omp barrier
#pragma omp for schedule(static)
        for (int64_t v = 0; v < m; v++) { /* counts -> each part's offset inside the vertex's run */
            int32_t offset = 0;
            for (int u = 0; u < nt; u++) {
                const int32_t c = count[(int64_t)u * m + v];
                count[(int64_t)u * m + v] = offset;
                offset += c;
            }
            L->run[v + 1] = offset;
        }
#pragma omp single
        {
            L->run[0] = 0;
            for (int64_t v = 0; v < m; v++) L->run[v + 1] += L->run[v];
        }
        for (int64_t e = e0; e < e1; e++) {
            const int32_t v = L->vertex[e];
            L->entry[L->run[v] + mine[v]++] = (int32_t)e;
        }
#pragma omp barrier
#pragma omp for schedule(static)
        for (int64_t e = 0; e < total; e++) L->point[e] = L->entry[e] / (L->d + 1);
    }
    big_free(count);
    return 0;
}

/*
 * Build the lattice of `n` points with `d`-dimensional features (row-major, already divided by the
 * standard deviations). `image` (may be NULL) gives each point's image when several images share
 * one lattice: their vertices never meet. `packed` allows one-word keys when the coordinates fit
 * (0 forces the generic path; both give the same lattice). Returns NULL when out of memory or d
 * is out of range.
 */
lattice_t *dcrf_lattice_new(const float *feat, int64_t n, int d, const int32_t *image, int packed, int nthreads) {
    if (d < 1 || d > 14 || n < 1 || n * (d + 1) > INT32_MAX) return NULL;
    const int k = d + 1;
    lattice_t *L = calloc(1, sizeof *L);
    int32_t *rem = big_alloc((size_t)(n * d) * sizeof(int32_t));
    uint8_t *rank = big_alloc((size_t)(n * k));
    if (!L || !rem || !rank) {
        big_free(L), big_free(rem), big_free(rank);
        return NULL;
    }
    L->d = d;
    L->kdim = d + (image != NULL);
    L->n = n;
    L->alpha = 1.0f / (1.0f + powf(2.0f, (float)-d));
    L->vertex = big_alloc((size_t)(n * k) * sizeof(int32_t));
    L->bary = big_alloc((size_t)(n * k) * sizeof(float));
    int bad = !L->vertex || !L->bary;
    const float inv_std_dev = (float)(sqrt(2.0 / 3.0) * (d + 1));
    float scale[16];
    for (int i = 0; i < d; i++) scale[i] = (float)(1.0 / sqrt((double)(i + 2) * (i + 1)) * inv_std_dev);
    if (!bad) {
        int invalid = 0;
#pragma omp parallel for num_threads(nthreads) schedule(static) reduction(| : invalid)
        for (int64_t b = 0; b < n / 8; b++)
            invalid |= simplex8(feat + b * 8 * d, d, scale, rem + b * 8 * d, rank + b * 8 * k, L->bary + b * 8 * k);
        for (int64_t p = n / 8 * 8; p < n; p++) { /* the last few points */
            float el[16], rem0[16], rk[16], bar[17] = {0};
            if (simplex(feat + p * d, d, scale, el, rem0, rk, bar)) {
                invalid = 1;
                for (int r = 0; r <= d; r++) rk[r] = 0.0f, rem0[r] = 0.0f, bar[r] = 0.0f;
            }
            for (int i = 0; i < d; i++) rem[p * d + i] = (int32_t)rem0[i];
            for (int r = 0; r <= d; r++) {
                rank[p * k + r] = (uint8_t)rk[r];
                L->bary[p * k + r] = bar[r];
            }
        }
        bad = invalid; /* the caller checks the features first; this only keeps memory safe */
    }
    /* Mixed-radix strides when keys (and their blur neighbours, 2(d+1) further) fit in 62 bits. */
    int64_t lo[16], stride[16], space = 0; /* space: the number of possible packed keys */
    int fits = packed;
    if (!bad && fits) {
        int64_t hi[16], span[16], prod = 1;
        for (int i = 0; i < d; i++) lo[i] = INT32_MAX, hi[i] = INT32_MIN;
        for (int64_t p = 0; p < n; p++)
            for (int i = 0; i < d; i++) {
                const int64_t v = rem[p * d + i];
                lo[i] = v < lo[i] ? v : lo[i];
                hi[i] = v > hi[i] ? v : hi[i];
            }
        int32_t images = 0;
        for (int64_t p = 0; image && p < n; p++) images = image[p] > images ? image[p] : images;
        for (int i = 0; i < d; i++) {
            lo[i] -= 2 * (d + 1);
            span[i] = hi[i] - lo[i] + 2 * (d + 1) + 1;
        }
        span[d] = image ? (int64_t)images + 1 : 1;
        for (int i = d; i >= 0; i--) {
            stride[i] = prod;
            if (prod > ((int64_t)1 << 62) / span[i]) fits = 0;
            else prod *= span[i];
            space = prod;
        }
        for (int64_t p = 0; image && p < n; p++) fits = fits && image[p] >= 0;
    }
    if (!bad) bad = fits ? build_packed(L, rem, rank, image, lo, stride, space, nthreads) : build_generic(L, rem, rank, image, nthreads);
    big_free(rem), big_free(rank);
    if (bad || build_runs(L, nthreads)) {
        dcrf_lattice_free(L);
        return NULL;
    }
    return L;
}

/* ---------------------------------------------------------------- splat, blur, slice */

/*
 * Values are rows of lp numbers (the labels padded to a multiple of CW): the passes below read rows
 * at random places, and on a memory-bound CPU the cost is the number of cache lines fetched, so
 * all labels of a vertex are kept together (1.5 lines for 21 float32 labels) rather than in label
 * chunks (one line per chunk). Rows read at random are prefetched PREFETCH iterations ahead.
 * (Tried and measured slower or no faster: float16 tables, 8-label chunks, an in-place blur along
 * the lattice's lines, unpadded rows; see BENCHMARKS.md.)
 */

#define PREFETCH 8
#define INLINE static inline __attribute__((always_inline))
#define PREFETCH_BLUR 16 /* a blur step is short: more of them in flight */

static inline v8f load8(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v); /* an unaligned vector load */
    return v;
}

static inline void store8(float *p, v8f v) { memcpy(p, &v, sizeof v); }

static inline void stream8(float *p, v8f v) { /* a non-temporal store (p 32-byte aligned) */
#ifdef __AVX__
    _mm256_stream_ps(p, (__m256)v);
#else
    store8(p, v);
#endif
}

static inline void stream_fence(void) { /* make this thread's non-temporal stores visible */
#ifdef __AVX__
    _mm_sfence();
#endif
}

/* Blur tables larger than half the last-level cache cannot stay in it from one pass to the next:
   they are written with non-temporal stores, which skip reading every destination line first
   (measured: the blur of a 30 MB table 15-20% faster; of an 11 MB one, slower). */
static int64_t stream_bytes;
static pthread_once_t stream_once = PTHREAD_ONCE_INIT;

static void find_stream_bytes(void) {
    long l3 = -1;
#ifdef _SC_LEVEL3_CACHE_SIZE
    l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
    stream_bytes = l3 > 0 ? (int64_t)l3 / 2 : (int64_t)16 << 20;
}

/* Whether a blur writing (m+1) x lp tables at a and b should use non-temporal stores. */
static int blur_streams(int64_t m, int64_t lp, const float *a, const float *b) {
    pthread_once(&stream_once, find_stream_bytes);
    return lp % CW == 0 && (m + 1) * lp * (int64_t)sizeof(float) > stream_bytes && !((uintptr_t)a % 32) &&
           !((uintptr_t)b % 32);
}

static inline void prefetch_row(const float *t, int64_t r, int64_t lp) {
    for (int64_t l = 0; l < lp; l += 16) __builtin_prefetch(t + r * lp + l);
}

/* This thread's row of a nthreads x lp scratch array allocated before the parallel region. */
static inline float *thread_row(float *scratch, int64_t lp) {
#ifdef _OPENMP
    return scratch + (int64_t)omp_get_thread_num() * lp;
#else
    return scratch + 0 * lp;
#endif
}

/* vals[v+1][:] = sum over v's run of w * q[point][:] for rows of whole vectors. */
INLINE void splat_vertex(const lattice_t *L, const int32_t *restrict point, const float *restrict w,
                         const float *restrict q, int64_t v, int64_t total, int64_t lp, float *restrict vals) {
    v8f acc[lp / CW];
    for (int64_t b = 0; b < lp / CW; b++) acc[b] = (v8f){0};
    for (int64_t e = L->run[v]; e < L->run[v + 1]; e++) {
        if (e + 2 * PREFETCH < total) prefetch_row(q, point[e + 2 * PREFETCH], lp); /* entries are one array */
        const float *src = q + (int64_t)point[e] * lp;
        const float we = w[e];
        for (int64_t b = 0; b < lp / CW; b++) acc[b] += we * load8(src + b * CW);
    }
    for (int64_t b = 0; b < lp / CW; b++) store8(vals + (v + 1) * lp + b * CW, acc[b]);
}

/* vals[v+1][:] = sum over v's run of w * q[point][:] (q: n x lp float32; row 0 of vals stays zero). */
static void splat(const lattice_t *L, const int32_t *restrict point, const float *restrict w, const float *restrict q,
                  int64_t lp, float *restrict vals) {
    const int64_t m = L->m, total = L->run[m], blocks = lp / CW;
    if (lp % CW == 0) { /* rows of whole vectors: the sums stay in registers */
#pragma omp for schedule(static)
        for (int64_t v = 0; v < m; v++) {
            if (blocks == 3) /* constant widths for the usual label counts (see pixel_update) */
                splat_vertex(L, point, w, q, v, total, 24, vals);
            else if (blocks == 1)
                splat_vertex(L, point, w, q, v, total, 8, vals);
            else if (blocks == 2)
                splat_vertex(L, point, w, q, v, total, 16, vals);
            else
                splat_vertex(L, point, w, q, v, total, lp, vals);
        }
        return;
    }
#pragma omp for schedule(static)
    for (int64_t v = 0; v < m; v++) {
        const int64_t a = L->run[v], b = L->run[v + 1];
        float *restrict acc = vals + (v + 1) * lp;
        for (int64_t l = 0; l < lp; l++) acc[l] = 0.0f;
        for (int64_t e = a; e < b; e++) {
            if (e + 2 * PREFETCH < total) prefetch_row(q, point[e + 2 * PREFETCH], lp);
            const float *restrict src = q + (int64_t)point[e] * lp;
            const float we = w[e];
            for (int64_t l = 0; l < lp; l++) acc[l] += we * src[l];
        }
    }
}

/* d + 1 passes of dst[i] = src[i] + (src[n1] + src[n2]) / 2, ping-pong between a and b (each loop's
   barrier orders the passes). Returns the table that holds the result. */
static float *blur(const lattice_t *L, float *a, float *b, int64_t lp, int stream) {
    const int64_t m = L->m, blocks = lp / CW;
    float *src = a, *dst = b;
    for (int j = 0; j <= L->d; j++) {
        const int32_t *restrict nb = L->nb + j * m * 2;
        if (lp % CW == 0) {
#pragma omp for schedule(static) nowait
            for (int64_t i = 0; i < m; i++) {
                if (i + PREFETCH_BLUR < m) {
                    prefetch_row(src, nb[2 * (i + PREFETCH_BLUR)], lp);
                    prefetch_row(src, nb[2 * (i + PREFETCH_BLUR) + 1], lp);
                }
                const float *s = src + (i + 1) * lp, *s1 = src + (int64_t)nb[2 * i] * lp;
                const float *s2 = src + (int64_t)nb[2 * i + 1] * lp;
                float *o = dst + (i + 1) * lp;
                for (int64_t c = 0; c < blocks; c++) {
                    const v8f r = load8(s + c * CW) + 0.5f * (load8(s1 + c * CW) + load8(s2 + c * CW));
                    if (stream)
                        stream8(o + c * CW, r);
                    else
                        store8(o + c * CW, r);
                }
            }
            if (stream) stream_fence();
#pragma omp barrier
        } else {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < m; i++) {
                if (i + PREFETCH < m) {
                    prefetch_row(src, nb[2 * (i + PREFETCH)], lp);
                    prefetch_row(src, nb[2 * (i + PREFETCH) + 1], lp);
                }
                const float *restrict s = src + (i + 1) * lp;
                const float *restrict s1 = src + (int64_t)nb[2 * i] * lp;
                const float *restrict s2 = src + (int64_t)nb[2 * i + 1] * lp;
                float *restrict o = dst + (i + 1) * lp;
                for (int64_t l = 0; l < lp; l++) o[l] = s[l] + 0.5f * (s1[l] + s2[l]);
            }
        }
        float *t = src;
        src = dst;
        dst = t;
    }
    return src;
}

/* acc[:] += sum over p's corners of w[corner] * vals[vertex + 1][:]; prefetches point p + PREFETCH. */
static inline void slice_point(const lattice_t *L, int64_t p, const float *restrict w, const float *restrict vals,
                               int64_t lp, float *restrict acc) {
    const int k = L->d + 1;
    if (p + PREFETCH < L->n)
        for (int r = 0; r < k; r++) prefetch_row(vals, (int64_t)L->vertex[(p + PREFETCH) * k + r] + 1, lp);
    for (int r = 0; r < k; r++) {
        const float *restrict src = vals + ((int64_t)L->vertex[p * k + r] + 1) * lp;
        const float wr = w[p * k + r];
        for (int64_t l = 0; l < lp; l++) acc[l] += wr * src[l];
    }
}

/* A lattice ready to filter rows of lp values: splat weights in run order (the points are the
   lattice's), slice weights, and its own (m+1) x lp table for the result; the blur ping-pongs between
   it and a scratch table shared by all kernels of a call (filtered one after the other). Row 0 of
   both is zero: the absent neighbour. */
typedef struct {
    lattice_t *L;
    float *splat_w, *slice_w, *own, *scratch;
    int stream; /* the blur writes with non-temporal stores */
} kernel_t;

static void kernel_free(kernel_t *K) {
    big_free(K->splat_w), big_free(K->slice_w), big_free(K->own);
    memset(K, 0, sizeof *K);
}

/* Splat weights = barycentric weight * pre[point]; slice weights = alpha * weight * post[point] *
   scale (pre/post may be NULL for 1). `scratch` holds at least (m+1) x lp floats with row 0 zero.
   Returns 0, or -1 when out of memory. */
static int kernel_init(kernel_t *K, lattice_t *L, const float *pre, const float *post, float scale, int64_t lp,
                       float *scratch, int nthreads) {
    const int k = L->d + 1;
    const int64_t total = L->n * k;
    memset(K, 0, sizeof *K);
    K->L = L;
    K->scratch = scratch;
    K->splat_w = big_alloc((size_t)total * sizeof(float));
    K->slice_w = big_alloc((size_t)total * sizeof(float));
    K->own = big_alloc((size_t)(L->m + 1) * (size_t)lp * sizeof(float));
    if (!K->splat_w || !K->slice_w || !K->own) {
        kernel_free(K);
        return -1;
    }
    memset(K->own, 0, (size_t)lp * sizeof(float));
    K->stream = blur_streams(L->m, lp, K->own, scratch);
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t e = 0; e < total; e++) {
        const float w = L->bary[L->entry[e]];
        K->splat_w[e] = pre ? w * pre[L->point[e]] : w;
    }
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t p = 0; p < L->n; p++) {
        const float f = L->alpha * (post ? post[p] : 1.0f) * scale;
        for (int r = 0; r < k; r++) K->slice_w[p * k + r] = L->bary[p * k + r] * f;
    }
    return 0;
}

/* A zeroed-row-0 scratch table for kernels over these lattices (NULL when out of memory). */
static float *scratch_table(lattice_t *const *lats, int nk, int64_t lp) {
    int64_t m = 0;
    for (int t = 0; t < nk; t++) m = lats[t]->m > m ? lats[t]->m : m;
    float *s = big_alloc((size_t)(m + 1) * (size_t)lp * sizeof(float));
    if (s) memset(s, 0, (size_t)lp * sizeof(float));
    return s;
}

/* Splat and blur q (n x lp) into K->own. Call inside a parallel region. d + 1 blur passes
   ping-pong between two tables: an odd number starts from the scratch table to end in K->own. */
static void splat_blur(kernel_t *K, const float *q, int64_t lp) {
    const lattice_t *L = K->L;
    float *first = (L->d + 1) % 2 ? K->scratch : K->own, *second = (L->d + 1) % 2 ? K->own : K->scratch;
    splat(L, L->point, K->splat_w, q, lp, first);
    blur(L, first, second, lp, K->stream);
}

/* dcrf_lattice_filter for one column (the normalisation K 1, once per image): the same operations
   on plain floats, without the per-row machinery. */
static int filter_column(const lattice_t *L, const float *in, float *out, int nthreads) {
    const int k = L->d + 1;
    const int64_t m = L->m, n = L->n;
    float *a = big_alloc((size_t)(m + 1) * sizeof(float)), *b = big_alloc((size_t)(m + 1) * sizeof(float));
    if (!a || !b) {
        big_free(a), big_free(b);
        return -1;
    }
    a[0] = b[0] = 0.0f;
    PARALLEL_BEGIN
#pragma omp for schedule(static)
    for (int64_t v = 0; v < m; v++) {
        float acc = 0.0f;
        for (int64_t e = L->run[v]; e < L->run[v + 1]; e++) acc += L->bary[L->entry[e]] * in[L->point[e]];
        a[v + 1] = acc;
    }
    const float *vals = blur(L, a, b, 1, 0);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < n; p++) {
        float acc = 0.0f;
        for (int r = 0; r < k; r++) acc += L->bary[p * k + r] * L->alpha * vals[L->vertex[p * k + r] + 1];
        out[p] = acc;
    }
    PARALLEL_END
    big_free(a), big_free(b);
    return 0;
}

/* out = alpha * slice(blur(splat(in))) for `c` value columns (row-major n x c); 0 on success. */
int dcrf_lattice_filter(lattice_t *L, const float *in, float *out, int c, int nthreads) {
    if (c == 1) return filter_column(L, in, out, nthreads);
    /* rows of a few values (the normalisation filters one column) stay narrow: small tables stay in cache */
    const int64_t n = L->n, lp = c <= 4 ? c : (int64_t)(c + CW - 1) / CW * CW;
    kernel_t K;
    float *q = big_alloc((size_t)(n * lp) * sizeof(float));
    float *scratch = big_alloc((size_t)(nthreads * lp) * sizeof(float)), *table = scratch_table(&L, 1, lp);
    if (!q || !scratch || !table || kernel_init(&K, L, NULL, NULL, 1.0f, lp, table, nthreads)) {
        big_free(q), big_free(scratch), big_free(table);
        return -1;
    }
    for (int64_t p = 0; p < n; p++) {
        memcpy(q + p * lp, in + p * c, (size_t)c * sizeof(float));
        memset(q + p * lp + c, 0, (size_t)(lp - c) * sizeof(float));
    }
    PARALLEL_BEGIN
    float *acc = thread_row(scratch, lp);
    splat_blur(&K, q, lp);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < n; p++) {
        for (int64_t l = 0; l < lp; l++) acc[l] = 0.0f;
        slice_point(L, p, K.slice_w, K.own, lp, acc);
        memcpy(out + p * c, acc, (size_t)c * sizeof(float));
    }
    PARALLEL_END
    kernel_free(&K);
    big_free(q), big_free(scratch), big_free(table);
    return 0;
}

/* ---------------------------------------------------------------- mean field */

/* exp for the softmax: Cephes' single-precision polynomial (about 1 ulp), 8 lanes at a time with GCC
   vector extensions (libm's expf is a scalar call, and compilers do not vectorise the bit tricks). */

static inline v8f exp8(v8f x) {
    const v8f lo = x - x - 87.0f;
    const v8i low = x < lo; /* lanes below -87 (exp underflows): clamp */
    x = (v8f)(((v8i)x & ~low) | ((v8i)lo & low));
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    v8f t = x * 1.44269504088896341f + shifter;
    v8f n = t - shifter;
    v8f r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    v8f r2 = r * r;
    v8f y = r * 1.9875691500e-4f + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r2 + r + 1.0f;
    v8i bits = (__builtin_convertvector(n, v8i) + 127) << 23; /* 2^n */
    return y * (v8f)bits;
}

/* Natural log of 8 positive normal floats: Cephes' single-precision polynomial (about 1 ulp), for
   the unary of every pixel and label (libm's logf is a scalar call: 4 million of them per image). */
static inline v8f log8(v8f x) {
    const v8i bits = (v8i)x;
    v8i e = ((bits >> 23) & 0xff) - 126;                   /* x = m * 2^e, m in [0.5, 1) */
    v8f m = (v8f)((bits & 0x807fffff) | 0x3f000000);
    const v8i small = m < 0.707106781186547524f;             /* m < sqrt(1/2): use 2m, e - 1 */
    e += small;                                              /* true lanes are -1 */
    const v8f f = (m - 1.0f) + (v8f)((v8i)m & small);
    const v8f z = f * f;
    v8f y = f * 7.0376836292e-2f - 1.1514610310e-1f;
    y = y * f + 1.1676998740e-1f;
    y = y * f - 1.2420140846e-1f;
    y = y * f + 1.4249322787e-1f;
    y = y * f - 1.6668057665e-1f;
    y = y * f + 2.0000714765e-1f;
    y = y * f - 2.4999993993e-1f;
    y = y * f + 3.3333331174e-1f;
    y = y * f * z;
    const v8f ef = __builtin_convertvector(e, v8f);
    y += ef * -2.12194440e-4f;
    y += z * -0.5f;
    return f + y + ef * 0.693359375f;
}

static inline float hmax8(v8f v) {
    float a[8];
    memcpy(a, &v, sizeof a);
    const float x = a[0] > a[4] ? a[0] : a[4], y = a[1] > a[5] ? a[1] : a[5];
    const float z = a[2] > a[6] ? a[2] : a[6], w = a[3] > a[7] ? a[3] : a[7];
    const float xy = x > y ? x : y, zw = z > w ? z : w;
    return xy > zw ? xy : zw;
}

static inline float hsum8(v8f v) {
    float a[8];
    memcpy(a, &v, sizeof a);
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

/* msg[0 .. lp/8) += sum over p's corners of w[corner] * vals[vertex + 1] (rows of lp floats, lp a
   multiple of 8); prefetches the rows of point p + PREFETCH. */
INLINE void slice_add(const lattice_t *L, int64_t p, const float *restrict w, const float *restrict vals,
                             int64_t lp, v8f *restrict msg) {
    const int k = L->d + 1;
    const int64_t blocks = lp / CW;
    if (p + PREFETCH < L->n)
        for (int r = 0; r < k; r++) prefetch_row(vals, (int64_t)L->vertex[(p + PREFETCH) * k + r] + 1, lp);
    for (int r = 0; r < k; r++) {
        const float *src = vals + ((int64_t)L->vertex[p * k + r] + 1) * lp;
        const float wr = w[p * k + r];
        for (int64_t b = 0; b < blocks; b++) msg[b] += wr * load8(src + b * CW);
    }
}

/*
 * Q[p] = softmax(log P[p] + message[p]) over a row of lu values (the labels padded to a multiple of 8;
 * the padding of logp is -1e30, so it is never the max, and its exp is zeroed). message (lp/8
 * blocks, NULL for none) holds the active labels' messages. The active labels of Q[p] go to row p
 * of qa (stride lp; its padding stays zero) and, when full is not NULL, all labels to row p of full.
 */
INLINE void update_point(const float *restrict logp, const v8f *restrict message, float *restrict qa,
                                float *restrict full, int64_t p, int64_t lu, const int32_t *active, int na, int64_t lp,
                                v8f tail) {
    const int64_t blocks = lu / CW;
    v8f e[blocks];
    for (int64_t b = 0; b < blocks; b++) e[b] = load8(logp + p * lu + b * CW);
    if (message && !active)
        for (int64_t b = 0; b < blocks; b++) e[b] += message[b];
    if (message && active) {
        float *ef = (float *)e;
        const float *mf = (const float *)message;
        for (int j = 0; j < na; j++) ef[active[j]] += mf[j];
    }
    v8f mx = e[0];
    for (int64_t b = 1; b < blocks; b++) {
        const v8i gt = e[b] > mx;
        mx = (v8f)(((v8i)e[b] & gt) | ((v8i)mx & ~gt));
    }
    const float m = hmax8(mx);
    v8f sum = {0};
    for (int64_t b = 0; b < blocks; b++) {
        e[b] = exp8(e[b] - m);
        if (b == blocks - 1) e[b] *= tail; /* the padding's exp(-87) becomes exactly 0 */
        sum += e[b];
    }
    const float inv = 1.0f / hsum8(sum);
    for (int64_t b = 0; b < blocks; b++) e[b] *= inv;
    if (!active)
        for (int64_t b = 0; b < blocks; b++) store8(qa + p * lp + b * CW, e[b]);
    else
        for (int j = 0; j < na; j++) qa[p * lp + j] = ((const float *)e)[active[j]];
    if (full)
        for (int64_t b = 0; b < blocks; b++) store8(full + p * lu + b * CW, e[b]);
}

/* One pixel's mean-field update: both kernels' messages (slice) and the softmax. Called with
   constant row widths for the usual label counts, so that after inlining a pixel's rows live in
   vector registers instead of variable-length arrays on the stack. */
INLINE void pixel_update(int nk, lattice_t *const *lats, const kernel_t *K, const float *logp, float *qa, float *last,
                         int64_t p, int64_t lu, const int32_t *active, int na, int64_t lp, v8f tail) {
    v8f msg[lp / CW];
    for (int64_t b = 0; b < lp / CW; b++) msg[b] = (v8f){0};
    for (int t = 0; t < nk; t++) slice_add(lats[t], p, K[t].slice_w, K[t].own, lp, msg);
    update_point(logp, msg, qa, last, p, lu, active, na, lp, tail);
}

/*
 * Mean-field inference: with the unary U = -log(clip(probs, 1e-5, 1)), Q = softmax(-U), then
 * `iterations` times
 *     Q = softmax(-U + sum_k w_k n_k K_k(n_k Q))
 * over `nk` lattices (their norms n_k are per point, w_k the Potts weights). Only the `na` labels in
 * `active` (NULL: all `nl`) are filtered; the others keep their unary. `probs` and `out` are
 * label-major (nl x n, as a network's C x H x W output), so no transposes are needed outside.
 * Returns 0, or -1 when out of memory or the lattices do not match.
 */
int dcrf_meanfield(int nk, lattice_t *const *lats, const float *const *norms, const float *weights, const float *probs,
                   float *out, int64_t n, int nl, const int32_t *active, int na, int iterations, int nthreads) {
    const int64_t lp = (int64_t)(na + CW - 1) / CW * CW, lu = (int64_t)(nl + CW - 1) / CW * CW;
    kernel_t K[8];
    int ready = 0, ok = nk >= 1 && nk <= 8 && na >= 1 && na <= nl;
    float *qa = big_alloc((size_t)(n * lp) * sizeof(float));
    float *logp = big_alloc((size_t)(n * lu) * sizeof(float));
    float *full = active ? big_alloc((size_t)(n * lu) * sizeof(float)) : qa; /* all labels: Q is qa */
    float *table = ok ? scratch_table(lats, nk, lp) : NULL;
    ok = ok && qa && logp && full && table;
    if (qa) memset(qa, 0, (size_t)(n * lp) * sizeof(float));
    for (int t = 0; ok && t < nk; t++) ok = lats[t]->n == n;
    while (ok && ready < nk) {
        if (kernel_init(&K[ready], lats[ready], norms[ready], norms[ready], weights[ready], lp, table, nthreads))
            ok = 0;
        else
            ready++;
    }
    v8f tail;
    for (int l = 0; l < CW; l++) tail[l] = lu - CW + l < nl ? 1.0f : 0.0f;
    if (ok) {
        PARALLEL_BEGIN
#pragma omp for schedule(static)
        for (int64_t p0 = 0; p0 < n; p0 += CW) { /* 8 pixels at a time: each label's row is read in order */
            const int64_t count = n - p0 < CW ? n - p0 : CW;
            for (int64_t l = 0; l < nl; l++) {
                v8f v = {1, 1, 1, 1, 1, 1, 1, 1};
                if (count == CW)
                    v = load8(probs + l * n + p0);
                else
                    for (int64_t i = 0; i < count; i++) v[i] = probs[l * n + p0 + i];
                for (int i = 0; i < CW; i++) v[i] = v[i] < 1e-5f ? 1e-5f : (v[i] > 1.0f ? 1.0f : v[i]);
                const v8f lg = log8(v);
                for (int64_t i = 0; i < count; i++) logp[(p0 + i) * lu + l] = lg[i];
            }
            for (int64_t i = 0; i < count; i++) {
                for (int64_t l = nl; l < lu; l++) logp[(p0 + i) * lu + l] = -1e30f;
                update_point(logp, NULL, qa, iterations || full == qa ? NULL : full, p0 + i, lu, active, na, lp, tail);
            }
        }
        for (int it = 0; it < iterations; it++) {
            for (int t = 0; t < nk; t++) splat_blur(&K[t], qa, lp);
            float *last = it == iterations - 1 && full != qa ? full : NULL;
#pragma omp for schedule(static)
            for (int64_t p = 0; p < n; p++) {
                if (!active && lp == 24) /* 17-24 labels (VOC: 21) */
                    pixel_update(nk, lats, K, logp, qa, last, p, 24, NULL, na, 24, tail);
                else if (!active && lp == 8)
                    pixel_update(nk, lats, K, logp, qa, last, p, 8, NULL, na, 8, tail);
                else if (!active && lp == 16)
                    pixel_update(nk, lats, K, logp, qa, last, p, 16, NULL, na, 16, tail);
                else
                    pixel_update(nk, lats, K, logp, qa, last, p, lu, active, na, lp, tail);
            }
        }
#pragma omp for schedule(static)
        for (int64_t p = 0; p < n; p++)
            for (int l = 0; l < nl; l++) out[l * n + p] = full[p * lu + l];
        PARALLEL_END
    }
    for (int t = 0; t < ready; t++) kernel_free(&K[t]);
    if (full != qa) big_free(full);
    big_free(qa), big_free(logp), big_free(table);
    return ok ? 0 : -1;
}
