/* Runs tests/doees/c-api against the fake host of <isms/testing.h>. */
#include <isms/testing.h>

static const char *rows(void *user, const char *query, const char *params_json) {
    (void)user;
    (void)params_json;
    return strcmp(query, "SELECT 1 AS one") == 0 ? "[{\"one\":1}]" : NULL;
}

static const char *refuse_docs(void *user, const char *op, const char *collection,
                               const char *json) {
    (void)op;
    (void)collection;
    (void)json;
    isms_test_refuse((isms_test *)user, "no documents here");
    return NULL;
}

static int published;

static int publish(void *user, const char *topic, const uint8_t *data, size_t len) {
    (void)user;
    published = strcmp(topic, "c-api/out") == 0 && len == 2 && memcmp(data, "hi", 2) == 0;
    return 0;
}

int main(void) {
    isms_test *t = isms_test_new();
    const char *level = NULL;
    size_t len = 0;

    isms_test_param(t, "greeting", "Hi");
    isms_test_meta(t, "path", "/c-api");
    isms_test_meta(t, "project", "demo");
    ISMS_CHECK(isms_test_initialize(t) == ISMS_OK);

    ISMS_CHECK(isms_test_execute(t, "abc", 3) == ISMS_OK);
    ISMS_CHECK(isms_test_status(t) == 201);
    ISMS_CHECK_STR(isms_test_header(t, "x-lang"), "c");
    ISMS_CHECK_STR(isms_test_header(t, "x-greeting"), "Hi");
    ISMS_CHECK(isms_test_header(t, "x-absent") == NULL);
    ISMS_CHECK(isms_test_log_count(t) == 4);
    ISMS_CHECK_STR(isms_test_log(t, 0, &level), "an error line");
    ISMS_CHECK_STR(level, "error");
    ISMS_CHECK_STR(isms_test_log(t, 3, &level), "a debug line");
    ISMS_CHECK_STR(level, "debug");
    ISMS_CHECK(isms_test_log(t, 4, &level) == NULL);
    ISMS_CHECK_STR(isms_test_output(t, &len),
                   "greeting=Hi\nmissing=(null)\ntrigger=http\nmethod=POST\npath=/c-api\n"
                   "query=(null)\nproject=demo\ndoee=(null)\ninvocation_id=(null)\ncalls=1\n"
                   "input_len=3\ninput=abc");
    ISMS_CHECK(len == strlen(isms_test_output(t, NULL)));

    /* Binary input, NULs included, reaches the Doee whole. */
    ISMS_CHECK(isms_test_execute(t, "a\0b", 3) == ISMS_OK);
    isms_test_output(t, &len);
    ISMS_CHECK(len > 3 && memcmp(isms_test_output(t, NULL) + len - 3, "a\0b", 3) == 0);

    ISMS_CHECK(isms_test_execute(t, "fail", 4) == ISMS_FAILED);
    ISMS_CHECK_STR(isms_test_error(t), "asked to fail");

    /* Without a handler the platform's calls fail with a reason. */
    ISMS_CHECK(isms_test_execute(t, "sql", 3) == ISMS_OK);
    ISMS_CHECK_STR(isms_test_output(t, NULL), "sql=refused: no SQL handler: use isms_test_on_sql\n");
    isms_test_on_sql(t, rows, NULL);
    ISMS_CHECK(isms_test_execute(t, "sql", 3) == ISMS_OK);
    ISMS_CHECK_STR(isms_test_output(t, NULL), "sql=[{\"one\":1}]\n");
    isms_test_on_doc(t, refuse_docs, t);
    ISMS_CHECK(isms_test_execute(t, "doc", 3) == ISMS_OK);
    ISMS_CHECK_STR(isms_test_output(t, NULL), "doc=refused: no documents here\n");
    isms_test_on_publish(t, publish, NULL);
    ISMS_CHECK(isms_test_execute(t, "publish", 7) == ISMS_OK);
    ISMS_CHECK_STR(isms_test_output(t, NULL), "publish=(null)\n");
    ISMS_CHECK(published);

    isms_test_terminate(t);
    ISMS_CHECK(isms_test_log_count(t) == 1);
    isms_test_free(t);

    /* A failing initialize reports why. */
    t = isms_test_new();
    isms_test_param(t, "fail_initialize", "yes");
    ISMS_CHECK(isms_test_initialize(t) == ISMS_FAILED);
    ISMS_CHECK_STR(isms_test_error(t), "initialize was told to fail");
    isms_test_free(t);
    return isms_test_report();
}
