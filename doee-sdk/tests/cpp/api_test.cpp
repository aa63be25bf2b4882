// Runs doee-sdk/tests/cpp/api.cpp against the fake host of <isms/testing.h>.
#include <isms/testing.h>

#include <string>

static const char *rows(void *, const char *, const char *) { return "[]"; }

static const char *inserted(void *, const char *op, const char *collection, const char *json) {
    static std::string answer;
    answer = std::string("{\"op\":\"") + op + "\",\"in\":\"" + collection + "\",\"doc\":" + json + "}";
    return answer.c_str();
}

static size_t published_len;

static int publish(void *, const char *, const uint8_t *, size_t len) {
    published_len = len;
    return 0;
}

int main() {
    isms_test *t = isms_test_new();
    isms_test_param(t, "greeting", "Hey");
    ISMS_CHECK(isms_test_initialize(t) == ISMS_OK);
    const char *level = nullptr;
    ISMS_CHECK_STR(isms_test_log(t, 0, &level), "initialized");
    ISMS_CHECK_STR(level, "info");

    ISMS_CHECK(isms_test_execute(t, "abc", 3) == ISMS_OK);
    ISMS_CHECK(isms_test_status(t) == 202);
    ISMS_CHECK_STR(isms_test_header(t, "x-lang"), "cpp");
    ISMS_CHECK_STR(isms_test_log(t, 0, &level), "a warning line");
    ISMS_CHECK_STR(level, "warn");
    ISMS_CHECK_STR(isms_test_output(t, nullptr),
                   "greeting=Hey\nmethod=POST\nmissing=(null)\ncalls=1\ninput=abc");

    // An empty input is an empty view, not a null one.
    ISMS_CHECK(isms_test_execute(t, nullptr, 0) == ISMS_OK);
    ISMS_CHECK_STR(isms_test_output(t, nullptr),
                   "greeting=Hey\nmethod=POST\nmissing=(null)\ncalls=2\ninput=");

    ISMS_CHECK(isms_test_execute(t, "fail", 4) == ISMS_FAILED);
    ISMS_CHECK_STR(isms_test_error(t), "asked to fail");
    ISMS_CHECK(isms_test_execute(t, "throw", 5) == ISMS_PANICKED);
    ISMS_CHECK_STR(isms_test_error(t), "the Doee threw an exception: index 7");
    ISMS_CHECK(isms_test_execute(t, "throw-int", 9) == ISMS_PANICKED);
    ISMS_CHECK_STR(isms_test_error(t), "the Doee threw an exception that is not a std::exception");

    ISMS_CHECK(isms_test_execute(t, "sql", 3) == ISMS_OK);
    ISMS_CHECK_STR(isms_test_output(t, nullptr), "sql=refused: no SQL handler: use isms_test_on_sql\n");
    isms_test_on_sql(t, rows, nullptr);
    ISMS_CHECK(isms_test_execute(t, "sql", 3) == ISMS_OK);
    ISMS_CHECK_STR(isms_test_output(t, nullptr), "sql=[]\n");

    // A refused call that is not caught fails the invocation with the reason.
    ISMS_CHECK(isms_test_execute(t, "doc", 3) == ISMS_FAILED);
    ISMS_CHECK_STR(isms_test_error(t), "no document handler: use isms_test_on_doc");
    isms_test_on_doc(t, inserted, nullptr);
    ISMS_CHECK(isms_test_execute(t, "doc", 3) == ISMS_OK);
    ISMS_CHECK_STR(isms_test_output(t, nullptr), "doc={\"op\":\"insert\",\"in\":\"things\",\"doc\":{\"a\":1}}\n");

    isms_test_on_publish(t, publish, nullptr);
    ISMS_CHECK(isms_test_execute(t, "publish", 7) == ISMS_OK);
    ISMS_CHECK(published_len == 3);

    isms_test_terminate(t);
    ISMS_CHECK_STR(isms_test_log(t, 0, &level), "terminating");
    ISMS_CHECK_STR(level, "debug");
    // After terminate the Doee is gone.
    ISMS_CHECK(isms_test_execute(t, "abc", 3) == ISMS_FAILED);
    ISMS_CHECK_STR(isms_test_error(t), "execute called before initialize");
    isms_test_free(t);

    t = isms_test_new();
    isms_test_param(t, "fail_initialize", "yes");
    ISMS_CHECK(isms_test_initialize(t) == ISMS_FAILED);
    ISMS_CHECK_STR(isms_test_error(t), "initialize was told to fail");
    isms_test_free(t);
    return isms_test_report();
}
