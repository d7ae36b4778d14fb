//! A team of threads for one forward pass: the calling thread plus persistent helpers, handed the
//! whole pass at once and synchronised inside it by a spinning barrier (a few per layer), instead
//! of a thread-pool hand-off per operation.
//!
//! One team runs at a time: a caller that finds it busy (another request's forward, parallel
//! tests) runs its pass on its own thread, so concurrent callers never wait on each other or
//! oversubscribe the cores. Helpers spin briefly after a pass (the next message often follows
//! at once), then sleep.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a helper or a barrier spins before sleeping.
const SPIN: Duration = Duration::from_micros(300);

/// How long a waiting member sleeps between checks once it has spun for [`SPIN`]. Sleeping, not
/// `yield_now`, is what frees the core: on an oversubscribed machine the member being waited for is
/// often not running, and a yielding waiter is picked again at once (the scheduler keeps it
/// runnable), so every barrier cost a whole time slice and a forward pass crawled.
const NAP: Duration = Duration::from_micros(50);

/// A thread's place in a team: its index, the team size, and the team's barrier.
pub struct Member<'a> {
    pub id: usize,
    pub size: usize,
    barrier: Option<&'a Barrier>,
}

impl Member<'_> {
    /// The lone member of a one-thread team.
    pub fn alone() -> Member<'static> {
        Member {
            id: 0,
            size: 1,
            barrier: None,
        }
    }

    /// This member's share of `0..n` (contiguous, sizes differ by at most one).
    pub fn share(&self, n: usize) -> std::ops::Range<usize> {
        let per = n / self.size;
        let extra = n % self.size;
        let start = self.id * per + self.id.min(extra);
        start..start + per + usize::from(self.id < extra)
    }

    /// Waits until every member got here.
    pub fn sync(&self) {
        if let Some(b) = self.barrier {
            b.wait();
        }
    }
}

/// Sense-reversing spin barrier; panics if a member panicked (instead of waiting forever).
struct Barrier {
    size: usize,
    count: AtomicUsize,
    generation: AtomicUsize,
    poisoned: AtomicBool,
}

impl Barrier {
    fn wait(&self) {
        let gen = self.generation.load(Ordering::Acquire);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.size {
            self.count.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let start = Instant::now();
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == gen {
            if self.poisoned.load(Ordering::Relaxed) {
                panic!("a forward-pass thread panicked");
            }
            spins += 1;
            if spins % 256 == 0 && start.elapsed() > SPIN {
                std::thread::sleep(NAP);
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

type Job = dyn Fn(&Member<'_>) + Sync;

/// One pass handed to the helpers: the caller's closure and barrier with their lifetimes erased.
#[derive(Clone, Copy)]
struct Pass {
    job: *const Job,
    barrier: *const Barrier,
}
// SAFETY: both point into the caller's stack frame, which outlives every use (see `Team::run`);
// the closure is `Sync` and the barrier is only used through atomics.
unsafe impl Send for Pass {}

struct Shared {
    pass: Mutex<Option<Pass>>,
    wake: Condvar,
    generation: AtomicU64,
    done: AtomicUsize,
}

pub struct Team {
    helpers: usize,
    shared: Arc<Shared>,
    busy: Mutex<()>,
}

impl Team {
    /// The process-wide team: as many threads as the compute pool has (`TRIAGE_EMBED_THREADS`).
    pub fn global() -> &'static Team {
        static TEAM: OnceLock<Team> = OnceLock::new();
        TEAM.get_or_init(|| Team::new(rayon::current_num_threads().max(1)))
    }

    fn new(threads: usize) -> Team {
        let shared = Arc::new(Shared {
            pass: Mutex::new(None),
            wake: Condvar::new(),
            generation: AtomicU64::new(0),
            done: AtomicUsize::new(0),
        });
        for id in 1..threads {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("embed-team-{id}"))
                .spawn(move || helper(&shared, id, threads))
                .expect("spawning an embedding thread");
        }
        Team {
            helpers: threads - 1,
            shared,
            busy: Mutex::new(()),
        }
    }

    /// Runs `f` on every member (the caller is member 0), or on the caller alone when `parallel`
    /// is false, the team has one thread, or it is busy with another pass.
    pub fn run(&self, parallel: bool, f: &(dyn Fn(&Member<'_>) + Sync)) {
        let guard = if parallel && self.helpers > 0 {
            self.busy.try_lock().ok()
        } else {
            None
        };
        let Some(_guard) = guard else {
            f(&Member::alone());
            return;
        };
        let size = self.helpers + 1;
        let barrier = Barrier {
            size,
            count: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        };
        self.shared.done.store(0, Ordering::Relaxed);
        {
            // SAFETY: erases `f`'s lifetime only; helpers stop using it before bumping `done`,
            // and this function does not return before all of them have.
            let job: *const Job =
                unsafe { std::mem::transmute::<&(dyn Fn(&Member<'_>) + Sync), &'static Job>(f) };
            let mut slot = self.shared.pass.lock().unwrap_or_else(|e| e.into_inner());
            *slot = Some(Pass {
                job,
                barrier: &barrier,
            });
            self.shared.generation.fetch_add(1, Ordering::Release);
            self.shared.wake.notify_all();
        }
        let me = Member {
            id: 0,
            size,
            barrier: Some(&barrier),
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&me)));
        if result.is_err() {
            barrier.poisoned.store(true, Ordering::Relaxed);
        }
        spin_until(|| self.shared.done.load(Ordering::Acquire) >= self.helpers);
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }
}

fn spin_until(done: impl Fn() -> bool) {
    let start = Instant::now();
    let mut spins = 0u32;
    while !done() {
        spins = spins.wrapping_add(1);
        if spins % 256 == 0 && start.elapsed() > SPIN {
            std::thread::sleep(NAP);
        } else {
            std::hint::spin_loop();
        }
    }
}

fn helper(shared: &Shared, id: usize, size: usize) {
    let mut seen = 0u64;
    loop {
        // Spin a little (a pass often follows the last one at once), then sleep.
        let start = Instant::now();
        while shared.generation.load(Ordering::Acquire) == seen && start.elapsed() < SPIN {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
        }
        let pass = {
            let mut slot = shared.pass.lock().unwrap_or_else(|e| e.into_inner());
            while shared.generation.load(Ordering::Acquire) == seen {
                slot = shared.wake.wait(slot).unwrap_or_else(|e| e.into_inner());
            }
            seen = shared.generation.load(Ordering::Acquire);
            (*slot).expect("a pass is set with each generation")
        };
        // SAFETY: see `Pass`: valid until `done` is bumped below.
        let (job, barrier) = unsafe { (&*pass.job, &*pass.barrier) };
        let me = Member {
            id,
            size,
            barrier: Some(barrier),
        };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&me))).is_err() {
            barrier.poisoned.store(true, Ordering::Relaxed);
        }
        shared.done.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_runs_once_and_shares_cover_the_range() {
        let team = Team::new(3);
        for _ in 0..50 {
            let hits = AtomicUsize::new(0);
            let covered = Mutex::new(Vec::new());
            team.run(true, &|m: &Member<'_>| {
                hits.fetch_add(1, Ordering::Relaxed);
                m.sync();
                covered.lock().unwrap().extend(m.share(10));
                m.sync();
            });
            assert_eq!(hits.load(Ordering::Relaxed), 3);
            let mut c = covered.into_inner().unwrap();
            c.sort();
            assert_eq!(c, (0..10).collect::<Vec<_>>());
        }
        let alone = AtomicUsize::new(0);
        team.run(false, &|m: &Member<'_>| {
            assert_eq!(m.size, 1);
            alone.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(alone.load(Ordering::Relaxed), 1);
    }
}
