/* cblas_sgemm that sends matrix-vector products to cblas_sgemv.
 *
 * MLX's CPU backend calls cblas_sgemm for every float32 matmul. When one side is a single row or column
 * (decoding one token: activations [1, K] times a weight matrix), OpenBLAS's sgemm still packs the whole
 * weight matrix before multiplying, reading it twice; its sgemv streams it once and runs about 1.6x faster.
 * blt/blas.py loads this library with RTLD_GLOBAL ahead of OpenBLAS and hands it OpenBLAS's two functions,
 * so MLX binds this cblas_sgemm and every other BLAS symbol from OpenBLAS. Row-major only (what MLX uses);
 * anything else goes to sgemm unchanged.
 */
typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float,
                         float *, int);
typedef void (*sgemv_fn)(int, int, int, int, float, const float *, int, const float *, int, float, float *, int);

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };

static sgemm_fn real_sgemm;
static sgemv_fn real_sgemv;
static unsigned long forwarded;

/* Both pointers come from the same OpenBLAS; called once, before MLX is imported. */
void shv_gemv_bind(void *sgemm, void *sgemv) {
    real_sgemm = (sgemm_fn)sgemm;
    real_sgemv = (sgemv_fn)sgemv;
}

/* How many products went to sgemv (tests check that the forwarding happens). */
unsigned long shv_gemv_forwarded(void) { return __atomic_load_n(&forwarded, __ATOMIC_RELAXED); }

void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc) {
    if (order != ROW_MAJOR || k <= 0 || (m != 1 && n != 1) || !real_sgemv) {
        real_sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    __atomic_fetch_add(&forwarded, 1, __ATOMIC_RELAXED);
    if (m == 1) { /* c[1, n] = a[1, k] op(b): c = op(b)^T a, with a's elements lda apart when a is transposed */
        int inc_a = trans_a == NO_TRANS ? 1 : lda;
        if (trans_b == NO_TRANS)
            real_sgemv(ROW_MAJOR, TRANS, k, n, alpha, b, ldb, a, inc_a, beta, c, 1);
        else
            real_sgemv(ROW_MAJOR, NO_TRANS, n, k, alpha, b, ldb, a, inc_a, beta, c, 1);
    } else { /* c[m, 1] = op(a) b[k, 1]: the column c has stride ldc */
        int inc_b = trans_b == NO_TRANS ? ldb : 1;
        if (trans_a == NO_TRANS)
            real_sgemv(ROW_MAJOR, NO_TRANS, m, k, alpha, a, lda, b, inc_b, beta, c, ldc);
        else
            real_sgemv(ROW_MAJOR, TRANS, k, m, alpha, a, lda, b, inc_b, beta, c, ldc);
    }
}
