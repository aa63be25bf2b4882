/*
 * Run a C or C++ Doee in a unit test, against a fake host.
 *
 *     #include <isms/testing.h>
 *
 *     int main(void) {
 *         isms_test *t = isms_test_new();
 *         isms_test_param(t, "greeting", "Hello");
 *         ISMS_CHECK(isms_test_initialize(t) == ISMS_OK);
 *         ISMS_CHECK(isms_test_execute(t, "world", 5) == ISMS_OK);
 *         ISMS_CHECK_STR(isms_test_output(t, NULL), "Hello, world!");
 *         isms_test_terminate(t);
 *         isms_test_free(t);
 *         return isms_test_report();
 *     }
 *
 * Compile the test together with the Doee's sources into an executable
 * (no -shared). The fake host implements the same function table as the
 * platform's Executor and calls the Doee through the four exported ABI
 * symbols, so the Doee runs exactly the code it runs on the platform.
 * SQL, documents and publishing answer through handlers installed with
 * isms_test_on_sql(), isms_test_on_doc(), isms_test_on_publish() and
 * isms_test_on_invoke();
 * without one they fail with a clear message.
 *
 * Header-only, C99 or C++11 and later; every function is static inline.
 */
#ifndef ISMS_TESTING_H
#define ISMS_TESTING_H

#include <isms/doee.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The Doee under test: defined by ISMS_DOEE_C or ISMS_DOEE. */
uint32_t isms_doee_abi_version(void);
int isms_doee_initialize(isms_ctx *ctx);
int isms_doee_execute(isms_ctx *ctx, const uint8_t *input, size_t len);
void isms_doee_terminate(isms_ctx *ctx);

/* Answers isms_sql(ctx, query, params_json): return the rows as JSON (the
 * host copies it), or NULL to refuse (set a reason with isms_test_refuse). */
typedef const char *(*isms_test_sql_fn)(void *user, const char *query, const char *params_json);
/* Answers isms_doc(ctx, op, collection, json), like isms_test_sql_fn. */
typedef const char *(*isms_test_doc_fn)(void *user, const char *op, const char *collection,
                                        const char *json);
/* Answers isms_publish(ctx, topic, data, len): 0 to accept. */
typedef int (*isms_test_publish_fn)(void *user, const char *topic, const uint8_t *data,
                                    size_t len);
/* Answers isms_invoke(ctx, doee, data, len, ...): return the callee's output
 * and set *out_len (the host copies it), or NULL to refuse (set a reason with
 * isms_test_refuse). */
typedef const uint8_t *(*isms_test_invoke_fn)(void *user, const char *doee, const uint8_t *data,
                                              size_t len, size_t *out_len);

typedef struct isms_test_pair {
    char *key;
    char *value;
} isms_test_pair;

typedef struct isms_test_list {
    isms_test_pair *items;
    size_t len;
    size_t cap;
} isms_test_list;

/* A fake host for one Doee, recording what the Doee did. */
typedef struct isms_test {
    isms_ctx ctx; /* must stay first: the host casts the context back */
    isms_test_list params;
    isms_test_list meta;
    isms_test_list headers;
    isms_test_list logs; /* key: the level as text, value: the message */
    char *output;
    size_t output_len;
    size_t output_cap;
    int status;
    char *error;
    char *last_error;
    isms_test_sql_fn sql;
    void *sql_user;
    isms_test_doc_fn doc;
    void *doc_user;
    isms_test_publish_fn publish;
    void *publish_user;
    isms_test_list secrets;
    isms_test_invoke_fn invoke;
    void *invoke_user;
    size_t writes; /* isms_write calls; their pieces join `output` */
} isms_test;

static inline char *isms_test_strdup_(const char *s) {
    size_t len;
    char *copy;
    if (s == NULL) {
        s = "";
    }
    len = strlen(s);
    copy = (char *)malloc(len + 1);
    if (copy == NULL) {
        fputs("isms_test: out of memory\n", stderr);
        abort();
    }
    memcpy(copy, s, len + 1);
    return copy;
}

static inline void isms_test_list_set_(isms_test_list *list, const char *key, const char *value,
                                       int replace) {
    size_t i;
    if (replace) {
        for (i = 0; i < list->len; i++) {
            if (strcmp(list->items[i].key, key) == 0) {
                free(list->items[i].value);
                list->items[i].value = isms_test_strdup_(value);
                return;
            }
        }
    }
    if (list->len == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 8;
        isms_test_pair *items =
            (isms_test_pair *)realloc(list->items, cap * sizeof(isms_test_pair));
        if (items == NULL) {
            fputs("isms_test: out of memory\n", stderr);
            abort();
        }
        list->items = items;
        list->cap = cap;
    }
    list->items[list->len].key = isms_test_strdup_(key);
    list->items[list->len].value = isms_test_strdup_(value);
    list->len++;
}

static inline const char *isms_test_list_get_(const isms_test_list *list, const char *key) {
    size_t i;
    if (key == NULL) {
        return NULL;
    }
    for (i = 0; i < list->len; i++) {
        if (strcmp(list->items[i].key, key) == 0) {
            return list->items[i].value;
        }
    }
    return NULL;
}

static inline void isms_test_list_clear_(isms_test_list *list) {
    size_t i;
    for (i = 0; i < list->len; i++) {
        free(list->items[i].key);
        free(list->items[i].value);
    }
    list->len = 0;
}

static inline isms_test *isms_test_host_(isms_ctx *ctx) {
    return (isms_test *)(void *)ctx;
}

static inline void isms_test_set_last_error_(isms_test *t, const char *message) {
    free(t->last_error);
    t->last_error = isms_test_strdup_(message);
}

/* The host functions, as the Executor implements them. */

static inline const char *isms_test_api_param_(isms_ctx *ctx, const char *name) {
    return isms_test_list_get_(&isms_test_host_(ctx)->params, name);
}

static inline const char *isms_test_api_meta_(isms_ctx *ctx, const char *key) {
    return isms_test_list_get_(&isms_test_host_(ctx)->meta, key);
}

static inline void isms_test_api_output_(isms_ctx *ctx, const uint8_t *data, size_t len) {
    isms_test *t = isms_test_host_(ctx);
    if (data == NULL || len == 0) {
        return;
    }
    if (t->output_len + len + 1 > t->output_cap) {
        size_t cap = t->output_cap ? t->output_cap : 64;
        char *grown;
        while (cap < t->output_len + len + 1) {
            cap *= 2;
        }
        grown = (char *)realloc(t->output, cap);
        if (grown == NULL) {
            fputs("isms_test: out of memory\n", stderr);
            abort();
        }
        t->output = grown;
        t->output_cap = cap;
    }
    memcpy(t->output + t->output_len, data, len);
    t->output_len += len;
    t->output[t->output_len] = '\0';
}

static inline void isms_test_api_set_status_(isms_ctx *ctx, uint16_t status) {
    isms_test_host_(ctx)->status = status;
}

static inline void isms_test_api_set_header_(isms_ctx *ctx, const char *name,
                                             const char *value) {
    isms_test_list_set_(&isms_test_host_(ctx)->headers, name ? name : "", value, 0);
}

static inline void isms_test_api_error_(isms_ctx *ctx, const char *message) {
    isms_test *t = isms_test_host_(ctx);
    free(t->error);
    t->error = isms_test_strdup_(message);
}

static inline void isms_test_api_log_(isms_ctx *ctx, int level, const char *message) {
    const char *name = level == ISMS_LOG_ERROR  ? "error"
                       : level == ISMS_LOG_WARN  ? "warn"
                       : level == ISMS_LOG_DEBUG ? "debug"
                                                 : "info";
    isms_test_list_set_(&isms_test_host_(ctx)->logs, name, message, 0);
}

static inline int isms_test_answer_(isms_test *t, const char *answer, char **out) {
    if (answer == NULL) {
        if (out != NULL) {
            *out = NULL;
        }
        if (t->last_error == NULL || t->last_error[0] == '\0') {
            isms_test_set_last_error_(t, "the test's handler refused the call");
        }
        return ISMS_FAILED;
    }
    if (out != NULL) {
        *out = isms_test_strdup_(answer);
    }
    return ISMS_OK;
}

static inline int isms_test_api_sql_(isms_ctx *ctx, const char *query, const char *params_json,
                                     char **out) {
    isms_test *t = isms_test_host_(ctx);
    isms_test_set_last_error_(t, "");
    if (t->sql == NULL) {
        isms_test_set_last_error_(t, "no SQL handler: use isms_test_on_sql");
        return isms_test_answer_(t, NULL, out);
    }
    return isms_test_answer_(t, t->sql(t->sql_user, query, params_json), out);
}

static inline int isms_test_api_doc_(isms_ctx *ctx, const char *op, const char *collection,
                                     const char *json, char **out) {
    isms_test *t = isms_test_host_(ctx);
    isms_test_set_last_error_(t, "");
    if (t->doc == NULL) {
        isms_test_set_last_error_(t, "no document handler: use isms_test_on_doc");
        return isms_test_answer_(t, NULL, out);
    }
    return isms_test_answer_(t, t->doc(t->doc_user, op, collection, json), out);
}

static inline int isms_test_api_publish_(isms_ctx *ctx, const char *topic, const uint8_t *data,
                                         size_t len) {
    isms_test *t = isms_test_host_(ctx);
    isms_test_set_last_error_(t, "");
    if (t->publish == NULL) {
        isms_test_set_last_error_(t, "no publish handler: use isms_test_on_publish");
        return ISMS_FAILED;
    }
    if (t->publish(t->publish_user, topic, data, len) != 0) {
        if (t->last_error[0] == '\0') {
            isms_test_set_last_error_(t, "the test's handler refused the call");
        }
        return ISMS_FAILED;
    }
    return ISMS_OK;
}

static inline int isms_test_api_secret_(isms_ctx *ctx, const char *name, char **out) {
    isms_test *t = isms_test_host_(ctx);
    const char *value = isms_test_list_get_(&t->secrets, name ? name : "");
    isms_test_set_last_error_(t, value ? "" : "no such secret: use isms_test_secret");
    return isms_test_answer_(t, value, out);
}

static inline int isms_test_api_invoke_(isms_ctx *ctx, const char *doee, const uint8_t *data,
                                        size_t len, uint8_t **out, size_t *out_len) {
    isms_test *t = isms_test_host_(ctx);
    const uint8_t *output;
    size_t output_len = 0;
    *out = NULL;
    *out_len = 0;
    isms_test_set_last_error_(t, "");
    if (t->invoke == NULL) {
        isms_test_set_last_error_(t, "no invoke handler: use isms_test_on_invoke");
        return ISMS_FAILED;
    }
    output = t->invoke(t->invoke_user, doee, data, len, &output_len);
    if (output == NULL) {
        if (t->last_error[0] == '\0') {
            isms_test_set_last_error_(t, "the test's handler refused the call");
        }
        return ISMS_FAILED;
    }
    *out = (uint8_t *)malloc(output_len + 1);
    if (*out == NULL) {
        abort();
    }
    memcpy(*out, output, output_len);
    (*out)[output_len] = 0;
    *out_len = output_len;
    return ISMS_OK;
}

static inline int isms_test_api_write_(isms_ctx *ctx, const uint8_t *data, size_t len) {
    isms_test *t = isms_test_host_(ctx);
    t->writes++;
    isms_test_api_output_(ctx, data, len);
    return ISMS_OK;
}

static inline const char *isms_test_api_last_error_(isms_ctx *ctx) {
    isms_test *t = isms_test_host_(ctx);
    return t->last_error ? t->last_error : "";
}

static inline void isms_test_api_free_(isms_ctx *ctx, void *p) {
    (void)ctx;
    free(p);
}

static inline const isms_host_api *isms_test_api_(void) {
    static const isms_host_api api = {
        ISMS_ABI_VERSION,
        (uint32_t)sizeof(isms_host_api),
        isms_test_api_param_,
        isms_test_api_meta_,
        isms_test_api_output_,
        isms_test_api_set_status_,
        isms_test_api_set_header_,
        isms_test_api_error_,
        isms_test_api_log_,
        isms_test_api_sql_,
        isms_test_api_doc_,
        isms_test_api_publish_,
        isms_test_api_last_error_,
        isms_test_api_free_,
        isms_test_api_secret_,
        isms_test_api_invoke_,
        isms_test_api_write_,
    };
    return &api;
}

/* The test's API. */

/* A host with no parameters, meta "trigger" = "http" and "method" = "POST". */
static inline isms_test *isms_test_new(void) {
    isms_test *t = (isms_test *)calloc(1, sizeof(isms_test));
    if (t == NULL) {
        fputs("isms_test: out of memory\n", stderr);
        abort();
    }
    t->ctx.api = isms_test_api_();
    t->last_error = isms_test_strdup_("");
    isms_test_list_set_(&t->meta, "trigger", "http", 1);
    isms_test_list_set_(&t->meta, "method", "POST", 1);
    return t;
}

/* Sets a manifest parameter, seen through isms_param. */
static inline void isms_test_param(isms_test *t, const char *name, const char *value) {
    isms_test_list_set_(&t->params, name, value, 1);
}

/* Sets a project secret, seen through isms_secret. */
static inline void isms_test_secret(isms_test *t, const char *name, const char *value) {
    isms_test_list_set_(&t->secrets, name, value, 1);
}

/* Sets an invocation fact, seen through isms_meta. */
static inline void isms_test_meta(isms_test *t, const char *key, const char *value) {
    isms_test_list_set_(&t->meta, key, value, 1);
}

/* Installs the handler answering isms_sql. */
static inline void isms_test_on_sql(isms_test *t, isms_test_sql_fn handler, void *user) {
    t->sql = handler;
    t->sql_user = user;
}

/* Installs the handler answering isms_doc. */
static inline void isms_test_on_doc(isms_test *t, isms_test_doc_fn handler, void *user) {
    t->doc = handler;
    t->doc_user = user;
}

/* Installs the handler answering isms_invoke. */
static inline void isms_test_on_invoke(isms_test *t, isms_test_invoke_fn handler, void *user) {
    t->invoke = handler;
    t->invoke_user = user;
}

/* Installs the handler answering isms_publish. */
static inline void isms_test_on_publish(isms_test *t, isms_test_publish_fn handler, void *user) {
    t->publish = handler;
    t->publish_user = user;
}

/* From inside a handler: the reason the Doee sees in isms_last_error. */
static inline void isms_test_refuse(isms_test *t, const char *reason) {
    isms_test_set_last_error_(t, reason);
}

/* The context handed to the Doee, for calling a Doee's functions directly. */
static inline isms_ctx *isms_test_ctx(isms_test *t) {
    return &t->ctx;
}

static inline void isms_test_begin_(isms_test *t) {
    t->output_len = 0;
    if (t->output != NULL) {
        t->output[0] = '\0';
    }
    t->status = 0;
    isms_test_list_clear_(&t->headers);
    isms_test_list_clear_(&t->logs);
    free(t->error);
    t->error = NULL;
}

/* Calls the Doee's initialize, after checking its ABI version. */
static inline int isms_test_initialize(isms_test *t) {
    isms_test_begin_(t);
    if (isms_doee_abi_version() != ISMS_ABI_VERSION) {
        isms_test_api_error_(&t->ctx, "the Doee was built for another ABI version");
        return ISMS_FAILED;
    }
    return isms_doee_initialize(&t->ctx);
}

/* Calls the Doee's execute with `len` bytes of `input`; what the previous
 * call recorded (output, status, headers, logs, error) is cleared first. */
static inline int isms_test_execute(isms_test *t, const void *input, size_t len) {
    isms_test_begin_(t);
    return isms_doee_execute(&t->ctx, (const uint8_t *)input, len);
}

/* Calls the Doee's terminate. */
static inline void isms_test_terminate(isms_test *t) {
    isms_test_begin_(t);
    isms_doee_terminate(&t->ctx);
}

/* The output of the last call, NUL-terminated ("" if none); its length in
 * *len when len is not NULL. */
static inline const char *isms_test_output(const isms_test *t, size_t *len) {
    if (len != NULL) {
        *len = t->output_len;
    }
    return t->output ? t->output : "";
}

/* The status the last call set, or 0. */
static inline int isms_test_status(const isms_test *t) {
    return t->status;
}

/* The last value of a header the last call set, or NULL. */
static inline const char *isms_test_header(const isms_test *t, const char *name) {
    size_t i;
    const char *found = NULL;
    for (i = 0; i < t->headers.len; i++) {
        if (strcmp(t->headers.items[i].key, name) == 0) {
            found = t->headers.items[i].value;
        }
    }
    return found;
}

/* The error message the last call reported, or NULL. */
static inline const char *isms_test_error(const isms_test *t) {
    return t->error;
}

/* How many log lines the last call wrote. */
static inline size_t isms_test_log_count(const isms_test *t) {
    return t->logs.len;
}

/* The i-th log line of the last call ("error", "warn", "info" or "debug"
 * in *level when level is not NULL), or NULL past the end. */
static inline const char *isms_test_log(const isms_test *t, size_t i, const char **level) {
    if (i >= t->logs.len) {
        return NULL;
    }
    if (level != NULL) {
        *level = t->logs.items[i].key;
    }
    return t->logs.items[i].value;
}

/* Releases the host. */
static inline void isms_test_free(isms_test *t) {
    if (t == NULL) {
        return;
    }
    isms_test_list_clear_(&t->params);
    isms_test_list_clear_(&t->meta);
    isms_test_list_clear_(&t->headers);
    isms_test_list_clear_(&t->logs);
    isms_test_list_clear_(&t->secrets);
    free(t->secrets.items);
    free(t->params.items);
    free(t->meta.items);
    free(t->headers.items);
    free(t->logs.items);
    free(t->output);
    free(t->error);
    free(t->last_error);
    free(t);
}

/* Checks for a test's main(): each failure is printed with its line, and
 * isms_test_report() prints "N passed, M failed" and returns the exit code. */

static inline int *isms_test_counts_(void) {
    static int counts[2] = {0, 0};
    return counts;
}

static inline int isms_test_check_(int ok, const char *file, int line, const char *what) {
    if (ok) {
        isms_test_counts_()[0]++;
    } else {
        isms_test_counts_()[1]++;
        fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
    }
    return ok;
}

static inline int isms_test_check_str_(const char *actual, const char *expected,
                                       const char *file, int line, const char *what) {
    int ok = actual != NULL && expected != NULL && strcmp(actual, expected) == 0;
    if (!isms_test_check_(ok, file, line, what)) {
        fprintf(stderr, "    actual:   %s%s%s\n    expected: %s%s%s\n", actual ? "\"" : "",
                actual ? actual : "NULL", actual ? "\"" : "", expected ? "\"" : "",
                expected ? expected : "NULL", expected ? "\"" : "");
    }
    return ok;
}

/* Prints the tally; returns 0 if every check passed, 1 otherwise. */
static inline int isms_test_report(void) {
    int *counts = isms_test_counts_();
    printf("%d passed, %d failed\n", counts[0], counts[1]);
    return counts[1] == 0 ? 0 : 1;
}

#define ISMS_CHECK(cond) isms_test_check_((cond) ? 1 : 0, __FILE__, __LINE__, #cond)
#define ISMS_CHECK_STR(actual, expected) \
    isms_test_check_str_((actual), (expected), __FILE__, __LINE__, #actual " == " #expected)

#ifdef __cplusplus
}
#endif

#endif /* ISMS_TESTING_H */
