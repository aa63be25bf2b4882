#include "report.h"

#include <string.h>

void report(isms_ctx *ctx, const char *key, const char *value) {
    if (value == NULL) {
        value = "(null)";
    }
    isms_output(ctx, key, strlen(key));
    isms_output(ctx, "=", 1);
    isms_output(ctx, value, strlen(value));
    isms_output(ctx, "\n", 1);
}
