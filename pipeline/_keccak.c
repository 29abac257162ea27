/* Keccak-256 (Ethereum's: the original padding, not SHA3-256's) of many equal-width items in
 * one call: the logs bloom checks hash every distinct address and topic of an answer, and one
 * Python call per hash cost more than the hash. Optional (setup.py): pipeline.hashing falls
 * back to pycryptodome one item at a time. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define RATE 136 /* bytes absorbed per permutation for a 256-bit digest */
#define ROTL(x, n) (((x) << (n)) | ((x) >> (64 - (n))))

static const uint64_t ROUND_CONSTANTS[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL, 0x8000000080008000ULL,
    0x000000000000808bULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
    0x000000000000008aULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800aULL, 0x800000008000000aULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL,
};
static const int ROTATIONS[24] = {1,  3,  6,  10, 15, 21, 28, 36, 45, 55, 2,  14,
                                  27, 41, 56, 8,  25, 43, 62, 18, 39, 61, 20, 44};
static const int LANES[24] = {10, 7,  11, 17, 18, 3, 5,  16, 8,  21, 24, 4,
                              15, 23, 19, 13, 12, 2, 20, 14, 22, 9,  6,  1};

static void permute(uint64_t st[25]) {
    for (int round = 0; round < 24; round++) {
        uint64_t bc[5], t;
        for (int i = 0; i < 5; i++) bc[i] = st[i] ^ st[i + 5] ^ st[i + 10] ^ st[i + 15] ^ st[i + 20];
        for (int i = 0; i < 5; i++) {
            t = bc[(i + 4) % 5] ^ ROTL(bc[(i + 1) % 5], 1);
            for (int j = 0; j < 25; j += 5) st[j + i] ^= t;
        }
        t = st[1];
        for (int i = 0; i < 24; i++) {
            int j = LANES[i];
            bc[0] = st[j];
            st[j] = ROTL(t, ROTATIONS[i]);
            t = bc[0];
        }
        for (int j = 0; j < 25; j += 5) {
            for (int i = 0; i < 5; i++) bc[i] = st[j + i];
            for (int i = 0; i < 5; i++) st[j + i] ^= (~bc[(i + 1) % 5]) & bc[(i + 2) % 5];
        }
        st[0] ^= ROUND_CONSTANTS[round];
    }
}

/* Lanes are little-endian whatever the machine's byte order. */
static void absorb_byte(uint64_t st[25], size_t at, uint8_t byte) {
    st[at / 8] ^= (uint64_t)byte << (8 * (at % 8));
}

static void keccak256(const uint8_t *message, size_t size, uint8_t out[32]) {
    uint64_t st[25] = {0};
    for (; size >= RATE; size -= RATE, message += RATE) {
        for (size_t i = 0; i < RATE; i++) absorb_byte(st, i, message[i]);
        permute(st);
    }
    for (size_t i = 0; i < size; i++) absorb_byte(st, i, message[i]);
    absorb_byte(st, size, 0x01);
    absorb_byte(st, RATE - 1, 0x80);
    permute(st);
    for (size_t i = 0; i < 32; i++) out[i] = (uint8_t)(st[i / 8] >> (8 * (i % 8)));
}

static PyObject *digests(PyObject *module, PyObject *args) {
    Py_buffer items;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "y*n", &items, &width)) return NULL;
    if (width <= 0 || items.len % width) {
        PyBuffer_Release(&items);
        return PyErr_Format(PyExc_ValueError, "%zd bytes are not items of %zd", items.len, width);
    }
    Py_ssize_t count = items.len / width;
    PyObject *result = PyBytes_FromStringAndSize(NULL, count * 32);
    if (result != NULL) {
        uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
        const uint8_t *in = items.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < count; i++) keccak256(in + i * width, (size_t)width, out + i * 32);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&items);
    return result;
}

static PyMethodDef methods[] = {
    {"digests", digests, METH_VARARGS,
     "digests(items, width) -> bytes: the 32-byte Keccak-256 of each `width`-byte item of "
     "`items`, one after another."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_keccak", "Keccak-256 of many items at once (see pipeline.hashing).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__keccak(void) { return PyModule_Create(&module_def); }
