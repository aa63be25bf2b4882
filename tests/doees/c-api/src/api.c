/*
 * A C Doee that exercises every function of <isms/doee.h>; the tests of
 * the SDK (against the fake host) and of the platform (end to end) run it.
 * The input picks what it does:
 *   "fail"     isms_error and a non-zero return
 *   "sql"      isms_sql; reports the rows or the platform's refusal
 *   "doc"      isms_doc, likewise
 *   "publish"  isms_publish, likewise
 *   anything   reports params and meta, logs at every level, sets a status
 *              and headers
 */
#include <isms/doee.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

static char *greeting;
static unsigned long calls;

static int api_initialize(isms_ctx *ctx) {
    const char *param = isms_param(ctx, "greeting");
    const char *fail = isms_param(ctx, "fail_initialize");
    if (fail != NULL && strcmp(fail, "yes") == 0) {
        isms_error(ctx, "initialize was told to fail");
        return ISMS_FAILED;
    }
    /* Parameters live only until this call returns: keep a copy. */
    greeting = malloc(strlen(param ? param : "Hello") + 1);
    if (greeting == NULL) {
        isms_error(ctx, "out of memory");
        return ISMS_FAILED;
    }
    strcpy(greeting, param ? param : "Hello");
    isms_log(ctx, ISMS_LOG_INFO, "initialized");
    return ISMS_OK;
}

static int is(const uint8_t *input, size_t len, const char *word) {
    return len == strlen(word) && memcmp(input, word, len) == 0;
}

/* Reports a result returned through an `out` pointer, or the refusal. */
static void report_result(isms_ctx *ctx, const char *what, int code, char *out) {
    if (code == ISMS_OK) {
        report(ctx, what, out);
        isms_free(ctx, out);
    } else {
        char line[512];
        snprintf(line, sizeof line, "refused: %s", isms_last_error(ctx));
        report(ctx, what, line);
    }
}

static int api_execute(isms_ctx *ctx, const uint8_t *input, size_t len) {
    char number[32];
    calls++;
    if (is(input, len, "fail")) {
        isms_error(ctx, "asked to fail");
        return ISMS_FAILED;
    }
    if (is(input, len, "sql")) {
        char *rows = NULL;
        int code = isms_sql(ctx, "SELECT 1 AS one", "[]", &rows);
        report_result(ctx, "sql", code, rows);
        return ISMS_OK;
    }
    if (is(input, len, "doc")) {
        char *found = NULL;
        int code = isms_doc(ctx, "find", "things", "{\"filter\":{}}", &found);
        report_result(ctx, "doc", code, found);
        return ISMS_OK;
    }
    if (is(input, len, "invoke")) {
        /* A Doee the project does not have: the platform's reason. */
        uint8_t *output = NULL;
        size_t output_len = 0;
        int code = isms_invoke(ctx, "nobody", "x", 1, &output, &output_len);
        report_result(ctx, "invoke", code, (char *)output);
        return ISMS_OK;
    }
    if (is(input, len, "publish")) {
        int code = isms_publish(ctx, "c-api/out", "hi", 2);
        report_result(ctx, "publish", code, NULL);
        return ISMS_OK;
    }
    isms_set_status(ctx, 201);
    isms_set_header(ctx, "x-lang", "c");
    isms_set_header(ctx, "x-greeting", greeting);
    isms_log(ctx, ISMS_LOG_ERROR, "an error line");
    isms_log(ctx, ISMS_LOG_WARN, "a warning line");
    isms_log(ctx, ISMS_LOG_INFO, "an info line");
    isms_log(ctx, ISMS_LOG_DEBUG, "a debug line");
    report(ctx, "greeting", greeting);
    report(ctx, "missing", isms_param(ctx, "no-such-param"));
    report(ctx, "trigger", isms_meta(ctx, "trigger"));
    report(ctx, "method", isms_meta(ctx, "method"));
    report(ctx, "path", isms_meta(ctx, "path"));
    report(ctx, "query", isms_meta(ctx, "query"));
    report(ctx, "project", isms_meta(ctx, "project"));
    report(ctx, "doee", isms_meta(ctx, "doee"));
    report(ctx, "invocation_id", isms_meta(ctx, "invocation_id"));
    snprintf(number, sizeof number, "%lu", calls);
    report(ctx, "calls", number);
    snprintf(number, sizeof number, "%zu", len);
    report(ctx, "input_len", number);
    isms_output(ctx, "input=", 6);
    isms_output(ctx, input, len);
    return ISMS_OK;
}

static void api_terminate(isms_ctx *ctx) {
    isms_log(ctx, ISMS_LOG_INFO, "terminating");
    free(greeting);
    greeting = NULL;
}

ISMS_DOEE_C(api_initialize, api_execute, api_terminate)
