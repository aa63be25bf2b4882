// %NAME%: an ISMS Doee in C++.
//
// Test it here with `make test`; deploy it with
// `isms deploy . --project <project> --wait`.
#include <isms/doee.hpp>

#include <string>
#include <string_view>

class Greeter : public isms::Doee {
public:
    void initialize(isms::Context &ctx) override {
        // Parameters live only until this call returns: keep a copy.
        greeting_ = std::string(ctx.param("greeting").value_or("Hello"));
    }

    std::string execute(isms::Context &, std::string_view input) override {
        std::string_view name = trim(input);
        if (name.empty()) {
            name = "world";
        }
        return greeting_ + ", " + std::string(name) + "!";
    }

private:
    static std::string_view trim(std::string_view text) {
        constexpr std::string_view space = " \t\r\n";
        auto first = text.find_first_not_of(space);
        if (first == std::string_view::npos) {
            return {};
        }
        return text.substr(first, text.find_last_not_of(space) - first + 1);
    }

    std::string greeting_;
};

ISMS_DOEE(Greeter)
