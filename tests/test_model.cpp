// Exhaustive model checking of the two lock-free protocols the library rests on: the MPMC/MPSC
// ring with crash recovery (src/ring.hpp, src/recovery.cpp), where a claimant may die between any
// two of its steps, including between its cursor CAS and its claim tags, and peers judge its
// positions from the tags and the participant records' intents (issue #11); and the futex
// wait/wake handshake (src/wait.hpp, src/wait.cpp). Each is restated here as small state machines, independent of the
// library's code, and model/explorer.hpp tries every interleaving of their atomic steps.
//
// Every property is checked twice over: the protocol must pass, and mutants (the protocol with
// one safeguard removed) must be caught, so a checker that silently checks nothing cannot pass;
// each sound run must also have reached the paths it is about (events counted along the way).
// Where the library differs from the sound protocol, the test says so and the library-faithful
// variant is asserted to fail. Every run prints its state count, and every counterexample its
// schedule (WARN), so a failure reads as a trace.
//
// JOIN_SHM_STRESS_SCALE < 1 (sanitizer builds in CI) drops only the largest configurations (MPMC
// at capacities 2 and 3 with recovery, MPMC batches, MPMC with misjudged claimants: the release
// build runs them all); the small exhaustive ones always run.
#include "model/explorer.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
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

// The largest capacity to explore for an MPMC configuration of up to a few million states: `full`
// at full scale, `reduced` below it (sanitizer builds; ThreadSanitizer makes each step ~10x
// slower). The MPSC runs always run in full.
int mpmcCapacities(int reduced, int full = 3) { return stressScale() >= 1.0 ? full : reduced; }

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
// Model 1: the ring (src/ring.hpp, src/recovery.cpp, the participant records of layout.hpp).
//
// Slots hold seq = 4*pos + code (kFree 0, kFull 1, kAbandoned 2), an element, and a claim tag
// naming a position and a claimant (whose thread gives the side: producer or consumer). Each
// claimant (a producer on head, an MPMC consumer on tail) has a participant record whose intent,
// X or none, says "I am about to claim from X on my cursor"; it covers [X, X + capacity). A claim
// is the library's sequence of separate atomic steps:
//   load the cursor; read the seq of each slot of the run (one step each, up to the batch size);
//   store the intent X; CAS the cursor X -> X+n (a lost CAS reads the slots at the cursor it got
//   back and stores a new intent); store the tag of each claimed slot; clear the intent; then
//   producer: copy each element in, publish each by CAS seq 4p -> 4p+1;
//   MPMC consumer: re-read each leading slot and free an abandoned one with a skip counted
//   (dropAbandoned), copy each element out, release each by CAS seq 4p+1 -> 4(p+cap).
// A claimant that gives up (full, empty, a claimant that lives) clears its intent first. The MPSC
// lone consumer owns its position: it claims nothing, and stores tail after each slot.
//
// Recovery is separate steps too. A consumer finding p's slot at 4p (an MPMC producer: p-cap's
// slot at 4(p-cap)+1) judges that position P: it loads the other cursor (was P claimed?) and
// re-reads the seq (still stuck?), reads the tag, reads each record of the claimants of P's side
// one by one, re-reads the tag, and takes over by CAS (to 4P+2, abandoned, which consumers skip
// and count; or to 4p, free, counting a skip). It decides from what it read, as the library: a
// tag naming P and the side -> take over iff the tag's holder is dead; an untagged P -> take over
// iff at least one intent covers P and every covering holder is dead (none covering: wait). Only a
// holder's liveness is an oracle (its crashed flag), as the pid+start-time check is the library's.
// Not modelled: reopening (a dead holder's record reused), the grace period (any wait is allowed).
// Since a dead claimant never acts again, the model's CAS finishes behave as the library's
// plain-store finishes there. The model can also let peers misjudge a live claimant as dead, which
// the library cannot rule out (a stall past the grace period), to show what that costs.
//
// A crash may come between any two steps: a producer's anywhere, an MPMC consumer's while it has
// an intent or holds a claim (else it is just one consumer fewer; the lone consumer's death is a
// restart, not modelled). Events count that the window of issue #11 was reached: a claimant dead
// between its cursor CAS and its tags (or between two tags of a batch), and a take-over judged
// from intents.
//
// Reductions keep each configuration to about a million states; each drops only steps or states
// whose futures are the same as others': the cursor load and the stuck re-read are one step (a
// cursor once past P stays past, a slot once not stuck for P never is again); a give-up's intent
// clear is part of the read that decided it; copies (and the consumer's re-read) fold into the
// neighbouring step on a side whose claimants cannot be misjudged; a judge waits at once when
// nobody on P's side is or can become dead (it could only wait); the two producers, and the two
// consumers, are interchangeable (canonical()); and "one crash" runs as its two halves, a
// producer's and a consumer's (Config::victims), since a judge of the side nobody can die on
// then waits at once.
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
    // claimants: producers, MPMC consumers
    kLoadRun,  // read the seq of position p+n: is it (still) part of the run?
    kIntent,   // intent = p
    kCas,      // CAS the cursor p -> p+n
    kTag,      // tag position p+k
    kClear,    // intent = none
    // producer
    kPWrite,    // copy element k into the slot of p+k
    kPPublish,  // CAS seq 4(p+k) -> 4(p+k)+1
    // MPMC consumer
    kCReread,   // dropAbandoned's re-read of p+k: abandoned or full?
    kCSkip,     // free abandoned p+k, count a skip
    kCRead,     // copy element k out
    kCRelease,  // CAS seq 4(p+k)+1 -> 4(p+k+cap); then the element is returned
    // MPSC lone consumer (its cursor is its own p)
    kLSkip,       // store 4(p+cap), count a skip
    kLRead,       // copy the element out
    kLRelease,    // store 4(p+cap); the element is returned
    kLStoreTail,  // p += 1, tail = p
    // judge, any role: position P is p (consumers) or p-cap (MPMC producers)
    kJCursor,    // load the cursor of P's claimants (was P claimed?), re-read P's seq (still stuck?)
    kJTag,       // read P's tag
    kJRecord,    // read the record of claimant k of P's side
    kJRetag,     // re-read P's tag
    kJTakeOver,  // CAS P's seq from stuck to taken over
};

// What became of each element, for the checks only.
enum Status : uint8_t { kUnpublished, kPublished, kDelivered, kCancelled, kLost, kWithdrawn };

enum Flag : uint8_t {
    kCrashed = 1,    // stopped for good
    kSuspected = 2,  // live, but peers judge it dead (for its current claim only)
};

// What a judge has read in the records (Thread::seen).
enum Seen : uint8_t { kCovered = 1, kCoveredLive = 2, kByIntent = 4 };

struct Thread {
    uint8_t pc;
    uint8_t p;                   // the position being worked on (first of the run)
    uint8_t n;                   // claimant: length of the run
    uint8_t k;                   // index within the run, or of the record a judge reads next
    uint8_t held;                // claimant: the run [p, p+n) is won (its CAS succeeded)
    uint8_t e;                   // MPMC consumer: elements counted while reading the run; then the first one's index
    uint8_t seen;                // judge: Seen bits
    uint8_t next;                // producer: index of its next element
    uint8_t elem[kMaxCapacity];  // consumer: the elements copied out, by index in the run
    uint8_t last[kProducers];    // consumer: 1 + index of the last element it returned, per producer
    uint8_t flags;
};

struct State {
    uint8_t head, tail, skipped;
    uint8_t crashes, suspicions, closes;  // nondeterministic events left to happen
    uint8_t seq[kMaxCapacity];
    uint8_t elem[kMaxCapacity];    // Elem codes: the last element copied into each slot
    uint8_t tagPos[kMaxCapacity];  // claim tags: the position...
    uint8_t tagWho[kMaxCapacity];  // ...and 1 + the claimant's thread (0: untagged, a zeroed slot)
    uint8_t intent[kMaxThreads];   // participant records: 1 + X, or 0 for none
    uint8_t status[kProducers * kMaxPerProducer];
    Thread th[kMaxThreads];
};

struct Config {
    int capacity = 2;
    bool mpsc = false;  // one lone consumer instead of two MPMC consumers
    int perProducer = 2;
    int pushBatch = 1;   // a producer claims up to this many slots per CAS (its elements left at most)
    int popBatch = 1;    // an MPMC consumer claims up to this many elements per CAS
    int crashes = 0;     // threads that may die at any step (consumers: while claiming or holding)
    int suspicions = 0;  // live claimants that peers may judge dead (stalled past the grace period)
    // Who may die or be misjudged: 0 anyone, else only producers (1) or only consumers (2). "One
    // crash" is the union of its two halves, and each half is smaller: a judge of the side nobody
    // can die on waits at once (see judge()).
    int victims = 0;
    int closes = 0;  // producers that may close holding a claim: publish it abandoned

    // The producer's element copy is a step of its own (a stalled producer may finish it late). Off:
    // the copy is part of the cursor CAS, as if no producer ever stalled mid-copy. On a side whose
    // claimants cannot be misjudged the copies are always folded (the producer's into its cursor
    // CAS, the consumer's into its release): nobody else touches a slot's element between its claim
    // and its publish or release then, so a copy commutes with every other step.
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
    bool noIntent = false;             // no records: judge an untagged slot as a live claimant's
    bool tagBeforeCas = false;         // store the tags before the cursor CAS instead of after
    bool noReread = false;             // judge from the records without re-reading the tag
    bool clearBeforeTag = false;       // clear the intent right after the CAS, before tagging
};

// Events counted over the exploration, so a test can insist its interesting paths were taken
// (a model that never reaches recovery would pass vacuously).
enum Event {
    kCasLost,
    kAbandon,
    kReclaim,
    kSkip,
    kPushCancelled,
    kCopyDropped,
    kBatchClaim,       // a claim won a run of more than one slot
    kCrashUntagged,    // a claimant died after its cursor CAS with a claimed position untagged
    kCrashMidTags,     // ...with some of its run tagged and some not (inside the tag loop)
    kAbandonByIntent,  // a producer's position taken over, judged from intents (untagged)
    kReclaimByIntent,  // a consumer's position taken over, judged from intents (untagged)
    kRetagged,         // a judge's re-read found the tag the first read had not
    kWaitedForIntent,  // a judge waited because a covering intent's holder lives
    kWindowRecovered,  // a take-over from intents freed the untagged position of a dead claimant
    kEvents
};

class Model {
public:
    using State = ring::State;

    explicit Model(Config c) : c_(c) {
        // The claim's steps between reading the run and finishing it, in the order of this config.
        if (!c_.noIntent) order_[stages_++] = kIntent;
        if (c_.tagBeforeCas) order_[stages_++] = kTag;
        order_[stages_++] = kCas;
        if (c_.clearBeforeTag && !c_.noIntent) order_[stages_++] = kClear;
        if (!c_.tagBeforeCas) order_[stages_++] = kTag;
        if (!c_.clearBeforeTag && !c_.noIntent) order_[stages_++] = kClear;
    }

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

    // The two producers run the same code: which is which does not matter, once their records,
    // the tags naming them and their elements (in slots, statuses and consumers' copies and order
    // memory) are renamed along. The two MPMC consumers likewise, with their records and tags. Not
    // while a judge is between the two records of its scan: it has read one's and not the other's.
    //
    // A tag whose position's claim on its side is over (the slot moved past it) reads as untagged
    // to every later judge, which looks for a tag naming its own stuck position: it is forgotten.
    State canonical(const State &s) const {
        State c = s;
        for (int i = 0; i < c_.capacity; ++i) {
            const int q = c.tagPos[i], seq = c.seq[i];
            const bool open =
                isProducer(c.tagWho[i] - 1) ? seq == 4 * q + kFree : seq == 4 * q + kFull || seq == 4 * q + kAbandoned;
            if (c.tagWho[i] && !open) c.tagPos[i] = c.tagWho[i] = 0;
        }
        bool midScan = false;
        for (int t = kProducers; t < threads(); ++t)
            midScan = midScan || (s.th[t].pc == kJRecord && s.th[t].k == 1);
        const int producers = std::memcmp(&c.th[0], &c.th[1], sizeof(Thread));
        if (!midScan && (producers > 0 || (producers == 0 && c.intent[0] > c.intent[1]))) swapProducers(c);
        if (c_.mpsc) return c;
        for (int t = 0; t < kProducers; ++t)
            if (s.th[t].pc == kJRecord && s.th[t].k == 1) return c;
        const int order = std::memcmp(&c.th[2], &c.th[3], sizeof(Thread));
        if (order < 0 || (order == 0 && c.intent[2] <= c.intent[3])) return c;
        std::swap(c.th[2], c.th[3]);
        std::swap(c.intent[2], c.intent[3]);
        for (int i = 0; i < c_.capacity; ++i)
            if (c.tagWho[i] == 3 || c.tagWho[i] == 4) c.tagWho[i] = static_cast<uint8_t>(7 - c.tagWho[i]);
        return c;
    }

    // A thread's alternatives: its next step (when it can move), dying, stalling, closing.
    // The step comes last, so that step() can tell the others apart without the costly look-ahead.
    enum Action { kStep, kCrash, kSuspect, kClose };
    int actions(const State &s, int t, Action out[4], bool lookAhead = true) const {
        const Thread &th = s.th[t];
        int n = 0;
        if (th.flags & kCrashed || th.pc == kDone) return 0;
        // A consumer that dies neither claiming nor holding is just one consumer fewer. The lone
        // consumer's death is a restart (its successor resumes from tail): not modelled.
        if (s.crashes && mayFail(t) && (isProducer(t) || (!c_.mpsc && (th.held || s.intent[t])))) out[n++] = kCrash;
        if (s.suspicions && mayFail(t) && th.held && !(th.flags & kSuspected) && (isProducer(t) || !c_.mpsc))
            out[n++] = kSuspect;
        if (s.closes && isProducer(t) && th.pc == kPPublish && th.n == 1) out[n++] = kClose;
        if (!lookAhead || th.pc != kBlocked || !wouldBlock(s, t)) out[n++] = kStep;
        return n;
    }
    int choices(const State &s, int t) const {
        Action a[4];
        return actions(s, t, a);
    }

    const char *step(State &s, int t, int choice, std::string *text) const {
        Action a[4];
        actions(s, t, a, false);
        Thread &th = s.th[t];
        Note note(text);
        switch (a[choice]) {
            case kCrash: {
                th.flags |= kCrashed;
                --s.crashes;
                int tagged = 0;
                for (int j = 0; th.held && j < th.n; ++j)
                    tagged += tagNames(s, th.p + j, t);
                if (th.held && tagged < th.n) count(kCrashUntagged);
                if (th.held && tagged > 0 && tagged < th.n) count(kCrashMidTags);
                // Forget what a dead thread no longer uses, so deaths at different steps converge:
                // only what it holds (for the terminal checks) and a producer's progress remain.
                const Thread dead = th;
                th = Thread{};
                th.flags = dead.flags;
                th.next = dead.next;
                if (dead.held) th.held = 1, th.p = dead.p, th.n = dead.n;
                return note("dies"), nullptr;
            }
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
                th.held = 0;
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
            if (!th.held) continue;
            if (!(th.flags & kCrashed)) return "stall: a live consumer holds a slot";
            for (int j = 0; j < th.n; ++j) {
                const int q = th.p + j, seq = s.seq[slot(q)];
                if (seq == 4 * q + kFull) heldElement[idOf(s.elem[slot(q)])] = true;
                if (seq == 4 * q + kFull || seq == 4 * q + kAbandoned) ++held;
            }
        }
        int delivered = 0, lost = 0;
        for (int t = 0; t < kProducers; ++t) {
            const Thread &th = s.th[t];
            if (!(th.flags & kCrashed) && th.pc != kDone) return "stall: a live producer can never finish";
            for (int k = 0; k < c_.perProducer; ++k) {
                const int id = elementId(t, k);
                const uint8_t st = s.status[id];
                if (st == kPublished && !heldElement[id]) return "stall: a published element is never delivered";
                // A dead producer's elements: those before the ones in flight, nothing after.
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
        if (lost > (c_.crashes + c_.suspicions) * c_.popBatch)
            return "more elements lost than consumers died or stalled";
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
        note("] tag=[");
        for (int i = 0; i < c_.capacity; ++i) {
            if (s.tagWho[i])
                note(i ? " " : "", s.tagPos[i], "@T", s.tagWho[i] - 1);
            else
                note(i ? " -" : "-");
        }
        note("] intent=[");
        for (int t = 0; t < threads(); ++t) {
            if (s.intent[t])
                note(t ? " " : "", s.intent[t] - 1);
            else
                note(t ? " -" : "-");
        }
        note("] status=[");
        for (int e = 0; e < kProducers * c_.perProducer; ++e) {
            note(e ? " " : "", Elem{code(e)}, ":");
            out += "UPDCLW"[s.status[e]];
        }
        return out + "]";
    }

private:
    bool isProducer(int t) const { return t < kProducers; }
    void swapProducers(State &c) const {
        auto rename = [](uint8_t &elemCode) {
            if (elemCode) elemCode = static_cast<uint8_t>(elemCode + ((elemCode - 1) / 2 ? -2 : 2));
        };
        std::swap(c.th[0], c.th[1]);
        std::swap(c.intent[0], c.intent[1]);
        for (int i = 0; i < c_.capacity; ++i) {
            if (c.tagWho[i] == 1 || c.tagWho[i] == 2) c.tagWho[i] = static_cast<uint8_t>(3 - c.tagWho[i]);
            rename(c.elem[i]);
        }
        for (int k = 0; k < c_.perProducer; ++k)
            std::swap(c.status[elementId(0, k)], c.status[elementId(1, k)]);
        for (int t = kProducers; t < threads(); ++t) {
            for (uint8_t &copy : c.th[t].elem)
                rename(copy);
            std::swap(c.th[t].last[0], c.th[t].last[1]);
        }
    }
    bool mayFail(int t) const { return c_.victims == 0 || (c_.victims == 1) == isProducer(t); }
    int slot(int position) const { return position % c_.capacity; }
    int elementId(int producer, int k) const { return producer * c_.perProducer + k; }
    uint8_t code(int id) const { return static_cast<uint8_t>(1 + 2 * (id / c_.perProducer) + id % c_.perProducer); }
    int idOf(uint8_t elemCode) const { return elementId((elemCode - 1) / 2, (elemCode - 1) % 2); }
    const char *role(int t) const { return isProducer(t) ? "producer" : c_.mpsc ? "lone consumer" : "consumer"; }

    // Does the tag of `position`'s slot name it, claimed by thread `who`?
    bool tagNames(const State &s, int position, int who) const {
        const int i = slot(position);
        return s.tagPos[i] == position && s.tagWho[i] == who + 1;
    }
    // The liveness oracle (pid plus start time in the library): dead, or misjudged as dead.
    bool alive(const State &s, int t) const { return !c_.abandonLive && !(s.th[t].flags & (kCrashed | kSuspected)); }
    bool covers(uint8_t intent, int position) const {
        return intent && position >= intent - 1 && position < intent - 1 + c_.capacity;
    }
    // Are the copies steps of their own? Only on a side whose claimants may be misjudged (see
    // Config::separateWrite); the consumer's re-read of its claimed slots likewise.
    bool copyStep() const { return c_.separateWrite && c_.suspicions > 0 && mayFail(0); }
    bool readStep() const { return c_.suspicions > 0 && mayFail(kProducers); }
    // The most a claimant takes in one CAS.
    int want(const State &s, int t) const {
        const int w = isProducer(t) ? std::min(c_.pushBatch, c_.perProducer - s.th[t].next) : c_.popBatch;
        return std::min(w, c_.capacity);
    }
    // The claim step after `done` in this config's order; past the last, the claim is made.
    Pc after(Pc done, int t) const {
        int i = 0;
        while (order_[i] != done)
            ++i;
        if (i + 1 < stages_) return order_[i + 1];
        if (!isProducer(t)) return kCReread;
        return copyStep() ? kPWrite : kPPublish;
    }

    // Would a fresh attempt by thread t, alone from state s, block again before writing anything?
    bool wouldBlock(const State &s, int t) const {
        State x = s;
        x.th[t].pc = kStart;
        Note quiet(nullptr);
        uint64_t saved[kEvents];
        std::memcpy(saved, events_, sizeof saved);  // a look ahead, not a step taken
        bool blocks = false;
        for (int i = 0; i < 16 && !blocks; ++i) {
            move(x, t, quiet);
            if (x.th[t].pc == kBlocked)
                blocks = true;
            else if (std::memcmp(&x, &s, offsetof(State, th)) != 0)
                break;  // it wrote: it acts
        }
        std::memcpy(events_, saved, sizeof saved);
        return blocks;
    }

    // Nothing to do: the claim returns -EAGAIN, clearing a stale intent (from a lost CAS) first.
    // The clear is part of the step that decided: that step only read, so dying between the two
    // is dying before the decision, and a stale intent seen a little longer only delays judges.
    static const char *block(State &s, int t, bool keepPosition, const Note &note, const char *why) {
        Thread &th = s.th[t];
        th.pc = kBlocked;
        if (!keepPosition) th.p = 0;  // dead local state: keeps equal states equal
        th.n = th.k = th.e = th.seen = 0;
        note(why, s.intent[t] ? ": clears its intent, blocks" : ": blocks");
        s.intent[t] = 0;
        return nullptr;
    }

    // A run is finished (or was all skipped): back to a fresh attempt.
    static void endRun(Thread &th) {
        th.flags &= static_cast<uint8_t>(~kSuspected);
        th.pc = kStart;
        th.p = th.n = th.k = th.e = th.held = 0;
    }

    const char *deliver(State &s, Thread &th, uint8_t elemCode, const Note &note) const {
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
        const uint8_t pc = s.th[t].pc;
        if (pc >= kJCursor) return judgeStep(s, t, note);
        if (pc >= kIntent && pc <= kClear) return claimStep(s, t, note);
        if (isProducer(t)) return producerStep(s, t, note);
        return c_.mpsc ? loneStep(s, t, note) : consumerStep(s, t, note);
    }

    // The claim proper, common to producers and MPMC consumers: the run [p, p+n) was read.
    const char *claimStep(State &s, int t, const Note &note) const {
        Thread &th = s.th[t];
        uint8_t &cursor = isProducer(t) ? s.head : s.tail;
        const char *name = isProducer(t) ? "head" : "tail";
        const Pc pc = static_cast<Pc>(th.pc);
        switch (pc) {
            case kIntent:
                s.intent[t] = static_cast<uint8_t>(1 + th.p);
                th.pc = after(pc, t);
                return note(role(t), " stores intent ", th.p), nullptr;
            case kCas:
                if (cursor != th.p) {  // compare_exchange_weak hands back the current cursor
                    count(kCasLost);
                    note(role(t), " CAS ", name, " ", th.p, " fails, ", name, " = ", cursor);
                    th.p = cursor;
                    th.n = th.e = 0;
                    th.pc = kLoadRun;
                    return nullptr;
                }
                cursor = static_cast<uint8_t>(th.p + th.n);
                th.held = 1;
                th.e = 0;  // the elements counted in the run: read again by dropAbandoned
                if (th.n > 1) count(kBatchClaim);
                note(role(t), " claims p=", th.p);
                if (th.n > 1) note("..", th.p + th.n - 1);
                if (isProducer(t) && !copyStep())
                    for (int j = 0; j < th.n; ++j) {
                        s.elem[slot(th.p + j)] = code(elementId(t, th.next + j));
                        note(", writes ", Elem{s.elem[slot(th.p + j)]});
                    }
                th.pc = after(pc, t);
                return nullptr;
            case kTag: {
                const int q = th.p + th.k;
                s.tagPos[slot(q)] = static_cast<uint8_t>(q);
                s.tagWho[slot(q)] = static_cast<uint8_t>(t + 1);
                note(role(t), " tags p=", q);
                if (++th.k < th.n) return nullptr;
                th.k = 0;
                th.pc = after(pc, t);
                return nullptr;
            }
            case kClear:
                s.intent[t] = 0;
                th.pc = after(pc, t);
                return note(role(t), " clears its intent"), nullptr;
            default:
                return "a claim step out of place";
        }
    }

    // The judge: P's claimant (a producer for a consumer, an MPMC consumer for a producer) moved
    // its cursor past P, and P's slot stays unfinished. Take it over iff that claimant is dead.
    const char *judgeStep(State &s, int t, const Note &note) const {
        Thread &th = s.th[t];
        const bool producerSide = !isProducer(t);  // whose claim is judged
        const int P = producerSide ? th.p : th.p - c_.capacity, i = slot(P);
        const bool keep = c_.mpsc && producerSide;  // the lone consumer keeps its position
        const int seq = s.seq[i];
        const bool stuck = producerSide ? seq == 4 * P + kFree
                                        : seq == 4 * P + kFull || (c_.reclaimAbandoned && seq == 4 * P + kAbandoned);
        // A tag names P only if it names P's side: a consumer's tag for a producer, and back.
        auto taggedBy = [&]() -> int {
            const int who = s.tagWho[i] - 1;
            return who >= 0 && s.tagPos[i] == P && isProducer(who) == producerSide ? who : -1;
        };
        auto byTag = [&](int who) -> const char * {
            if (alive(s, who)) return block(s, t, keep, note, ": tagged by a live claimant");
            th.pc = kJTakeOver;
            th.seen = 0;
            return note(": its claimant died"), nullptr;
        };
        switch (th.pc) {
            case kJCursor: {
                const int cursor = producerSide ? s.head : s.tail;
                note(role(t), " loads ", producerSide ? "head = " : "tail = ", cursor);
                if (cursor <= P) return block(s, t, keep, note, producerSide ? ": empty" : ": full, not taken");
                note(", re-reads seq of p=", P, ": ", seq);
                if (!stuck) return block(s, t, keep, note, ": no longer stuck");
                th.pc = kJTag;
                return nullptr;
            }
            case kJTag:
            case kJRetag: {
                const bool again = th.pc == kJRetag;
                note(role(t), again ? " re-reads" : " reads", " the tag of p=", P);
                if (const int who = taggedBy(); who >= 0) {
                    if (again) count(kRetagged);
                    note(": T", who);
                    return byTag(who);
                }
                note(": not P's");
                if (!again) {
                    if (c_.noIntent) return block(s, t, keep, note, "");
                    th.pc = kJRecord;
                    th.k = th.seen = 0;
                    return nullptr;
                }
                return decide(s, t, keep, note);
            }
            case kJRecord: {
                const int r = (producerSide ? 0 : kProducers) + th.k;
                note(role(t), " reads T", r, "'s record: intent ");
                if (s.intent[r])
                    note(s.intent[r] - 1);
                else
                    note("none");
                if (covers(s.intent[r], P)) {
                    th.seen |= kCovered;
                    if (alive(s, r)) th.seen |= kCoveredLive;
                    note(alive(s, r) ? ", covers P, lives" : ", covers P, dead");
                }
                if (++th.k < 2) return nullptr;
                th.k = 0;
                if (c_.noReread) return decide(s, t, keep, note);
                th.pc = kJRetag;
                return nullptr;
            }
            case kJTakeOver: {
                const bool byIntent = th.seen & kByIntent;
                th.seen = 0;
                // For the count only (the judge does not know it): was P won by a claimant that
                // died before tagging it? That is the window of issue #11, recovered.
                for (int r = producerSide ? 0 : kProducers; r < (producerSide ? kProducers : threads()); ++r) {
                    const Thread &w = s.th[r];
                    if (stuck && byIntent && (w.flags & kCrashed) && w.held && P >= w.p && P < w.p + w.n &&
                        !tagNames(s, P, r))
                        count(kWindowRecovered);
                }
                note(role(t), " takes over p=", P, stuck ? "" : ": CAS fails");
                if (!stuck) {
                    th.pc = producerSide ? kStart : kLoadRun;
                    return nullptr;
                }
                if (producerSide) {
                    s.seq[i] = static_cast<uint8_t>(4 * P + kAbandoned);
                    count(kAbandon);
                    if (byIntent) count(kAbandonByIntent);
                    th.pc = kStart;  // recoverForConsumer returned true: reload and claim P
                    return nullptr;
                }
                count(kReclaim);
                if (byIntent) count(kReclaimByIntent);
                if (seq == 4 * P + kFull && s.status[idOf(s.elem[i])] == kPublished) s.status[idOf(s.elem[i])] = kLost;
                s.seq[i] = static_cast<uint8_t>(4 * th.p + kFree);
                ++s.skipped;
                th.pc = kLoadRun;  // recoverForProducer returned true: retry this position
                return nullptr;
            }
            default:
                return "a judge step out of place";
        }
    }

    // Starts judging P. When nobody on P's side is dead or misjudged and nobody can be any more, the
    // judge can only end up waiting, whatever it reads: it waits at once. A judge that waits wrote
    // nothing and starts afresh, so only its read-only steps in between are left out.
    const char *judge(State &s, int t, const Note &note) const {
        const bool producerSide = !isProducer(t);
        const int from = producerSide ? 0 : kProducers, to = producerSide ? kProducers : threads();
        bool anyDead = c_.abandonLive || ((s.crashes || s.suspicions) && mayFail(from));
        for (int r = from; r < to; ++r)
            anyDead = anyDead || !alive(s, r);
        if (!anyDead) return block(s, t, c_.mpsc && producerSide, note, ": its claimants all live");
        s.th[t].pc = kJCursor;
        return nullptr;
    }

    // The judge's verdict on an untagged P, from the records it read.
    const char *decide(State &s, int t, bool keep, const Note &note) const {
        Thread &th = s.th[t];
        if (th.seen == kCovered) {
            th.seen = kByIntent;
            th.pc = kJTakeOver;
            return note(": every claimant that may hold it died"), nullptr;
        }
        if (th.seen & kCoveredLive) count(kWaitedForIntent);
        return block(s, t, keep, note, th.seen ? ": a claimant that may hold it lives" : ": no record covers it");
    }

    const char *producerStep(State &s, int t, const Note &note) const {
        Thread &th = s.th[t];
        switch (th.pc) {
            case kStart:
            case kBlocked:
                th.p = s.head;
                th.pc = kLoadRun;
                return note("producer loads head = ", th.p), nullptr;
            case kLoadRun: {
                const int q = th.p + th.n, seq = s.seq[slot(q)], previous = q - c_.capacity;
                note("producer reads seq of p=", q, ": ", seq);
                if (seq == 4 * q) {  // free: the run goes on while free, up to what we want
                    if (++th.n == want(s, t)) th.pc = order_[0];
                    return nullptr;
                }
                if (th.n > 0) return th.pc = order_[0], nullptr;
                if (seq > 4 * q) {  // another producer claimed p: reload head, which has moved on
                    if (s.head == q) return "live-lock: a producer reloads a head that cannot have moved";
                    return th.pc = kStart, nullptr;
                }
                // Only MPMC consumers can be taken over: a lone consumer resumes by itself.
                if (!c_.mpsc && previous >= 0 &&
                    (seq == 4 * previous + kFull || (c_.reclaimAbandoned && seq == 4 * previous + kAbandoned)))
                    return judge(s, t, note);
                return block(s, t, false, note, ": full");
            }
            case kPWrite: {
                const int q = th.p + th.k;
                s.elem[slot(q)] = code(elementId(t, th.next + th.k));
                note("producer writes ", Elem{s.elem[slot(q)]}, " at p=", q);
                if (++th.k == th.n) {
                    th.k = 0;
                    th.pc = kPPublish;
                }
                return nullptr;
            }
            case kPPublish: {
                const int q = th.p + th.k, i = slot(q), id = elementId(t, th.next);
                bool ok = s.seq[i] == 4 * q + kFree;
                if (ok || c_.publishByStore) {
                    s.seq[i] = static_cast<uint8_t>(4 * q + kFull);
                    s.status[id] = kPublished;
                    ok = true;
                } else {
                    s.status[id] = kCancelled;  // publish returns -ECANCELED
                    count(kPushCancelled);
                }
                note("producer publishes p=", q, ok ? "" : ": CAS fails (ECANCELED)");
                if (!ok && !(th.flags & kSuspected)) return "a push failed although nobody judged its producer dead";
                ++th.next;
                if (++th.k < th.n) return nullptr;
                endRun(th);
                if (th.next == c_.perProducer) th.pc = kDone;
                return nullptr;
            }
            default:
                return "a producer in a consumer's state";
        }
    }

    const char *consumerStep(State &s, int t, const Note &note) const {
        Thread &th = s.th[t];
        const int q = th.p + th.k, i = slot(q);
        switch (th.pc) {
            case kStart:
            case kBlocked:
                th.p = s.tail;
                th.pc = kLoadRun;
                return note("consumer loads tail = ", th.p), nullptr;
            case kLoadRun: {
                // The run: abandoned positions first, then up to `want` elements, at most a lap.
                const int r = th.p + th.n, seq = s.seq[slot(r)];
                note("consumer reads seq of p=", r, ": ", seq);
                if (seq == 4 * r + kFull || (seq == 4 * r + kAbandoned && th.e == 0)) {
                    th.e = static_cast<uint8_t>(th.e + (seq == 4 * r + kFull));
                    if (++th.n == c_.capacity || th.e == want(s, t)) th.pc = order_[0];
                    return nullptr;
                }
                if (th.n > 0) return th.pc = order_[0], nullptr;
                if (seq > 4 * r + kFull) {  // another consumer took p: reload tail, which has moved on
                    if (s.tail == r) return "live-lock: a consumer reloads a tail that cannot have moved";
                    return th.pc = kStart, nullptr;
                }
                if (seq == 4 * r) return judge(s, t, note);
                return block(s, t, false, note, ": empty");
            }
            case kCReread:
                note("consumer re-reads seq of p=", q, ": ", s.seq[i]);
                if (s.seq[i] == 4 * q + kAbandoned) {
                    th.pc = kCSkip;
                } else {
                    th.e = th.k;  // the first element
                    th.pc = readStep() ? kCRead : kCRelease;
                }
                // Only a misjudged consumer's slot can change under it: else the re-read commutes
                // with every other step and is folded into the next one.
                if (readStep()) return nullptr;
                note(", ");
                return consumerStep(s, t, note);
            case kCSkip: {
                const bool ok = !c_.skipByCas || s.seq[i] == 4 * q + kAbandoned;
                if (ok) {
                    s.seq[i] = static_cast<uint8_t>(4 * (q + c_.capacity) + kFree);
                    s.elem[i] = 0;  // dead until the next lap's copy: keeps equal states equal
                    ++s.skipped;
                    count(kSkip);
                }
                note("consumer skips abandoned p=", q, ok ? "" : ": CAS fails");
                if (++th.k == th.n)
                    endRun(th);  // nothing but abandoned positions: claim again
                else
                    th.pc = kCReread;
                return nullptr;
            }
            case kCRead:
                th.elem[th.k] = s.elem[i];
                note("consumer copies ", Elem{th.elem[th.k]}, " from p=", q);
                if (++th.k == th.n) {
                    th.k = th.e;
                    th.pc = kCRelease;
                }
                return nullptr;
            case kCRelease: {
                if (!readStep()) th.elem[th.k] = s.elem[i];  // the copy, folded in
                bool ok = s.seq[i] == 4 * q + kFull;
                if (ok || c_.releaseByStore) {
                    s.seq[i] = static_cast<uint8_t>(4 * (q + c_.capacity) + kFree);
                    s.elem[i] = 0;  // dead until the next lap's copy
                    ok = true;
                }
                note("consumer releases p=", q, ok ? "" : ": CAS fails");
                const uint8_t copy = th.elem[th.k];
                th.elem[th.k] = 0;
                const char *why = nullptr;
                if (ok || c_.keepOnFailedRelease) {
                    why = deliver(s, th, copy, note);
                } else {  // the slot was taken over: the copy may be torn, so it is dropped
                    count(kCopyDropped);
                    note(", drops its copy");
                }
                if (++th.k == th.n) endRun(th);
                return why;
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
                if (seq == 4 * p) return judge(s, t, note);
                if (seq > 4 * p) return "a slot ran ahead of the lone consumer";
                return block(s, t, true, note, ": empty");
            }
            case kLSkip:
                s.seq[i] = static_cast<uint8_t>(4 * (p + c_.capacity) + kFree);
                s.elem[i] = 0;  // dead until the next lap's copy
                ++s.skipped;
                count(kSkip);
                th.pc = kLStoreTail;
                return note("lone consumer skips abandoned p=", p), nullptr;
            case kLRead:
                th.elem[0] = s.elem[i];
                th.pc = kLRelease;
                return note("lone consumer copies ", Elem{th.elem[0]}, " from p=", p), nullptr;
            case kLRelease: {
                s.seq[i] = static_cast<uint8_t>(4 * (p + c_.capacity) + kFree);
                s.elem[i] = 0;  // dead until the next lap's copy
                th.pc = kLStoreTail;
                note("lone consumer releases p=", p);
                const uint8_t copy = th.elem[0];
                th.elem[0] = 0;
                return deliver(s, th, copy, note);
            }
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
    Pc order_[4] = {};
    int stages_ = 0;
    mutable uint64_t events_[kEvents] = {};
};

std::string describe(const Config &c) {
    std::string out = std::string(c.mpsc ? "MPSC" : "MPMC") + " cap " + std::to_string(c.capacity) + ", 2x" +
                      std::to_string(c.perProducer) + " elements";
    if (c.pushBatch > 1 || c.popBatch > 1)
        out += ", batches " + std::to_string(c.pushBatch) + "/" + std::to_string(c.popBatch);
    const char *who = c.victims == 1 ? " (producer)" : c.victims == 2 ? " (consumer)" : "";
    if (c.crashes) out += ", " + std::to_string(c.crashes) + " crash" + who;
    if (c.suspicions)
        out += ", " + std::to_string(c.suspicions) + " misjudged" + who + (c.separateWrite ? "" : " (copy in claim)");
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

// Checks that a run with one crash reached the window of issue #11: a claimant died between its
// cursor CAS and its tag, and a peer took its position over, judged from the records' intents.
void requireWindowReached(const ring::Model &m, bool consumerDied) {
    CHECK(m.reached(ring::kCrashUntagged) > 0);
    CHECK(m.reached(ring::kWindowRecovered) > 0);
    if (consumerDied) {
        CHECK(m.reached(ring::kReclaim) > 0);
        CHECK(m.reached(ring::kReclaimByIntent) > 0);
    } else {
        CHECK(m.reached(ring::kAbandon) > 0);
        CHECK(m.reached(ring::kAbandonByIntent) > 0);
        CHECK(m.reached(ring::kSkip) > 0);  // and consumers stepped over what was abandoned
    }
}

TEST_CASE("ring: one producer or consumer dying at any step loses no live producer's element and stalls nothing",
          "[model]") {
    // MPMC runs in two halves, a producer dying and a consumer dying: together they are "one
    // thread dies", and each is smaller (model comment on Config::victims).
    for (bool mpsc : {false, true})
        for (int cap = 1; cap <= (mpsc ? 3 : mpmcCapacities(1)); ++cap)
            for (int victims : {1, 2}) {
                if (mpsc && victims == 2) continue;  // the lone consumer's death is a restart
                ring::Config c = ring::config(mpsc, cap);
                c.crashes = 1;
                c.victims = victims;
                const ring::Model m(c);
                requireSound(m, ring::describe(c));
                requireWindowReached(m, victims == 2);
                // A judge's first read of the tag missed it and the re-read found it, and judges
                // waited for a live claimant's intent: both branches of the verdict were taken.
                CHECK(m.reached(ring::kRetagged) > 0);
                CHECK(m.reached(ring::kWaitedForIntent) > 0);
            }
}

TEST_CASE("ring: a claimant dying inside a batch claim, between its CAS and its last tag, stalls nothing", "[model]") {
    // One CAS claims a run of two; the kill lands between the CAS and the tags, or between the two
    // tags (tagRun's loop): a judge takes the tagged position over by its tag and the other by the
    // intent. MPMC consumers pop in batches of two as well.
    for (bool mpsc : {true, false})
        for (int victims : {1, 2}) {
            if (mpsc && victims == 2) continue;
            if (!mpsc && stressScale() < 1.0) continue;  // the largest configurations
            ring::Config c = ring::config(mpsc, 2);
            c.pushBatch = 2;
            c.popBatch = mpsc ? 1 : 2;
            c.crashes = 1;
            c.victims = victims;
            const ring::Model m(c);
            requireSound(m, ring::describe(c));
            CHECK(m.reached(ring::kBatchClaim) > 0);
            CHECK(m.reached(ring::kCrashMidTags) > 0);
            requireWindowReached(m, victims == 2);
        }
}

TEST_CASE("ring: a consumer dying while it skips an abandoned slot stalls MPMC producers unless they reclaim it",
          "[model]") {
    // An abandoned slot needs no crash: a producer closing with a reserved slot makes one. A
    // consumer that dies between claiming it and freeing it leaves seq at 4p+2, and producers a
    // lap later wait forever: recoverForProducer takes over only full slots (4p+1).
    ring::Config c = ring::config(false, 1);
    c.crashes = 1;
    c.victims = 2;
    c.closes = 1;
    requireCaught(ring::Model(c), ring::describe(c) + ", library recovery", "stall");
    // Consumers die here (the case at stake); a producer's death is the crash test's.
    for (int cap = 1; cap <= mpmcCapacities(1); ++cap) {
        c = ring::config(false, cap);
        c.crashes = 1;
        c.victims = 2;
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
    c.victims = 2;
    c.closes = 1;
    c.separateWrite = false;
    c.reclaimAbandoned = true;
    requireCaught(ring::Model(c), ring::describe(c) + ", abandoned slots reclaimed, skip by store", "");
    for (int cap = 1; cap <= mpmcCapacities(0, 2); ++cap) {
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
        for (int cap = 1; cap <= (mpsc ? 3 : mpmcCapacities(0, 2)); ++cap)
            for (int victims : {1, 2}) {
                if (mpsc && victims == 2) continue;
                ring::Config c = ring::config(mpsc, cap);
                c.suspicions = 1;
                c.victims = victims;
                c.separateWrite = false;
                const ring::Model m(c);
                requireSound(m, ring::describe(c));
                // Both races were run: a producer's publish lost to a take-over (-ECANCELED), and
                // (MPMC) a consumer's release, whose copy was dropped.
                CHECK((victims == 2 || m.reached(ring::kPushCancelled) > 0));
                CHECK((victims == 1 || m.reached(ring::kCopyDropped) > 0));
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

TEST_CASE("ring: mutants of the claim records (issue #11) are caught, on both cursors", "[model]") {
    // Each drops one safeguard of the claim/judge protocol; each must be caught with one crash, for
    // a producer's claim on head (MPSC) and for an MPMC consumer's on tail.
    auto run = [](const char *what, bool ring::Config::*mutant, const char *expect) {
        for (bool mpsc : {true, false}) {
            ring::Config c = ring::config(mpsc, 2);
            c.crashes = 1;
            c.victims = mpsc ? 1 : 2;
            c.*mutant = true;
            requireCaught(ring::Model(c), ring::describe(c) + ", mutant: " + what, expect);
        }
    };
    SECTION("(1) no intent: an untagged stuck slot is judged a live claimant's, the CAS-then-die window stalls") {
        run("no intent", &ring::Config::noIntent, "stall");
    }
    SECTION("(2) tags stored before the CAS: a losing claimant's late tag hides the winner") {
        run("tag before CAS", &ring::Config::tagBeforeCas, "");
    }
    SECTION("(3) no re-read of the tag after the records: a dead loser's stale intent condemns a live winner") {
        run("no re-read", &ring::Config::noReread, "");
    }
    SECTION(
        "(4) intent cleared before tagging: a claimant dying in between is covered by nothing (a stall), or a "
        "live one only by a dead loser's stale intent (a misjudgment)") {
        run("intent cleared before the tags", &ring::Config::clearBeforeTag, "");
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

// ---------------------------------------------------------------------------------------------
// Broadcast gating (src/broadcast.hpp), under sequential consistency: one publisher and two
// subscribers of a ring of capacity C carry M messages. The publisher writes position p only when
// its cached gate says every subscriber's cursor is above p - C, rescans the cursors otherwise, and
// frees the record of a subscriber that gates it only once that subscriber is dead. Subscribers
// read, then store their cursor. Any one of them may crash at any step (the publisher is then
// succeeded at head, stepping over complete slots). Checked: no live subscriber's unread message is
// overwritten, each receives its messages in order, and no state is stuck (a dead subscriber never
// stalls the publisher; the join handshake is argued in broadcast.hpp, not modelled here).
namespace gating {

constexpr int kSubs = 2;

struct Config {
    int capacity;
    int messages;
    bool crashes;
    bool mutantNoGate;      // the publisher writes without looking at the subscribers
    bool mutantNoLiveness;  // a gating subscriber's record is freed whether or not it lives
};

struct State {
    int8_t slotPos[3];      // position the slot holds, -1: none
    int8_t slotDone[3];     // 1: complete
    int8_t head;            // published count
    int8_t cursor[kSubs];   // stored cursors
    int8_t holding[kSubs];  // 0 free, 1 held
    int8_t alive[kSubs];
    int8_t subPos[kSubs];           // subscriber's next position (local)
    int8_t subPc[kSubs];            // 0 read, 1 store cursor
    int8_t pubPos, pubGate, pubPc;  // pc 0 decide, 1 write (odd), 2 complete
    int8_t crashed;                 // a crash happened (at most one)
    int8_t pad[3];
};
static_assert(std::is_trivially_copyable<State>::value, "hashed as bytes");

class Model {
public:
    explicit Model(const Config &c) : c_(c) {}
    using State = gating::State;
    State initial() const {
        State s;
        std::memset(&s, 0, sizeof s);
        for (int i = 0; i < 3; ++i)
            s.slotPos[i] = -1;
        for (int i = 0; i < kSubs; ++i) {
            s.holding[i] = 1;
            s.alive[i] = 1;
        }
        s.pubGate = static_cast<int8_t>(-c_.capacity);  // unknown: the first claim rescans
        return s;
    }
    int threads() const { return 1 + kSubs; }

    // Choices: 0 = the thread's next step (when enabled), 1 = crash (when allowed).
    int choices(const State &s, int t) const {
        const bool canCrash = c_.crashes && !s.crashed;
        if (t == 0) {
            if (s.pubPos == c_.messages && s.pubPc == 0) return 0;
            const bool enabled = s.pubPc != 0 || room(s) || rescanHelps(s);
            return canCrash ? 2 : enabled ? 1 : 0;
        }
        const int i = t - 1;
        // A live subscriber reads on even if its record was (wrongly) freed: that is what a mutant breaks.
        if (!s.alive[i] || (s.subPos[i] == c_.messages && s.subPc[i] == 0)) return 0;
        const bool enabled = s.subPc[i] == 1 || readable(s, i);
        return canCrash ? 2 : enabled ? 1 : 0;
    }

    const char *step(State &s, int t, int choice, std::string *note) const {
        if (t == 0) return publisher(s, choice, note);
        const int i = t - 1;
        if (choice == 1) {
            s.alive[i] = 0;
            s.crashed = 1;
            if (note) *note = "subscriber " + std::to_string(i) + " dies";
            return nullptr;
        }
        if (s.subPc[i] == 0) {
            if (!readable(s, i)) return nullptr;  // a retry: nothing yet (only when a crash was possible)
            const int slot = s.subPos[i] % c_.capacity;
            if (s.slotPos[slot] != s.subPos[i]) return "a subscriber read another position's message";
            s.subPos[i]++;
            s.subPc[i] = 1;
            if (note) *note = "subscriber " + std::to_string(i) + " reads " + std::to_string(s.subPos[i] - 1);
        } else {
            s.cursor[i] = s.subPos[i];
            s.subPc[i] = 0;
            if (note) *note = "subscriber " + std::to_string(i) + " stores cursor " + std::to_string(s.cursor[i]);
        }
        return nullptr;
    }

    const char *invariant(const State &) const { return nullptr; }
    const char *terminal(const State &s) const {
        if (s.pubPos != c_.messages || s.pubPc != 0) return "stall: the publisher cannot go on";
        for (int i = 0; i < kSubs; ++i)
            if (s.alive[i] && s.subPos[i] != c_.messages) return "stall: a live subscriber did not get everything";
        return nullptr;
    }
    State canonical(const State &s) const { return s; }
    std::string show(const State &s) const {
        return "head " + std::to_string(s.head) + ", publisher at " + std::to_string(s.pubPos) + " gate " +
               std::to_string(s.pubGate) + ", subscribers at " + std::to_string(s.subPos[0]) + "/" +
               std::to_string(s.subPos[1]);
    }

private:
    bool readable(const State &s, int i) const {
        const int slot = s.subPos[i] % c_.capacity;
        return s.subPos[i] < c_.messages && s.slotPos[slot] == s.subPos[i] && s.slotDone[slot];
    }
    bool room(const State &s) const { return s.pubPos < c_.messages && s.pubPos - s.pubGate < c_.capacity; }
    // The worst lag of the subscribers a rescan would count (freeing dead gating ones).
    int worst(const State &s, bool reclaim, State *out) const {
        int w = 0;
        for (int i = 0; i < kSubs; ++i) {
            if (!s.holding[i]) continue;
            const int lag = std::min(s.pubPos - s.cursor[i], c_.capacity);
            if (lag >= c_.capacity && reclaim && (!s.alive[i] || c_.mutantNoLiveness)) {
                if (out) out->holding[i] = 0;
                continue;
            }
            w = std::max(w, lag);
        }
        return c_.mutantNoGate ? 0 : w;
    }
    bool rescanHelps(const State &s) const {
        return s.pubPos < c_.messages && s.pubPos - (s.pubPos - worst(s, true, nullptr)) < c_.capacity;
    }

    const char *publisher(State &s, int choice, std::string *note) const {
        if (choice == 1) {  // dies; a successor resumes at head, stepping over complete slots
            s.crashed = 1;
            int p = s.head;
            for (int n = 0; n < c_.capacity; ++n, ++p)
                if (!(s.slotPos[p % c_.capacity] == p && s.slotDone[p % c_.capacity])) break;
            s.pubPos = static_cast<int8_t>(p);
            s.head = static_cast<int8_t>(p);
            s.pubGate = static_cast<int8_t>(p - c_.capacity);
            s.pubPc = 0;
            if (note) *note = "publisher dies; successor resumes at " + std::to_string(p);
            return nullptr;
        }
        if (s.pubPc == 0) {
            if (s.pubPos == c_.messages) return nullptr;
            if (!room(s)) {
                State after = s;
                const int w = worst(s, true, &after);
                after.pubGate = static_cast<int8_t>(s.pubPos - w);
                if (note) *note = "publisher rescans: worst lag " + std::to_string(w);
                s = after;
                return nullptr;
            }
            const int slot = s.pubPos % c_.capacity;
            for (int i = 0; i < kSubs; ++i)
                // (A slot that holds pubPos itself is a dead predecessor's half-written one.)
                if (s.alive[i] && s.slotPos[slot] >= 0 && s.subPos[i] <= s.slotPos[slot] && s.slotPos[slot] < s.pubPos)
                    return "the publisher overwrote a message a live subscriber has not read";
            s.slotPos[slot] = s.pubPos;
            s.slotDone[slot] = 0;
            s.pubPc = 1;
            if (note) *note = "publisher starts writing " + std::to_string(s.pubPos);
        } else {
            s.slotDone[s.pubPos % c_.capacity] = 1;
            s.pubPos++;
            s.head = s.pubPos;
            s.pubPc = 0;
            if (note) *note = "publisher completes " + std::to_string(s.pubPos - 1);
        }
        return nullptr;
    }

    Config c_;
};

std::string describe(const Config &c) {
    return "broadcast, capacity " + std::to_string(c.capacity) + ", " + std::to_string(c.messages) + " messages" +
           (c.crashes ? ", one crash" : "");
}

}  // namespace gating

TEST_CASE("broadcast: the gating protocol loses nothing and stalls nothing, with a crash at any step", "[model]") {
    for (int cap = 1; cap <= 3; ++cap)
        for (bool crashes : {false, true}) {
            const gating::Config c{cap, 4, crashes, false, false};
            requireSound(gating::Model(c), gating::describe(c));
        }
}

TEST_CASE("broadcast: mutants of the gating protocol are caught", "[model]") {
    const gating::Config noGate{2, 4, false, true, false};
    requireCaught(gating::Model(noGate), gating::describe(noGate) + ", mutant: no gate", "overwrote");
    const gating::Config noLiveness{2, 4, false, false, true};
    requireCaught(gating::Model(noLiveness), gating::describe(noLiveness) + ", mutant: no liveness check", "overwrote");
}
