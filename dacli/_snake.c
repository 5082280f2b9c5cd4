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
   threads (OpenMP's, see run_split); the GIL is released meanwhile.

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
   row (summed over the batch by the caller). Training in the channels-last layout ((B, C, 1, L): B·L
   rows of C, as inference has it) runs the forward as inference does and its own backward, which
   writes one ∂L/∂α partial sum per channel and thread (summed over the threads by the caller). autograd's version of the formula makes about a dozen
   passes over memory and keeps four intermediate tensors per activation for the backward; this keeps
   only x. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

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

/* The channels-last loops run over tiles of whole rows (TILE values or one row, whichever is longer),
   with α and inv repeated along the tile (ta, ti: prepared by tile_alpha), so that the inner loop is long
   and vectorises however few channels a row has (16 and 24 at the model's full rate). */
#define TILE 512

static Py_ssize_t tile_length(Py_ssize_t channels) {
    return channels >= TILE ? channels : (TILE / channels) * channels;
}

static void tile_alpha(const float *alpha, const float *inv, float *ta, float *ti, Py_ssize_t channels) {
    Py_ssize_t n = tile_length(channels);
    for (Py_ssize_t j = 0; j < n; j++) {
        ta[j] = alpha[j % channels];
        ti[j] = inv[j % channels];
    }
}

/* Inference: y = x + sin²(αx)·inv over n values starting at a row boundary. */
#define INFER_LOOP(SUFFIX, T, LOAD, STORE)                                                              \
CLONES static void snake_tiles##SUFFIX(const T *x, T *y, const float *restrict ta, const float *restrict ti, \
                                       Py_ssize_t n, Py_ssize_t tl) {                                   \
    for (Py_ssize_t i0 = 0; i0 < n; i0 += tl) {                                                         \
        Py_ssize_t m = i0 + tl < n ? tl : n - i0;                                                       \
        const T *xr = x + i0;                                                                           \
        T *yr = y + i0;                                                                                 \
        _Pragma("GCC ivdep")                                                                            \
        for (Py_ssize_t j = 0; j < m; j++) {                                                            \
            float v = LOAD(xr[j]);                                                                      \
            yr[j] = STORE(v + sin2(ta[j] * v) * ti[j]);                                                 \
        }                                                                                               \
    }                                                                                                   \
}

static inline float from_bf16(uint16_t h) {
    union { uint32_t u; float f; } v = {.u = (uint32_t)h << 16};
    return v.f;
}

static inline uint16_t to_bf16(float f) { /* round to nearest, ties to even (finite values) */
    union { float f; uint32_t u; } v = {.f = f};
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}

/* The training loops, for float32 (T float) and bfloat16 (T uint16_t) x, y, g and gx; alpha, inv and the
   ∂L/∂α sums stay float32, and bfloat16 values are widened to float32 and rounded once, as above. */
static inline float load_f32(float v) { return v; }
static inline float store_f32(float v) { return v; }

INFER_LOOP(_f32, float, load_f32, store_f32)
INFER_LOOP(_bf16, uint16_t, from_bf16, to_bf16)

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

/* The backward in the channels-last layout, over tiles as inference: ga gets this share's ∂L/∂α sums per
   channel. Sums run per tile position in float over 64 tiles at a time, then in double (part, acc:
   one tile's length each), and fold into channels at the end. */
#define TRAIN_CL(SUFFIX, T, LOAD, STORE)                                                                \
CLONES static void train_backward_cl##SUFFIX(const T *x, const T *g, T *gx, float *ga,                 \
                                              const float *restrict ta, const float *restrict ti,       \
                                              Py_ssize_t n, Py_ssize_t tl, Py_ssize_t channels,         \
                                              float *restrict part, double *restrict acc) {             \
    for (Py_ssize_t j = 0; j < tl; j++) acc[j] = 0.0;                                                   \
    for (Py_ssize_t b0 = 0; b0 < n; b0 += 64 * tl) {                                                    \
        Py_ssize_t b1 = b0 + 64 * tl < n ? b0 + 64 * tl : n;                                            \
        for (Py_ssize_t j = 0; j < tl; j++) part[j] = 0.0f;                                             \
        for (Py_ssize_t i0 = b0; i0 < b1; i0 += tl) {                                                   \
            Py_ssize_t m = i0 + tl < b1 ? tl : b1 - i0;                                                 \
            const T *xr = x + i0, *gr = g + i0;                                                         \
            T *gxr = gx + i0;                                                                           \
            _Pragma("GCC ivdep")                                                                        \
            for (Py_ssize_t j = 0; j < m; j++) {                                                        \
                const float a = ta[j], k = ti[j];                                                       \
                float v = LOAD(xr[j]), gv = LOAD(gr[j]), s2, sc;                                        \
                sin2_sincos(a * v, &s2, &sc);                                                           \
                gxr[j] = STORE(gv * (1.0f + 2.0f * k * a * sc));                                        \
                part[j] += gv * (2.0f * k * v * sc - k * k * s2);                                       \
            }                                                                                           \
        }                                                                                               \
        for (Py_ssize_t j = 0; j < tl; j++) acc[j] += part[j];                                          \
    }                                                                                                   \
    for (Py_ssize_t c = 0; c < channels; c++) {                                                         \
        double sum = 0.0;                                                                               \
        for (Py_ssize_t j = c; j < tl; j += channels) sum += acc[j];                                    \
        ga[c] = (float)sum;                                                                             \
    }                                                                                                   \
}

TRAIN_CL(_f32, float, load_f32, store_f32)
TRAIN_CL(_bf16, uint16_t, from_bf16, to_bf16)

enum { INFER, TRAIN_FORWARD, TRAIN_BACKWARD, TRAIN_BACKWARD_CL };

typedef struct {
    int kind, bf16, failed;
    const char *x, *g;
    char *y, *gx;
    float *ga;
    const float *alpha, *inv;
    Py_ssize_t row0, rows, length, channels;
} job_t;

static void *run_job(void *arg) {
    job_t *j = (job_t *)arg;
    if (j->kind == INFER || j->kind == TRAIN_BACKWARD_CL) {
        Py_ssize_t tl = tile_length(j->channels), n = j->rows * j->channels;
        size_t offset = (size_t)(j->row0 * j->channels);
        float *ta = malloc(sizeof(float) * (size_t)tl), *ti = malloc(sizeof(float) * (size_t)tl);
        float *part = j->kind == TRAIN_BACKWARD_CL ? malloc(sizeof(float) * (size_t)tl) : NULL;
        double *acc = j->kind == TRAIN_BACKWARD_CL ? malloc(sizeof(double) * (size_t)tl) : NULL;
        if (!ta || !ti || (j->kind == TRAIN_BACKWARD_CL && (!part || !acc))) {
            j->failed = 1;
        } else {
            tile_alpha(j->alpha, j->inv, ta, ti, j->channels);
            if (j->kind == INFER && j->bf16)
                snake_tiles_bf16((const uint16_t *)j->x + offset, (uint16_t *)j->y + offset, ta, ti, n, tl);
            else if (j->kind == INFER)
                snake_tiles_f32((const float *)j->x + offset, (float *)j->y + offset, ta, ti, n, tl);
            else if (j->bf16)
                train_backward_cl_bf16((const uint16_t *)j->x + offset, (const uint16_t *)j->g + offset,
                                       (uint16_t *)j->gx + offset, j->ga, ta, ti, n, tl, j->channels, part, acc);
            else
                train_backward_cl_f32((const float *)j->x + offset, (const float *)j->g + offset,
                                      (float *)j->gx + offset, j->ga, ta, ti, n, tl, j->channels, part, acc);
        }
        free(ta);
        free(ti);
        free(part);
        free(acc);
    } else if (j->kind == TRAIN_FORWARD && j->bf16)
        train_forward_rows_bf16((const uint16_t *)j->x, (uint16_t *)j->y, j->alpha, j->inv, j->row0,
                                j->rows, j->length, j->channels);
    else if (j->kind == TRAIN_FORWARD)
        train_forward_rows_f32((const float *)j->x, (float *)j->y, j->alpha, j->inv, j->row0, j->rows,
                               j->length, j->channels);
    else if (j->bf16)
        train_backward_rows_bf16((const uint16_t *)j->x, (const uint16_t *)j->g, (uint16_t *)j->gx, j->ga,
                                 j->alpha, j->inv, j->row0, j->rows, j->length, j->channels);
    else
        train_backward_rows_f32((const float *)j->x, (const float *)j->g, (float *)j->gx, j->ga, j->alpha,
                                j->inv, j->row0, j->rows, j->length, j->channels);
    return NULL;
}

#define MAX_THREADS 64

/* Splits job's rows over threads (the GIL released). Built with OpenMP (setup.py asks for it), the
   shares run in OpenMP's own thread team: the one torch's convolutions run in, since the process loads
   one libgomp (torch's; same soname), so the threads that have just finished a convolution take the
   Snake after it, with no thread started and none competing for the cores. Without OpenMP, each share
   but the last gets a thread of its own; the last share runs on this thread, and so does any share
   whose thread fails to start. A channels-last backward's share t writes its ∂L/∂α sums at
   ga + t·channels (rows of zeros for threads beyond the number of rows). Returns 0, or -1 where a
   share could not get its scratch memory. */
static int run_split(job_t job, Py_ssize_t threads) {
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads > job.rows) threads = job.rows;
    if (threads < 1) threads = 1;
    job_t jobs[MAX_THREADS];
    Py_ssize_t start = job.row0;
    for (Py_ssize_t t = 0; t < threads; t++) {
        jobs[t] = job;
        jobs[t].row0 = start;
        jobs[t].rows = job.rows / threads + (t < job.rows % threads);
        if (job.kind == TRAIN_BACKWARD_CL)
            jobs[t].ga = job.ga + t * job.channels;
        start += jobs[t].rows;
    }
    Py_BEGIN_ALLOW_THREADS
    if (threads == 1) {
        run_job(&jobs[0]);
    } else {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static, 1)
        for (Py_ssize_t t = 0; t < threads; t++)
            run_job(&jobs[t]);
#else
        pthread_t tids[MAX_THREADS];
        int started[MAX_THREADS] = {0};
        for (Py_ssize_t t = 0; t < threads; t++) {
            if (t + 1 < threads && pthread_create(&tids[t], NULL, run_job, &jobs[t]) == 0)
                started[t] = 1;
            else
                run_job(&jobs[t]);
        }
        for (Py_ssize_t t = 0; t < threads; t++)
            if (started[t]) pthread_join(tids[t], NULL);
#endif
    }
    Py_END_ALLOW_THREADS
    for (Py_ssize_t t = 0; t < threads; t++)
        if (jobs[t].failed) return -1;
    return 0;
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
    if (run_split(job, threads) != 0)
        return PyErr_NoMemory();
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

static PyObject *train_backward_cl(PyObject *self, PyObject *args) {
    unsigned long long xp, gp, gxp, gap, ap, ip;
    Py_ssize_t rows, channels, threads;
    int bf16 = 0;
    if (!PyArg_ParseTuple(args, "KKKKKKnnn|p", &xp, &gp, &gxp, &gap, &ap, &ip, &rows, &channels, &threads, &bf16))
        return NULL;
    if (rows < 1 || channels <= 0 || threads < 1 || threads > MAX_THREADS) {
        PyErr_SetString(PyExc_ValueError, "train_backward_cl: bad shape or thread count");
        return NULL;
    }
    job_t job = {.kind = TRAIN_BACKWARD_CL, .bf16 = bf16, .x = PTR(const char *, xp), .g = PTR(const char *, gp),
                 .gx = PTR(char *, gxp), .ga = PTR(float *, gap), .alpha = PTR(const float *, ap),
                 .inv = PTR(const float *, ip), .rows = rows, .channels = channels};
    if (run_split(job, threads) != 0)
        return PyErr_NoMemory();
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
    {"train_backward_cl", train_backward_cl, METH_VARARGS,
     "train_backward_cl(x, g, gx, ga, alpha, inv, rows, channels, threads, bf16=False): the backward over "
     "rows × channels values (channels-last); ga: threads × channels float32 zeros, row t gets thread t's "
     "sums of g·∂y/∂α per channel (rows of zeros where threads exceed rows)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_snake",
                                    "Fused Snake activation for CPU inference and training (see _snake.c).", -1, methods};

/* The module; its OPENMP says how run_split shares the work (1: OpenMP's team, 0: threads of its own). */
PyMODINIT_FUNC PyInit__snake(void) {
    PyObject *m = PyModule_Create(&module);
#ifdef _OPENMP
    if (m && PyModule_AddIntConstant(m, "OPENMP", 1) < 0) Py_CLEAR(m);
#else
    if (m && PyModule_AddIntConstant(m, "OPENMP", 0) < 0) Py_CLEAR(m);
#endif
    return m;
}
