// Exhaustive model checking of the two lock-free protocols the library rests on: the MPMC/MPSC
// ring with crash recovery (src/ring.hpp, src/recovery.cpp) and the futex wait/wake handshake
// (src/wait.hpp, src/wait.cpp). Each is restated here as small state machines, independent of the
// library's code, and model/explorer.hpp tries every interleaving of their atomic steps.
//
// Every property is checked twice over: the protocol must pass, and mutants (the protocol with
// one safeguard removed) must be caught, so a checker that silently checks nothing cannot pass;
// each sound run must also have reached the paths it is about (events counted along the way).
// Where the library differs from the sound protocol, the test says so and the library-faithful
// variant is asserted to fail. Every run prints its state count, and every counterexample its
// schedule (WARN), so a failure reads as a trace.
//
// JOIN_SHM_STRESS_SCALE < 1 (sanitizer builds in CI) drops only the largest configurations
// (MPMC at capacities 2 and 3 with recovery); the small exhaustive ones always run.
#include "model/explorer.hpp"

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

namespace {

double stressScale() {
    const char *text = std::getenv("JOIN_SHM_STRESS_SCALE");
    if (!text || !*text) return 1.0;
    char *end = nullptr;
    double value = std::strtod(text, &end);
    return end != text && value > 0 ? value : 1.0;
}

// The largest capacity to explore for an MPMC configuration of hundreds of thousands of states:
// 3 at full scale, `reduced` below it (sanitizer builds; ThreadSanitizer makes each step ~10x
// slower). Capacity 1 (every slot reused at once) and the MPSC runs always run in full.
int mpmcCapacities(int reduced) { return stressScale() >= 1.0 ? 3 : reduced; }

// Runs the explorer and logs the outcome, so a run prints states per configuration.
template <class Model>
model::Result check(const Model &m, const std::string &name) {
    model::Result r = model::explore(m);
    WARN(name << ": " << r.summary());
    REQUIRE(r.complete);
    return r;
}

// Asserts that the model passes every check.
template <class Model>
void requireSound(const Model &m, const std::string &name) {
    model::Result r = check(m, name);
    INFO(r.counterexample());
    CHECK_FALSE(r.found());
}

// Asserts that the explorer finds a counterexample whose violation contains `expect`, and prints it.
template <class Model>
void requireCaught(const Model &m, const std::string &name, const std::string &expect) {
    model::Result r = check(m, name);
    REQUIRE(r.found());
    WARN(name << " counterexample:\n" << r.counterexample(30));
    CHECK(r.violation.find(expect) != std::string::npos);
}

// Appends to a counterexample note, only while a trace is replayed: exploring costs no strings.
struct Elem {
    uint8_t code;  // 0: nothing, else 1 + 2 * producer + index
};
class Note {
public:
    explicit Note(std::string *out) : out_(out) {}
    template <class... Parts>
    void operator()(const Parts &...parts) const {
        if (out_) (append(parts), ...);
    }

private:
    void append(const char *text) const { *out_ += text; }
    void append(const std::string &text) const { *out_ += text; }
    void append(int value) const { *out_ += std::to_string(value); }
    void append(Elem e) const {
        if (!e.code)
            *out_ += "-";
        else
            *out_ += std::string(1, static_cast<char>('a' + (e.code - 1) / 2)) + std::to_string((e.code - 1) % 2);
    }
    std::string *out_;
};

// =============================================================================================
// Model 1: the ring (src/ring.hpp, src/recovery.cpp).
//
// Slots hold seq = 4*pos + code (kFree 0, kFull 1, kAbandoned 2) and an element. Producers claim
// a position by CAS on head, copy the element in, and publish by CAS seq 4p -> 4p+1. MPMC
// consumers claim by CAS on tail, re-read the slot (dropAbandoned), then copy the element out and
// release by CAS seq 4p+1 -> 4(p+cap), or, for an abandoned slot, store 4(p+cap) and count a skip.
// The MPSC lone consumer does the same on its own position and stores tail after each slot.
//
// Recovery: a consumer finding seq == 4p with head > p and p's claimant dead CASes seq to 4p+2
// (abandoned); an MPMC producer finding seq == 4(p-cap)+1 with tail > p-cap and that position's
// consumer dead CASes it to 4p and counts a skip. The model knows exactly who is dead (the library
// learns it from the pid+position tag, and takes over nothing else). Since a dead claimant never
// acts again, the model's CAS finishes behave as the library's plain-store finishes there. The
// model can also let peers misjudge a live claimant as dead, which the library never does, to
// show what that would cost and that CAS finishes would be needed then.
//
// A thread that finds nothing to do (full, empty, claimant alive) blocks, and runs again only
// once a fresh attempt from the current state would not block again: the library polls or
// sleeps, and a retry on unchanged state can only decide the same. So a state where nobody can
// move is one the ring never leaves, and each such terminal state is checked for work left.
// =============================================================================================

namespace ring {

constexpr int kProducers = 2;
constexpr int kMaxThreads = 4;
constexpr int kMaxCapacity = 3;
constexpr int kMaxPerProducer = 2;
constexpr uint8_t kFree = 0, kFull = 1, kAbandoned = 2;

enum Pc : uint8_t {
    kStart,    // about to begin an attempt with its first load
    kBlocked,  // found nothing to do; moves again when a fresh attempt would not block
    kDone,     // producer: all elements pushed (or closed)
    // producer
    kPLoadSeq,   // read the slot of p (head was loaded)
    kPCasHead,   // claim p
    kPWrite,     // copy the element into the slot
    kPPublish,   // CAS seq 4p -> 4p+1
    kPLoadTail,  // recovery: did a consumer take position p-cap?
    kPReclaim,   // recovery: CAS seq 4(p-cap)+1 -> 4p
    // MPMC consumer
    kCLoadSeq,   // read the slot of p (tail was loaded)
    kCLoadHead,  // recovery: was p claimed by a producer?
    kCAbandon,   // recovery: CAS seq 4p -> 4p+2
    kCCasTail,   // claim p
    kCReread,    // dropAbandoned's re-read: abandoned or full?
    kCSkip,      // store 4(p+cap), count a skip
    kCRead,      // copy the element out
    kCRelease,   // CAS seq 4p+1 -> 4(p+cap); then the element is returned
    // MPSC lone consumer (its cursor is its own p)
    kLLoadHead,   // recovery, as kCLoadHead
    kLAbandon,    // recovery, as kCAbandon
    kLSkip,       // store 4(p+cap), count a skip
    kLRead,       // copy the element out
    kLRelease,    // store 4(p+cap); the element is returned
    kLStoreTail,  // p += 1, tail = p
};

// What became of each element, for the checks only.
enum Status : uint8_t { kUnpublished, kPublished, kDelivered, kCancelled, kLost, kWithdrawn };

enum Flag : uint8_t {
    kCrashed = 1,    // stopped for good
    kSuspected = 2,  // live, but peers judge it dead (for its current claim only)
};

struct Thread {
    uint8_t pc;
    uint8_t p;                 // the position being worked on
    uint8_t next;              // producer: index of its next element
    uint8_t elem;              // consumer: the element copied out
    uint8_t last[kProducers];  // consumer: 1 + index of the last element it returned, per producer
    uint8_t flags;
};

struct State {
    uint8_t head, tail, skipped;
    uint8_t crashes, suspicions, closes;  // nondeterministic events left to happen
    uint8_t seq[kMaxCapacity];
    uint8_t elem[kMaxCapacity];  // Elem codes: the last element copied into each slot
    uint8_t status[kProducers * kMaxPerProducer];
    Thread th[kMaxThreads];
};

struct Config {
    int capacity = 2;
    bool mpsc = false;  // one lone consumer instead of two MPMC consumers
    int perProducer = 2;
    int crashes = 0;     // threads that may die at any step (consumers: while holding a claim)
    int suspicions = 0;  // live claimants that peers may judge dead (stalled past the grace period)
    int closes = 0;      // producers that may close holding a claim: publish it abandoned

    // The element copy is a step of its own (a stalled producer may finish it late). Off: the copy
    // is part of the claim, as if no producer ever stalled mid-copy.
    bool separateWrite = true;
    // A producer also frees an abandoned slot whose consumer died before skipping it. Off, as in
    // the library today: recoverForProducer only takes over full slots.
    bool reclaimAbandoned = false;
    // The MPMC consumer frees an abandoned slot by CAS 4p+2 -> 4(p+cap) instead of a store (needed
    // once producers may reclaim abandoned slots from consumers misjudged as dead).
    bool skipByCas = false;

    // Mutants, each breaking one safeguard.
    bool publishByStore = false;       // publish with a plain store instead of a CAS
    bool releaseByStore = false;       // MPMC release with a plain store instead of a CAS
    bool keepOnFailedRelease = false;  // return the element although the release CAS failed
    bool abandonLive = false;          // take over a claim without asking whether its owner died
};

// Events counted over the exploration, so a test can insist its interesting paths were taken
// (a model that never reaches recovery would pass vacuously).
enum Event { kCasLost, kAbandon, kReclaim, kSkip, kPushCancelled, kCopyDropped, kEvents };

class Model {
public:
    using State = ring::State;

    explicit Model(Config c) : c_(c) {}

    uint64_t reached(Event e) const { return events_[e]; }

    int threads() const { return kProducers + (c_.mpsc ? 1 : 2); }

    State initial() const {
        State s{};
        for (int i = 0; i < c_.capacity; ++i)
            s.seq[i] = static_cast<uint8_t>(4 * i + kFree);
        s.crashes = static_cast<uint8_t>(c_.crashes);
        s.suspicions = static_cast<uint8_t>(c_.suspicions);
        s.closes = static_cast<uint8_t>(c_.closes);
        return s;
    }

    // The two MPMC consumers run the same code: which is which does not matter.
    State canonical(const State &s) const {
        State c = s;
        if (!c_.mpsc && std::memcmp(&c.th[2], &c.th[3], sizeof(Thread)) > 0) std::swap(c.th[2], c.th[3]);
        return c;
    }

    // A thread's alternatives: its next step (when it can move), dying, stalling, closing.
    enum Action { kStep, kCrash, kSuspect, kClose };
    int actions(const State &s, int t, Action out[4]) const {
        const Thread &th = s.th[t];
        int n = 0;
        if (th.flags & kCrashed || th.pc == kDone) return 0;
        if (th.pc != kBlocked || !wouldBlock(s, t)) out[n++] = kStep;
        // A consumer that dies holding nothing is just one consumer fewer. The lone consumer's
        // death is a restart (its successor resumes from tail): not modelled.
        if (s.crashes && (isProducer(t) || (!c_.mpsc && isConsumerHolding(th)))) out[n++] = kCrash;
        if (s.suspicions && holdsClaim(th, t) && !(th.flags & kSuspected) && (isProducer(t) || !c_.mpsc))
            out[n++] = kSuspect;
        if (s.closes && isProducer(t) && th.pc == kPPublish) out[n++] = kClose;
        return n;
    }
    int choices(const State &s, int t) const {
        Action a[4];
        return actions(s, t, a);
    }

    const char *step(State &s, int t, int choice, std::string *text) const {
        Action a[4];
        actions(s, t, a);
        Thread &th = s.th[t];
        Note note(text);
        switch (a[choice]) {
            case kCrash:
                th.flags |= kCrashed;
                --s.crashes;
                return note("dies"), nullptr;
            case kSuspect:
                th.flags |= kSuspected;
                --s.suspicions;
                return note("stalls past the grace period: peers judge it dead"), nullptr;
            case kClose: {
                // join_shm_close with a reserved slot publishes it abandoned (a CAS, as publish).
                --s.closes;
                const int i = slot(th.p);
                const bool ok = s.seq[i] == 4 * th.p + kFree;
                if (ok) s.seq[i] = static_cast<uint8_t>(4 * th.p + kAbandoned);
                s.status[elementId(t, th.next)] = kWithdrawn;
                th.pc = kDone;
                return note("producer closes holding p=", th.p, ok ? ": abandoned" : ": CAS fails"), nullptr;
            }
            case kStep:
                break;
        }
        return move(s, t, note);
    }

    const char *invariant(const State &s) const {
        if (s.tail > s.head) return "tail passed head";
        // The lone consumer stores tail after freeing a slot: its own position is the true tail.
        int tail = s.tail;
        if (c_.mpsc) {
            const Thread &l = s.th[kProducers];
            tail = l.p + (l.pc == kLStoreTail ? 1 : 0);
        }
        if (s.head > tail + c_.capacity) return "head ran more than a ring ahead of tail";
        for (int i = 0; i < c_.capacity; ++i) {
            const int pos = s.seq[i] / 4, code = s.seq[i] % 4;
            if (pos % c_.capacity != i) return "a slot's seq names a position of another slot";
            if (code == 3) return "a slot's seq holds an unknown state";
            if (code == kFull && (pos >= s.head || pos + c_.capacity < s.head))
                return "a slot is full for a position never claimed, or a lap stale";
        }
        return nullptr;
    }

    const char *terminal(const State &s) const {
        // What dead consumers still hold: slots that nobody needed since (a producer a lap later
        // would have reclaimed them). Such an element is lost, not stuck.
        int held = 0;
        bool heldElement[kProducers * kMaxPerProducer] = {};
        for (int t = kProducers; t < threads(); ++t) {
            const Thread &th = s.th[t];
            if (!isConsumerHolding(th)) continue;
            if (!(th.flags & kCrashed)) return "stall: a live consumer holds a slot";
            const int seq = s.seq[slot(th.p)];
            if (seq == 4 * th.p + kFull) heldElement[idOf(s.elem[slot(th.p)])] = true;
            if (seq == 4 * th.p + kFull || seq == 4 * th.p + kAbandoned) ++held;
        }
        int delivered = 0, lost = 0;
        for (int t = 0; t < kProducers; ++t) {
            const Thread &th = s.th[t];
            if (!(th.flags & kCrashed) && th.pc != kDone) return "stall: a live producer can never finish";
            for (int k = 0; k < c_.perProducer; ++k) {
                const int id = elementId(t, k);
                const uint8_t st = s.status[id];
                if (st == kPublished && !heldElement[id]) return "stall: a published element is never delivered";
                // A dead producer's elements: those before the one in flight, nothing after.
                if (k < th.next && st == kUnpublished) return "an element pushed is unaccounted for";
                if (k >= th.next && st != kUnpublished && st != kWithdrawn) return "an element never pushed was seen";
                delivered += st == kDelivered;
                lost += st == kLost || heldElement[id];
            }
        }
        if (s.tail != s.head) return "stall: claimed positions are never consumed or skipped";
        // Every claimed position was delivered, skipped (abandoned or reclaimed), or is held by a
        // dead consumer; each lost element has a consumer that died or stalled holding it.
        if (delivered + s.skipped + held != s.head) return "delivered + skipped + held != positions claimed";
        if (lost > c_.crashes + c_.suspicions) return "more elements lost than consumers died or stalled";
        return nullptr;
    }

    std::string show(const State &s) const {
        std::string out;
        Note note(&out);
        note("head=", s.head, " tail=", s.tail, " skipped=", s.skipped, " seq=[");
        for (int i = 0; i < c_.capacity; ++i) {
            note(i ? " " : "", s.seq[i] / 4, ".");
            out += "FRA?"[s.seq[i] % 4];
        }
        note("] elem=[");
        for (int i = 0; i < c_.capacity; ++i)
            note(i ? " " : "", Elem{s.elem[i]});
        note("] status=[");
        for (int e = 0; e < kProducers * c_.perProducer; ++e) {
            note(e ? " " : "", Elem{code(e)}, ":");
            out += "UPDCLW"[s.status[e]];
        }
        return out + "]";
    }

private:
    bool isProducer(int t) const { return t < kProducers; }
    int slot(int position) const { return position % c_.capacity; }
    int elementId(int producer, int k) const { return producer * c_.perProducer + k; }
    uint8_t code(int id) const { return static_cast<uint8_t>(1 + 2 * (id / c_.perProducer) + id % c_.perProducer); }
    int idOf(uint8_t elemCode) const { return elementId((elemCode - 1) / 2, (elemCode - 1) % 2); }

    static bool isProducerHolding(const Thread &th) { return th.pc == kPWrite || th.pc == kPPublish; }
    static bool isConsumerHolding(const Thread &th) {
        return th.pc == kCReread || th.pc == kCSkip || th.pc == kCRead || th.pc == kCRelease;
    }
    bool holdsClaim(const Thread &th, int t) const {
        return isProducer(t) ? isProducerHolding(th) : isConsumerHolding(th);
    }
    // What recovery learns from the claim tag and the pid behind it: is p's claimant gone?
    bool claimantGone(const State &s, int position, bool producerSide) const {
        const int from = producerSide ? 0 : kProducers, to = producerSide ? kProducers : threads();
        for (int t = from; t < to; ++t) {
            const Thread &th = s.th[t];
            if (th.p != position || !(producerSide ? isProducerHolding(th) : isConsumerHolding(th))) continue;
            return c_.abandonLive || (th.flags & (kCrashed | kSuspected));
        }
        return false;
    }

    // Would a fresh attempt by thread t, alone from state s, block again before writing anything?
    bool wouldBlock(const State &s, int t) const {
        State x = s;
        x.th[t].pc = kStart;
        Note quiet(nullptr);
        uint64_t saved[kEvents];
        std::memcpy(saved, events_, sizeof saved);  // a look ahead, not a step taken
        bool blocks = false;
        for (int i = 0; i < 8 && !blocks; ++i) {
            move(x, t, quiet);
            if (x.th[t].pc == kBlocked)
                blocks = true;
            else if (std::memcmp(&x, &s, offsetof(State, th)) != 0)
                break;  // it wrote: it acts
        }
        std::memcpy(events_, saved, sizeof saved);
        return blocks;
    }

    static const char *block(Thread &th, bool keepPosition, const Note &note, const char *why) {
        th.pc = kBlocked;
        if (!keepPosition) th.p = 0;  // dead local state: keeps equal states equal
        note(why, ": blocks");
        return nullptr;
    }

    const char *deliver(State &s, Thread &th, const Note &note) const {
        const uint8_t elemCode = th.elem;
        th.elem = 0;
        note(", returns ", Elem{elemCode});
        if (!elemCode) return "a consumer returned a slot nobody wrote";
        const int id = idOf(elemCode), producer = (elemCode - 1) / 2, k = (elemCode - 1) % 2;
        switch (s.status[id]) {
            case kPublished:
                break;
            case kDelivered:
                return "an element was delivered twice";
            case kLost:
                return "an element counted as lost (skipped) was delivered";
            case kCancelled:
                return "an element whose push failed (ECANCELED) was delivered";
            default:
                return "an element never published was delivered";
        }
        if (k + 1 <= th.last[producer]) return "a consumer saw a producer's elements out of order";
        th.last[producer] = static_cast<uint8_t>(k + 1);
        s.status[id] = kDelivered;
        return nullptr;
    }

    const char *move(State &s, int t, const Note &note) const {
        if (isProducer(t)) return producerStep(s, t, note);
        return c_.mpsc ? loneStep(s, t, note) : consumerStep(s, t, note);
    }

    const char *producerStep(State &s, int t, const Note &note) const {
        Thread &th = s.th[t];
        const int p = th.p, i = slot(p);
        switch (th.pc) {
            case kStart:
            case kBlocked:
                th.p = s.head;
                th.pc = kPLoadSeq;
                return note("producer loads head = ", th.p), nullptr;
            case kPLoadSeq: {
                const int seq = s.seq[i], previous = p - c_.capacity;
                note("producer reads seq of p=", p, ": ", seq);
                if (seq == 4 * p) return th.pc = kPCasHead, nullptr;
                if (seq > 4 * p) {  // another producer claimed p: reload head, which has moved on
                    if (s.head == p) return "live-lock: a producer reloads a head that cannot have moved";
                    return th.pc = kStart, nullptr;
                }
                // Only MPMC consumers can be taken over: a lone consumer resumes by itself.
                if (!c_.mpsc && previous >= 0 &&
                    (seq == 4 * previous + kFull || (c_.reclaimAbandoned && seq == 4 * previous + kAbandoned)))
                    return th.pc = kPLoadTail, nullptr;
                return block(th, false, note, " full");
            }
            case kPLoadTail:
                note("producer loads tail = ", s.tail);
                if (s.tail > p - c_.capacity && claimantGone(s, p - c_.capacity, false))
                    return th.pc = kPReclaim, nullptr;
                return block(th, false, note, ": full, its consumer lives");
            case kPReclaim: {
                const int previous = p - c_.capacity, seq = s.seq[i];
                const bool ok =
                    seq == 4 * previous + kFull || (c_.reclaimAbandoned && seq == 4 * previous + kAbandoned);
                note("producer reclaims the slot of p=", previous, ok ? "" : ": CAS fails");
                if (ok) {
                    count(kReclaim);
                    if (seq == 4 * previous + kFull && s.status[idOf(s.elem[i])] == kPublished)
                        s.status[idOf(s.elem[i])] = kLost;
                    s.seq[i] = static_cast<uint8_t>(4 * p + kFree);
                    ++s.skipped;
                }
                th.pc = kPLoadSeq;  // recoverForProducer returned true: retry this position
                return nullptr;
            }
            case kPCasHead:
                if (s.head != p) {  // compare_exchange_weak hands back the current head
                    count(kCasLost);
                    th.p = s.head;
                    th.pc = kPLoadSeq;
                    return note("producer CAS head ", p, " fails, head = ", th.p), nullptr;
                }
                s.head = static_cast<uint8_t>(p + 1);
                note("producer claims p=", p);
                if (c_.separateWrite) return th.pc = kPWrite, nullptr;
                note(", ");
                [[fallthrough]];
            case kPWrite:
                s.elem[i] = code(elementId(t, th.next));
                th.pc = kPPublish;
                return note("producer writes ", Elem{s.elem[i]}, " at p=", p), nullptr;
            case kPPublish: {
                const int id = elementId(t, th.next);
                bool ok = s.seq[i] == 4 * p + kFree;
                if (ok || c_.publishByStore) {
                    s.seq[i] = static_cast<uint8_t>(4 * p + kFull);
                    s.status[id] = kPublished;
                    ok = true;
                } else {
                    s.status[id] = kCancelled;  // publish returns -ECANCELED
                    count(kPushCancelled);
                }
                note("producer publishes p=", p, ok ? "" : ": CAS fails (ECANCELED)");
                if (!ok && !(th.flags & kSuspected)) return "a push failed although nobody judged its producer dead";
                th.flags &= static_cast<uint8_t>(~kSuspected);
                th.pc = ++th.next == c_.perProducer ? kDone : kStart;
                th.p = 0;
                return nullptr;
            }
            default:
                return "a producer in a consumer's state";
        }
    }

    const char *consumerStep(State &s, int t, const Note &note) const {
        Thread &th = s.th[t];
        const int p = th.p, i = slot(p);
        switch (th.pc) {
            case kStart:
            case kBlocked:
                th.p = s.tail;
                th.pc = kCLoadSeq;
                return note("consumer loads tail = ", th.p), nullptr;
            case kCLoadSeq: {
                const int seq = s.seq[i];
                note("consumer reads seq of p=", p, ": ", seq);
                if (seq == 4 * p + kFull || seq == 4 * p + kAbandoned) return th.pc = kCCasTail, nullptr;
                if (seq > 4 * p + kFull) {  // another consumer took p: reload tail, which has moved on
                    if (s.tail == p) return "live-lock: a consumer reloads a tail that cannot have moved";
                    return th.pc = kStart, nullptr;
                }
                if (seq == 4 * p) return th.pc = kCLoadHead, nullptr;
                return block(th, false, note, " empty");
            }
            case kCLoadHead:
                note("consumer loads head = ", s.head);
                if (s.head > p && claimantGone(s, p, true)) return th.pc = kCAbandon, nullptr;
                return block(th, false, note, ": empty, or its claimant lives");
            case kCAbandon: {
                const bool ok = s.seq[i] == 4 * p + kFree;
                if (ok) {
                    s.seq[i] = static_cast<uint8_t>(4 * p + kAbandoned);
                    count(kAbandon);
                }
                th.pc = kStart;  // recoverForConsumer returned true: reload tail and claim p
                return note("consumer marks p=", p, ok ? " abandoned" : " abandoned: CAS fails"), nullptr;
            }
            case kCCasTail:
                if (s.tail != p) {
                    count(kCasLost);
                    th.p = s.tail;
                    th.pc = kCLoadSeq;
                    return note("consumer CAS tail ", p, " fails, tail = ", th.p), nullptr;
                }
                s.tail = static_cast<uint8_t>(p + 1);
                th.pc = kCReread;
                return note("consumer claims p=", p), nullptr;
            case kCReread:
                th.pc = s.seq[i] == 4 * p + kAbandoned ? kCSkip : kCRead;
                return note("consumer re-reads seq of p=", p, ": ", s.seq[i]), nullptr;
            case kCSkip: {
                const bool ok = !c_.skipByCas || s.seq[i] == 4 * p + kAbandoned;
                if (ok) {
                    s.seq[i] = static_cast<uint8_t>(4 * (p + c_.capacity) + kFree);
                    ++s.skipped;
                    count(kSkip);
                }
                th.flags &= static_cast<uint8_t>(~kSuspected);
                th.pc = kStart;
                th.p = 0;
                return note("consumer skips abandoned p=", p, ok ? "" : ": CAS fails"), nullptr;
            }
            case kCRead:
                th.elem = s.elem[i];
                th.pc = kCRelease;
                return note("consumer copies ", Elem{th.elem}, " from p=", p), nullptr;
            case kCRelease: {
                bool ok = s.seq[i] == 4 * p + kFull;
                if (ok || c_.releaseByStore) {
                    s.seq[i] = static_cast<uint8_t>(4 * (p + c_.capacity) + kFree);
                    ok = true;
                }
                note("consumer releases p=", p, ok ? "" : ": CAS fails");
                th.flags &= static_cast<uint8_t>(~kSuspected);
                th.pc = kStart;
                th.p = 0;
                if (ok || c_.keepOnFailedRelease) return deliver(s, th, note);
                th.elem = 0;  // the slot was taken over: the copy may be torn, so it is dropped
                count(kCopyDropped);
                return note(", drops its copy"), nullptr;
            }
            default:
                return "a consumer in a producer's state";
        }
    }

    const char *loneStep(State &s, int t, const Note &note) const {
        Thread &th = s.th[t];
        const int p = th.p, i = slot(p);
        switch (th.pc) {
            case kStart:
            case kBlocked: {
                const int seq = s.seq[i];
                note("lone consumer reads seq of p=", p, ": ", seq);
                if (seq == 4 * p + kFull) return th.pc = kLRead, nullptr;
                if (seq == 4 * p + kAbandoned) return th.pc = kLSkip, nullptr;
                if (seq == 4 * p) return th.pc = kLLoadHead, nullptr;
                if (seq > 4 * p) return "a slot ran ahead of the lone consumer";
                return block(th, true, note, " empty");
            }
            case kLLoadHead:
                note("lone consumer loads head = ", s.head);
                if (s.head > p && claimantGone(s, p, true)) return th.pc = kLAbandon, nullptr;
                return block(th, true, note, ": empty, or its claimant lives");
            case kLAbandon: {
                const bool ok = s.seq[i] == 4 * p + kFree;
                if (ok) {
                    s.seq[i] = static_cast<uint8_t>(4 * p + kAbandoned);
                    count(kAbandon);
                }
                th.pc = kStart;
                return note("lone consumer marks p=", p, ok ? " abandoned" : " abandoned: CAS fails"), nullptr;
            }
            case kLSkip:
                s.seq[i] = static_cast<uint8_t>(4 * (p + c_.capacity) + kFree);
                ++s.skipped;
                count(kSkip);
                th.pc = kLStoreTail;
                return note("lone consumer skips abandoned p=", p), nullptr;
            case kLRead:
                th.elem = s.elem[i];
                th.pc = kLRelease;
                return note("lone consumer copies ", Elem{th.elem}, " from p=", p), nullptr;
            case kLRelease:
                s.seq[i] = static_cast<uint8_t>(4 * (p + c_.capacity) + kFree);
                th.pc = kLStoreTail;
                note("lone consumer releases p=", p);
                return deliver(s, th, note);
            case kLStoreTail:
                th.p = static_cast<uint8_t>(p + 1);
                s.tail = th.p;
                th.pc = kStart;
                return note("lone consumer stores tail = ", th.p), nullptr;
            default:
                return "the lone consumer in another role's state";
        }
    }

    void count(Event e) const { ++events_[e]; }

    Config c_;
    mutable uint64_t events_[kEvents] = {};
};

std::string describe(const Config &c) {
    std::string out = std::string(c.mpsc ? "MPSC" : "MPMC") + " cap " + std::to_string(c.capacity) + ", 2x" +
                      std::to_string(c.perProducer) + " elements";
    if (c.crashes) out += ", " + std::to_string(c.crashes) + " crash";
    if (c.suspicions)
        out += ", " + std::to_string(c.suspicions) + " misjudged" + (c.separateWrite ? "" : " (copy in claim)");
    if (c.closes) out += ", " + std::to_string(c.closes) + " close";
    return out;
}

Config config(bool mpsc, int capacity) {
    Config c;
    c.mpsc = mpsc;
    c.capacity = capacity;
    return c;
}

}  // namespace ring

TEST_CASE("ring: every element is delivered once and in order, in every interleaving without a crash", "[model]") {
    for (bool mpsc : {false, true})
        for (int cap = 1; cap <= 3; ++cap) {
            const ring::Config c = ring::config(mpsc, cap);
            const ring::Model m(c);
            requireSound(m, ring::describe(c));
            CHECK(m.reached(ring::kCasLost) > 0);  // claimants did contend
        }
}

TEST_CASE("ring: one producer or consumer dying at any step loses no live producer's element and stalls nothing",
          "[model]") {
    for (bool mpsc : {false, true})
        for (int cap = 1; cap <= (mpsc ? 3 : mpmcCapacities(2)); ++cap) {
            ring::Config c = ring::config(mpsc, cap);
            c.crashes = 1;
            const ring::Model m(c);
            requireSound(m, ring::describe(c));
            // Recovery did happen: dead producers' slots abandoned and skipped, dead consumers'
            // slots reclaimed.
            CHECK(m.reached(ring::kAbandon) > 0);
            CHECK(m.reached(ring::kSkip) > 0);
            CHECK((mpsc || m.reached(ring::kReclaim) > 0));
        }
}

TEST_CASE("ring: a consumer dying while it skips an abandoned slot stalls MPMC producers unless they reclaim it",
          "[model]") {
    // An abandoned slot needs no crash: a producer closing with a reserved slot makes one. A
    // consumer that dies between claiming it and freeing it leaves seq at 4p+2, and producers a
    // lap later wait forever: recoverForProducer takes over only full slots (4p+1).
    ring::Config c = ring::config(false, 1);
    c.crashes = 1;
    c.closes = 1;
    requireCaught(ring::Model(c), ring::describe(c) + ", library recovery", "stall");
    for (int cap = 1; cap <= mpmcCapacities(1); ++cap) {
        c = ring::config(false, cap);
        c.crashes = 1;
        c.closes = 1;
        c.reclaimAbandoned = true;
        const ring::Model m(c);
        requireSound(m, ring::describe(c) + ", abandoned slots reclaimed too");
        CHECK(m.reached(ring::kReclaim) > 0);
    }
    // With that fix, a consumer misjudged as dead while it skips an abandoned slot must free it by
    // CAS, as it releases a full one: else its late store lands on the slot's next lap.
    c = ring::config(false, 1);
    c.suspicions = 1;
    c.closes = 1;
    c.separateWrite = false;
    c.reclaimAbandoned = true;
    requireCaught(ring::Model(c), ring::describe(c) + ", abandoned slots reclaimed, skip by store", "");
    for (int cap = 1; cap <= mpmcCapacities(1); ++cap) {
        c.capacity = cap;
        c.skipByCas = true;
        requireSound(ring::Model(c), ring::describe(c) + ", abandoned slots reclaimed, skip by CAS");
    }
}

TEST_CASE("ring: claimants misjudged as dead cost at most their own element, counted, when both finishes are CASes",
          "[model]") {
    // The library takes over a claimant that stalls past the grace period. Exactly one of the
    // take-over CAS and the claimant's own CAS (publish or release) wins; a producer that loses
    // gets -ECANCELED and a consumer that loses must drop its copy. Here the producer's copy is
    // part of its claim step (see the next test for a copy that stalls).
    for (bool mpsc : {false, true})
        for (int cap = 1; cap <= (mpsc ? 3 : mpmcCapacities(1)); ++cap) {
            ring::Config c = ring::config(mpsc, cap);
            c.suspicions = 1;
            c.separateWrite = false;
            const ring::Model m(c);
            requireSound(m, ring::describe(c));
            // Both races were run: a producer's publish lost to a take-over (-ECANCELED), and
            // (MPMC) a consumer's release, whose copy was dropped.
            CHECK(m.reached(ring::kPushCancelled) > 0);
            CHECK((mpsc || m.reached(ring::kCopyDropped) > 0));
        }
}

TEST_CASE("ring: mutants that drop one safeguard of the ring protocol are caught", "[model]") {
    SECTION("taking over a claim without asking whether its owner died") {
        ring::Config c = ring::config(false, 2);
        c.abandonLive = true;
        requireCaught(ring::Model(c), ring::describe(c) + ", mutant: no liveness check", "");
    }
    SECTION("publishing with a plain store while a stalled producer may be taken over") {
        ring::Config c = ring::config(false, 1);
        c.suspicions = 1;
        c.separateWrite = false;
        c.publishByStore = true;
        requireCaught(ring::Model(c), ring::describe(c) + ", mutant: publish by store", "");
    }
    SECTION("publishing with a plain store, MPSC") {
        ring::Config c = ring::config(true, 1);
        c.suspicions = 1;
        c.separateWrite = false;
        c.publishByStore = true;
        requireCaught(ring::Model(c), ring::describe(c) + ", mutant: publish by store", "");
    }
    SECTION("releasing with a plain store while a stalled consumer may be taken over") {
        ring::Config c = ring::config(false, 1);
        c.suspicions = 1;
        c.separateWrite = false;
        c.releaseByStore = true;
        requireCaught(ring::Model(c), ring::describe(c) + ", mutant: release by store", "");
    }
    SECTION("returning the copy although the release CAS failed (what tryPopN does today)") {
        ring::Config c = ring::config(false, 1);
        c.suspicions = 1;
        c.separateWrite = false;
        c.keepOnFailedRelease = true;
        requireCaught(ring::Model(c), ring::describe(c) + ", mutant: keep copy on failed release", "delivered");
    }
}

TEST_CASE("ring: a producer taken over while it stalls mid-copy can overwrite the next lap's element", "[model]") {
    // Not a mutant: the protocol itself, with the copy as a step of its own. A producer judged
    // dead (past the grace period) may still be copying; its slot is skipped and reused, and the
    // late copy lands on the next element. Only a grace period longer than any stall inside a
    // copy prevents it, which is why the library's is generous.
    for (bool mpsc : {false, true}) {
        ring::Config c = ring::config(mpsc, 1);
        c.suspicions = 1;
        requireCaught(ring::Model(c), ring::describe(c) + ", copy as a step", "");
    }
}

// =============================================================================================
// Model 2: the futex wait/wake protocol (src/wait.hpp, src/wait.cpp), under x86-TSO.
//
// Each thread has a FIFO store buffer: its plain stores reach memory later, in order, and its
// loads see its own buffer first. Locked read-modify-writes and fences drain the thread's own
// buffer; membarrier(GLOBAL_EXPEDITED) drains every thread's. Only publishers make plain stores
// here (the ring change of a plain-store publish, as SPSC's), so a buffer is a count of ring
// stores on their way to memory. Per direction one 32-bit word: bit 0 "a waiter may sleep",
// bits 1..31 an epoch.
//   publisher: ring store (buffered); compiler barrier; load word; if bit 0: CAS word to the next
//              epoch with bit 0 clear (locked), FUTEX_WAKE all
//   waiter:    tryOp; loop { fetch_or(word, 1) (locked); membarrier; tryOp;
//              futex_wait(word, value after fetch_or) }
// futex_wait atomically compares the word and sleeps; FUTEX_WAKE makes every sleeper return.
// Publishers publish as many elements as the waiters take, so a terminal state with a waiter
// asleep is a lost wake-up: the ring holds its element and nobody will ever wake it.
// =============================================================================================

namespace futex {

constexpr int kMaxPublishers = 2, kMaxWaiters = 2;

enum Pc : uint8_t {
    kDone,
    // publisher
    kPStore,      // the ring change, into the store buffer
    kPLoadWord,   // notify(): load the word (from memory: the buffer holds no word stores)
    kPWake,       // wakeAll(): if bit 0, CAS to the next epoch with bit 0 clear (locked)
    kPFutexWake,  // FUTEX_WAKE: every sleeper returns
    // waiter
    kWTry,        // tryOp: take an element if memory shows one (a locked CAS on the ring)
    kWAnnounce,   // announceWaiter: fetch_or(word, 1), locked
    kWBarrier,    // announceWaiter: membarrier, drains every store buffer
    kWRecheck,    // tryOp again
    kWFutexWait,  // sleeps iff the word still holds the value the fetch_or left
    kWSleep,      // asleep until a FUTEX_WAKE
};

struct Publisher {
    uint8_t pc, left;
    uint8_t buffered;  // ring stores still in this thread's store buffer
    uint8_t sawBit;    // mutant (c): the word's bit 0 as loaded before the store
};
struct Waiter {
    uint8_t pc, left;
    uint8_t expected;  // the word's value after its fetch_or
};
struct State {
    uint8_t published[kMaxPublishers];  // ring stores of each publisher that reached memory
    uint8_t taken;                      // elements taken by waiters
    uint8_t word;
    Publisher pub[kMaxPublishers];
    Waiter w[kMaxWaiters];
};

struct Config {
    int publishers = 1, waiters = 1;
    int perPublisher = 2;  // elements each publishes; the waiters share them out evenly
    // Mutants.
    bool noMembarrier = false;           // (a) the waiter skips membarrier
    bool recheckBeforeAnnounce = false;  // (b) the waiter re-checks the ring before setting bit 0
    bool loadWordFirst = false;          // (c) the publisher loads the word before its ring store
    bool wakeWithoutEpoch = false;       // (d) the waker clears bit 0 without bumping the epoch
    // The fallback without membarrier: the publisher fences before loading the word (drains its
    // own buffer) and the waiter's barrier is a fence of its own (it buffers nothing).
    bool publisherFences = false;
};

class Model {
public:
    using State = futex::State;

    explicit Model(Config c) : c_(c) {}

    int threads() const { return c_.publishers + c_.waiters; }

    State initial() const {
        State s{};
        for (int j = 0; j < c_.publishers; ++j)
            s.pub[j] = {c_.loadWordFirst ? kPLoadWord : kPStore, static_cast<uint8_t>(c_.perPublisher), 0, 0};
        const int each = c_.publishers * c_.perPublisher / c_.waiters;
        for (int k = 0; k < c_.waiters; ++k)
            s.w[k] = {kWTry, static_cast<uint8_t>(each), 0};
        return s;
    }

    // Publishers (each with its ring counter) are interchangeable, and so are waiters.
    State canonical(const State &s) const {
        State c = s;
        if (c_.publishers == 2 &&
            (std::memcmp(&c.pub[0], &c.pub[1], sizeof(Publisher)) > 0 ||
             (std::memcmp(&c.pub[0], &c.pub[1], sizeof(Publisher)) == 0 && c.published[0] > c.published[1]))) {
            std::swap(c.pub[0], c.pub[1]);
            std::swap(c.published[0], c.published[1]);
        }
        if (c_.waiters == 2 && std::memcmp(&c.w[0], &c.w[1], sizeof(Waiter)) > 0) std::swap(c.w[0], c.w[1]);
        return c;
    }

    // A publisher may take its next step and, independently, its store buffer may drain one
    // store; a waiter just steps, unless asleep or done.
    int choices(const State &s, int t) const {
        if (t < c_.publishers) {
            const Publisher &p = s.pub[t];
            return (p.pc != kDone) + (p.buffered > 0);
        }
        const Waiter &w = s.w[t - c_.publishers];
        return w.pc != kDone && w.pc != kWSleep;
    }

    const char *step(State &s, int t, int choice, std::string *text) const {
        Note note(text);
        if (t < c_.publishers) {
            Publisher &p = s.pub[t];
            if (p.pc == kDone || choice == 1) {
                --p.buffered;
                ++s.published[t];
                return note("store buffer drains a ring store to memory"), nullptr;
            }
            return publisherStep(s, t, note);
        }
        return waiterStep(s, t - c_.publishers, note);
    }

    const char *invariant(const State &) const { return nullptr; }

    const char *terminal(const State &s) const {
        for (int k = 0; k < c_.waiters; ++k)
            if (s.w[k].pc == kWSleep)
                return available(s) > 0 ? "lost wake-up: a waiter sleeps while the ring holds an element for it"
                                        : "a waiter sleeps although everything was taken";
        return nullptr;
    }

    std::string show(const State &s) const {
        std::string out;
        Note note(&out);
        note("word=", s.word >> 1, s.word & 1 ? "|1" : "|0", " in memory: ", available(s), " element(s) to take");
        for (int j = 0; j < c_.publishers; ++j)
            note(", publisher ", j, " buffers ", s.pub[j].buffered);
        for (int k = 0; k < c_.waiters; ++k)
            note(", waiter ", k, s.w[k].pc == kWSleep ? " asleep" : " awake");
        return out;
    }

private:
    static int available(const State &s) { return s.published[0] + s.published[1] - s.taken; }

    // A locked instruction (or a fence): the thread's own buffered stores reach memory first.
    static void drain(State &s, int publisher) {
        s.published[publisher] = static_cast<uint8_t>(s.published[publisher] + s.pub[publisher].buffered);
        s.pub[publisher].buffered = 0;
    }

    const char *publisherStep(State &s, int j, const Note &note) const {
        Publisher &p = s.pub[j];
        auto finish = [&] {
            p.pc = --p.left == 0 ? kDone : c_.loadWordFirst ? kPLoadWord : kPStore;
            return nullptr;
        };
        switch (p.pc) {
            case kPStore:
                ++p.buffered;
                note("publisher stores its ring change (buffered)");
                if (!c_.loadWordFirst) return p.pc = kPLoadWord, nullptr;
                if (p.sawBit) return p.pc = kPWake, nullptr;
                return finish();
            case kPLoadWord:
                if (c_.publisherFences) drain(s, j);
                note(c_.publisherFences ? "publisher fences, " : "", "publisher loads word: bit 0 ", s.word & 1);
                if (c_.loadWordFirst) {
                    p.sawBit = s.word & 1;
                    return p.pc = kPStore, nullptr;
                }
                if (s.word & 1) return p.pc = kPWake, nullptr;
                return finish();
            case kPWake:
                drain(s, j);
                p.sawBit = 0;
                if (!(s.word & 1)) return note("publisher: bit 0 already clear, no wake"), finish();
                s.word = static_cast<uint8_t>(c_.wakeWithoutEpoch ? s.word & ~1u : s.word + 1u);
                p.pc = kPFutexWake;
                return note("publisher CASes word to epoch ", s.word >> 1, ", bit 0 clear"), nullptr;
            case kPFutexWake:
                for (int k = 0; k < c_.waiters; ++k)
                    if (s.w[k].pc == kWSleep) s.w[k].pc = afterWake();
                note("publisher FUTEX_WAKEs all");
                return finish();
            default:
                return "a publisher in a waiter's state";
        }
    }

    // Where the waiter's loop resumes after futex_wait returned (woken, or the word changed).
    Pc afterWake() const { return c_.recheckBeforeAnnounce ? kWRecheck : kWAnnounce; }

    const char *waiterStep(State &s, int k, const Note &note) const {
        Waiter &w = s.w[k];
        const bool b = c_.recheckBeforeAnnounce;
        switch (w.pc) {
            case kWTry:
            case kWRecheck: {
                const bool first = w.pc == kWTry;
                if (available(s) > 0) {  // the take is a CAS: locked, but a waiter buffers nothing
                    ++s.taken;
                    w.pc = --w.left == 0 ? kDone : kWTry;
                    return note("waiter ", first ? "tries" : "re-checks", ": takes an element"), nullptr;
                }
                note("waiter ", first ? "tries" : "re-checks", ": ring empty");
                if (first) return w.pc = b ? kWRecheck : kWAnnounce, nullptr;
                return w.pc = b ? kWAnnounce : kWFutexWait, nullptr;
            }
            case kWAnnounce:
                s.word |= 1u;
                w.expected = s.word;
                w.pc = c_.noMembarrier ? (b ? kWFutexWait : kWRecheck) : kWBarrier;
                return note("waiter fetch_or(word, 1): expects ", s.word >> 1, "|1"), nullptr;
            case kWBarrier:
                for (int j = 0; j < c_.publishers; ++j)
                    drain(s, j);
                w.pc = b ? kWFutexWait : kWRecheck;
                return note("waiter membarrier: every store buffer drains"), nullptr;
            case kWFutexWait:
                if (s.word == w.expected) {
                    w.pc = kWSleep;
                    return note("waiter futex_wait: word as expected, sleeps"), nullptr;
                }
                w.pc = afterWake();
                return note("waiter futex_wait: word changed, returns"), nullptr;
            default:
                return "a waiter in a publisher's state";
        }
    }

    Config c_;
};

std::string describe(const Config &c) {
    return std::to_string(c.publishers) + " publisher(s) x " + std::to_string(c.perPublisher) + ", " +
           std::to_string(c.waiters) + " waiter(s)" + (c.publisherFences ? ", fallback: publishers fence" : "");
}

}  // namespace futex

TEST_CASE("futex: no waiter sleeps through an element it could take, in every interleaving under x86-TSO", "[model]") {
    for (int publishers = 1; publishers <= 2; ++publishers)
        for (int waiters = 1; waiters <= 2; ++waiters) {
            futex::Config c;
            c.publishers = publishers;
            c.waiters = waiters;
            requireSound(futex::Model(c), futex::describe(c));
        }
}

TEST_CASE("futex: without membarrier, publishers that fence before loading the word lose no wake-up either",
          "[model]") {
    // wait.cpp's fallback where membarrier is unavailable (for publishers in the waiter's process).
    for (int publishers = 1; publishers <= 2; ++publishers)
        for (int waiters = 1; waiters <= 2; ++waiters) {
            futex::Config c;
            c.publishers = publishers;
            c.waiters = waiters;
            c.noMembarrier = true;
            c.publisherFences = true;
            requireSound(futex::Model(c), futex::describe(c));
        }
}

TEST_CASE("futex: mutants that drop one step of the wait/wake handshake lose a wake-up and are caught", "[model]") {
    futex::Config c;
    SECTION("(a) the waiter skips membarrier: the publisher's ring store can hide in its store buffer") {
        c.noMembarrier = true;
        requireCaught(futex::Model(c), futex::describe(c) + ", mutant (a) no membarrier", "lost wake-up");
    }
    SECTION("(b) the waiter re-checks the ring before it sets bit 0") {
        c.recheckBeforeAnnounce = true;
        requireCaught(futex::Model(c), futex::describe(c) + ", mutant (b) re-check first", "lost wake-up");
    }
    SECTION("(c) the publisher loads the word before its ring store") {
        c.loadWordFirst = true;
        requireCaught(futex::Model(c), futex::describe(c) + ", mutant (c) load word first", "lost wake-up");
    }
    SECTION("(d) the waker clears bit 0 without bumping the epoch: another waiter's fetch_or restores the word") {
        // An ABA on the word: the first waiter's futex_wait finds the value it expects and sleeps
        // through the wake it missed. Needs two waiters; with one, clearing bit 0 would do.
        c.waiters = 2;
        c.wakeWithoutEpoch = true;
        requireCaught(futex::Model(c), futex::describe(c) + ", mutant (d) no epoch", "lost wake-up");
    }
}

}  // namespace
