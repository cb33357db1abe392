// A small bounded interleaving explorer (an explicit-state model checker) for the protocol models
// in test_model.cpp. It knows nothing about rings or futexes: a model is a set of threads, each a
// state machine whose every step is one atomic action on a shared state, and the explorer runs a
// depth-first search over all schedules, remembering every state it has seen so each is expanded
// once. What it checks is the model's business: a violation string from a step (a bad action), an
// invariant (a bad state) or a terminal check (a state where no thread can move: finished, or
// stuck). On a violation it returns the schedule that led there, replayed with the model's notes,
// so a failure reads as a counterexample trace.
//
// A model provides:
//   using State = ...;   trivially copyable, no padding: states are hashed and compared as bytes
//   State initial() const;
//   int threads() const;
//   int choices(const State &, int thread) const;  // enabled alternatives for that thread, 0..
//   const char *step(State &, int thread, int choice, std::string *note) const;  // nullptr: fine
//   const char *invariant(const State &) const;
//   const char *terminal(const State &) const;
//   State canonical(const State &) const;  // a representative of the states equal up to symmetry
//   std::string show(const State &) const;  // one line, for the end of a trace
// A step appends what it did to *note when note is not null (only while replaying a trace).
// canonical() lets interchangeable threads (two consumers running the same code) share one entry
// in the set of seen states: their futures are the same up to renaming, so one is enough.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

namespace model {

struct Result {
    uint64_t states = 0;       // distinct states reached
    uint64_t transitions = 0;  // steps taken (each distinct state is expanded once)
    uint64_t terminals = 0;    // distinct states where no thread could move
    size_t maxDepth = 0;
    bool complete = true;   // false when the state limit cut the search short
    std::string violation;  // empty when none was found
    std::vector<std::string> trace;
    double seconds = 0;

    bool found() const { return !violation.empty(); }

    std::string summary() const {
        return std::to_string(states) + " states, " + std::to_string(transitions) + " transitions, " +
               std::to_string(terminals) + " terminal, depth " + std::to_string(maxDepth) + ", " +
               std::to_string(static_cast<int>(seconds * 1000)) + " ms" + (complete ? "" : " (CUT SHORT)");
    }

    // The counterexample as numbered lines (the trace may be long: keep the last `last` steps).
    std::string counterexample(size_t last = 40) const {
        std::string out = "violation: " + violation + "\n";
        size_t from = trace.size() > last ? trace.size() - last : 0;
        if (from) out += "  ... " + std::to_string(from) + " earlier steps\n";
        for (size_t i = from; i < trace.size(); ++i)
            out += "  " + std::to_string(i + 1) + ". " + trace[i] + "\n";
        return out;
    }
};

// Open addressing with linear probing over the raw bytes of fixed-size states: far denser and
// faster than std::unordered_set for the millions of small keys a model produces.
template <class State>
class StateSet {
    static_assert(std::is_trivially_copyable<State>::value, "states are compared as bytes");
    static_assert(std::has_unique_object_representations<State>::value, "padding would make equal states differ");

public:
    StateSet() { rehash(1u << 16); }

    // True when s was not in the set (and now is).
    bool insert(const State &s) {
        if (4 * (count_ + 1) > 3 * used_.size()) rehash(2 * used_.size());  // linear probing copes up to 3/4
        return place(s);
    }
    size_t size() const { return count_; }

private:
    static uint64_t hash(const State &s) {
        const auto *b = reinterpret_cast<const unsigned char *>(&s);
        uint64_t h = 0x9e3779b97f4a7c15ULL;
        size_t i = 0;
        for (; i + 8 <= sizeof(State); i += 8) {
            uint64_t w;
            std::memcpy(&w, b + i, 8);
            h = (h ^ w) * 0xff51afd7ed558ccdULL;
            h ^= h >> 32;
        }
        for (; i < sizeof(State); ++i)
            h = (h ^ b[i]) * 0x100000001b3ULL;
        h ^= h >> 29;
        h *= 0xc4ceb9fe1a85ec53ULL;
        return h ^ (h >> 32);
    }
    bool place(const State &s) {
        size_t mask = used_.size() - 1;
        for (size_t i = hash(s) & mask;; i = (i + 1) & mask) {
            if (!used_[i]) {
                used_[i] = 1;
                slots_[i] = s;
                ++count_;
                return true;
            }
            if (std::memcmp(&slots_[i], &s, sizeof(State)) == 0) return false;
        }
    }
    void rehash(size_t size) {
        std::vector<State> oldSlots(size);
        std::vector<unsigned char> oldUsed(size, 0);
        oldSlots.swap(slots_);
        oldUsed.swap(used_);
        count_ = 0;
        for (size_t i = 0; i < oldUsed.size(); ++i)
            if (oldUsed[i]) place(oldSlots[i]);
    }

    std::vector<State> slots_;
    std::vector<unsigned char> used_;
    size_t count_ = 0;
};

// Explores every schedule of m from its initial state, up to stateLimit distinct states.
template <class Model>
Result explore(const Model &m, uint64_t stateLimit = 20'000'000) {
    using State = typename Model::State;
    constexpr int kMaxThreads = 8;
    struct Frame {
        State state;
        int thread = 0;  // the next (thread, choice) to try from this state
        int choice = 0;
        unsigned char choices[kMaxThreads];  // per thread, counted once: choices() may be costly
    };
    const auto start = std::chrono::steady_clock::now();
    Result r;
    StateSet<State> seen;
    std::vector<Frame> stack;

    // Replays the schedule on the stack (plus one last step) with notes, for the report.
    auto fail = [&](const char *why, int thread, int choice) {
        r.violation = why;
        State s = m.initial();
        auto replay = [&](int t, int c) {
            std::string note;
            m.step(s, t, c, &note);
            r.trace.push_back("T" + std::to_string(t) + " " + note);
        };
        // Each frame but the top remembers the choice that led to the next frame (one past it).
        for (size_t i = 0; i + 1 < stack.size(); ++i)
            replay(stack[i].thread, stack[i].choice - 1);
        if (thread >= 0) replay(thread, choice);
        r.trace.push_back("state: " + m.show(s));
    };
    // Records a newly reached state; false when it ends the search with a violation.
    auto arrive = [&](const State &s, int thread, int choice) {
        if (const char *why = m.invariant(s)) return fail(why, thread, choice), false;
        Frame f{s, 0, 0, {}};
        bool any = false;
        for (int t = 0; t < m.threads(); ++t) {
            f.choices[t] = static_cast<unsigned char>(m.choices(s, t));
            any = any || f.choices[t] > 0;
        }
        if (!any) {
            ++r.terminals;
            if (const char *why = m.terminal(s)) return fail(why, thread, choice), false;
            return true;  // nothing to expand
        }
        stack.push_back(f);
        if (stack.size() > r.maxDepth) r.maxDepth = stack.size();
        return true;
    };

    if (m.threads() > kMaxThreads) {
        r.violation = "the explorer handles at most 8 threads";
        return r;
    }
    const State init = m.initial();
    seen.insert(m.canonical(init));
    bool ok = arrive(init, -1, 0);
    while (ok && !stack.empty()) {
        Frame &f = stack.back();
        if (f.thread >= m.threads()) {
            stack.pop_back();
            continue;
        }
        if (f.choice >= f.choices[f.thread]) {
            ++f.thread;
            f.choice = 0;
            continue;
        }
        const int t = f.thread, c = f.choice++;
        State next = f.state;
        ++r.transitions;
        if (const char *why = m.step(next, t, c, nullptr)) {
            fail(why, t, c);
            break;
        }
        if (!seen.insert(m.canonical(next))) continue;
        if (seen.size() >= stateLimit) {
            r.complete = false;
            break;
        }
        ok = arrive(next, t, c);
    }
    r.states = seen.size();
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return r;
}

}  // namespace model
