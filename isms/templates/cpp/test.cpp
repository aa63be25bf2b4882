// Runs %NAME% against the fake host of <isms/testing.h>: `make test`.
#include <isms/testing.h>

int main() {
    isms_test *host = isms_test_new();
    isms_test_param(host, "greeting", "Hello");
    ISMS_CHECK(isms_test_initialize(host) == ISMS_OK);

    ISMS_CHECK(isms_test_execute(host, "world", 5) == ISMS_OK);
    ISMS_CHECK_STR(isms_test_output(host, nullptr), "Hello, world!");

    ISMS_CHECK(isms_test_execute(host, " ISMS\n", 6) == ISMS_OK);
    ISMS_CHECK_STR(isms_test_output(host, nullptr), "Hello, ISMS!");

    ISMS_CHECK(isms_test_execute(host, "", 0) == ISMS_OK);
    ISMS_CHECK_STR(isms_test_output(host, nullptr), "Hello, world!");

    isms_test_terminate(host);
    isms_test_free(host);
    return isms_test_report();
}
