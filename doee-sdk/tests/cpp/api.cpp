// A C++ Doee that exercises <isms/doee.hpp>; doee-sdk/tests/cpp/api_test.cpp
// runs it against the fake host.
#include <isms/doee.hpp>

#include <string>
#include <vector>

class Api : public isms::Doee {
public:
    void initialize(isms::Context &ctx) override {
        if (ctx.param("fail_initialize") == std::string_view("yes")) {
            throw isms::Error("initialize was told to fail");
        }
        greeting_ = std::string(ctx.param("greeting").value_or("Hello"));
        ctx.log(isms::Level::Info, "initialized");
    }

    std::string execute(isms::Context &ctx, std::string_view input) override {
        calls_++;
        if (input == "fail") {
            throw isms::Error("asked to fail");
        }
        if (input == "throw") {
            throw std::out_of_range("index 7");
        }
        if (input == "throw-int") {
            throw 7;
        }
        if (input == "sql") {
            try {
                return "sql=" + ctx.sql("SELECT 1 AS one") + "\n";
            } catch (const isms::Error &e) {
                return std::string("sql=refused: ") + e.what() + "\n";
            }
        }
        if (input == "doc") {
            return "doc=" + ctx.docs().insert("things", "{\"a\":1}") + "\n";
        }
        if (input == "publish") {
            ctx.publish("cpp/out", std::string_view("x\0y", 3));
            return "published\n";
        }
        ctx.set_status(202);
        ctx.set_header("x-lang", "cpp");
        ctx.log(isms::Level::Warn, "a warning line");
        ctx.output("greeting=" + greeting_ + "\n");
        std::string out;
        out += "method=" + std::string(ctx.meta("method").value_or("(null)")) + "\n";
        out += "missing=" + std::string(ctx.param("nope").value_or("(null)")) + "\n";
        out += "calls=" + std::to_string(calls_) + "\n";
        out += "input=" + std::string(input);
        return out;
    }

    void terminate(isms::Context &ctx) override { ctx.log(isms::Level::Debug, "terminating"); }

private:
    std::string greeting_;
    unsigned long calls_ = 0;
};

ISMS_DOEE(Api)
