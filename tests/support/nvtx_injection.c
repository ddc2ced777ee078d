/* A minimal NVTX tool for tests/nvtx_ranges.rs: the library a profiler such
 * as nsys names in NVTX_INJECTION64_PATH. NVTX calls InitializeInjectionNvtx2
 * on the first range; this fills the core table's RangePushA and RangePop
 * slots (NVTX's callback ids 9 and 11 of module 1) with functions that log
 * each call to the file named by NVTX_TEST_LOG. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef void (*fn_ptr)(void);
typedef fn_ptr **fn_table;
typedef struct {
    size_t struct_size;
    int (*get_module_function_table)(int module, fn_table *out_table, unsigned *out_size);
} callbacks_table;
typedef const void *(*get_export_table)(uint32_t id);

enum { EXPORT_TABLE_CALLBACKS = 1, MODULE_CORE = 1, CORE_RANGE_PUSH_A = 9, CORE_RANGE_POP = 11 };

static FILE *out;

static int range_push(const char *message) {
    fprintf(out, "push %s\n", message);
    fflush(out);
    return 0;
}

static int range_pop(void) {
    fprintf(out, "pop\n");
    fflush(out);
    return 0;
}

int InitializeInjectionNvtx2(get_export_table get) {
    const callbacks_table *cb = (const callbacks_table *)get(EXPORT_TABLE_CALLBACKS);
    fn_table table = 0;
    unsigned size = 0;
    const char *path = getenv("NVTX_TEST_LOG");
    if (!cb || !path || !cb->get_module_function_table(MODULE_CORE, &table, &size) || size <= CORE_RANGE_POP) return 0;
    out = fopen(path, "w");
    if (!out) return 0;
    *table[CORE_RANGE_PUSH_A] = (fn_ptr)range_push;
    *table[CORE_RANGE_POP] = (fn_ptr)range_pop;
    return 1;
}
