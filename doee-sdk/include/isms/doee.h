/*
 * ISMS Doee SDK for C: write a Doee (a serverless function) in C.
 *
 *     #include <isms/doee.h>
 *
 *     int  my_initialize(isms_ctx *ctx);                                 0 = ok
 *     int  my_execute(isms_ctx *ctx, const uint8_t *input, size_t len);  0 = ok
 *     void my_terminate(isms_ctx *ctx);
 *     ISMS_DOEE_C(my_initialize, my_execute, my_terminate)
 *
 * The platform compiles the sources listed in doee.toml into a shared object
 * with `cc -shared -fPIC` and this directory on the include path. The Doee
 * Executor loads it in a sandboxed Worker, calls `initialize` once,
 * `execute` once per invocation (the HTTP body or MQTT payload is `input`)
 * and `terminate` before the Worker stops. A non-zero return fails the
 * call; the message given to isms_error() reaches the caller.
 *
 * This header is the C mirror of doee-sdk/src/abi.rs: one versioned C ABI
 * shared by Rust, C and C++ Doees. Change both together, and change
 * ISMS_ABI_VERSION whenever either changes incompatibly.
 *
 * Strings are NUL-terminated UTF-8. Strings from isms_param() and
 * isms_meta() stay valid until the current entry point returns (copy what
 * you keep); strings returned through an `out` pointer are yours, released
 * with isms_free().
 */
#ifndef ISMS_DOEE_H
#define ISMS_DOEE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version this header produces and the Executor accepts. */
#define ISMS_ABI_VERSION 1u

/* Return codes of the entry points. */
#define ISMS_OK 0
/* The Doee reported an error (see isms_error). */
#define ISMS_FAILED 1
/* The Doee's state can no longer be trusted (a C++ exception, a Rust
 * panic): the invocation fails and the Executor replaces the Worker. */
#define ISMS_PANICKED 2

/* Levels of isms_log(). */
#define ISMS_LOG_ERROR 1
#define ISMS_LOG_WARN 2
#define ISMS_LOG_INFO 3
#define ISMS_LOG_DEBUG 4

typedef struct isms_ctx isms_ctx;

/* The host functions a Doee may call; reach them through the isms_*
 * functions below rather than directly. Field order and types are the ABI. */
typedef struct isms_host_api {
    uint32_t abi_version;
    uint32_t size;
    const char *(*param)(isms_ctx *ctx, const char *name);
    const char *(*meta)(isms_ctx *ctx, const char *key);
    void (*output)(isms_ctx *ctx, const uint8_t *data, size_t len);
    void (*set_status)(isms_ctx *ctx, uint16_t status);
    void (*set_header)(isms_ctx *ctx, const char *name, const char *value);
    void (*error)(isms_ctx *ctx, const char *message);
    void (*log)(isms_ctx *ctx, int level, const char *message);
    int (*sql)(isms_ctx *ctx, const char *query, const char *params_json, char **out);
    int (*doc)(isms_ctx *ctx, const char *op, const char *collection, const char *json,
               char **out);
    int (*publish)(isms_ctx *ctx, const char *topic, const uint8_t *data, size_t len);
    const char *(*last_error)(isms_ctx *ctx);
    void (*free)(isms_ctx *ctx, void *p);
    /* Appended: a host whose `size` ends before it has none. */
    int (*secret)(isms_ctx *ctx, const char *name, char **out);
    /* Appended after `secret`. */
    int (*invoke)(isms_ctx *ctx, const char *doee, const uint8_t *data, size_t len,
                  uint8_t **out, size_t *out_len);
    /* Appended after `invoke`. */
    int (*write)(isms_ctx *ctx, const uint8_t *data, size_t len);
} isms_host_api;

/* What the host hands to every entry point. Treat it as opaque: the host
 * keeps its own state behind it. */
struct isms_ctx {
    const isms_host_api *api;
};

/* A parameter from the manifest's [params], or NULL if unset. */
static inline const char *isms_param(isms_ctx *ctx, const char *name) {
    return ctx->api->param(ctx, name);
}

/* A fact about the current invocation, or NULL: "trigger" ("http",
 * "mqtt", "schedule" or "cli"), "topic", "method", "path", "query",
 * "scheduled" (a schedule's firing: its moment, ms since the epoch),
 * "invocation_id", "project", "doee", "version". */
static inline const char *isms_meta(isms_ctx *ctx, const char *key) {
    return ctx->api->meta(ctx, key);
}

/* Appends bytes to the output: the HTTP response body or the reply message. */
static inline void isms_output(isms_ctx *ctx, const void *data, size_t len) {
    ctx->api->output(ctx, (const uint8_t *)data, len);
}

/* Sets the HTTP status of the response (200 by default). */
static inline void isms_set_status(isms_ctx *ctx, uint16_t status) {
    ctx->api->set_status(ctx, status);
}

/* Sets an HTTP response header. */
static inline void isms_set_header(isms_ctx *ctx, const char *name, const char *value) {
    ctx->api->set_header(ctx, name, value);
}

/* Sets the error message reported when the entry point returns non-zero. */
static inline void isms_error(isms_ctx *ctx, const char *message) {
    ctx->api->error(ctx, message);
}

/* Writes a log line at an ISMS_LOG_* level, shown in the project's logs. */
static inline void isms_log(isms_ctx *ctx, int level, const char *message) {
    ctx->api->log(ctx, level, message);
}

/* Runs SQL on the project's database; params_json is a JSON array of
 * positional parameters. Returns 0 and sets *out to the rows as a JSON
 * array of objects (release it with isms_free), or non-zero with *out NULL
 * and the reason in isms_last_error(). */
static inline int isms_sql(isms_ctx *ctx, const char *query, const char *params_json,
                           char **out) {
    return ctx->api->sql(ctx, query, params_json, out);
}

/* Runs a document operation on the project's store, like isms_sql:
 *   "insert"  json is the document               -> {"id": ...}
 *   "find"    {"filter", "projection", "sort", "limit"}
 *   "update"  {"filter", "update": {"$set": ...}}
 *   "delete"  {"filter"}
 * Filters use MongoDB's query syntax. */
static inline int isms_doc(isms_ctx *ctx, const char *op, const char *collection,
                           const char *json, char **out) {
    return ctx->api->doc(ctx, op, collection, json, out);
}

/* Publishes an MQTT message on a topic of the project's namespace; 0 on
 * success, else the reason is in isms_last_error(). */
static inline int isms_publish(isms_ctx *ctx, const char *topic, const void *data,
                               size_t len) {
    return ctx->api->publish(ctx, topic, (const uint8_t *)data, len);
}

/* Whether this platform has secrets (isms_secret). */

/* Reads a secret of the project (`isms secret set`), now: a value set
 * since takes effect at once. Returns 0 and sets *out to the value (release
 * it with isms_free), or non-zero with *out NULL and the reason in
 * isms_last_error() (no such secret). Keep values out of logs and output. */
static inline int isms_has_secrets(isms_ctx *ctx) {
    return ctx->api->size >= offsetof(isms_host_api, secret) + sizeof(ctx->api->secret);
}

static inline int isms_secret(isms_ctx *ctx, const char *name, char **out) {
    if (out != NULL) {
        *out = NULL;
    }
    if (!isms_has_secrets(ctx) || out == NULL) {
        return ISMS_FAILED; /* a platform without secrets (isms_has_secrets) */
    }
    return ctx->api->secret(ctx, name, out);
}

/* Whether this platform can invoke Doees (isms_invoke). */
static inline int isms_can_invoke(isms_ctx *ctx) {
    return ctx->api->size >= offsetof(isms_host_api, invoke) + sizeof(ctx->api->invoke);
}

/* Runs another Doee of the project with `len` bytes of input and waits for
 * it. Returns 0 and sets *out to its output (*out_len bytes, then a NUL;
 * release it with isms_free), or non-zero with *out NULL and the reason in
 * isms_last_error(), naming the callee's invocation. The callee is recorded
 * as this invocation's child; calls nest at most doer.max_chain_depth deep
 * (8), so a cycle fails there. */
static inline int isms_invoke(isms_ctx *ctx, const char *doee, const void *data, size_t len,
                              uint8_t **out, size_t *out_len) {
    if (out != NULL) {
        *out = NULL;
    }
    if (out_len != NULL) {
        *out_len = 0;
    }
    if (!isms_can_invoke(ctx) || out == NULL || out_len == NULL) {
        return ISMS_FAILED; /* a platform without it (isms_can_invoke) */
    }
    return ctx->api->invoke(ctx, doee, (const uint8_t *)data, len, out, out_len);
}

/* Whether this platform can stream output (isms_write). */
static inline int isms_can_write(isms_ctx *ctx) {
    return ctx->api->size >= offsetof(isms_host_api, write) + sizeof(ctx->api->write);
}

/* Sends a piece of the output now: an HTTP client (chunked, or Server-Sent
 * Events) or `isms invoke --follow` gets it before the invocation ends,
 * ahead of what isms_output adds. Where the output is not streamed (MQTT,
 * schedules, chains) the piece joins the output. Waits while the client is
 * behind. Returns 0, or non-zero once the client went away or the output
 * is too large (isms_last_error() says which). */
static inline int isms_write(isms_ctx *ctx, const void *data, size_t len) {
    if (!isms_can_write(ctx)) {
        ctx->api->output(ctx, (const uint8_t *)data, len);
        return ISMS_OK; /* an older platform: it joins the output */
    }
    return ctx->api->write(ctx, (const uint8_t *)data, len);
}

/* Why the last failed isms_sql, isms_doc, isms_publish, isms_secret,
 * isms_invoke or isms_write failed (never NULL; valid until the next such
 * call). */
static inline const char *isms_last_error(isms_ctx *ctx) {
    return ctx->api->last_error(ctx);
}

/* Releases a string the host returned through an `out` pointer. */
static inline void isms_free(isms_ctx *ctx, void *p) {
    ctx->api->free(ctx, p);
}

#if defined(__GNUC__) || defined(__clang__)
#define ISMS_EXPORT __attribute__((visibility("default")))
#else
#define ISMS_EXPORT
#endif

#ifdef __cplusplus
#define ISMS_EXTERN_C extern "C"
#else
#define ISMS_EXTERN_C
#endif

/* Exports three functions as the Doee of this shared object: the four
 * symbols of the ABI (isms_doee_abi_version, isms_doee_initialize,
 * isms_doee_execute, isms_doee_terminate). Use it once, at file scope. */
#define ISMS_DOEE_C(initialize, execute, terminate)                                      \
    ISMS_EXTERN_C ISMS_EXPORT uint32_t isms_doee_abi_version(void);                      \
    ISMS_EXTERN_C ISMS_EXPORT int isms_doee_initialize(isms_ctx *ctx);                   \
    ISMS_EXTERN_C ISMS_EXPORT int isms_doee_execute(isms_ctx *ctx, const uint8_t *input, \
                                                    size_t len);                         \
    ISMS_EXTERN_C ISMS_EXPORT void isms_doee_terminate(isms_ctx *ctx);                   \
    ISMS_EXTERN_C ISMS_EXPORT uint32_t isms_doee_abi_version(void) {                     \
        return ISMS_ABI_VERSION;                                                         \
    }                                                                                    \
    ISMS_EXTERN_C ISMS_EXPORT int isms_doee_initialize(isms_ctx *ctx) {                  \
        return (initialize)(ctx);                                                        \
    }                                                                                    \
    ISMS_EXTERN_C ISMS_EXPORT int isms_doee_execute(isms_ctx *ctx, const uint8_t *input, \
                                                    size_t len) {                        \
        return (execute)(ctx, input, len);                                               \
    }                                                                                    \
    ISMS_EXTERN_C ISMS_EXPORT void isms_doee_terminate(isms_ctx *ctx) {                  \
        (terminate)(ctx);                                                                \
    }

#ifdef __cplusplus
}
#endif

#endif /* ISMS_DOEE_H */
