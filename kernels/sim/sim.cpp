// The CPU shim's runtime: fibers, the block scheduler, barriers, warp collectives and launches.
// The model is described in sim.h.

// glibc's fortified longjmp refuses jumps to another stack, which is what fibers do.
#undef _FORTIFY_SOURCE

// <memory> before sim.h, whose __noinline__ macro breaks the standard headers.
#include <memory>

#include "sim.h"

#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace lmsi_sim {

thread_local const BlockInfo* tls_block = nullptr;
thread_local const uint3* tls_thread = nullptr;

namespace {

constexpr unsigned kWarp = 32;
constexpr unsigned kMaxThreads = 1024;
// The largest dynamic shared memory a block can opt into (sm_90).
constexpr unsigned kMaxSharedBytes = 227 * 1024;

enum class State { Runnable, AtBarrier, AtWarp, Done };

struct Fiber {
    ucontext_t start;
    jmp_buf context;
    bool started = false;
    uint3 tid;
    State state = State::Runnable;
    // The barrier predicate, or the warp collective being waited on.
    int predicate = 0;
    WarpOp op = WARP_SYNC;
    unsigned mask = 0;
    uint64_t value = 0;
    int arg = 0;
    int width = 32;
    // What the collective or barrier returns to this fiber.
    uint64_t result = 0;
};

// Fiber stacks of one OS thread, each below a guard page. Mapping them (and a system call per
// guard page) costs more than most launches, so they are kept in a pool and reused.
class Stacks {
  public:
    explicit Stacks(unsigned count) : count_(count) {
        page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
        stride_ = LMSI_SIM_STACK_BYTES + page_;
        void* p = mmap(nullptr, stride_ * count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
        base_ = p == MAP_FAILED ? nullptr : static_cast<unsigned char*>(p);
        for (unsigned i = 0; base_ != nullptr && i < count; ++i) mprotect(base_ + i * stride_, page_, PROT_NONE);
    }
    ~Stacks() {
        if (base_ != nullptr) munmap(base_, stride_ * count_);
    }
    Stacks(const Stacks&) = delete;
    Stacks& operator=(const Stacks&) = delete;
    bool ok() const { return base_ != nullptr; }
    unsigned count() const { return count_; }
    unsigned char* stack(unsigned i) const { return base_ + i * stride_ + page_; }

  private:
    unsigned count_;
    size_t page_ = 0;
    size_t stride_ = 0;
    unsigned char* base_ = nullptr;
};

// Stacks for the workers of every launch, kMaxThreads fibers each: taken at a worker's start and
// given back at its end, so a process maps one set per worker running at a time.
class StackPool {
  public:
    std::unique_ptr<Stacks> take() {
        {
            std::lock_guard<std::mutex> guard(lock_);
            if (!free_.empty()) {
                std::unique_ptr<Stacks> s = std::move(free_.back());
                free_.pop_back();
                return s;
            }
        }
        return std::make_unique<Stacks>(kMaxThreads);
    }
    void give(std::unique_ptr<Stacks> s) {
        std::lock_guard<std::mutex> guard(lock_);
        free_.push_back(std::move(s));
    }

  private:
    std::mutex lock_;
    std::vector<std::unique_ptr<Stacks>> free_;
};

StackPool& stack_pool() {
    static StackPool* pool = new StackPool();  // never destroyed: workers may outlive statics
    return *pool;
}

// The fibers of one OS thread and the block they are running. Fibers are created once per launch
// and worker (ucontext: getcontext/makecontext, entered the first time with setcontext) and then
// reused for every block the worker runs; switches go through _setjmp/_longjmp, which unlike
// swapcontext make no system call (the signal mask never changes here).
struct Worker {
    BlockInfo info;
    const std::function<void()>* body = nullptr;
    std::vector<Fiber> fibers;
    jmp_buf scheduler;
    Fiber* current = nullptr;
    std::string error;
};

thread_local Worker* tls_worker = nullptr;
thread_local std::string tls_last_error;

void fail(Worker& run, const std::string& message) {
    if (run.error.empty()) run.error = message;
}

// Suspends the current fiber until the scheduler resumes it. Kept apart (and free of locals
// used after the jump) because _setjmp "returns twice".
__attribute__((noinline)) void yield_to_scheduler() {
    Worker* w = tls_worker;
    if (_setjmp(w->current->context) == 0) _longjmp(w->scheduler, 1);
}

// Entry of every fiber: the kernel body of each block in turn. After a body returns, the fiber
// waits until the scheduler starts the next block.
void fiber_main() {
    for (;;) {
        Worker* w = tls_worker;
        (*w->body)();
        w->current->state = State::Done;
        yield_to_scheduler();
    }
}

// Runs fiber `f` until it yields or finishes its body.
__attribute__((noinline)) void resume(Worker& w, Fiber& f) {
    w.current = &f;
    tls_thread = &f.tid;
    if (_setjmp(w.scheduler) == 0) {
        if (f.started) _longjmp(f.context, 1);
        f.started = true;
        setcontext(&f.start);
    }
}

std::string describe(const uint3& v) {
    return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

const char* op_name(WarpOp op) {
    switch (op) {
        case WARP_SHFL_IDX: return "__shfl_sync";
        case WARP_SHFL_XOR: return "__shfl_xor_sync";
        case WARP_SHFL_DOWN: return "__shfl_down_sync";
        case WARP_SHFL_UP: return "__shfl_up_sync";
        case WARP_BALLOT: return "__ballot_sync";
        case WARP_SYNC: return "__syncwarp";
    }
    return "?";
}

// The lane whose value `lane` receives, or -1 when it keeps its own (CUDA's out-of-segment rule).
int shuffle_source(const Fiber& f, unsigned lane) {
    const unsigned width = static_cast<unsigned>(f.width);
    const unsigned segment = lane & ~(width - 1);
    const unsigned in_segment = lane - segment;
    const unsigned arg = static_cast<unsigned>(f.arg);
    switch (f.op) {
        case WARP_SHFL_IDX: return static_cast<int>(segment + (arg & (width - 1)));
        case WARP_SHFL_XOR: {
            const unsigned src = lane ^ arg;
            return src >= segment + width || src >= kWarp ? -1 : static_cast<int>(src);
        }
        case WARP_SHFL_DOWN: return in_segment + arg >= width ? -1 : static_cast<int>(lane + arg);
        case WARP_SHFL_UP: return in_segment < arg ? -1 : static_cast<int>(lane - arg);
        default: return -1;
    }
}

// Releases every warp collective whose lanes have all arrived; false if none could be released.
// Sets the run's error for collectives that can never complete.
bool release_warps(Worker& run) {
    const unsigned n = static_cast<unsigned>(run.fibers.size());
    bool released = false;
    for (unsigned base = 0; base < n; base += kWarp) {
        for (unsigned lane = 0; lane < kWarp && base + lane < n; ++lane) {
            Fiber& f = run.fibers[base + lane];
            if (f.state != State::AtWarp) continue;
            const auto where = [&] { return std::string(op_name(f.op)) + " of thread " + describe(f.tid); };
            const unsigned mask = f.mask;
            if (((mask >> lane) & 1u) == 0) {
                fail(run, where() + ": the mask does not name the calling lane");
                return false;
            }
            bool complete = true;
            for (unsigned other = 0; other < kWarp; ++other) {
                if (((mask >> other) & 1u) == 0) continue;
                if (base + other >= n) {
                    fail(run, where() + ": the mask names lane " + std::to_string(other) + ", which the block lacks");
                    return false;
                }
                const Fiber& g = run.fibers[base + other];
                if (g.state == State::Done) {
                    fail(run, where() + ": lane " + std::to_string(other) + " of the mask has exited");
                    return false;
                }
                // A lane elsewhere (at __syncthreads, another collective) may still arrive; if it
                // never can, the scheduler finds the block stuck and reports it.
                complete = complete && g.state == State::AtWarp && g.op == f.op && g.mask == mask && g.width == f.width;
            }
            if (!complete) continue;
            uint64_t ballot = 0;
            for (unsigned other = 0; other < kWarp; ++other) {
                if (((mask >> other) & 1u) != 0 && run.fibers[base + other].value != 0) ballot |= 1ull << other;
            }
            for (unsigned other = 0; other < kWarp; ++other) {
                if (((mask >> other) & 1u) == 0) continue;
                Fiber& g = run.fibers[base + other];
                if (g.op == WARP_BALLOT) {
                    g.result = ballot;
                } else if (g.op == WARP_SYNC) {
                    g.result = 0;
                } else {
                    const int src = shuffle_source(g, other);
                    if (src >= 0 && ((mask >> src) & 1u) == 0) {
                        fail(run, std::string(op_name(g.op)) + " of thread " + describe(g.tid) + ": reads lane " +
                                      std::to_string(src) + ", which is not in the mask");
                        return false;
                    }
                    g.result = src < 0 ? g.value : run.fibers[base + static_cast<unsigned>(src)].value;
                }
            }
            for (unsigned other = 0; other < kWarp; ++other) {
                if (((mask >> other) & 1u) != 0) run.fibers[base + other].state = State::Runnable;
            }
            released = true;
        }
    }
    return released;
}

// Releases __syncthreads when every live thread waits there; false (with an error when the block
// can never continue) otherwise.
bool release_barrier(Worker& run) {
    unsigned waiting = 0, done = 0, count = 0;
    for (const Fiber& f : run.fibers) {
        if (f.state == State::AtBarrier) {
            ++waiting;
            count += f.predicate != 0;
        } else if (f.state == State::Done) {
            ++done;
        } else {
            return false;
        }
    }
    if (waiting == 0) return false;
    if (done > 0) {
        fail(run, "__syncthreads reached by " + std::to_string(waiting) + " of " +
                      std::to_string(run.fibers.size()) + " threads; the other " + std::to_string(done) +
                      " exited (partial barrier)");
        return false;
    }
    for (Fiber& f : run.fibers) {
        f.result = count;
        f.state = State::Runnable;
    }
    return true;
}

std::string stuck_report(const Worker& run) {
    unsigned at_barrier = 0, at_warp = 0, done = 0;
    std::string first_warp;
    for (const Fiber& f : run.fibers) {
        at_barrier += f.state == State::AtBarrier;
        done += f.state == State::Done;
        if (f.state == State::AtWarp && at_warp++ == 0) {
            char mask[16];
            snprintf(mask, sizeof mask, "%08x", f.mask);
            first_warp = " (first: thread " + describe(f.tid) + " at " + op_name(f.op) + " with mask " + mask + ")";
        }
    }
    return "deadlock: " + std::to_string(at_barrier) + " threads wait at __syncthreads, " + std::to_string(at_warp) +
           " at warp collectives" + first_warp + ", " + std::to_string(done) + " exited";
}

uint64_t splitmix64(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Creates the worker's fibers for blocks of `threads` threads, on `stacks`.
void create_fibers(Worker& w, const dim3& block, const Stacks& stacks) {
    const unsigned threads = block.x * block.y * block.z;
    w.fibers = std::vector<Fiber>(threads);
    for (unsigned i = 0; i < threads; ++i) {
        Fiber& f = w.fibers[i];
        f.tid = uint3{i % block.x, i / block.x % block.y, i / block.x / block.y};
        getcontext(&f.start);
        f.start.uc_stack.ss_sp = stacks.stack(i);
        f.start.uc_stack.ss_size = LMSI_SIM_STACK_BYTES;
        f.start.uc_link = nullptr;
        makecontext(&f.start, fiber_main, 0);
    }
}

// Runs block `linear` of the launch to completion on the worker's fibers; returns the error ("" on
// success). After an error the fibers are left mid-kernel and must not be reused.
std::string run_block(Worker& w, const LmsiSimLaunch& cfg, uint64_t linear) {
    const dim3 grid = w.info.grid;
    w.info.idx = uint3{static_cast<unsigned>(linear % grid.x), static_cast<unsigned>(linear / grid.x % grid.y),
                       static_cast<unsigned>(linear / grid.x / grid.y)};
    if (cfg.shared_bytes > 0) memset(w.info.dynamic_shared, 0xff, cfg.shared_bytes);
    for (Fiber& f : w.fibers) f.state = State::Runnable;

    const unsigned threads = static_cast<unsigned>(w.fibers.size());
    std::vector<unsigned> order(threads);
    uint64_t rng = cfg.seed ^ (linear * 0xd1b54a32d192ed03ull);
    tls_block = &w.info;
    for (;;) {
        for (unsigned i = 0; i < threads; ++i) order[i] = cfg.schedule == LMSI_SIM_REVERSED ? threads - 1 - i : i;
        if (cfg.schedule == LMSI_SIM_SHUFFLED) {
            for (unsigned i = threads; i > 1; --i) std::swap(order[i - 1], order[splitmix64(rng) % i]);
        }
        for (unsigned i : order) {
            if (w.fibers[i].state != State::Runnable) continue;
            resume(w, w.fibers[i]);
            if (!w.error.empty()) break;
        }
        if (!w.error.empty()) break;
        if (std::all_of(w.fibers.begin(), w.fibers.end(), [](const Fiber& f) { return f.state == State::Done; })) {
            break;
        }
        if (release_warps(w) || !w.error.empty()) continue;
        if (release_barrier(w) || !w.error.empty()) continue;
        fail(w, stuck_report(w));
    }
    tls_block = nullptr;
    tls_thread = nullptr;
    return w.error;
}

}  // namespace

int sync_block(int predicate) {
    Worker* w = tls_worker;
    w->current->predicate = predicate;
    w->current->state = State::AtBarrier;
    yield_to_scheduler();
    return static_cast<int>(w->current->result);
}

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width) {
    Worker* w = tls_worker;
    Fiber& f = *w->current;
    if (width <= 0 || width > static_cast<int>(kWarp) || (width & (width - 1)) != 0) {
        fail(*w, std::string(op_name(op)) + " of thread " + describe(f.tid) + ": width " + std::to_string(width) +
                     " is not a power of two up to 32");
        yield_to_scheduler();
    }
    f.op = op;
    f.mask = mask;
    f.value = value;
    f.arg = arg;
    f.width = width;
    f.state = State::AtWarp;
    yield_to_scheduler();
    return w->current->result;
}

int launch(const LmsiSimLaunch* cfg, const char* kernel, const std::function<void()>& body) {
    tls_last_error.clear();
    const std::string name = kernel;
    const uint64_t blocks = static_cast<uint64_t>(cfg->grid[0]) * cfg->grid[1] * cfg->grid[2];
    const uint64_t threads = static_cast<uint64_t>(cfg->block[0]) * cfg->block[1] * cfg->block[2];
    if (blocks == 0 || threads == 0 || threads > kMaxThreads) {
        tls_last_error = name + ": invalid launch: " + std::to_string(blocks) + " blocks of " +
                         std::to_string(threads) + " threads (1 to 1024 threads, at least one block)";
        return 1;
    }
    if (cfg->shared_bytes > kMaxSharedBytes) {
        tls_last_error = name + ": " + std::to_string(cfg->shared_bytes) + " bytes of dynamic shared memory (at most " +
                         std::to_string(kMaxSharedBytes) + ")";
        return 1;
    }
    unsigned workers = cfg->os_threads != 0 ? cfg->os_threads : std::max(1u, std::thread::hardware_concurrency());
    workers = static_cast<unsigned>(std::min<uint64_t>(workers, blocks));

    std::atomic<uint64_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex error_lock;
    std::string error;
    auto work = [&] {
        std::unique_ptr<Stacks> pooled = stack_pool().take();
        const Stacks& stacks = *pooled;
        std::vector<unsigned char> shared(std::max<uint32_t>(cfg->shared_bytes, 1));
        if (!stacks.ok()) {
            std::lock_guard<std::mutex> guard(error_lock);
            error = "could not map fiber stacks";
            failed = true;
            return;
        }
        Worker w;
        w.body = &body;
        w.info.grid = dim3{cfg->grid[0], cfg->grid[1], cfg->grid[2]};
        w.info.dim = dim3{cfg->block[0], cfg->block[1], cfg->block[2]};
        w.info.dynamic_shared = shared.data();
        create_fibers(w, w.info.dim, stacks);
        tls_worker = &w;
        for (;;) {
            const uint64_t linear = next.fetch_add(1);
            if (linear >= blocks || failed) break;
            const std::string e = run_block(w, *cfg, linear);
            if (!e.empty()) {
                std::lock_guard<std::mutex> guard(error_lock);
                if (!failed) {
                    error = "block " + describe(w.info.idx) + ": " + e;
                    failed = true;
                }
                break;
            }
        }
        tls_worker = nullptr;
        // A failed block leaves fibers mid-kernel on their stacks; nothing of them is reused but
        // the memory, which every launch starts afresh on.
        stack_pool().give(std::move(pooled));
    };
    if (workers == 1) {
        work();
    } else {
        std::vector<std::thread> pool;
        for (unsigned i = 0; i < workers; ++i) pool.emplace_back(work);
        for (std::thread& t : pool) t.join();
    }
    if (failed) {
        tls_last_error = name + ": " + error;
        return 1;
    }
    return 0;
}

}  // namespace lmsi_sim

extern "C" const char* lmsi_sim_last_error(void) { return lmsi_sim::tls_last_error.c_str(); }
