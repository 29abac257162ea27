/* The eth_getLogs fast path in C: the inside of a `result` array straight to Arrow column
 * buffers, one pass over the bytes, no Python object per log.
 *
 * parse(body, start, end, hex_output) reads body[start:end] (between the array's '[' and ']',
 * found and checked by the Python wrapper, pipeline/fetch/nativelogs.py) and returns None unless
 * it is compact JSON of flat log objects, the same refusal contract as fastlogs.py: every log has
 * each known key once (`removed` at most once, and only false or null; `blockTimestamp` at most
 * once, a quantity within int64: zero or absent is a null), 0x hex of the right widths,
 * quantities of 1-16 digits (transactionIndex and logIndex within uint32), data of whole bytes;
 * other keys may hold a string, an array of strings, true, false or null. No whitespace
 * between tokens, no escapes, ASCII only: anything else is refused, and the careful path (orjson)
 * says what it is.
 *
 * The returned buffers (objects with the buffer protocol, owning malloc'd memory) become a table
 * with pa.Array.from_buffers. They are all the parse allocates, so it needs the body plus about
 * 0.4x its size (0.75x with hex_output; the numpy parser 2.4x): no piece-by-piece reading needed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HASH_BYTES 32
#define ADDRESS_BYTES 20
#define TOPIC_COLUMNS 4
/* A log in compact JSON takes at least 310 bytes (its eight keys, two hashes, an address...), so
 * a body holds at most one log per MIN_LOG_TEXT bytes: the fixed-width columns are reserved from
 * that bound (about 0.5x the body, 0.9x with hex_output; pages no log reaches are mostly never
 * touched) and trimmed to the logs read at the end. */
#define MIN_LOG_TEXT 256
#define BAD_DIGIT 0x80

enum Field {
    BLOCK_NUMBER, BLOCK_HASH, TX_INDEX, TX_HASH, LOG_INDEX, ADDRESS, TOPICS, DATA, REMOVED,
    BLOCK_TIMESTAMP, OTHER
};
#define REQUIRED_FIELDS ((1u << REMOVED) - 1)

static uint8_t hex_value[256];   /* 0-15, or BAD_DIGIT */
static uint8_t string_byte[256]; /* 1 where a string may hold the byte as is: printable ASCII */

/* A buffer that grows by doubling (realloc of large blocks moves pages, not bytes). */
typedef struct {
    unsigned char *data;
    size_t size, capacity;
} Growing;

static int reserve(Growing *g, size_t extra) {
    if (g->capacity - g->size >= extra) return 0;
    size_t capacity = g->capacity ? g->capacity : 65536;
    while (capacity - g->size < extra) capacity *= 2;
    unsigned char *data = realloc(g->data, capacity);
    if (data == NULL) return -1;
    g->data = data;
    g->capacity = capacity;
    return 0;
}

typedef struct {
    const unsigned char *p, *end;
    int hex_output;
    size_t hash_width, address_width; /* bytes per value in the output columns */
    Py_ssize_t count, capacity;       /* logs read, logs the fixed columns can hold */
    uint64_t *block_number;
    int64_t *timestamp;              /* seconds; 0 where the log has none (a null) */
    unsigned char *timestamp_validity;
    Py_ssize_t timestamp_nulls;
    uint32_t *tx_index, *log_index;
    unsigned char *block_hash, *tx_hash, *address;
    int32_t *topic_offsets[TOPIC_COLUMNS];
    unsigned char *topic_validity[TOPIC_COLUMNS];
    Py_ssize_t topic_nulls[TOPIC_COLUMNS];
    Growing topics[TOPIC_COLUMNS];
    int32_t *data_offsets;
    Growing data;
    int out_of_memory;
} Parser;

/* Each reader returns 0 and moves s->p past what it read, or -1: refused (or out of memory). */

static inline int expect(Parser *s, unsigned char c) {
    if (s->p >= s->end || *s->p != c) return -1;
    s->p++;
    return 0;
}

static inline int opens_hex(const Parser *s, size_t room) {
    /* '"0x' and at least `room` more bytes. */
    const unsigned char *p = s->p;
    return (size_t)(s->end - p) >= room + 3 && p[0] == '"' && p[1] == '0' && p[2] == 'x';
}

/* Validate hex digits in[0:len] and write them lowercased to out, behind "0x". */
static inline uint8_t copy_hex_lower(const unsigned char *in, size_t len, unsigned char *out) {
    uint8_t bad = 0;
    out[0] = '0';
    out[1] = 'x';
    for (size_t i = 0; i < len; i++) {
        bad |= hex_value[in[i]];
        out[2 + i] = in[i] | 0x20; /* 0-9 and a-f have the bit already, A-F gain it */
    }
    return bad;
}

/* Decode `size` bytes from in[0:2*size] hex digits. */
static inline uint8_t decode_hex(const unsigned char *in, size_t size, unsigned char *out) {
    uint8_t bad = 0;
    for (size_t i = 0; i < size; i++) {
        uint8_t high = hex_value[in[2 * i]], low = hex_value[in[2 * i + 1]];
        bad |= high | low;
        out[i] = (unsigned char)((high << 4) | low);
    }
    return bad;
}

/* A "0x" string of exactly `size` bytes, to `out` (hash_width or address_width bytes). */
static int fixed_hex(Parser *s, size_t size, unsigned char *out) {
    size_t digits = 2 * size;
    if (!opens_hex(s, digits + 1) || s->p[3 + digits] != '"') return -1;
    const unsigned char *in = s->p + 3;
    uint8_t bad = s->hex_output ? copy_hex_lower(in, digits, out) : decode_hex(in, size, out);
    if (bad & BAD_DIGIT) return -1;
    s->p = in + digits + 1;
    return 0;
}

/* A "0x" quantity of 1-16 digits. */
static int quantity(Parser *s, uint64_t *value) {
    if (!opens_hex(s, 2)) return -1;
    const unsigned char *in = s->p + 3;
    size_t room = (size_t)(s->end - in), limit = room < 16 ? room : 16, k;
    uint64_t v = 0;
    for (k = 0; k < limit && in[k] != '"'; k++) {
        uint8_t digit = hex_value[in[k]];
        if (digit & BAD_DIGIT) return -1;
        v = v << 4 | digit;
    }
    if (k == 0 || k >= room || in[k] != '"') return -1; /* none, or more than 16 */
    *value = v;
    s->p = in + k + 1;
    return 0;
}

static int small_quantity(Parser *s, uint32_t *value) {
    uint64_t v;
    if (quantity(s, &v) < 0 || v > UINT32_MAX) return -1;
    *value = (uint32_t)v;
    return 0;
}

/* A "0x" string of whole bytes, appended to `column`. */
static int variable_hex(Parser *s, Growing *column) {
    if (!opens_hex(s, 1)) return -1;
    const unsigned char *in = s->p + 3;
    const unsigned char *close = memchr(in, '"', (size_t)(s->end - in));
    if (close == NULL) return -1;
    size_t digits = (size_t)(close - in);
    if (digits & 1) return -1;
    size_t size = s->hex_output ? digits + 2 : digits / 2;
    if (reserve(column, size) < 0) {
        s->out_of_memory = 1;
        return -1;
    }
    unsigned char *out = column->data + column->size;
    uint8_t bad = s->hex_output ? copy_hex_lower(in, digits, out) : decode_hex(in, size, out);
    if (bad & BAD_DIGIT) return -1;
    column->size += size;
    s->p = close + 1;
    return 0;
}

/* Any string of printable ASCII without escapes. */
static int plain_string(Parser *s) {
    if (expect(s, '"') < 0) return -1;
    const unsigned char *p = s->p;
    while (p < s->end && string_byte[*p]) p++;
    s->p = p;
    return expect(s, '"');
}

static int literal(Parser *s, const char *word, size_t length) {
    if ((size_t)(s->end - s->p) < length || memcmp(s->p, word, length) != 0) return -1;
    s->p += length;
    return 0;
}

/* The value of a key the table does not keep: a string, an array of strings, or a literal. */
static int other_value(Parser *s) {
    if (s->p >= s->end) return -1;
    switch (*s->p) {
    case '"':
        return plain_string(s);
    case 't':
        return literal(s, "true", 4);
    case 'f':
        return literal(s, "false", 5);
    case 'n':
        return literal(s, "null", 4);
    case '[':
        s->p++;
        if (expect(s, ']') == 0) return 0;
        for (;;) {
            if (plain_string(s) < 0) return -1;
            if (expect(s, ',') == 0) continue;
            return expect(s, ']');
        }
    default:
        return -1; /* numbers and objects: refused, as the numpy parser does */
    }
}

/* A key and its ':', as a Field. */
static int key(Parser *s) {
    const unsigned char *opening = s->p;
    if (plain_string(s) < 0 || expect(s, ':') < 0) return -1;
    const unsigned char *name = opening + 1;
    size_t length = (size_t)(s->p - opening) - 3; /* the quotes and the ':' */
#define IS(text) (length == sizeof(text) - 1 && memcmp(name, text, length) == 0)
    switch (length) {
    case 4: return IS("data") ? DATA : OTHER;
    case 6: return IS("topics") ? TOPICS : OTHER;
    case 7: return IS("address") ? ADDRESS : IS("removed") ? REMOVED : OTHER;
    case 8: return IS("logIndex") ? LOG_INDEX : OTHER;
    case 9: return IS("blockHash") ? BLOCK_HASH : OTHER;
    case 11: return IS("blockNumber") ? BLOCK_NUMBER : OTHER;
    case 14: return IS("blockTimestamp") ? BLOCK_TIMESTAMP : OTHER;
    case 15: return IS("transactionHash") ? TX_HASH : OTHER;
    case 16: return IS("transactionIndex") ? TX_INDEX : OTHER;
    default: return OTHER;
    }
#undef IS
}

/* The topics array: the first four go to their columns, the rest must only be strings. */
static int topics(Parser *s, int *count) {
    if (expect(s, '[') < 0) return -1;
    *count = 0;
    if (expect(s, ']') == 0) return 0;
    for (;;) {
        if (*count < TOPIC_COLUMNS) {
            Growing *column = &s->topics[*count];
            if (reserve(column, s->hash_width) < 0) {
                s->out_of_memory = 1;
                return -1;
            }
            if (fixed_hex(s, HASH_BYTES, column->data + column->size) < 0) return -1;
            column->size += s->hash_width;
        } else if (plain_string(s) < 0) {
            return -1;
        }
        ++*count;
        if (expect(s, ',') == 0) continue;
        return expect(s, ']');
    }
}

/* The optional blockTimestamp: a quantity within int64; zero stays a null (never trusted). */
static int timestamp(Parser *s, Py_ssize_t i) {
    uint64_t v;
    if (quantity(s, &v) < 0 || v > INT64_MAX) return -1;
    s->timestamp[i] = (int64_t)v;
    if (v != 0) s->timestamp_validity[i >> 3] |= (unsigned char)(1u << (i & 7));
    return 0;
}

static int field(Parser *s, int which, Py_ssize_t i, int *topic_count) {
    switch (which) {
    case BLOCK_NUMBER: return quantity(s, &s->block_number[i]);
    case TX_INDEX: return small_quantity(s, &s->tx_index[i]);
    case LOG_INDEX: return small_quantity(s, &s->log_index[i]);
    case BLOCK_HASH: return fixed_hex(s, HASH_BYTES, s->block_hash + i * s->hash_width);
    case TX_HASH: return fixed_hex(s, HASH_BYTES, s->tx_hash + i * s->hash_width);
    case ADDRESS: return fixed_hex(s, ADDRESS_BYTES, s->address + i * s->address_width);
    case TOPICS: return topics(s, topic_count);
    case DATA: return variable_hex(s, &s->data);
    case REMOVED: /* true is a reorg: for validate.check_not_removed to refuse */
        return literal(s, "false", 5) == 0 ? 0 : literal(s, "null", 4);
    case BLOCK_TIMESTAMP: return timestamp(s, i);
    default: return other_value(s);
    }
}

/* One log object, as row s->count. */
static int log_object(Parser *s) {
    Py_ssize_t i = s->count;
    unsigned seen = 0;
    int topic_count = 0;
    if (i >= s->capacity || expect(s, '{') < 0) return -1;
    do {
        int which = key(s);
        if (which < 0) return -1;
        if (which != OTHER) {
            if (seen & (1u << which)) return -1; /* orjson would keep the last: refuse */
            seen |= 1u << which;
        }
        if (field(s, which, i, &topic_count) < 0) return -1;
    } while (expect(s, ',') == 0);
    if (expect(s, '}') < 0 || (seen & REQUIRED_FIELDS) != REQUIRED_FIELDS) return -1;
    for (int t = 0; t < TOPIC_COLUMNS; t++) {
        s->topic_offsets[t][i + 1] = (int32_t)s->topics[t].size;
        if (t < topic_count)
            s->topic_validity[t][i >> 3] |= (unsigned char)(1u << (i & 7));
        else
            s->topic_nulls[t]++;
    }
    if (!(s->timestamp_validity[i >> 3] & (1u << (i & 7)))) s->timestamp_nulls++;
    s->data_offsets[i + 1] = (int32_t)s->data.size;
    s->count = i + 1;
    return 0;
}

static int logs(Parser *s) {
    if (s->p == s->end) return 0; /* an empty array */
    for (;;) {
        if (log_object(s) < 0) return -1;
        if (s->p == s->end) return 0;
        if (expect(s, ',') < 0) return -1;
    }
}

static void *allocate(Parser *s, size_t size) {
    void *block = calloc(size ? size : 1, 1);
    if (block == NULL) s->out_of_memory = 1;
    return block;
}

static int allocate_columns(Parser *s, size_t length) {
    size_t n = (size_t)(s->capacity = (Py_ssize_t)(length / MIN_LOG_TEXT + 1));
    s->block_number = allocate(s, n * 8);
    s->timestamp = allocate(s, n * 8);
    s->timestamp_validity = allocate(s, (n + 7) / 8);
    s->tx_index = allocate(s, n * 4);
    s->log_index = allocate(s, n * 4);
    s->block_hash = allocate(s, n * s->hash_width);
    s->tx_hash = allocate(s, n * s->hash_width);
    s->address = allocate(s, n * s->address_width);
    for (int t = 0; t < TOPIC_COLUMNS; t++) {
        s->topic_offsets[t] = allocate(s, (n + 1) * 4);
        s->topic_validity[t] = allocate(s, (n + 7) / 8);
    }
    s->data_offsets = allocate(s, (n + 1) * 4);
    return s->out_of_memory ? -1 : 0;
}

static void free_columns(Parser *s) {
    free(s->block_number);
    free(s->timestamp);
    free(s->timestamp_validity);
    free(s->tx_index);
    free(s->log_index);
    free(s->block_hash);
    free(s->tx_hash);
    free(s->address);
    for (int t = 0; t < TOPIC_COLUMNS; t++) {
        free(s->topic_offsets[t]);
        free(s->topic_validity[t]);
        free(s->topics[t].data);
    }
    free(s->data_offsets);
    free(s->data.data);
}

/* --- Buffer: read-only bytes owned by a malloc'd block, handed to pyarrow ------------------ */

typedef struct {
    PyObject_HEAD
    void *data;
    Py_ssize_t size;
} Buffer;

static int buffer_get(PyObject *self, Py_buffer *view, int flags) {
    Buffer *b = (Buffer *)self;
    return PyBuffer_FillInfo(view, self, b->data, b->size, 1, flags);
}

static void buffer_dealloc(PyObject *self) {
    free(((Buffer *)self)->data);
    Py_TYPE(self)->tp_free(self);
}

static PyBufferProcs buffer_procs = {buffer_get, NULL};

static PyTypeObject BufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pipeline.fetch._fastlogs.Buffer",
    .tp_basicsize = sizeof(Buffer),
    .tp_dealloc = buffer_dealloc,
    .tp_as_buffer = &buffer_procs,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Read-only bytes of one output column buffer.",
};

/* A Buffer owning *block (trimmed to `size`); *block is NULL afterwards, whatever happens. */
static PyObject *take(void **block, size_t size) {
    void *data = *block;
    *block = NULL;
    void *trimmed = realloc(data, size ? size : 1);
    if (trimmed != NULL) data = trimmed;
    Buffer *b = PyObject_New(Buffer, &BufferType);
    if (b == NULL) {
        free(data);
        return NULL;
    }
    b->data = data;
    b->size = (Py_ssize_t)size;
    return (PyObject *)b;
}

static PyObject *columns_tuple(Parser *s) {
    size_t n = (size_t)s->count;
    PyObject *topic_parts[TOPIC_COLUMNS] = {NULL};
    for (int t = 0; t < TOPIC_COLUMNS; t++) {
        PyObject *validity = s->topic_nulls[t]
            ? take((void **)&s->topic_validity[t], (n + 7) / 8)
            : (Py_INCREF(Py_None), Py_None);
        PyObject *offsets = take((void **)&s->topic_offsets[t], (n + 1) * 4);
        PyObject *data = take((void **)&s->topics[t].data, s->topics[t].size);
        topic_parts[t] = validity && offsets && data
            ? Py_BuildValue("(NNNn)", validity, offsets, data, s->topic_nulls[t])
            : NULL;
        if (topic_parts[t] == NULL) {
            Py_XDECREF(validity);
            Py_XDECREF(offsets);
            Py_XDECREF(data);
        }
    }
    PyObject *validity = s->timestamp_nulls
        ? take((void **)&s->timestamp_validity, (n + 7) / 8)
        : (Py_INCREF(Py_None), Py_None);
    PyObject *seconds = take((void **)&s->timestamp, n * 8);
    PyObject *timestamps = NULL;
    if (validity && seconds) { /* "N" steals both, even when building fails */
        timestamps = Py_BuildValue("(NNn)", validity, seconds, s->timestamp_nulls);
    } else {
        Py_XDECREF(validity);
        Py_XDECREF(seconds);
    }
    /* "N" steals every reference, and a NULL among them makes the whole value NULL. */
    return Py_BuildValue(
        "(nNNNNNNN(NNNN)NN)",
        s->count,
        take((void **)&s->block_number, n * 8),
        timestamps,
        take((void **)&s->tx_index, n * 4),
        take((void **)&s->log_index, n * 4),
        take((void **)&s->block_hash, n * s->hash_width),
        take((void **)&s->tx_hash, n * s->hash_width),
        take((void **)&s->address, n * s->address_width),
        topic_parts[0], topic_parts[1], topic_parts[2], topic_parts[3],
        take((void **)&s->data_offsets, (n + 1) * 4),
        take((void **)&s->data.data, s->data.size));
}

static PyObject *parse(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer body;
    Py_ssize_t start, end;
    int hex_output;
    if (!PyArg_ParseTuple(args, "y*nnp:parse", &body, &start, &end, &hex_output))
        return NULL;
    if (!body.readonly) { /* parsed without the GIL: nobody may change it meanwhile */
        PyBuffer_Release(&body);
        PyErr_SetString(PyExc_TypeError, "the body must be read-only (bytes, or a read-only view)");
        return NULL;
    }
    Py_ssize_t size = body.len;
    if (start < 0 || end < start || end > size) {
        PyBuffer_Release(&body);
        PyErr_SetString(PyExc_ValueError, "start and end must lie within the body, in order");
        return NULL;
    }
    if (size >= INT32_MAX) { /* int32 offsets */
        PyBuffer_Release(&body);
        Py_RETURN_NONE;
    }
    const unsigned char *text = (const unsigned char *)body.buf;
    Parser s;
    memset(&s, 0, sizeof s);
    s.p = text + start;
    s.end = text + end;
    s.hex_output = hex_output;
    s.hash_width = hex_output ? 2 + 2 * HASH_BYTES : HASH_BYTES;
    s.address_width = hex_output ? 2 + 2 * ADDRESS_BYTES : ADDRESS_BYTES;
    int status;
    /* The body is bytes or a read-only view that only the caller's thread fills (nativelogs):
       other threads may run meanwhile. */
    Py_BEGIN_ALLOW_THREADS
    status = allocate_columns(&s, (size_t)(end - start));
    if (status == 0) status = logs(&s);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (s.out_of_memory)
        PyErr_NoMemory();
    else if (status < 0)
        result = (Py_INCREF(Py_None), Py_None);
    else
        result = columns_tuple(&s);
    free_columns(&s); /* what columns_tuple took is NULL here */
    PyBuffer_Release(&body);
    return result;
}

static PyMethodDef methods[] = {
    {"parse", parse, METH_VARARGS,
     "parse(body, start, end, hex_output) -> None | (count, block_number, (validity|None, "
     "block_timestamp, null_count), transaction_index, log_index, block_hash, transaction_hash, "
     "address, ((validity|None, offsets, data, null_count) x 4), data_offsets, data): the column "
     "buffers of the logs in body[start:end], "
     "the inside of a `result` array, or None when it is not compact JSON of flat logs."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fastlogs",
    "eth_getLogs `result` arrays straight to Arrow column buffers (see nativelogs.py).", -1,
    methods, NULL, NULL, NULL, NULL,
};

static void fill_tables(void) {
    for (int c = 0; c < 256; c++) {
        hex_value[c] = BAD_DIGIT;
        string_byte[c] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
    }
    for (int c = '0'; c <= '9'; c++) hex_value[c] = (uint8_t)(c - '0');
    for (int c = 'a'; c <= 'f'; c++) hex_value[c] = (uint8_t)(c - 'a' + 10);
    for (int c = 'A'; c <= 'F'; c++) hex_value[c] = (uint8_t)(c - 'A' + 10);
}

PyMODINIT_FUNC PyInit__fastlogs(void) {
    fill_tables();
    if (PyType_Ready(&BufferType) < 0) return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    Py_INCREF(&BufferType);
    if (PyModule_AddObject(module, "Buffer", (PyObject *)&BufferType) < 0) {
        Py_DECREF(&BufferType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
