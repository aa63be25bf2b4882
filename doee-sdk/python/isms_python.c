/*
 * The runtime of Python Doees: a Doee of the C ABI (<isms/doee.h>) that
 * embeds CPython, so the Executor loads a Python Doee like any other.
 *
 * The build compiles this file against the host's Python (Debian's
 * python3-dev) and appends a zip archive to the shared object: `doee/`
 * holds the upload (handler.py and its modules), `site-packages/` the
 * unpacked wheels of its requirements. Python imports straight from that
 * archive (zipimport reads past the ELF in front of it); an archive with
 * compiled extensions, which cannot load from a zip, is unpacked into the
 * Worker's private /tmp instead.
 *
 * `initialize` starts the interpreter (isolated: no environment, no user
 * or system site-packages), imports `handler` and calls its optional
 * `initialize(ctx)`; `execute` calls `execute(ctx, data)` and returns what
 * it returns (bytes, or str as UTF-8); `terminate` calls the optional
 * `terminate(ctx)`. The interpreter stays warm between invocations. An
 * exception fails the invocation with its message, its traceback goes to
 * the invocation's log. `ctx` is one object for the Worker's life, so
 * attributes set on it (`ctx.state`) last.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <isms/doee.h>
#include <string.h>

#define ISMS_STR_(x) #x
#define ISMS_STR(x) ISMS_STR_(x)
/* The interpreter's library, made global so that extension modules (which
 * do not link it) find its symbols. */
#define ISMS_LIBPYTHON \
    "libpython" ISMS_STR(PY_MAJOR_VERSION) "." ISMS_STR(PY_MINOR_VERSION) ".so.1.0"

typedef struct {
    PyObject_HEAD
    PyObject *dict;
    /* The current entry point's context; NULL between calls. */
    isms_ctx *ctx;
} Context;

static PyObject *handler;
static Context *context;
static PyObject *json_module;
static PyObject *isms_error_type;

static isms_ctx *current(Context *self) {
    if (!self->ctx) {
        PyErr_SetString(PyExc_RuntimeError, "the context is used outside an invocation");
    }
    return self->ctx;
}

/* Raises isms.Error with the host's reason for the last failed call. */
static PyObject *host_failed(isms_ctx *ctx) {
    PyErr_SetString(isms_error_type, isms_last_error(ctx));
    return NULL;
}

/* The UTF-8 of a str, or `fallback` (a str that cannot be encoded). */
static const char *utf8_or(PyObject *text, const char *fallback) {
    const char *utf8 = text ? PyUnicode_AsUTF8(text) : NULL;
    if (!utf8) PyErr_Clear();
    return utf8 ? utf8 : fallback;
}

/* `value` as JSON text (a new reference to a str), or NULL. */
static PyObject *to_json(PyObject *value) {
    return PyObject_CallMethod(json_module, "dumps", "O", value);
}

/* The host's JSON answer, parsed and released. */
static PyObject *from_json(isms_ctx *ctx, char *out) {
    PyObject *parsed = PyObject_CallMethod(json_module, "loads", "s", out ? out : "null");
    if (out) {
        isms_free(ctx, out);
    }
    return parsed;
}

static PyObject *ctx_param(Context *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s:param", &name)) return NULL;
    isms_ctx *ctx = current(self);
    if (!ctx) return NULL;
    const char *value = isms_param(ctx, name);
    if (!value) Py_RETURN_NONE;
    return PyUnicode_FromString(value);
}

static PyObject *ctx_meta(Context *self, PyObject *args) {
    const char *key;
    if (!PyArg_ParseTuple(args, "s:meta", &key)) return NULL;
    isms_ctx *ctx = current(self);
    if (!ctx) return NULL;
    const char *value = isms_meta(ctx, key);
    if (!value) Py_RETURN_NONE;
    return PyUnicode_FromString(value);
}

static PyObject *ctx_set_status(Context *self, PyObject *args) {
    int status;
    if (!PyArg_ParseTuple(args, "i:set_status", &status)) return NULL;
    if (status < 100 || status > 999) {
        PyErr_Format(PyExc_ValueError, "an HTTP status is 100 to 999, not %d", status);
        return NULL;
    }
    isms_ctx *ctx = current(self);
    if (!ctx) return NULL;
    isms_set_status(ctx, (uint16_t)status);
    Py_RETURN_NONE;
}

static PyObject *ctx_set_header(Context *self, PyObject *args) {
    const char *name, *value;
    if (!PyArg_ParseTuple(args, "ss:set_header", &name, &value)) return NULL;
    isms_ctx *ctx = current(self);
    if (!ctx) return NULL;
    isms_set_header(ctx, name, value);
    Py_RETURN_NONE;
}

static PyObject *ctx_log(Context *self, PyObject *args) {
    const char *level, *message;
    if (!PyArg_ParseTuple(args, "ss:log", &level, &message)) return NULL;
    int code;
    if (strcmp(level, "error") == 0) code = ISMS_LOG_ERROR;
    else if (strcmp(level, "warn") == 0 || strcmp(level, "warning") == 0) code = ISMS_LOG_WARN;
    else if (strcmp(level, "info") == 0) code = ISMS_LOG_INFO;
    else if (strcmp(level, "debug") == 0) code = ISMS_LOG_DEBUG;
    else {
        PyErr_Format(PyExc_ValueError,
                     "a log level is \"error\", \"warn\", \"info\" or \"debug\", not \"%s\"", level);
        return NULL;
    }
    isms_ctx *ctx = current(self);
    if (!ctx) return NULL;
    isms_log(ctx, code, message);
    Py_RETURN_NONE;
}

static PyObject *ctx_sql(Context *self, PyObject *args) {
    const char *query;
    PyObject *params = NULL;
    if (!PyArg_ParseTuple(args, "s|O:sql", &query, &params)) return NULL;
    isms_ctx *ctx = current(self);
    if (!ctx) return NULL;
    PyObject *empty = NULL;
    if (!params || params == Py_None) {
        params = empty = PyList_New(0);
        if (!params) return NULL;
    }
    PyObject *json = to_json(params);
    Py_XDECREF(empty);
    if (!json) return NULL;
    const char *params_json = PyUnicode_AsUTF8(json);
    if (!params_json) {
        Py_DECREF(json);
        return NULL;
    }
    char *out = NULL;
    int failed;
    /* The host waits on the platform: other Python threads may run. */
    Py_BEGIN_ALLOW_THREADS
    failed = isms_sql(ctx, query, params_json, &out);
    Py_END_ALLOW_THREADS
    Py_DECREF(json);
    if (failed) return host_failed(ctx);
    return from_json(ctx, out);
}

static PyObject *ctx_docs(Context *self, PyObject *args) {
    const char *op, *collection;
    PyObject *body = NULL;
    if (!PyArg_ParseTuple(args, "ss|O:docs", &op, &collection, &body)) return NULL;
    isms_ctx *ctx = current(self);
    if (!ctx) return NULL;
    PyObject *empty = NULL;
    if (!body || body == Py_None) {
        body = empty = PyDict_New();
        if (!body) return NULL;
    }
    PyObject *json = to_json(body);
    Py_XDECREF(empty);
    if (!json) return NULL;
    const char *body_json = PyUnicode_AsUTF8(json);
    if (!body_json) {
        Py_DECREF(json);
        return NULL;
    }
    char *out = NULL;
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = isms_doc(ctx, op, collection, body_json, &out);
    Py_END_ALLOW_THREADS
    Py_DECREF(json);
    if (failed) return host_failed(ctx);
    return from_json(ctx, out);
}

static PyObject *ctx_publish(Context *self, PyObject *args) {
    const char *topic;
    Py_buffer payload;
    if (!PyArg_ParseTuple(args, "ss*:publish", &topic, &payload)) return NULL;
    isms_ctx *ctx = current(self);
    int failed = -1;
    if (ctx) {
        Py_BEGIN_ALLOW_THREADS
        failed = isms_publish(ctx, topic, payload.buf, (size_t)payload.len);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&payload);
    if (!ctx) return NULL;
    if (failed) return host_failed(ctx);
    Py_RETURN_NONE;
}

static PyObject *ctx_secret(Context *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s:secret", &name)) return NULL;
    isms_ctx *ctx = current(self);
    if (!ctx) return NULL;
    if (!isms_has_secrets(ctx)) {
        PyErr_SetString(isms_error_type, "this platform has no secrets");
        return NULL;
    }
    char *out = NULL;
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = isms_secret(ctx, name, &out);
    Py_END_ALLOW_THREADS
    if (failed) return host_failed(ctx);
    PyObject *value = PyUnicode_FromString(out ? out : "");
    if (out) isms_free(ctx, out);
    return value;
}

static PyObject *ctx_invoke(Context *self, PyObject *args) {
    const char *doee;
    Py_buffer input;
    if (!PyArg_ParseTuple(args, "ss*:invoke", &doee, &input)) return NULL;
    isms_ctx *ctx = current(self);
    if (ctx && !isms_can_invoke(ctx)) {
        PyBuffer_Release(&input);
        PyErr_SetString(isms_error_type, "this platform cannot invoke Doees");
        return NULL;
    }
    uint8_t *out = NULL;
    size_t len = 0;
    int failed = -1;
    if (ctx) {
        Py_BEGIN_ALLOW_THREADS
        failed = isms_invoke(ctx, doee, input.buf, (size_t)input.len, &out, &len);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&input);
    if (!ctx) return NULL;
    if (failed) return host_failed(ctx);
    PyObject *output = PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)len);
    isms_free(ctx, out);
    return output;
}

static PyObject *ctx_write(Context *self, PyObject *args) {
    Py_buffer chunk;
    if (!PyArg_ParseTuple(args, "s*:write", &chunk)) return NULL;
    isms_ctx *ctx = current(self);
    int failed = -1;
    if (ctx) {
        Py_BEGIN_ALLOW_THREADS
        failed = isms_write(ctx, chunk.buf, (size_t)chunk.len);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&chunk);
    if (!ctx) return NULL;
    if (failed) return host_failed(ctx);
    Py_RETURN_NONE;
}

static PyMethodDef ctx_methods[] = {
    {"param", (PyCFunction)ctx_param, METH_VARARGS, "A parameter of the manifest's [params], or None."},
    {"meta", (PyCFunction)ctx_meta, METH_VARARGS, "A fact about the invocation (\"method\", \"path\", ...), or None."},
    {"set_status", (PyCFunction)ctx_set_status, METH_VARARGS, "Sets the HTTP status of the response."},
    {"set_header", (PyCFunction)ctx_set_header, METH_VARARGS, "Sets an HTTP response header."},
    {"log", (PyCFunction)ctx_log, METH_VARARGS, "log(level, message): a line in the project's logs."},
    {"sql", (PyCFunction)ctx_sql, METH_VARARGS, "sql(query, params=[]): the rows, as a list of dicts."},
    {"docs", (PyCFunction)ctx_docs, METH_VARARGS, "docs(op, collection, body={}): a document operation."},
    {"publish", (PyCFunction)ctx_publish, METH_VARARGS, "publish(topic, payload): an MQTT message."},
    {"secret", (PyCFunction)ctx_secret, METH_VARARGS, "secret(name): a secret of the project, as str."},
    {"invoke", (PyCFunction)ctx_invoke, METH_VARARGS, "invoke(doee, data): another Doee's output, as bytes."},
    {"write", (PyCFunction)ctx_write, METH_VARARGS, "write(data): sends a piece of the output now."},
    {NULL, NULL, 0, NULL},
};

static void ctx_dealloc(Context *self) {
    Py_CLEAR(self->dict);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ContextType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "isms.Context",
    .tp_basicsize = sizeof(Context),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "What a Python Doee reaches of the platform.",
    .tp_methods = ctx_methods,
    .tp_dealloc = (destructor)ctx_dealloc,
    .tp_dictoffset = offsetof(Context, dict),
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_setattro = PyObject_GenericSetAttr,
};

static struct PyModuleDef isms_module = {
    PyModuleDef_HEAD_INIT, "isms", "The ISMS platform, as a Python Doee sees it.", -1, NULL,
    NULL, NULL, NULL, NULL,
};

static PyObject *init_isms_module(void) {
    if (PyType_Ready(&ContextType) < 0) return NULL;
    PyObject *module = PyModule_Create(&isms_module);
    if (!module) return NULL;
    isms_error_type = PyErr_NewException("isms.Error", NULL, NULL);
    if (!isms_error_type) {
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(isms_error_type);
    Py_INCREF(&ContextType);
    if (PyModule_AddObject(module, "Error", isms_error_type) < 0 ||
        PyModule_AddObject(module, "Context", (PyObject *)&ContextType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}

/* Puts the archive appended to this shared object on sys.path. */
static const char BOOT[] =
    "def _boot(archive):\n"
    "    import sys, zipfile\n"
    "    with zipfile.ZipFile(archive) as z:\n"
    "        native = any(n.endswith('.so') or '.so.' in n.rsplit('/', 1)[-1] for n in z.namelist())\n"
    "        if native:\n"
    "            import tempfile\n"
    "            root = tempfile.mkdtemp(prefix='isms-python-')\n"
    "            z.extractall(root)\n"
    "        else:\n"
    "            root = archive\n"
    "    sys.path[:0] = [root + '/doee', root + '/site-packages']\n";

/* Fails the entry point with the pending exception: its message to the
 * caller, its traceback to the invocation's log. */
static int fail(isms_ctx *ctx, const char *when) {
    PyObject *type, *value, *trace;
    PyErr_Fetch(&type, &value, &trace);
    PyErr_NormalizeException(&type, &value, &trace);
    if (value && trace) PyException_SetTraceback(value, trace);
    char message[1024];
    const char *name = type ? ((PyTypeObject *)type)->tp_name : "error";
    if (type && PyErr_GivenExceptionMatches(type, PyExc_SystemExit)) {
        PyObject *code = value ? PyObject_GetAttrString(value, "code") : NULL;
        PyObject *text = code ? PyObject_Str(code) : NULL;
        snprintf(message, sizeof message, "%s: the Doee called sys.exit(%s)", when,
                 utf8_or(text, ""));
        Py_XDECREF(text);
        Py_XDECREF(code);
    } else {
        PyObject *text = value ? PyObject_Str(value) : NULL;
        const char *said = utf8_or(text, "");
        if (*said) snprintf(message, sizeof message, "%s: %s: %s", when, name, said);
        else snprintf(message, sizeof message, "%s: %s", when, name);
        Py_XDECREF(text);
    }
    PyErr_Clear();
    PyObject *traceback = PyImport_ImportModule("traceback");
    PyObject *lines = traceback ? PyObject_CallMethod(traceback, "format_exception", "OOO",
                                                      type ? type : Py_None,
                                                      value ? value : Py_None,
                                                      trace ? trace : Py_None)
                                : NULL;
    PyObject *separator = PyUnicode_FromString("");
    PyObject *joined = lines && separator ? PyUnicode_Join(separator, lines) : NULL;
    if (joined) isms_log(ctx, ISMS_LOG_ERROR, utf8_or(joined, "(a traceback that is not UTF-8)"));
    Py_XDECREF(joined);
    Py_XDECREF(separator);
    Py_XDECREF(lines);
    Py_XDECREF(traceback);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(trace);
    PyErr_Clear();
    isms_error(ctx, message);
    return ISMS_FAILED;
}

/* Calls handler.<name>(ctx) if the handler defines it. */
static int call_optional(isms_ctx *ctx, const char *name, const char *when) {
    if (!PyObject_HasAttrString(handler, name)) return ISMS_OK;
    PyObject *result = PyObject_CallMethod(handler, name, "O", (PyObject *)context);
    if (!result) return fail(ctx, when);
    Py_DECREF(result);
    return ISMS_OK;
}

static int start(isms_ctx *ctx) {
    Dl_info self;
    if (!dladdr((void *)start, &self) || !self.dli_fname) {
        isms_error(ctx, "the Python runtime cannot find its own file");
        return ISMS_FAILED;
    }
    dlopen(ISMS_LIBPYTHON, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
    if (PyImport_AppendInittab("isms", init_isms_module) < 0) {
        isms_error(ctx, "cannot register the isms module");
        return ISMS_FAILED;
    }
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.install_signal_handlers = 0;
    config.site_import = 0;
    config.write_bytecode = 0;
    config.buffered_stdio = 0;
    PyStatus status = PyConfig_SetBytesString(&config, &config.home, "/usr");
    if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
        char message[512];
        snprintf(message, sizeof message, "cannot start Python %d.%d: %s", PY_MAJOR_VERSION,
                 PY_MINOR_VERSION, status.err_msg ? status.err_msg : "unknown error");
        isms_error(ctx, message);
        return ISMS_FAILED;
    }
    json_module = PyImport_ImportModule("json");
    PyObject *isms = PyImport_ImportModule("isms");
    PyObject *globals = PyDict_New();
    PyObject *ran = globals ? PyRun_String(BOOT, Py_file_input, globals, globals) : NULL;
    PyObject *boot = globals ? PyDict_GetItemString(globals, "_boot") : NULL;
    PyObject *booted = boot ? PyObject_CallFunction(boot, "s", self.dli_fname) : NULL;
    int ok = json_module && isms && ran && booted;
    Py_XDECREF(booted);
    Py_XDECREF(ran);
    Py_XDECREF(globals);
    Py_XDECREF(isms);
    if (!ok) return fail(ctx, "cannot start the Python runtime");
    context = PyObject_New(Context, &ContextType);
    if (!context) return fail(ctx, "cannot start the Python runtime");
    context->dict = NULL;
    context->ctx = NULL;
    handler = PyImport_ImportModule("handler");
    if (!handler) return fail(ctx, "cannot load handler.py");
    if (!PyObject_HasAttrString(handler, "execute")) {
        Py_CLEAR(handler);
        isms_error(ctx, "handler.py defines no execute(ctx, data)");
        return ISMS_FAILED;
    }
    return ISMS_OK;
}

static int initialize(isms_ctx *ctx) {
    int rc = start(ctx);
    if (rc == ISMS_OK) {
        context->ctx = ctx;
        rc = call_optional(ctx, "initialize", "initialize failed");
        context->ctx = NULL;
    }
    /* Later calls may come from another thread: they take the GIL anew. */
    if (Py_IsInitialized()) PyEval_SaveThread();
    return rc;
}

static int execute(isms_ctx *ctx, const uint8_t *input, size_t len) {
    if (!handler) {
        isms_error(ctx, "the Python Doee did not load");
        return ISMS_FAILED;
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    context->ctx = ctx;
    int rc = ISMS_OK;
    PyObject *data = PyBytes_FromStringAndSize((const char *)input, (Py_ssize_t)len);
    PyObject *result =
        data ? PyObject_CallMethod(handler, "execute", "OO", (PyObject *)context, data) : NULL;
    Py_XDECREF(data);
    if (!result) {
        rc = fail(ctx, "execute failed");
    } else if (PyUnicode_Check(result)) {
        Py_ssize_t size;
        const char *text = PyUnicode_AsUTF8AndSize(result, &size);
        if (text) isms_output(ctx, text, (size_t)size);
        else rc = fail(ctx, "execute returned a str that is not UTF-8");
    } else if (result != Py_None) {
        Py_buffer view;
        if (PyObject_GetBuffer(result, &view, PyBUF_SIMPLE) == 0) {
            isms_output(ctx, view.buf, (size_t)view.len);
            PyBuffer_Release(&view);
        } else {
            PyErr_Clear();
            char message[256];
            snprintf(message, sizeof message, "execute returned a %s: return bytes or str",
                     Py_TYPE(result)->tp_name);
            isms_error(ctx, message);
            rc = ISMS_FAILED;
        }
    }
    Py_XDECREF(result);
    context->ctx = NULL;
    PyGILState_Release(gil);
    return rc;
}

static void terminate(isms_ctx *ctx) {
    if (!handler) return;
    PyGILState_STATE gil = PyGILState_Ensure();
    context->ctx = ctx;
    call_optional(ctx, "terminate", "terminate failed");
    context->ctx = NULL;
    PyGILState_Release(gil);
}

ISMS_DOEE_C(initialize, execute, terminate)
