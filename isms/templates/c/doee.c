/*
 * %NAME%: an ISMS Doee in C.
 *
 * Test it here with `make test`; deploy it with
 * `isms deploy . --project <project> --wait`.
 */
#include <isms/doee.h>

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* Parameters live only until the call that read them returns: keep a copy. */
static char *greeting;

static int greeter_initialize(isms_ctx *ctx) {
    const char *param = isms_param(ctx, "greeting");
    const char *text = param != NULL ? param : "Hello";
    greeting = malloc(strlen(text) + 1);
    if (greeting == NULL) {
        isms_error(ctx, "out of memory");
        return ISMS_FAILED;
    }
    strcpy(greeting, text);
    return ISMS_OK;
}

static int greeter_execute(isms_ctx *ctx, const uint8_t *input, size_t len) {
    /* The body, without surrounding white space; "world" when empty. */
    while (len > 0 && isspace(input[0])) {
        input++;
        len--;
    }
    while (len > 0 && isspace(input[len - 1])) {
        len--;
    }
    if (len == 0) {
        input = (const uint8_t *)"world";
        len = 5;
    }
    isms_output(ctx, greeting, strlen(greeting));
    isms_output(ctx, ", ", 2);
    isms_output(ctx, input, len);
    isms_output(ctx, "!", 1);
    return ISMS_OK;
}

static void greeter_terminate(isms_ctx *ctx) {
    (void)ctx;
    free(greeting);
    greeting = NULL;
}

ISMS_DOEE_C(greeter_initialize, greeter_execute, greeter_terminate)
