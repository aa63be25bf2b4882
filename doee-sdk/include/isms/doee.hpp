// ISMS Doee SDK for C++ (C++17): write a Doee as a class.
//
//     #include <isms/doee.hpp>
//
//     class Hello : public isms::Doee {
//     public:
//         std::string execute(isms::Context &ctx, std::string_view input) override {
//             return "Hello, " + std::string(input) + "!";
//         }
//     };
//     ISMS_DOEE(Hello)
//
// The Executor creates the object with its default constructor and calls
// initialize() once per Worker, execute() once per invocation and
// terminate() before the Worker stops; one Worker runs one invocation at a
// time. What execute() returns is appended to anything written with
// ctx.output(), and becomes the HTTP response body or the reply message.
//
// Errors: throw isms::Error("message") to fail the call with that message.
// Any other exception is treated like a Rust panic: the invocation fails
// with its what(), and the Executor replaces the Worker, since the object's
// state can no longer be trusted. No exception crosses into the platform.
//
// Underneath is the C ABI of <isms/doee.h>, shared by Rust, C and C++.
#ifndef ISMS_DOEE_HPP
#define ISMS_DOEE_HPP

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "<isms/doee.hpp> needs C++17 or later (-std=c++17)"
#endif

#include <isms/doee.h>

#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace isms {

// The level of a log line.
enum class Level : int {
    Error = ISMS_LOG_ERROR,
    Warn = ISMS_LOG_WARN,
    Info = ISMS_LOG_INFO,
    Debug = ISMS_LOG_DEBUG,
};

// The error a Doee throws to fail a call; its message reaches the caller.
// Context's database and publishing calls throw it when the platform
// refuses them.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class Context;

// The project's document store, from Context::docs(). Each call takes and
// returns JSON; filters use MongoDB's query syntax.
class Docs {
public:
    // Inserts a document (a JSON object); returns {"id": ...}.
    std::string insert(std::string_view collection, std::string_view document_json);
    // {"filter", "projection", "sort", "limit"} -> the matching documents.
    std::string find(std::string_view collection, std::string_view query_json);
    // {"filter", "update": {"$set": ...}}.
    std::string update(std::string_view collection, std::string_view update_json);
    // {"filter"}.
    std::string remove(std::string_view collection, std::string_view filter_json);

private:
    friend class Context;
    explicit Docs(Context &ctx) : ctx_(ctx) {}
    std::string call(const char *op, std::string_view collection, std::string_view json);
    Context &ctx_;
};

// What a Doee can ask of the platform during a call.
class Context {
public:
    explicit Context(isms_ctx *raw) : raw_(raw) {}

    // A parameter from the manifest's [params]. The view stays valid until
    // the current call returns: copy what you keep.
    std::optional<std::string_view> param(std::string_view name) const {
        return view(isms_param(raw_, std::string(name).c_str()));
    }

    // A fact about the current invocation: "trigger" ("http" or "mqtt"),
    // "topic", "method", "path", "query", "invocation_id", "project",
    // "doee", "version". Valid until the current call returns.
    std::optional<std::string_view> meta(std::string_view key) const {
        return view(isms_meta(raw_, std::string(key).c_str()));
    }

    // Appends bytes to the output, ahead of what execute() returns.
    void output(std::string_view data) { isms_output(raw_, data.data(), data.size()); }

    // Sets the HTTP status of the response (200 by default).
    void set_status(std::uint16_t status) { isms_set_status(raw_, status); }

    // Sets an HTTP response header.
    void set_header(std::string_view name, std::string_view value) {
        isms_set_header(raw_, std::string(name).c_str(), std::string(value).c_str());
    }

    // Writes a log line, shown in the project's logs.
    void log(Level level, std::string_view message) {
        isms_log(raw_, static_cast<int>(level), std::string(message).c_str());
    }

    // Runs SQL on the project's database; params_json is a JSON array of
    // positional parameters. Returns the rows as a JSON array of objects;
    // throws isms::Error if the platform refuses.
    std::string sql(std::string_view query, std::string_view params_json = "[]") {
        char *out = nullptr;
        int code = isms_sql(raw_, std::string(query).c_str(), std::string(params_json).c_str(),
                            &out);
        return take(code, out);
    }

    // The project's document store.
    Docs docs() { return Docs(*this); }

    // Publishes an MQTT message on a topic of the project's namespace;
    // throws isms::Error if the platform refuses.
    void publish(std::string_view topic, std::string_view payload) {
        if (isms_publish(raw_, std::string(topic).c_str(), payload.data(), payload.size()) !=
            ISMS_OK) {
            throw Error(isms_last_error(raw_));
        }
    }

    // A secret of the project, read now; throws isms::Error if there is no
    // such secret. Keep it out of logs and output.
    std::string secret(std::string_view name) {
        if (!isms_has_secrets(raw_)) {
            throw Error("this platform has no secrets");
        }
        char *out = nullptr;
        int code = isms_secret(raw_, std::string(name).c_str(), &out);
        return take(code, out);
    }

    // Runs another Doee of the project and waits for its output; throws
    // isms::Error with the callee's failure (naming its invocation).
    std::string invoke(std::string_view doee, std::string_view input) {
        if (!isms_can_invoke(raw_)) {
            throw Error("this platform cannot invoke Doees");
        }
        uint8_t *out = nullptr;
        size_t len = 0;
        if (isms_invoke(raw_, std::string(doee).c_str(), input.data(), input.size(), &out, &len) !=
            ISMS_OK) {
            throw Error(isms_last_error(raw_));
        }
        std::string output(reinterpret_cast<const char *>(out), len);
        isms_free(raw_, out);
        return output;
    }

    // Sends a piece of the output now (see isms_write); throws isms::Error
    // once the client went away.
    void write(std::string_view chunk) {
        if (isms_write(raw_, chunk.data(), chunk.size()) != ISMS_OK) {
            throw Error(isms_last_error(raw_));
        }
    }

    // The C context, for the functions of <isms/doee.h>.
    isms_ctx *raw() const { return raw_; }

private:
    friend class Docs;

    static std::optional<std::string_view> view(const char *p) {
        if (p == nullptr) {
            return std::nullopt;
        }
        return std::string_view(p);
    }

    // Copies a host-owned result and releases it, or throws the reason.
    std::string take(int code, char *out) {
        if (code != ISMS_OK || out == nullptr) {
            throw Error(isms_last_error(raw_));
        }
        std::string text(out);
        isms_free(raw_, out);
        return text;
    }

    isms_ctx *raw_;
};

inline std::string Docs::insert(std::string_view collection, std::string_view document_json) {
    return call("insert", collection, document_json);
}
inline std::string Docs::find(std::string_view collection, std::string_view query_json) {
    return call("find", collection, query_json);
}
inline std::string Docs::update(std::string_view collection, std::string_view update_json) {
    return call("update", collection, update_json);
}
inline std::string Docs::remove(std::string_view collection, std::string_view filter_json) {
    return call("delete", collection, filter_json);
}
inline std::string Docs::call(const char *op, std::string_view collection,
                              std::string_view json) {
    char *out = nullptr;
    int code = isms_doc(ctx_.raw_, op, std::string(collection).c_str(),
                        std::string(json).c_str(), &out);
    return ctx_.take(code, out);
}

// A function deployed on ISMS. Derive from it, override execute() (and
// initialize()/terminate() if needed), and export the class with
// ISMS_DOEE(ClassName). The class needs a default constructor.
class Doee {
public:
    virtual ~Doee() = default;

    // Reads parameters and opens resources. Throwing stops the Worker and
    // fails the invocation that started it.
    virtual void initialize(Context &) {}

    // Handles one invocation: input is the HTTP body or the MQTT payload;
    // the returned bytes follow anything written with ctx.output().
    virtual std::string execute(Context &ctx, std::string_view input) = 0;

    // Releases resources before the Worker stops.
    virtual void terminate(Context &) {}
};

namespace detail {

// Runs f, turning an exception into the ABI's return code and message.
template <typename F>
int guarded(isms_ctx *ctx, F &&f) noexcept {
    try {
        f();
        return ISMS_OK;
    } catch (const Error &e) {
        isms_error(ctx, e.what());
        return ISMS_FAILED;
    } catch (const std::exception &e) {
        isms_error(ctx, (std::string("the Doee threw an exception: ") + e.what()).c_str());
        return ISMS_PANICKED;
    } catch (...) {
        isms_error(ctx, "the Doee threw an exception that is not a std::exception");
        return ISMS_PANICKED;
    }
}

// The one instance of a shared object's Doee; used by ISMS_DOEE.
template <typename D>
class Slot {
public:
    int initialize(isms_ctx *raw) noexcept {
        return guarded(raw, [&] {
            Context ctx(raw);
            auto doee = std::make_unique<D>();
            doee->initialize(ctx);
            doee_ = std::move(doee);
        });
    }

    int execute(isms_ctx *raw, const std::uint8_t *input, std::size_t len) noexcept {
        if (!doee_) {
            isms_error(raw, "execute called before initialize");
            return ISMS_FAILED;
        }
        return guarded(raw, [&] {
            Context ctx(raw);
            std::string_view in;
            if (len > 0) {
                in = std::string_view(reinterpret_cast<const char *>(input), len);
            }
            std::string out = doee_->execute(ctx, in);
            ctx.output(out);
        });
    }

    void terminate(isms_ctx *raw) noexcept {
        if (doee_) {
            guarded(raw, [&] {
                Context ctx(raw);
                doee_->terminate(ctx);
            });
            doee_.reset();
        }
    }

private:
    std::unique_ptr<D> doee_;
};

}  // namespace detail
}  // namespace isms

// Exports a class derived from isms::Doee as the Doee of this shared
// object. Use it once, at file scope.
#define ISMS_DOEE(Class)                                                                   \
    static ::isms::detail::Slot<Class> isms_doee_slot_;                                    \
    extern "C" ISMS_EXPORT std::uint32_t isms_doee_abi_version(void);                      \
    extern "C" ISMS_EXPORT int isms_doee_initialize(isms_ctx *ctx);                        \
    extern "C" ISMS_EXPORT int isms_doee_execute(isms_ctx *ctx, const std::uint8_t *input, \
                                                 std::size_t len);                         \
    extern "C" ISMS_EXPORT void isms_doee_terminate(isms_ctx *ctx);                        \
    extern "C" ISMS_EXPORT std::uint32_t isms_doee_abi_version(void) {                     \
        return ISMS_ABI_VERSION;                                                           \
    }                                                                                      \
    extern "C" ISMS_EXPORT int isms_doee_initialize(isms_ctx *ctx) {                       \
        return isms_doee_slot_.initialize(ctx);                                            \
    }                                                                                      \
    extern "C" ISMS_EXPORT int isms_doee_execute(isms_ctx *ctx, const std::uint8_t *input, \
                                                 std::size_t len) {                        \
        return isms_doee_slot_.execute(ctx, input, len);                                   \
    }                                                                                      \
    extern "C" ISMS_EXPORT void isms_doee_terminate(isms_ctx *ctx) {                       \
        isms_doee_slot_.terminate(ctx);                                                    \
    }

#endif  // ISMS_DOEE_HPP
