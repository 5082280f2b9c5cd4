/* Snake activation y = x + sin²(αx)/α in one pass, for inference on the CPU (dacli.model.Snake1d),
   and its forward and backward for training (dacli.model.snake_trainable).

   torch computes it in five passes over memory (mul, sin, square, mul, add) with an accurate but
   costly sin; here each element is read once and written once, and sin² costs a few multiplies:

   - reduce t = αx by π/2 in double precision (exact enough for any float up to ~1e9), leaving
     r in [-π/4, π/4] and the quadrant j;
   - sin r and cos r by cephes' single-precision polynomials (error ≈ 1 ulp on that interval);
   - sin²(t) is sin² r in even quadrants and cos² r in odd ones: squaring removes the sign.

   The loop has no branches, so gcc vectorises it (x86-64-v4 = AVX-512 with its 16-bit element ops,
   x86-64-v3 = AVX2+FMA, or SSE2, chosen at load time through target_clones). Rows are split over
   threads; the GIL is released meanwhile.

   Layout: x and y are rows × channels values, contiguous (a channels-last (B, C, 1, L) tensor has
   B·L rows of C), float32 or bfloat16; alpha and inv (1/(α + 1e-9), computed by the caller as torch
   does) have one float32 per channel. y may be x (in place). bfloat16 values are widened to float32,
   computed as above and rounded once to nearest-even (torch's bf16 path rounds after each of its
   five operations).

   Training (float32, or bfloat16 under autocast) uses the channels-first layout of the model's
   (B, C, L) tensors: B·C rows of L values, row r in channel r mod C. With inv = 1/(α + 1e-9) and
   s = sin(αx), c = cos(αx):
       forward   y = x + inv·s²
       backward  ∂y/∂x = 1 + 2·inv·α·s·c        ∂y/∂α = 2·inv·x·s·c − inv²·s²
   The backward reads x and the incoming gradient once, writes ∂L/∂x and one ∂L/∂α partial sum per
   row (summed over the batch by the caller). autograd's version of the formula makes about a dozen
   passes over memory and keeps four intermediate tensors per activation for the backward; this keeps
   only x. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>

/* sin²(t) and sin(t)·cos(t) = (−1)^j·s·c (the backward needs both) */
static inline void sin2_sincos(float t, float *sin2_t, float *sincos_t) {
    double td = t;
    double j = __builtin_rint(td * 0.63661977236758134308);           /* t / (π/2), rounded */
    float r = (float)(td - j * 1.5707963267948966192);
    float r2 = r * r;
    float s = r + r * r2 * (-1.6666654611e-1f + r2 * (8.3321608736e-3f + r2 * -1.9515295891e-4f));
    float c = 1.0f - 0.5f * r2
              + r2 * r2 * (4.166664568298827e-2f + r2 * (-1.388731625493765e-3f + r2 * 2.443315711809948e-5f));
    float odd = (float)__builtin_fabs(j - 2.0 * __builtin_rint(j * 0.5));   /* 1 in odd quadrants */
    float v = s + odd * (c - s);
    *sin2_t = v * v;
    *sincos_t = (1.0f - 2.0f * odd) * s * c;
}

static inline float sin2(float t) {
    float s2, sc;
    sin2_sincos(t, &s2, &sc);  /* sc unused: the compiler drops its arithmetic */
    return s2;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

CLONES static void snake_rows(const float *x, float *y, const float *restrict alpha, const float *restrict inv,
                              Py_ssize_t rows, Py_ssize_t channels) {
    for (Py_ssize_t i = 0; i < rows; i++) {
        const float *xr = x + i * channels;
        float *yr = y + i * channels;
#pragma GCC ivdep
        for (Py_ssize_t c = 0; c < channels; c++) {
            float v = xr[c];
            yr[c] = v + sin2(alpha[c] * v) * inv[c];
        }
    }
}

static inline float from_bf16(uint16_t h) {
    union { uint32_t u; float f; } v = {.u = (uint32_t)h << 16};
    return v.f;
}

static inline uint16_t to_bf16(float f) { /* round to nearest, ties to even (finite values) */
    union { float f; uint32_t u; } v = {.f = f};
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}

CLONES static void snake_rows_bf16(const uint16_t *x, uint16_t *y, const float *restrict alpha,
                                   const float *restrict inv, Py_ssize_t rows, Py_ssize_t channels) {
    for (Py_ssize_t i = 0; i < rows; i++) {
        const uint16_t *xr = x + i * channels;
        uint16_t *yr = y + i * channels;
#pragma GCC ivdep
        for (Py_ssize_t c = 0; c < channels; c++) {
            float v = from_bf16(xr[c]);
            yr[c] = to_bf16(v + sin2(alpha[c] * v) * inv[c]);
        }
    }
}

/* The training loops, for float32 (T float) and bfloat16 (T uint16_t) x, y, g and gx; alpha, inv and the
   ∂L/∂α sums stay float32, and bfloat16 values are widened to float32 and rounded once, as above. */
static inline float load_f32(float v) { return v; }
static inline float store_f32(float v) { return v; }

#define TRAIN_ROWS(SUFFIX, T, LOAD, STORE)                                                              \
CLONES static void train_forward_rows##SUFFIX(const T *x, T *y, const float *restrict alpha,           \
                                               const float *restrict inv, Py_ssize_t row0,              \
                                               Py_ssize_t rows, Py_ssize_t length, Py_ssize_t channels) {\
    for (Py_ssize_t i = row0; i < row0 + rows; i++) {                                                   \
        const float a = alpha[i % channels], k = inv[i % channels];                                     \
        const T *xr = x + i * length;                                                                   \
        T *yr = y + i * length;                                                                         \
        _Pragma("GCC ivdep")                                                                            \
        for (Py_ssize_t t = 0; t < length; t++) {                                                       \
            float v = LOAD(xr[t]), s2, sc;                                                              \
            sin2_sincos(a * v, &s2, &sc);                                                               \
            yr[t] = STORE(v + k * s2);                                                                  \
        }                                                                                               \
    }                                                                                                   \
}                                                                                                       \
                                                                                                        \
CLONES static void train_backward_rows##SUFFIX(const T *x, const T *g, T *gx, float *ga,               \
                                                const float *restrict alpha, const float *restrict inv, \
                                                Py_ssize_t row0, Py_ssize_t rows, Py_ssize_t length,    \
                                                Py_ssize_t channels) {                                  \
    for (Py_ssize_t i = row0; i < row0 + rows; i++) {                                                   \
        const float a = alpha[i % channels], k = inv[i % channels];                                     \
        const float dx = 2.0f * k * a, dsc = 2.0f * k, ds2 = -k * k;                                    \
        const T *xr = x + i * length, *gr = g + i * length;                                             \
        T *gxr = gx + i * length;                                                                       \
        double sum = 0.0;                                                                               \
        for (Py_ssize_t t0 = 0; t0 < length; t0 += 1024) {  /* float partial sums, 1024 at a time */   \
            Py_ssize_t t1 = t0 + 1024 < length ? t0 + 1024 : length;                                    \
            float part = 0.0f;                                                                          \
            _Pragma("omp simd reduction(+ : part)")                                                     \
            for (Py_ssize_t t = t0; t < t1; t++) {                                                      \
                float v = LOAD(xr[t]), gv = LOAD(gr[t]), s2, sc;                                        \
                sin2_sincos(a * v, &s2, &sc);                                                           \
                gxr[t] = STORE(gv * (1.0f + dx * sc));                                                  \
                part += gv * (dsc * v * sc + ds2 * s2);                                                 \
            }                                                                                           \
            sum += part;                                                                                \
        }                                                                                               \
        ga[i] = (float)sum;                                                                             \
    }                                                                                                   \
}

TRAIN_ROWS(_f32, float, load_f32, store_f32)
TRAIN_ROWS(_bf16, uint16_t, from_bf16, to_bf16)

enum { INFER, TRAIN_FORWARD, TRAIN_BACKWARD };

typedef struct {
    int kind, bf16;
    const char *x, *g;
    char *y, *gx;
    float *ga;
    const float *alpha, *inv;
    Py_ssize_t row0, rows, length, channels;
} job_t;

static void *run_job(void *arg) {
    job_t *j = (job_t *)arg;
    if (j->kind == TRAIN_FORWARD && j->bf16)
        train_forward_rows_bf16((const uint16_t *)j->x, (uint16_t *)j->y, j->alpha, j->inv, j->row0,
                                j->rows, j->length, j->channels);
    else if (j->kind == TRAIN_FORWARD)
        train_forward_rows_f32((const float *)j->x, (float *)j->y, j->alpha, j->inv, j->row0, j->rows,
                               j->length, j->channels);
    else if (j->kind == TRAIN_BACKWARD && j->bf16)
        train_backward_rows_bf16((const uint16_t *)j->x, (const uint16_t *)j->g, (uint16_t *)j->gx, j->ga,
                                 j->alpha, j->inv, j->row0, j->rows, j->length, j->channels);
    else if (j->kind == TRAIN_BACKWARD)
        train_backward_rows_f32((const float *)j->x, (const float *)j->g, (float *)j->gx, j->ga, j->alpha,
                                j->inv, j->row0, j->rows, j->length, j->channels);
    else if (j->bf16) {
        size_t offset = (size_t)(j->row0 * j->channels);
        snake_rows_bf16((const uint16_t *)j->x + offset, (uint16_t *)j->y + offset, j->alpha, j->inv,
                        j->rows, j->channels);
    } else {
        size_t offset = (size_t)(j->row0 * j->channels);
        snake_rows((const float *)j->x + offset, (float *)j->y + offset, j->alpha, j->inv, j->rows,
                   j->channels);
    }
    return NULL;
}

#define MAX_THREADS 64

/* Splits job's rows over threads (the GIL released); the last share runs on this thread, and so does
   any share whose thread fails to start. */
static void run_split(job_t job, Py_ssize_t threads) {
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > job.rows) threads = job.rows;
    if (threads < 1) threads = 1;
    job_t jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t start = job.row0;
    for (Py_ssize_t t = 0; t < threads; t++) {
        jobs[t] = job;
        jobs[t].row0 = start;
        jobs[t].rows = job.rows / threads + (t < job.rows % threads);
        start += jobs[t].rows;
        if (t + 1 < threads && pthread_create(&tids[t], NULL, run_job, &jobs[t]) == 0)
            started[t] = 1;
        else
            run_job(&jobs[t]);
    }
    for (Py_ssize_t t = 0; t < threads; t++)
        if (started[t]) pthread_join(tids[t], NULL);
    Py_END_ALLOW_THREADS
}

#define PTR(type, v) ((type)(uintptr_t)(v))

static PyObject *snake(PyObject *self, PyObject *args) {
    unsigned long long xp, yp, ap, ip;
    Py_ssize_t rows, channels, threads;
    int bf16 = 0;
    if (!PyArg_ParseTuple(args, "KKKKnnn|p", &xp, &yp, &ap, &ip, &rows, &channels, &threads, &bf16))
        return NULL;
    if (rows < 0 || channels <= 0) {
        PyErr_SetString(PyExc_ValueError, "snake: bad shape");
        return NULL;
    }
    job_t job = {.kind = INFER, .bf16 = bf16, .x = PTR(const char *, xp), .y = PTR(char *, yp),
                 .alpha = PTR(const float *, ap), .inv = PTR(const float *, ip), .rows = rows,
                 .channels = channels};
    run_split(job, threads);
    Py_RETURN_NONE;
}

static PyObject *train_forward(PyObject *self, PyObject *args) {
    unsigned long long xp, yp, ap, ip;
    Py_ssize_t rows, length, channels, threads;
    int bf16 = 0;
    if (!PyArg_ParseTuple(args, "KKKKnnnn|p", &xp, &yp, &ap, &ip, &rows, &length, &channels, &threads, &bf16))
        return NULL;
    if (rows < 0 || length < 0 || channels <= 0) {
        PyErr_SetString(PyExc_ValueError, "train_forward: bad shape");
        return NULL;
    }
    job_t job = {.kind = TRAIN_FORWARD, .bf16 = bf16, .x = PTR(const char *, xp), .y = PTR(char *, yp),
                 .alpha = PTR(const float *, ap), .inv = PTR(const float *, ip), .rows = rows,
                 .length = length, .channels = channels};
    run_split(job, threads);
    Py_RETURN_NONE;
}

static PyObject *train_backward(PyObject *self, PyObject *args) {
    unsigned long long xp, gp, gxp, gap, ap, ip;
    Py_ssize_t rows, length, channels, threads;
    int bf16 = 0;
    if (!PyArg_ParseTuple(args, "KKKKKKnnnn|p", &xp, &gp, &gxp, &gap, &ap, &ip, &rows, &length, &channels,
                          &threads, &bf16))
        return NULL;
    if (rows < 0 || length < 0 || channels <= 0) {
        PyErr_SetString(PyExc_ValueError, "train_backward: bad shape");
        return NULL;
    }
    job_t job = {.kind = TRAIN_BACKWARD, .bf16 = bf16, .x = PTR(const char *, xp), .g = PTR(const char *, gp),
                 .gx = PTR(char *, gxp), .ga = PTR(float *, gap), .alpha = PTR(const float *, ap),
                 .inv = PTR(const float *, ip), .rows = rows, .length = length, .channels = channels};
    run_split(job, threads);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"snake", snake, METH_VARARGS,
     "snake(x, y, alpha, inv, rows, channels, threads, bf16=False): y = x + sin²(αx)·inv over "
     "rows × channels float32 (bfloat16 if bf16) values at the given addresses; alpha, inv float32"},
    {"train_forward", train_forward, METH_VARARGS,
     "train_forward(x, y, alpha, inv, rows, length, channels, threads, bf16=False): y = x + sin²(αx)·inv "
     "over rows × length float32 (bfloat16 if bf16) values, row r in channel r mod channels"},
    {"train_backward", train_backward, METH_VARARGS,
     "train_backward(x, g, gx, ga, alpha, inv, rows, length, channels, threads, bf16=False): gx = g·∂y/∂x "
     "per value (x, g, gx float32, or bfloat16 if bf16) and ga[r] = Σ g·∂y/∂α over row r (float32)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_snake",
                                    "Fused Snake activation for CPU inference and training (see _snake.c).", -1, methods};

PyMODINIT_FUNC PyInit__snake(void) { return PyModule_Create(&module); }
